import math

import pytest
import torch

from unmask.config import ModelConfig, model_preset
from unmask.errors import UserError
from unmask.model import Transformer


def make(cfg, seed=0):
    torch.manual_seed(seed)
    return Transformer(cfg).eval()


def test_shapes_and_param_count(tiny_config):
    m = make(tiny_config)
    x = torch.randint(4, tiny_config.vocab_size, (3, 10))
    assert m(x).shape == (3, 10, tiny_config.vocab_size)
    assert sum(p.numel() for p in m.parameters()) == tiny_config.num_params()


@pytest.mark.parametrize("attention", ["bidirectional", "causal", "block-causal"])
def test_padded_batch_matches_rows_alone(tiny_config, attention):
    cfg = model_preset("tiny", vocab_size=48, max_seq_len=32, attention=attention, block_size=4)
    m = make(cfg)
    a = torch.randint(4, 48, (1, 12))
    b = torch.randint(4, 48, (1, 7))
    # right padding for causal-style models, left padding for bidirectional
    batch = torch.full((2, 12), cfg.pad_id)
    batch[0] = a
    batch[1, :7] = b
    mask = batch != cfg.pad_id
    mask[0] = True
    out = m(batch, attention_mask=mask)
    torch.testing.assert_close(out[0], m(a)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, :7], m(b)[0], atol=1e-5, rtol=1e-5)


def test_bidirectional_left_padding(tiny_config):
    m = make(tiny_config)
    b = torch.randint(4, 48, (1, 7))
    batch = torch.full((1, 12), tiny_config.pad_id)
    batch[0, 5:] = b
    mask = batch != tiny_config.pad_id
    out = m(batch, attention_mask=mask)
    # RoPE is relative, so a left-shifted row sees the same relative positions.
    torch.testing.assert_close(out[0, 5:], m(b)[0], atol=1e-5, rtol=1e-5)


def test_causal_does_not_see_future():
    cfg = model_preset("tiny", vocab_size=48, attention="causal")
    m = make(cfg)
    x = torch.randint(4, 48, (1, 10))
    y = x.clone()
    y[0, 6:] = 5
    torch.testing.assert_close(m(x)[0, :6], m(y)[0, :6])
    assert not torch.allclose(m(x)[0, 6:], m(y)[0, 6:])


def test_bidirectional_sees_future(tiny_config):
    m = make(tiny_config)
    x = torch.randint(4, 48, (1, 10))
    y = x.clone()
    y[0, 9] = (x[0, 9] + 1) % 48
    assert not torch.allclose(m(x)[0, 0], m(y)[0, 0])


def test_block_causal_structure():
    cfg = model_preset("tiny", vocab_size=48, attention="block-causal", block_size=4)
    m = make(cfg)
    x = torch.randint(4, 48, (1, 12))
    y = x.clone()
    y[0, 9] = (x[0, 9] + 1) % 48  # third block
    torch.testing.assert_close(m(x)[0, :8], m(y)[0, :8])  # earlier blocks unaffected
    assert not torch.allclose(m(x)[0, 8], m(y)[0, 8])  # same block sees it


def test_block_size_one_equals_causal():
    causal = make(model_preset("tiny", vocab_size=48, attention="causal"))
    block = make(model_preset("tiny", vocab_size=48, attention="block-causal", block_size=1))
    x = torch.randint(4, 48, (2, 10))
    torch.testing.assert_close(causal(x), block(x), atol=1e-5, rtol=1e-5)


def test_tied_embeddings_and_gqa():
    cfg = model_preset("tiny", vocab_size=48)
    m = make(cfg)
    assert m.lm_head.weight is m.embed.weight
    assert m.layers[0].attn.k_proj.weight.shape[0] == cfg.n_kv_heads * cfg.head_dim
    untied = make(model_preset("tiny", vocab_size=48, tie_embeddings=False))
    assert untied.lm_head.weight is not untied.embed.weight


def test_too_long_sequence_raises(tiny_config):
    m = make(tiny_config)
    with pytest.raises(ValueError, match="max_seq_len"):
        m(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(d_model=30, n_heads=4), "divisible"),
        (dict(attention="sideways"), "attention"),
        (dict(vocab_size=10, mask_id=12), "outside"),
        (dict(attention="block-causal"), "block_size"),
    ],
)
def test_bad_config(kwargs, msg):
    with pytest.raises(UserError, match=msg):
        ModelConfig(**kwargs)


def test_presets_sizes():
    demo = model_preset("demo", vocab_size=4096)
    assert 3e6 <= demo.num_params() <= 8e6
    small = model_preset("small", vocab_size=8192)
    assert 15e6 <= small.num_params() <= 40e6
    base = model_preset("base", vocab_size=32000)
    assert 90e6 <= base.num_params() <= 160e6


