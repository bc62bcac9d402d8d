"""Block diffusion (BD3-LM): the objective's vectorised pass, its limits, and block sampling."""

import dataclasses

import pytest
import torch

from unmask.config import SampleConfig, TrainConfig, model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.objectives import (
    ObjectiveOptions,
    bd3lm,
    bd3lm_attention_bias,
    bd3lm_logits,
    get_objective,
    mdlm,
    objective_spec,
)
from unmask.sampling.blocks import sample_blocks
from unmask.schedules import LinearSchedule

V, L = 40, 16


def tiny(attention="block-causal", block_size=4, max_seq_len=32):
    cfg = model_preset(
        "tiny", vocab_size=V, attention=attention, block_size=block_size, max_seq_len=max_seq_len
    )
    torch.manual_seed(0)
    return Transformer(cfg).double().eval()


def opts():
    return ObjectiveOptions(schedule=LinearSchedule(1e-3))


def test_registered_by_name():
    assert get_objective("bd3lm") is bd3lm


def test_attention_mask_structure():
    bias = bd3lm_attention_bias(4, 2)[0, 0].int()
    expected = torch.tensor(
        [
            # noisy 0..3          clean 0..3
            [1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0, 0],
            [0, 0, 1, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 1, 0, 0],
            [0, 0, 0, 0, 1, 1, 0, 0],
            [0, 0, 0, 0, 1, 1, 0, 0],
            [0, 0, 0, 0, 1, 1, 1, 1],
            [0, 0, 0, 0, 1, 1, 1, 1],
        ]
    )
    assert torch.equal(bias, expected)


def test_block_size_one_is_next_token_prediction():
    # Noisy token i sees only itself and the clean tokens before it (strictly causal) ...
    bias = bd3lm_attention_bias(L, 1)[0, 0]
    assert torch.equal(bias[:L, :L], torch.eye(L, dtype=torch.bool))
    assert torch.equal(bias[:L, L:], torch.ones(L, L, dtype=torch.bool).tril(-1))
    assert torch.equal(bias[L:, L:], torch.ones(L, L, dtype=torch.bool).tril())
    # ... so with a real model the logits at a masked position depend only on x0[:i].
    model = tiny(block_size=1)
    x0 = torch.randint(4, V, (1, L))
    xt = torch.full_like(x0, model.config.mask_id)
    i = 9
    x0b = x0.clone()
    x0b[:, i:] = torch.randint(4, V, (1, L - i))
    a = bd3lm_logits(model, xt, x0, block_size=1)[:, : i + 1]
    b = bd3lm_logits(model, xt, x0b, block_size=1)[:, : i + 1]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_one_block_equals_mdlm():
    x0 = torch.randint(4, V, (6, L))
    bd = tiny(block_size=L)
    bi = (
        Transformer(dataclasses.replace(bd.config, attention="bidirectional", block_size=None))
        .double()
        .eval()
    )
    bi.load_state_dict(bd.state_dict())
    a = bd3lm(
        bd,
        bd.config,
        x0,
        attention_mask=None,
        generator=torch.Generator().manual_seed(3),
        options=opts(),
    )
    b = mdlm(
        bi,
        bi.config,
        x0,
        attention_mask=None,
        generator=torch.Generator().manual_seed(3),
        options=opts(),
    )
    torch.testing.assert_close(a.loss_sum, b.loss_sum)
    assert int(a.n_tokens) == int(b.n_tokens) == x0.numel()


