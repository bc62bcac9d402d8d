"""Invariants of the commit loop (``llada``) and block decoding (``bd3lm``): what is reported
per step matches the result, options hold on every path, sampling draws from the model."""

from __future__ import annotations

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.sampling import generate
from unmask.sampling.blocks import BlockRun
from unmask.sampling.loop import Denoiser, step_together

MASK, PAD, EOS = 0, 1, 2


def block_causal(seed: int = 0) -> Transformer:
    cfg = model_preset("tiny", vocab_size=48, max_seq_len=64, attention="block-causal",
                       block_size=4, init_std=0.5)  # fmt: skip
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


class Counted:
    """A model wrapper that counts its calls (and keeps the cache interface)."""

    supports_kv_cache = True

    def __init__(self, model: Transformer, eos_boost_every: int = 0) -> None:
        self.model, self.config, self.calls = model, model.config, 0
        self.eos_boost_every = eos_boost_every

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        out = self.model(*args, **kwargs)
        self.calls += 1
        if self.eos_boost_every and self.calls % self.eos_boost_every == 0:
            out = out.clone()
            out[..., self.config.eos_id] += 30.0  # EOS is the sure argmax everywhere
        return out

    def parameters(self):
        return self.model.parameters()


@pytest.mark.parametrize("edit", [None, 0.0, 0.5])
def test_block_edits_report_every_step_as_it_ends(edit):
    """With LLaDA 2.1 editing, the edit-only steps count as steps and NFE: ``history`` and
    ``step_callback`` get each of them once, after the step's edits, numbered 1..steps, and
    they agree with ``on_view`` and with the final canvas."""
    model = Counted(block_causal())
    c = model.config
    calls, views = [], []
    config = SampleConfig(gen_length=8, steps=8, policy="threshold", threshold=0.3,
                          edit_threshold=edit, max_post_steps=3)  # fmt: skip
    run = BlockRun(
        model, [[5, 6, 7]], config, mask_id=c.mask_id, pad_id=c.pad_id, eos_id=None,
        return_history=True, step_callback=lambda s, t: calls.append((s, t.clone())),
        on_view=lambda s, v: views.append((s, v.clone())),
    )  # fmt: skip
    res = run.run()
    assert res.nfe == model.calls
    if edit is not None:
        assert res.steps > 2 * 2  # edit-only steps ran (two blocks, each more than 2 steps)
    assert [s for s, _ in calls] == [s for s, _ in views] == list(range(1, res.steps + 1))
    assert res.history is not None and len(res.history) == res.steps
    for h, (_, t), (_, v) in zip(res.history, calls, views, strict=True):
        assert torch.equal(h, t)
        grown = h[:, res.region[0] :]
        assert torch.equal(grown, v[:, : grown.shape[1]])
    assert torch.equal(res.history[-1], res.tokens)


@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_edits_never_write_a_forbidden_eos(cfg_scale):
    """``forbid_eos`` holds for edits as for commits: a model whose every other call is sure
    of EOS everywhere would otherwise have its committed tokens edited into EOS."""
    model = Counted(block_causal(), eos_boost_every=2)
    c = model.config
    config = SampleConfig(gen_length=8, steps=8, forbid_eos=True, edit_threshold=0.5,
                          max_post_steps=4, cfg_scale=cfg_scale)  # fmt: skip
    res = BlockRun(model, [[5, 6, 7]], config, mask_id=c.mask_id, pad_id=c.pad_id,
                   eos_id=c.eos_id).run()  # fmt: skip
    assert len(res.gen_ids[0]) == 8
    assert c.eos_id not in res.gen_ids[0]
    assert c.mask_id not in res.gen_ids[0]