def _reference_logits(m, tokens, attention_mask=None):
    """The transformer straight from its formulas, one query, head and key at a time, in
    float64: RMSNorm, rotary embeddings on pairs (i, i + hd/2) at angle p·theta^(-2i/rd) (the
    first rd = rotary_dim dimensions), per-head RMSNorm of q and k (qk_norm), query head h
    reading key/value head h // (H / H_kv), a softmax over the keys the attention mode and the
    padding allow (a padded query sees itself), SwiGLU, tied or untied head -> (B, L, V)."""
    cfg = m.config
    B, L = tokens.shape
    H, Hkv, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    rd = cfg.rotary_dim or hd

    def rms(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.norm_eps) * w

    def rot(v, p):
        out = v.clone()
        for i in range(rd // 2):
            c, s = math.cos(p * cfg.rope_theta ** (-2 * i / rd)), math.sin(
                p * cfg.rope_theta ** (-2 * i / rd))
            out[i] = v[i] * c - v[i + rd // 2] * s
            out[i + rd // 2] = v[i + rd // 2] * c + v[i] * s
        return out

    def sees(b, i, j):
        if attention_mask is not None and not attention_mask[b, j] and i != j:
            return False
        if cfg.attention == "causal":
            return j <= i
        if cfg.attention == "block-causal":
            return j // cfg.block_size <= i // cfg.block_size
        return True

    x = m.embed.weight[tokens]  # (B, L, D)
    for layer in m.layers:
        a, f = layer.attn, layer.mlp
        h = rms(x, layer.attn_norm.weight)
        q = (h @ a.q_proj.weight.T).view(B, L, H, hd)
        k = (h @ a.k_proj.weight.T).view(B, L, Hkv, hd)
        v = (h @ a.v_proj.weight.T).view(B, L, Hkv, hd)
        if cfg.qk_norm:
            q, k = rms(q, a.q_norm.weight), rms(k, a.k_norm.weight)
        y = torch.zeros(B, L, H, hd, dtype=x.dtype)
        for b in range(B):
            for head in range(H):
                g = head // (H // Hkv)
                keys = [rot(k[b, j, g], j) for j in range(L)]
                for i in range(L):
                    qi = rot(q[b, i, head], i)
                    s = torch.stack([qi @ keys[j] / math.sqrt(hd) if sees(b, i, j)
                                     else torch.tensor(-math.inf, dtype=x.dtype)
                                     for j in range(L)])
                    y[b, i, head] = torch.softmax(s, 0) @ v[b, :, g]
        x = x + y.reshape(B, L, H * hd) @ a.o_proj.weight.T
        h = rms(x, layer.mlp_norm.weight)
        gate = torch.nn.functional.silu(h @ f.gate_proj.weight.T)
        x = x + (gate * (h @ f.up_proj.weight.T)) @ f.down_proj.weight.T
    return rms(x, m.norm.weight) @ m.lm_head.weight.T


@pytest.mark.parametrize(
    "attention, extra",
    [
        ("bidirectional", {}),
        ("causal", {"n_kv_heads": 1}),
        ("block-causal", {"block_size": 3, "tie_embeddings": False}),
        ("bidirectional", {"qk_norm": True, "rotary_dim": 4, "n_kv_heads": 4}),
    ],
)
def test_forward_equals_the_formulas_in_float64(attention, extra):
    """SDPA with grouped-query heads, RoPE, the attention modes and padding against a plain
    reference, to float64 precision: a float64 model computes in float64 throughout (its norms
    and rotary embeddings ran in float32, 5e-8 off, so float64 checks elsewhere compared two
    float32-rounded computations)."""
    cfg = model_preset("tiny", vocab_size=48, attention=attention, rope_theta=100.0, **extra)
    m = make(cfg).double()
    x = torch.randint(4, 48, (2, 7))
    am = torch.ones(2, 7, dtype=torch.bool)
    am[1, 5:] = False
    with torch.no_grad():
        torch.testing.assert_close(m(x), _reference_logits(m, x), rtol=0, atol=1e-12)
        got, want = m(x, attention_mask=am), _reference_logits(m, x, am)
    torch.testing.assert_close(got[am], want[am], rtol=0, atol=1e-12)


def test_half_precision_norms_rope_and_loss_compute_in_float32():
    """fp16 activations whose squares overflow fp16 (300² > 65504) still normalise: RMSNorm and
    LayerNorm compute in float32, as do rotary embeddings, and the losses' cross-entropy; the
    outputs keep the input's dtype."""
    from unmask.model import LayerNorm, RMSNorm, apply_rope, rope_cache
    from unmask.objectives import ObjectiveOptions, mdlm
    from unmask.schedules import LinearSchedule

    x = torch.full((2, 8), 300.0, dtype=torch.float16)
    x[:, ::2] = -300.0
    for norm in (RMSNorm(8, 1e-5), LayerNorm(8, 1e-5)):
        y = norm.half()(x)
        assert y.dtype == torch.float16 and torch.isfinite(y).all()
        torch.testing.assert_close(y.float(), norm.float()(x.float()), rtol=1e-3, atol=1e-3)
    cos, sin = rope_cache(5, 8, 10000.0, torch.device("cpu"))
    assert cos.dtype == torch.float32
    q = torch.randn(1, 2, 5, 8).half()
    torch.testing.assert_close(apply_rope(q, cos, sin).float(), apply_rope(q.float(), cos, sin),
                               rtol=1e-3, atol=1e-3)

    class Half(torch.nn.Module):  # fp16 logits far apart: fp16 softmax sums would overflow
        def forward(self, tokens, attention_mask=None):
            out = torch.zeros(*tokens.shape, 48, dtype=torch.float16)
            out[..., 5] = 60000.0
            return out

    cfg = model_preset("tiny", vocab_size=48)
    x0 = torch.full((2, 8), 5)
    parts = mdlm(Half(), cfg, x0, attention_mask=None, generator=torch.Generator(),
                 options=ObjectiveOptions(schedule=LinearSchedule()), t=torch.full((2,), 0.9))
    assert parts.loss_sum.dtype == torch.float32 and float(parts.loss_sum) == 0.0