def test_vectorised_pass_equals_block_by_block():
    model = tiny(block_size=4)
    bs = 4
    x0 = torch.randint(4, V, (3, L))
    xt = torch.where(torch.rand(3, L) < 0.5, torch.full_like(x0, model.config.mask_id), x0)
    fast = bd3lm_logits(model, xt, x0, block_size=bs)  # (B, L, V)
    for b in range(L // bs):
        seq = torch.cat([x0[:, : b * bs], xt[:, b * bs : (b + 1) * bs]], dim=1)
        slow = model(seq)[
            :, b * bs :
        ]  # block-causal attention: the block sees itself and x0 before it
        torch.testing.assert_close(fast[:, b * bs : (b + 1) * bs], slow, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("attention", ["causal", "bidirectional", "block-causal"])
def test_default_positions_equal_plain_forward(attention):
    model = tiny(attention=attention, block_size=4 if attention == "block-causal" else None)
    x = torch.randint(4, V, (2, L))
    torch.testing.assert_close(
        model(x, positions=torch.arange(L)), model(x), rtol=1e-12, atol=1e-12
    )


def test_per_block_times_and_gradient():
    model = tiny(block_size=4).float().train()
    x0 = torch.randint(4, V, (2, L))
    t = torch.tensor([[0.999, 0.0, 0.999, 0.0], [0.0, 0.0, 0.0, 0.0]])
    parts = bd3lm(
        model,
        model.config,
        x0,
        attention_mask=None,
        generator=torch.Generator().manual_seed(0),
        options=opts(),
        t=t,
    )
    assert parts.loss_sum.item() > 0
    parts.loss_sum.backward()
    assert model.embed.weight.grad is not None


def test_clear_errors():
    x0 = torch.randint(4, V, (2, L))
    gen = torch.Generator().manual_seed(0)
    bi = tiny(attention="bidirectional", block_size=None)
    with pytest.raises(UserError, match="block-causal"):
        bd3lm(bi, bi.config, x0, attention_mask=None, generator=gen, options=opts())
    with pytest.raises(UserError, match="divide"):
        bd3lm(
            tiny(block_size=5),
            tiny(block_size=5).config,
            x0,
            attention_mask=None,
            generator=gen,
            options=opts(),
        )


def test_train_config_block_size_must_divide_seq_len(tmp_path):
    from unmask.train import train

    cfg = TrainConfig(
        data=str(tmp_path / "nope"),
        out=str(tmp_path / "run"),
        objective="bd3lm",
        seq_len=16,
        block_size=5,
    )
    with pytest.raises(UserError, match="must divide seq_len"):
        train(cfg, progress=False)
    with pytest.raises(UserError, match="needs --block-size"):
        train(dataclasses.replace(cfg, out=str(tmp_path / "run2"), block_size=None), progress=False)


class EosAfter(torch.nn.Module):
    """Test double of a block-causal model: predicts token 7 everywhere, EOS from column ``k``
    on."""

    supports_kv_cache = False

    def __init__(self, k, eos_id=2):
        super().__init__()
        self.k, self.eos_id = k, eos_id
        self.config = model_preset("tiny", vocab_size=V, attention="block-causal", block_size=4)

    def forward(self, x, attention_mask=None):
        logits = torch.zeros(*x.shape, V)
        logits[..., 7] = 1.0
        logits[:, self.k :, 7] = 0.0
        logits[:, self.k :, self.eos_id] = 1.0
        return logits


def test_stops_after_the_block_with_eos():
    model = EosAfter(k=9)
    cfg = SampleConfig(gen_length=24, steps=24)
    res = sample_blocks(model, [5, 6, 7], cfg, mask_id=0, pad_id=1, eos_id=2)
    # prompt padded to 4 columns; EOS first appears in the block of columns 8..11 -> 2 blocks
    assert res.region == (4, 12)
    assert res.tokens.shape == (1, 12)
    assert res.texts(type("T", (), {"decode": staticmethod(lambda ids: ids)})()) == [
        [7, 7, 7, 7, 7]
    ]
    full = sample_blocks(model, [5, 6, 7], cfg, mask_id=0, pad_id=1, eos_id=None)
    assert full.tokens.shape == (1, 4 + 24)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cache_on_equals_cache_off(cache):
    model = tiny(block_size=4).float()
    prompts = [[5, 6, 7, 8, 9], [10, 11]]
    cfg = SampleConfig(gen_length=12, steps=12, policy="llada")
    off = sample_blocks(model, prompts, cfg, mask_id=0, pad_id=1, eos_id=None)
    on = sample_blocks(
        model, prompts, dataclasses.replace(cfg, cache=cache), mask_id=0, pad_id=1, eos_id=None
    )
    assert torch.equal(off.tokens, on.tokens)
    assert on.nfe == off.nfe == 12
    thr = dataclasses.replace(cfg, policy="threshold", threshold=0.05)
    assert torch.equal(
        sample_blocks(model, prompts, thr, mask_id=0, pad_id=1, eos_id=None).tokens,
        sample_blocks(
            model, prompts, dataclasses.replace(thr, cache=cache), mask_id=0, pad_id=1, eos_id=None
        ).tokens,
    )


def test_sampling_errors():
    model = tiny(block_size=4).float()
    with pytest.raises(UserError, match="block_length"):
        sample_blocks(
            model,
            [5],
            SampleConfig(gen_length=8, steps=8, block_length=2),
            mask_id=0,
            pad_id=1,
            eos_id=2,
        )
    with pytest.raises(UserError, match=r"block_size \(4\); try gen_length 4 or 8"):
        sample_blocks(
            model, [5], SampleConfig(gen_length=6, steps=6), mask_id=0, pad_id=1, eos_id=2
        )
    with pytest.raises(UserError, match="block-causal"):
        sample_blocks(
            tiny(attention="bidirectional", block_size=None),
            [5],
            SampleConfig(gen_length=8, steps=8),
            mask_id=0,
            pad_id=1,
            eos_id=2,
        )


def test_cli_generate_uses_block_sampler(tmp_path, capsys):
    """`unmask generate` on a block-causal checkpoint goes block by block (BD3-LM)."""
    import json

    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset(
        "tiny",
        vocab_size=tok.vocab_size,
        attention="block-causal",
        block_size=4,
        max_seq_len=32,
        **tok.special_ids(),
    )
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "bd", model=Transformer(cfg), tokenizer=tok)
    args = [
        "generate",
        "--model",
        str(tmp_path / "bd"),
        "abc",
        "--gen-length",
        "8",
        "--steps",
        "8",
        "--json",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nfe"] > 0 and len(out["results"][0]["tokens"]) <= 8


def test_a_time_conditioned_model_is_refused_with_the_reason():
    """A model conditioned on one noise level per row cannot learn BD3-LM's per-block levels:
    read off the canvas, the level of the ``[x_t ; x_0]`` pass was the masked share of both
    halves (0.45 for a row 90% masked), which no sampling canvas shows. Refused by the loss,
    before a fresh run (``--model-set``) and for an ``--init`` model; ``sigma_input=zero``
    (conditioning off) still trains."""
    read = {"time_conditioning": True, "sigma_input": "masked_fraction"}
    cfg = model_preset("tiny", vocab_size=V, attention="block-causal", block_size=4, **read)
    torch.manual_seed(0)
    model = Transformer(cfg)
    x0 = torch.randint(4, V, (2, L))
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(UserError, match="its own noise level.*sigma_input='masked_fraction'"):
        bd3lm(model, cfg, x0, attention_mask=None, generator=gen, options=opts())
    spec = objective_spec("bd3lm")
    train = TrainConfig(objective="bd3lm", block_size=4, seq_len=L, model_overrides=read)
    with pytest.raises(UserError, match="its own noise level"):
        spec.validate(train)
    with pytest.raises(UserError, match="its own noise level"):  # not "add masked_fraction"
        spec.validate(dataclasses.replace(train, model_overrides={"time_conditioning": True}))
    assert "its own noise level" in spec.mismatch(cfg, train)
    zero = dataclasses.replace(cfg, sigma_input="zero")
    spec.validate(dataclasses.replace(train, model_overrides={**read, "sigma_input": "zero"}))
    assert spec.mismatch(zero, train) is None
    parts = bd3lm(Transformer(zero), zero, x0, attention_mask=None, generator=gen, options=opts())
    assert float(parts.loss_sum.detach()) > 0


@pytest.mark.parametrize("schedule", ["linear", "cosine", "geometric"])
def test_loss_equals_a_block_by_block_loop(schedule):
    """The whole loss against a plain loop: block b of row r, masked where the row's draws
    fall below p_mask(t_rb), run alone after the clean blocks before it; the cross-entropy of
    its masked tokens times the schedule's weight -α'(t)/p_mask(t), summed, over B·L tokens."""
    from unmask.schedules import get_schedule

    model, bs = tiny(block_size=4), 4
    sched = get_schedule(schedule, eps=1e-3)
    B, n = 2, L // bs
    x0 = torch.randint(4, V, (B, L))
    t = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.95, 0.7, 0.6]], dtype=torch.float64)
    parts = bd3lm(model, model.config, x0, attention_mask=None,
                  generator=torch.Generator().manual_seed(7),
                  options=ObjectiveOptions(schedule=sched), t=t)
    u = torch.rand(x0.shape, generator=torch.Generator().manual_seed(7))  # the loss's draws
    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for r in range(B):
            for b in range(n):
                tb = t[r, b]
                p = (1 - 1e-3) * (1 - float(sched.alpha(tb))) + 1e-3
                w = -float(sched.dalpha(tb)) / p
                block = x0[r, b * bs:(b + 1) * bs]
                hide = u[r, b * bs:(b + 1) * bs] < p
                xt = torch.where(hide, model.config.mask_id, block)
                seq = torch.cat([x0[r, :b * bs], xt])[None]
                logp = torch.log_softmax(model(seq)[0, b * bs:], -1)  # (bs, V)
                total -= w * logp[hide, block[hide]].sum()
    assert int(parts.n_tokens) == B * L
    torch.testing.assert_close(parts.loss_sum.detach().double(), total, rtol=1e-9, atol=1e-9)


