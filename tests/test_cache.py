"""KV caches: the model's cache interface, prefix/dual caches in the sampler, skipped empty
steps."""

from __future__ import annotations

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.model import KVCache, Transformer
from unmask.sampling import generate


def make(
    attention: str = "bidirectional", *, seed: int = 0, std: float = 0.02, **kw
) -> Transformer:
    cfg = model_preset(
        "tiny", vocab_size=48, max_seq_len=64, attention=attention, block_size=4, init_std=std, **kw
    )
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


def ids(model: Transformer) -> dict[str, int]:
    c = model.config
    return dict(mask_id=c.mask_id, pad_id=c.pad_id, eos_id=c.eos_id)


def padded_batch(L: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(4, 48, (2, L), generator=g)
    mask = torch.ones(2, L, dtype=torch.bool)
    mask[1, :3] = False
    return x, mask


# -- the model's cache interface ------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["bidirectional", "causal", "block-causal"])
@pytest.mark.parametrize("padded", [False, True])
def test_cached_full_forward_equals_uncached(attention, padded):
    m = make(attention)
    x, mask = padded_batch()
    mask = mask if padded else None
    with torch.no_grad():
        kv = KVCache()
        assert torch.equal(m(x, attention_mask=mask, cache=kv), m(x, attention_mask=mask))
    assert kv.length == 12 and len(kv.layers) == m.config.n_layers
    assert kv.layers[0][0].shape == (2, m.config.n_kv_heads, 12, m.config.head_dim)


@pytest.mark.parametrize("attention", ["causal", "block-causal"])
def test_prefix_then_rest_equals_full(attention):
    m = make(attention)
    x, mask = padded_batch()
    with torch.no_grad():
        full = m(x, attention_mask=mask)
        kv = KVCache()
        a = m(x[:, :8], attention_mask=mask[:, :8], cache=kv)
        b = m(x[:, 8:], attention_mask=mask, cache=kv, start=8)  # block boundary (block_size 4)
    torch.testing.assert_close(torch.cat([a, b], dim=1), full)


def test_token_by_token_causal_equals_full():
    m = make("causal")
    x, mask = padded_batch()
    with torch.no_grad():
        full = m(x, attention_mask=mask)
        kv = KVCache()
        outs = [m(x[:, :1], attention_mask=mask[:, :1], cache=kv)]
        for t in range(1, 12):
            outs.append(m(x[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=kv, start=t))
    torch.testing.assert_close(torch.cat(outs, dim=1), full)
    assert kv.length == 12 and kv.layers[0][0].shape[2] >= 12  # buffers grow by doubling


@pytest.mark.parametrize("window", [(4, 12), (4, 8), (0, 5)])
def test_recompute_window_of_unchanged_canvas_is_exact_bidirectional(window):
    """Stale K/V are the only approximation: with nothing changed the window is exact."""
    m = make("bidirectional", std=0.3)
    x, mask = padded_batch()
    lo, hi = window
    with torch.no_grad():
        full = m(x, attention_mask=mask)
        kv = KVCache()
        m(x, attention_mask=mask, cache=kv)
        part = m(x[:, lo:hi], attention_mask=mask, cache=kv, start=lo)
    torch.testing.assert_close(part, full[:, lo:hi])


def test_cache_interface_errors():
    m = make("causal")
    x = torch.randint(4, 48, (1, 6))
    with pytest.raises(ValueError, match="start"):
        m(x, start=2)
    kv = KVCache()
    with torch.no_grad():
        m(x, cache=kv)
        with pytest.raises(ValueError, match="gap"):
            m(x[:, :1], cache=kv, start=8)
        with pytest.raises(ValueError, match="attention_mask"):
            m(x[:, :1], attention_mask=torch.ones(1, 6, dtype=torch.bool), cache=kv, start=6)
        with pytest.raises(ValueError, match="max_seq_len"):
            m(torch.randint(4, 48, (1, 60)), cache=kv, start=6)


# -- caches in the sampler: exact where attention cannot see what changes --------------------------


PROMPTS = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]  # padded to 4 = block_size: blocks line up


@pytest.mark.parametrize("attention", ["causal", "block-causal"])
@pytest.mark.parametrize("policy", ["llada", "threshold"])
@pytest.mark.parametrize("cfg_scale", [0.0, 0.5])
def test_cache_exact_for_causal_and_block_causal(attention, policy, cfg_scale):
    m = make(attention, std=0.3)
    base = dict(
        gen_length=12, steps=12, block_length=4, policy=policy, threshold=0.3, cfg_scale=cfg_scale
    )
    ref = generate(m, PROMPTS, SampleConfig(**base), **ids(m), return_history=True)
    for cache in ("prefix", "dual"):
        r = generate(m, PROMPTS, SampleConfig(**base, cache=cache), **ids(m), return_history=True)
        assert torch.equal(r.tokens, ref.tokens), cache
        assert all(torch.equal(a, b) for a, b in zip(r.history, ref.history, strict=True))
        assert r.nfe == ref.nfe


def test_cache_exact_with_logit_shift():
    """Dream-style logit shift: the window then runs one position more on the left."""
    m = make("block-causal", std=0.3, logit_shift=True)
    base = dict(gen_length=12, steps=6, block_length=4)
    ref = generate(m, PROMPTS, SampleConfig(**base), **ids(m))
    for cache in ("prefix", "dual"):
        assert torch.equal(
            generate(m, PROMPTS, SampleConfig(**base, cache=cache), **ids(m)).tokens, ref.tokens
        )


class Recording(Transformer):
    """Records (query length, start, cached?) of every call."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.calls: list[tuple[int, int, bool]] = []

    def forward(self, tokens, attention_mask=None, *, cache=None, start=0):
        self.calls.append((tokens.shape[1], start, cache is not None))
        return super().forward(tokens, attention_mask, cache=cache, start=start)


class Broken(Transformer):
    """A wrong cache: windows ignore the cached context altogether."""

    def forward(self, tokens, attention_mask=None, *, cache=None, start=0):
        if cache is not None and start > 0:
            return super().forward(tokens)
        return super().forward(tokens, attention_mask, cache=cache, start=start)


@pytest.mark.parametrize(
    "cache,widths", [("prefix", [16, 8, 8, 8, 16, 4, 4, 4]), ("dual", [16, 4, 4, 4, 16, 4, 4, 4])]
)
def test_cached_calls_recompute_only_the_window(cache, widths):
    torch.manual_seed(0)
    m = Recording(model_preset("tiny", vocab_size=48, max_seq_len=64)).eval()
    # threshold 1.0 = one token per step, and never a mask-id proposal (which would leave a
    # mask in block 1 and widen block 2's window to include it)
    cfg = SampleConfig(gen_length=8, block_length=4, cache=cache, policy="threshold", threshold=1.0)
    r = generate(m, [[5, 6, 7, 8, 9, 10, 11, 12]], cfg, **ids(m))
    assert r.nfe == 8 and [w for w, _, _ in m.calls] == widths
    assert [s for _, s, _ in m.calls] == [0, 8, 8, 8, 0, 12, 12, 12]  # refresh at every block start


def _stepwise_agreement(model: Transformer, mode: str, prompts: list[list[int]]) -> float:
    """Replay an uncached run: at every step, the cached window's argmax vs the uncached
    argmax over the block's masked positions."""
    r = generate(
        model,
        prompts,
        SampleConfig(gen_length=16, steps=16, block_length=4),
        **ids(model),
        return_history=True,
    )
    P, attn, mask_id = r.region[0], r.attention_mask, model.config.mask_id
    first = r.history[0].clone()
    first[:, P:] = mask_id
    canvases = [first, *r.history[:-1]]
    hits = total = 0
    with torch.no_grad():
        for b in range(4):
            bs, be = P + 4 * b, P + 4 * b + 4
            hi = r.tokens.shape[1] if mode == "prefix" else be
            kv = KVCache()
            model(canvases[4 * b], attention_mask=attn, cache=kv)
            for s in range(1, 4):
                x = canvases[4 * b + s]
                part = model(x[:, bs:hi], attention_mask=attn, cache=kv, start=bs)[:, : be - bs]
                full = Transformer.forward(model, x, attn)[:, bs:be]
                open_ = x[:, bs:be] == mask_id
                hits += int((part.argmax(-1) == full.argmax(-1))[open_].sum())
                total += int(open_.sum())
    return hits / total


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_bidirectional_cache_is_a_close_approximation(mode):
    """Bidirectional attention sees the stale K/V: not exact, but the proposals mostly agree,
    far more than with a cache that is wrong (measured: ~0.8 vs ~0.1 on these models)."""
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17, 18]]
    good = [
        _stepwise_agreement(make("bidirectional", seed=s, std=0.3), mode, prompts) for s in (0, 1)
    ]
    cfg = model_preset("tiny", vocab_size=48, max_seq_len=64, init_std=0.3)
    torch.manual_seed(0)
    broken = _stepwise_agreement(Broken(cfg).double().eval(), mode, prompts)
    assert min(good) >= 0.6 and broken < 0.5


