"""The one transformer at the edges of its contract (session 30, area model)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from unmask.config import ModelConfig
from unmask.model import KVCache, Transformer

TINY = dict(vocab_size=40, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16)


@pytest.mark.parametrize("options", [
    {}, {"attention": "causal"}, {"attention": "block-causal", "block_size": 4},
    {"n_experts": 4, "experts_top_k": 2},
    {"time_conditioning": True, "sigma_input": "masked_fraction"},
])
@pytest.mark.parametrize("shape", [(0, 5), (2, 0)])
def test_an_empty_batch_or_row_gives_empty_logits(options, shape) -> None:
    """(B, L) -> (B, L, V) for B or L of 0 too, as torch's own layers map empty batches: the
    attention's output reshape left its width to -1, which a tensor of no elements cannot
    infer ("cannot reshape tensor of 0 elements"), in every attention mode, cached or not."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**TINY, **options)).eval()
    tokens = torch.full(shape, 5, dtype=torch.long)
    with torch.no_grad():
        assert model(tokens).shape == (*shape, 40)
        assert model(tokens, attention_mask=torch.ones(shape, dtype=torch.bool)).shape == (
            *shape, 40)
        if not options.get("time_conditioning"):  # reads its noise level off the whole canvas
            cache = KVCache()
            prefix = torch.full((shape[0], 3), 5, dtype=torch.long)
            model(prefix, cache=cache)
            none = torch.full((shape[0], 0), 5, dtype=torch.long)
            assert model(none, cache=cache, start=3).shape == (shape[0], 0, 40)


