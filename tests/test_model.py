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