def test_bidirectional_cache_runs_end_to_end():
    m = make("bidirectional", std=0.1)
    base = dict(gen_length=16, steps=16, block_length=4)
    ref = generate(m, PROMPTS, SampleConfig(**base), **ids(m))
    for cache in ("prefix", "dual"):
        r = generate(m, PROMPTS, SampleConfig(**base, cache=cache), **ids(m))
        assert r.nfe == ref.nfe and not bool((r.tokens == m.config.mask_id).any())
        agree = (r.tokens == ref.tokens).float().mean().item()
        assert agree >= 0.7


def test_cache_needs_a_kv_model_and_a_known_name():
    def plain(tokens, attention_mask=None):
        return torch.zeros(*tokens.shape, 16)

    with pytest.raises(
        UserError, match="cache 'prefix' needs a model with a KV cache.*supports: none"
    ):
        generate(
            plain,
            [5],
            SampleConfig(gen_length=4, steps=4, cache="prefix"),
            mask_id=0,
            pad_id=1,
            eos_id=2,
        )
    with pytest.raises(UserError, match="unknown cache 'lru'; choose one of dual, none, prefix"):
        generate(
            plain,
            [5],
            SampleConfig(gen_length=4, steps=4, cache="lru"),
            mask_id=0,
            pad_id=1,
            eos_id=2,
        )