def test_a_later_block_never_reaches_an_earlier_blocks_logits():
    """Behaviour, not the mask's picture: new tokens in later blocks (noisy and clean halves
    alike) leave every earlier block's logits as they were, in the training pass and in the
    block-causal forward that sampling runs; a noisy block never reads its own clean copy;
    and a block does read the clean blocks before it (the test can see a leak either way)."""
    model = tiny()
    g = torch.Generator().manual_seed(3)
    x0 = torch.randint(4, V - 1, (2, L), generator=g)
    xt = torch.where(torch.rand(2, L, generator=g) < 0.5, model.config.mask_id, x0)
    later = torch.randint(4, V - 1, (2, L), generator=g)
    with torch.no_grad():
        base = bd3lm_logits(model, xt, x0, block_size=4)  # (2, L, V)
        plain = model(x0)
        for b in range(1, L // 4):
            cut = 4 * b
            x0b = torch.cat([x0[:, :cut], later[:, cut:]], dim=1)
            xtb = torch.cat([xt[:, :cut], later[:, cut:]], dim=1)
            got = bd3lm_logits(model, xtb, x0b, block_size=4)
            torch.testing.assert_close(got[:, :cut], base[:, :cut], rtol=0, atol=1e-12)
            assert not torch.allclose(got[:, cut:], base[:, cut:])
            torch.testing.assert_close(model(x0b)[:, :cut], plain[:, :cut], rtol=0, atol=1e-12)
        own = x0.clone()
        own[:, 4:8] = later[:, 4:8]  # block 1's clean copy only
        got = bd3lm_logits(model, xt, own, block_size=4)
        torch.testing.assert_close(got[:, :8], base[:, :8], rtol=0, atol=1e-12)
        assert not torch.allclose(got[:, 8:], base[:, 8:])  # blocks 2, 3 condition on it
