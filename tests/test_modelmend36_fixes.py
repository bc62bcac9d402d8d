"""Session 36, follow-up of the model fixes: ``log_expm1`` is ``log(expm1(x))`` bit for bit
wherever that is finite (float32 and float64), the log-linear noise is finite at t = 1 for a
tiny eps (SEDD sampling of such a checkpoint gave NonFiniteOutput) and refuses an eps below
its floor in one line, and the Hugging Face export's log-score is the native one at a large
noise level (it was -inf from sigma 89)."""

from __future__ import annotations

import math
import struct

import pytest
import torch

from unmask.model import log_expm1


def _float32_bits(x: float) -> int:
    return struct.unpack("<i", struct.pack("<f", x))[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_expm1_is_log_of_expm1_bit_for_bit_where_that_is_finite(dtype: torch.dtype) -> None:
    """Every float32 from 50 to 89 (the only place the two differ in form), and a dense grid
    of each dtype from 1e-12 up to where log(expm1) overflows (89 in float32, 709 in float64);
    with the threshold at 20 a float64 log-score moved by up to 2e-9 for sigma in [20, 37)."""
    top = 88.7 if dtype == torch.float32 else 709.7
    x = torch.cat([
        torch.logspace(-12, math.log10(top), 200_000, dtype=torch.float64),
        torch.linspace(15.0, top, 200_000, dtype=torch.float64),
    ]).to(dtype)  # fmt: skip
    if dtype == torch.float32:
        every = torch.arange(_float32_bits(50.0), _float32_bits(89.0), dtype=torch.int32)
        x = torch.cat([x, every.view(torch.float32)])
    old = torch.log(torch.expm1(x))
    new = log_expm1(x)
    finite = torch.isfinite(old)
    assert int(finite.sum()) > 0.99 * x.numel()
    assert torch.equal(new[finite], old[finite])
    big = torch.tensor([100.0, 1e4, 1e30], dtype=dtype)
    assert torch.equal(log_expm1(big), big)  # finite past the overflow