# -- skipping steps that commit nothing ------------------------------------------------------------


def test_skip_empty_steps_saves_calls_not_tokens():
    m = Recording(model_preset("tiny", vocab_size=48, max_seq_len=64))
    m.eval()
    base = dict(
        gen_length=8, steps=12, block_length=4
    )  # 4 tokens over 6 steps per block: 2 empty steps each
    ref = generate(m, [5, 6], SampleConfig(**base), **ids(m), return_history=True)
    assert ref.nfe == 12
    m.calls.clear()
    seen: list[int] = []
    r = generate(
        m,
        [5, 6],
        SampleConfig(**base, skip_empty_steps=True),
        **ids(m),
        return_history=True,
        step_callback=lambda s, _: seen.append(s),
    )
    assert torch.equal(r.tokens, ref.tokens)
    assert r.nfe == 8 == len(m.calls) and r.steps == 12 and seen == list(range(1, 13))
    assert all(torch.equal(a, b) for a, b in zip(r.history, ref.history, strict=True))
    with_cache = generate(
        m, [5, 6], SampleConfig(**base, skip_empty_steps=True, cache="dual"), **ids(m)
    )
    assert with_cache.nfe == 8


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("policy", ["llada", "threshold"])
def test_bidirectional_cached_padded_batch_equals_rows_alone(cache, policy):
    """docs/sampling.md (Library): without masks in the prompts, every row of a padded batch
    recomputes the same columns as alone, so an approximate cache still gives each row its
    own tokens (a row's K/V and logits never depend on the others)."""
    m = make("bidirectional", std=0.5)
    conf = SampleConfig(gen_length=16, steps=16, block_length=4, policy=policy, threshold=0.3,
                        cache=cache)
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13, 14], [20]]
    batch = generate(m, prompts, conf, **ids(m))
    for i, p in enumerate(prompts):
        assert batch.gen_ids[i] == generate(m, [p], conf, **ids(m)).gen_ids[0]
