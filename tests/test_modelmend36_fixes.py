"""Session 36, follow-up of the model fixes: ``log_expm1`` is ``log(expm1(x))`` bit for bit
wherever that is finite (float32 and float64), the log-linear noise is finite at t = 1 for a
tiny eps (SEDD sampling of such a checkpoint gave NonFiniteOutput) and refuses an eps below
its floor in one line, and the Hugging Face export's log-score is the native one at a large
noise level (it was -inf from sigma 89)."""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import pytest
import torch

from unmask.checkpoint import save_checkpoint
from unmask.config import ModelConfig, SampleConfig, TrainConfig, model_preset
from unmask.errors import UserError
from unmask.model import Transformer, log_expm1
from unmask.objectives import objective_spec
from unmask.sampling.sedd import generate_sedd
from unmask.sedd import LogLinearNoise


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


def _old_sigma(eps: float, t: torch.Tensor) -> torch.Tensor:
    return -torch.log1p(-(1.0 - eps) * t)


def _old_dsigma(eps: float, t: torch.Tensor) -> torch.Tensor:
    return (1.0 - eps) / (1.0 - (1.0 - eps) * t)


@pytest.mark.parametrize("eps", [0.5, 1e-3, 1e-5, 1e-6])
def test_the_log_linear_noise_is_unchanged_for_a_usual_eps(eps: float) -> None:
    """σ(t) and dσ/dt are the old expressions bit for bit for eps ≥ 1e-6 (trained and sampled
    runs keep their numbers), on a dense grid and at the ends."""
    t = torch.cat([
        torch.linspace(0.0, 1.0, 100_001, dtype=torch.float64),
        1.0 - torch.logspace(-17, 0, 10_000, dtype=torch.float64),
        torch.tensor([0.0, 1e-3, 0.5, 1.0], dtype=torch.float64),
    ])  # fmt: skip
    noise = LogLinearNoise(eps)
    assert torch.equal(noise.sigma(t), _old_sigma(eps, t))
    assert torch.equal(noise.dsigma(t), _old_dsigma(eps, t))


@pytest.mark.parametrize("eps", [1e-12, 1e-17, 1e-30])
def test_the_log_linear_noise_is_finite_at_t_1_for_a_tiny_eps(eps: float) -> None:
    """σ(1) = -log(eps) and dσ/dt(1) = (1 - eps)/eps: 1 - eps rounds to 1 below 1.1e-16, and
    the old σ(1) was inf (so the sampler's first forward was -inf); above it, off by up to 1e-4
    at eps 1e-12. Near t = 1 σ rises with t, without a jump where the two forms meet."""
    noise = LogLinearNoise(eps)
    one = torch.tensor([1.0], dtype=torch.float64)
    assert float(noise.sigma(one)) == pytest.approx(-math.log(eps), rel=1e-15)
    assert float(noise.dsigma(one)) == pytest.approx((1.0 - eps) / eps, rel=1e-15)
    assert float(noise.sigma(one)) == pytest.approx(noise.sigma_max, rel=1e-15)
    t = torch.sort(torch.cat([torch.linspace(0.99, 1.0, 10_001, dtype=torch.float64),
                              1.0 - torch.logspace(-16, -2, 10_000, dtype=torch.float64)]))[0]
    sigma = noise.sigma(t)
    assert torch.isfinite(sigma).all() and torch.isfinite(noise.dsigma(t)).all()
    assert bool((sigma.diff() >= 0).all())
    exact = -torch.log((1.0 - t) + eps * t)  # 1 - t is exact for t ≥ 0.5
    torch.testing.assert_close(sigma, exact, rtol=1e-9, atol=0)


def test_a_tiny_eps_checkpoint_samples_with_the_sedd_decoder() -> None:
    """A time-conditioned absorbing log-score model trained with eps 1e-20 (σ(1) = 46): both
    SEDD samplers return tokens (the old σ(1) = inf gave NonFiniteOutput)."""
    cfg = ModelConfig(vocab_size=50, d_model=32, n_layers=1, n_heads=4, max_seq_len=64,
                      objective="sedd", sedd_graph="absorbing", time_conditioning=True,
                      output="sedd_log_score", schedule="linear", schedule_eps=1e-20,
                      mask_id=0, pad_id=1, eos_id=2)  # fmt: skip
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    for sampler in ("euler", "analytic"):
        sample = SampleConfig(decoder="sedd", gen_length=8, steps=4, seed=0, sedd_sampler=sampler)
        out = generate_sedd(model, [[5, 6]], sample, mask_id=0, pad_id=1, eos_id=2)
        row = out.tokens.tolist()[0]
        assert row[:2] == [5, 6] and len(row) == 10 and 0 not in row[2:]


def test_an_eps_below_the_floor_is_refused_in_one_line() -> None:
    """Below 1e-30 the sampler's float32 scores (about eps) and rates (about 1/eps) leave
    float32's range at t = 1: its steps gave inf and NaN, and the old code trained such a
    run. Training refuses it before it starts; the floor itself is accepted."""
    spec = objective_spec("sedd")
    spec.validate(TrainConfig(objective="sedd", eps=1e-30))
    with pytest.raises(UserError, match=r"^SEDD noise eps=1e-40 must be in \[1e-30, 1\): ") as err:
        spec.validate(TrainConfig(objective="sedd", eps=1e-40))
    assert "\n" not in str(err.value)


def test_the_exported_log_score_is_the_native_one_at_a_large_noise_level(tmp_path: Path) -> None:
    """The Hugging Face template's own ``sedd_log_score`` (it cannot import unmask) used
    log(expm1(sigma)): -inf from sigma 89, where the native head is finite."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only, before transformers loads
    transformers = pytest.importorskip("transformers")
    from unmask.convert import export
    from unmask.tokenizer import byte_tokenizer

    torch.manual_seed(0)
    tok = byte_tokenizer()
    cfg = model_preset(
        "tiny", vocab_size=tok.vocab_size, norm="layer", mlp="gelu", head_bias=True,
        tie_embeddings=False, time_conditioning=True, cond_dim=16, sigma_input="given",
        output="sedd_log_score", **tok.special_ids(),
    )  # fmt: skip
    model = Transformer(cfg)
    with torch.no_grad():  # adaLN-Zero starts at zero: perturb it, or the sigma is unused
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save_checkpoint(tmp_path / "run", model=model, tokenizer=tok)
    model.eval()
    out = export(tmp_path / "run", tmp_path / "hf", family="transformers")
    mlm = transformers.AutoModelForMaskedLM.from_pretrained(
        str(out), trust_remote_code=True, local_files_only=True
    ).eval()
    m = cfg.mask_id
    x = torch.tensor([tok.encode("abcd") + [m] * 4, [m] * 6 + tok.encode("ij")])  # (2, 8)
    for sigma in ([100.0, 0.3], [60.0, 1000.0]):
        s = torch.tensor(sigma)
        with torch.no_grad():
            exported, native = mlm(input_ids=x, sigma=s).logits, model(x, sigma=s)
        assert torch.isfinite(native).all() and torch.isfinite(exported).all()
        torch.testing.assert_close(exported, native, atol=1e-4, rtol=1e-6)