@pytest.mark.parametrize("options", [
    {"attention": "causal"}, {"attention": "block-causal", "block_size": 4},
])
@pytest.mark.parametrize("positions", [
    list(range(2, 10)),  # a window that starts inside a block
    [7, 6, 5, 4, 3, 2, 1, 0],  # columns out of position order
    [0, 1, 2, 3, 8, 9, 10, 11],
])
def test_explicit_positions_give_the_same_logits_with_a_cache_and_without(
    options, positions
) -> None:
    """``forward(tokens, positions=p)`` applied the mode's pattern by column without a cache
    and by position over one: a block-causal window starting at position 2 put positions 2-5
    in one block without the cache and 2-3 | 4-7 with it (logits 0.1 apart), and reversed
    columns of a causal model differed as much. Now by position both ways, padding too."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**{**TINY, "max_seq_len": 32}, **options)).double().eval()
    tokens = torch.randint(4, 40, (2, 8), generator=torch.Generator().manual_seed(1))
    pos = torch.tensor(positions)
    pad = torch.ones(2, 8, dtype=torch.bool)
    pad[1, :2] = False
    with torch.no_grad():
        for mask in (None, pad):
            plain = model(tokens, attention_mask=mask, positions=pos)
            cached = model(tokens, attention_mask=mask, positions=pos, cache=KVCache())
            torch.testing.assert_close(plain, cached, rtol=0, atol=1e-12)
        # ascending positions from 0 are the default layout
        torch.testing.assert_close(model(tokens, positions=torch.arange(8)), model(tokens))


@pytest.mark.parametrize("name, value", [
    ("temperature", -1.0), ("temperature", float("nan")), ("cfg_scale", -0.5),
    ("cfg_scale", float("inf")),
])
def test_a_checkpoints_bad_recommended_temperature_names_its_config(tmp_path, name,
                                                                     value) -> None:
    """``sample_defaults`` are checked when config.json is read ("a bad one failed at the first
    run, not naming config.json"), but a negative or NaN temperature or cfg_scale passed until
    the sampler refused it, as if the user had typed it; ``SampleConfig`` refuses them itself."""
    from unmask.config import SampleConfig, from_dict
    from unmask.errors import UserError

    with pytest.raises(UserError, match=f"^{name} must be a finite number >= 0"):
        SampleConfig(**{name: value})
    with pytest.raises(UserError, match=f"^ckpt/config.json: sample_defaults: {name} must be"):
        from_dict(ModelConfig, {"sample_defaults": {name: value}}, source="ckpt/config.json")


def test_load_takes_the_name_of_every_dtype_it_takes_as_a_torch_dtype() -> None:
    """``load(dtype=torch.float64)`` loads, and its refusal of ``torch.int8`` names
    ``torch.float64`` among the dtypes it takes, but ``dtype="float64"`` was refused with
    "choose fp32, bf16 or fp16"; then "double" / "torch.double" still were (``torch.double``
    loads), and a bad name's refusal left float64 out."""
    from unmask.config import LOAD_DTYPES, load_target
    from unmask.errors import UserError

    for name in (*LOAD_DTYPES, "double", "float", "half"):
        for spelt in (name, f"torch.{name}"):
            assert load_target("cpu", spelt) == ("cpu", getattr(torch, name))
    for name in ("int8", "f64"):  # the refusal names every dtype it takes
        with pytest.raises(UserError, match=re.escape(
            f"dtype '{name}': choose fp32, bf16, fp16 or float64 (or float32, float, bfloat16, "
            "float16, half, double; also as torch.<name>)"
        )):
            load_target("cpu", name)


def test_per_row_positions_run_without_a_cache_as_over_one() -> None:
    """Positions (B, L), one row each, with an explicit ``attn_bias``: taken over a KV cache
    (ragged rows) but refused without one ("positions must have shape (L,)"); now the same
    logits both ways, and each row's are those of the row alone at its positions."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**{**TINY, "max_seq_len": 32}, rotary_dim=4)).double().eval()
    tokens = torch.randint(4, 40, (2, 6), generator=torch.Generator().manual_seed(2))
    pos = torch.tensor([[0, 1, 2, 3, 4, 5], [3, 4, 5, 6, 7, 8]])
    bias = torch.ones(6, 6, dtype=torch.bool).tril()[None, None]  # (1, 1, L, L) causal
    with torch.no_grad():
        plain = model(tokens, positions=pos, attn_bias=bias)
        cached = model(tokens, positions=pos, attn_bias=bias, cache=KVCache())
        torch.testing.assert_close(plain, cached, rtol=0, atol=1e-12)
        for row in range(2):
            alone = model(tokens[row:row + 1], positions=pos[row], attn_bias=bias)
            torch.testing.assert_close(plain[row:row + 1], alone, rtol=0, atol=1e-12)
        with pytest.raises(ValueError, match="need an explicit attn_bias"):
            model(tokens, positions=pos)


@pytest.mark.parametrize("shape", [(6,), (2, 5), (3, 6), (2, 1, 6)])
def test_an_attention_mask_of_the_wrong_shape_names_both_shapes(shape) -> None:
    """Over a cache a mask of the wrong length was a ValueError naming the lengths; without
    one it was torch's "The size of tensor a (6) must match the size of tensor b (5)" or an
    IndexError from deep inside the mask. The shapes that ran still run: (B, L) and (1, L)."""
    model = Transformer(ModelConfig(**TINY)).eval()
    tokens = torch.full((2, 6), 5, dtype=torch.long)
    said = f"attention_mask must have shape (2, 6) (or (1, 6)), got {shape}"
    with pytest.raises(ValueError, match=re.escape(said)):
        model(tokens, attention_mask=torch.ones(shape, dtype=torch.bool))
    with torch.no_grad():
        for ok in ((2, 6), (1, 6)):
            assert model(tokens, attention_mask=torch.ones(ok, dtype=torch.bool)).shape == (
                2, 6, 40)


@pytest.mark.parametrize("attention", ["bidirectional", "causal", "block-causal"])
@pytest.mark.parametrize("shape", [(6,), (3, 6), (2, 1, 6), (2, 5)])
def test_an_attention_mask_of_the_wrong_shape_over_a_cache_names_both_shapes(
    attention, shape
) -> None:
    """Over a cache only the mask's length was checked: a 1-D mask, a wrong batch size or a
    (B, 1, L) mask failed inside torch ("too many indices", "The size of tensor a (2) must
    match ...") at prefill and at every decode step, explicit layout too. Now the message of
    the uncached path, with the key count (cached and new positions) as the length."""
    model = Transformer(ModelConfig(**TINY, attention=attention, block_size=2)).eval()
    tokens = torch.full((2, 6), 5, dtype=torch.long)
    bad = torch.ones(shape, dtype=torch.bool)
    said = f"attention_mask must have shape (2, 6) (or (1, 6)), got {shape}"
    with torch.no_grad():
        for explicit in ({}, {"positions": torch.arange(6)}):
            with pytest.raises(ValueError, match=re.escape(said)):
                model(tokens, attention_mask=bad, cache=KVCache(), **explicit)
        cache = KVCache()
        model(tokens, attention_mask=torch.ones(1, 6, dtype=torch.bool), cache=cache)
        step = bad.new_ones(*shape[:-1], shape[-1] + 1)  # one key more: the step's own
        said = f"attention_mask must have shape (2, 7) (or (1, 7)), got {tuple(step.shape)}"
        for explicit in ({}, {"positions": torch.tensor([6])}):
            with pytest.raises(ValueError, match=re.escape(said)):
                model(tokens[:, :1], attention_mask=step, cache=cache, start=6, **explicit)
        for ok in ((2, 7), (1, 7)):  # the shapes that ran still run
            out = model(tokens[:, :1], attention_mask=torch.ones(ok, dtype=torch.bool),
                        cache=cache, start=6)
            assert out.shape == (2, 1, 40)


def test_a_float64_dit_computes_its_noise_level_path_in_float64() -> None:
    """``at_least_fp32``: "a float64 model stays float64 throughout", but the noise level read
    off the canvas, its sinusoidal embedding and SEDD's log(e^sigma - 1) ran in float32
    (1e-7 off the formulas in a float64 model); each now matches the formula to 1e-12, and so
    does the noise level a forward hands the embedding."""
    import math

    from unmask.config import SIGMA_FREQ_DIM
    from unmask.model import masked_fraction_sigma, sedd_log_score

    cfg = ModelConfig(**TINY, time_conditioning=True, sigma_input="masked_fraction",
                      output="sedd_log_score", cond_dim=16)
    torch.manual_seed(0)
    model = Transformer(cfg).double().eval()
    tokens = torch.tensor([[0, 5, 6], [0, 0, 7]])  # a third and two thirds masked (mask_id 0)
    frac = torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)
    sigma = masked_fraction_sigma(tokens, 0, dtype=torch.float64)
    torch.testing.assert_close(sigma, -torch.log1p(-frac), rtol=0, atol=1e-12)
    emb = model.sigma_embed
    half = SIGMA_FREQ_DIM // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    args = sigma[:, None] * freqs[None]
    feats = torch.cat([args.cos(), args.sin()], dim=-1)
    want = F.silu(emb.proj_out(F.silu(emb.proj_in(feats))))
    with torch.no_grad():
        torch.testing.assert_close(emb(sigma), want, rtol=0, atol=1e-12)
        head = torch.randn(2, 3, 40, dtype=torch.float64)
        score = sedd_log_score(head, tokens, sigma)
        expect = head - torch.log(torch.expm1(sigma))[:, None, None] - math.log(39)
        expect = expect.scatter(-1, tokens[..., None], 0.0)
        torch.testing.assert_close(score, expect, rtol=0, atol=1e-12)
        seen = []  # what the model's forward hands its sigma embedding: the formula's sigma
        emb.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        assert model(tokens).dtype == torch.float64
        torch.testing.assert_close(seen[0], -torch.log1p(-frac), rtol=0, atol=1e-12)