class PositionOracle:
    """Logits that depend on the (right-aligned) position only: each row's exact marginal is
    known in closed form."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table  # (L, V)

    def __call__(self, tokens: torch.Tensor, attention_mask=None) -> torch.Tensor:
        B, L = tokens.shape
        return self.table[-L:].expand(B, L, -1).clone()


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_samples_follow_the_models_distribution(temperature):
    """At temperature T every committed token is a draw from softmax(logits / T) ([MASK]
    excluded): 3000 rows with random remasking (commit order independent of the tokens) match
    the exact marginals within a total variation of 0.035 per position (measured: at most
    0.012; noise scaled by T² instead of T misses by 0.063 at T = 0.5, noise scaled by T / 2
    by 0.13, the Gumbel noise without its log by 0.16)."""
    V, P, G, N = 6, 2, 3, 3000
    table = torch.randn(P + G, V, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    table = 1.5 * table
    model = PositionOracle(table)
    config = SampleConfig(gen_length=G, steps=G, temperature=temperature, remasking="random",
                          seed=1)  # fmt: skip
    res = generate(model, [[3, 4]] * N, config, mask_id=MASK, pad_id=PAD, eos_id=None)
    got = torch.stack([torch.bincount(res.tokens[:, P + i], minlength=V) for i in range(G)])
    got = got.double() / N  # (G, V)
    want = table[P:].clone()
    want[:, MASK] = float("-inf")
    want = torch.softmax(want / temperature, dim=-1)  # (G, V)
    tv = 0.5 * (got - want).abs().sum(dim=1)
    assert float(tv.max()) < 0.035, tv


def test_seeded_runs_stepped_together_sample_as_alone():
    """At temperature 1 a seeded run's tokens depend on nothing but its own batch: stepped
    together with another run (continuous batching) it draws what it draws alone."""
    cfg = model_preset("tiny", vocab_size=48, max_seq_len=64, init_std=0.5)
    torch.manual_seed(0)
    model = Transformer(cfg).double().eval()
    ids = dict(mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=cfg.eos_id)
    a = SampleConfig(gen_length=8, steps=8, temperature=1.0, seed=3)
    b = SampleConfig(gen_length=4, steps=4, temperature=1.0, seed=4, remasking="random")
    alone = [Denoiser.for_prompts(model, p, c, **ids).run() for p, c in
             (([5, 6, 7, 8, 9], a), ([10, 11], b))]  # fmt: skip
    runs = [Denoiser.for_prompts(model, p, c, **ids) for p, c in
            (([5, 6, 7, 8, 9], a), ([10, 11], b))]  # fmt: skip
    while not all(r.done for r in runs):
        step_together(runs)
    for r, want in zip(runs, alone, strict=True):
        assert r.result().gen_ids == want.gen_ids


@pytest.mark.parametrize("policy", ["threshold", "entropy"])
def test_block_decoding_with_a_dynamic_policy_takes_steps_as_a_bound(policy):
    """``steps`` bounds the dynamic policies (docs/sampling.md; it was not used until session
    27): at one step per token or more it never binds, so the tokens are those of any larger
    ``steps``; fewer steps than blocks is refused for ``bd3lm`` as for ``llada`` (each block
    takes a step); steps that are no multiple of the blocks are spread over them."""
    model = block_causal()
    c = model.config
    ids = dict(mask_id=c.mask_id, pad_id=c.pad_id, eos_id=None)
    exact = BlockRun(model, [[5, 6, 7]], SampleConfig(gen_length=16, steps=16, policy=policy),
                     **ids).run()  # fmt: skip
    many = BlockRun(model, [[5, 6, 7]], SampleConfig(gen_length=16, steps=64, policy=policy),
                    **ids).run()  # fmt: skip
    assert torch.equal(exact.tokens, many.tokens) and exact.nfe == many.nfe
    with pytest.raises(UserError, match=r"^steps \(2\) must be at least the number of blocks"):
        BlockRun(model, [[5, 6, 7]], SampleConfig(gen_length=16, steps=2, policy=policy), **ids)
    bound = BlockRun(model, [[5, 6, 7]], SampleConfig(gen_length=16, steps=5, policy=policy),
                     **ids).run()  # fmt: skip
    assert bound.nfe <= 5 and c.mask_id not in bound.tokens.tolist()[0]


def test_the_live_step_count_has_no_total_when_edits_add_steps(monkeypatch):
    """With token editing (``edit_threshold``) edit-only steps come on top of ``steps``: the
    live view showed "11/8"; it counts without a total there, as for the dynamic policies."""
    import unmask.sampling as sampling
    from unmask.commands.sample_options import make_live

    seen = []

    class Recording:
        enabled = True

        def __init__(self, tok, *, start, total_steps):
            seen.append(total_steps)

    monkeypatch.setattr(sampling, "LiveView", Recording)
    make_live(None, SampleConfig(steps=8), "bd3lm")
    make_live(None, SampleConfig(steps=8, edit_threshold=0.9), "bd3lm")
    make_live(None, SampleConfig(steps=8, edit_threshold=0.9), "llada")
    assert seen == [8, None, None]
