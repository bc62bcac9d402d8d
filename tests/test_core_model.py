"""``unmask.model.Transformer`` at the edges of its explicit layouts: a negative RoPE
position is refused (it read another position's rotation from the end of the table)."""

from __future__ import annotations

import pytest
import torch

from unmask.config import model_preset
from unmask.model import KVCache, Transformer


def _model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(model_preset("tiny", vocab_size=50)).double().eval()


def test_a_negative_position_is_refused() -> None:
    m, x = _model(), torch.arange(4)[None]
    with pytest.raises(ValueError, match="position -1 is negative"):
        m(x, positions=torch.tensor([-1, 0, 1, 2]))
    with pytest.raises(ValueError, match="position -2 is negative"):
        m(x[:, :2], cache=KVCache(), start=0, positions=torch.tensor([-2, 0]),
          attn_bias=torch.ones(1, 1, 2, 2, dtype=torch.bool))


def test_given_positions_equal_the_default_ones() -> None:
    """The refusal reads the positions once; valid ones still give the default layout's
    logits, with and without a cache."""
    m, x = _model(), torch.randint(0, 50, (2, 6))
    with torch.no_grad():
        want = m(x)
        got = m(x, positions=torch.arange(6))
        cached = m(x, cache=KVCache(), start=0, positions=torch.arange(6))
    assert torch.allclose(got, want) and torch.allclose(cached, want)
