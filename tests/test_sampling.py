"""The sampler loop: LLaDA semantics, determinism, padding, guidance, live view, CLI."""

from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.loaded import Loaded
from unmask.sampling import (
    POLICIES,
    CommitPolicy,
    GenerateResult,
    LiveView,
    StepState,
    add_gumbel_noise,
    cut_at_eos,
    generate,
    num_transfer_tokens,
    shift_logits,
)

MASK, PAD, EOS = 0, 1, 2
IDS = dict(mask_id=MASK, pad_id=PAD, eos_id=EOS)
SGR = re.compile(r"\x1b\[[0-9;]*m")


# -- test doubles -------------------------------------------------------------------------


def _real_positions(tokens: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, L) position of each token counted over real tokens only (left padding ignored)."""
    if attention_mask is None:
        return torch.arange(tokens.shape[1]).expand_as(tokens)
    return (attention_mask.long().cumsum(1) - 1).clamp_min(0)


class FixedModel:
    """Position i (counted over real tokens) proposes ``targets[i]`` with probability ``conf[i]``.

    Logits do not depend on the canvas, so the commit order can be written by hand.
    """

    def __init__(
        self,
        targets: list[int],
        conf: list[float],
        vocab: int = 16,
        config=None,
        runner_up: int = 15,
    ) -> None:
        self.vocab = vocab
        table = torch.empty(len(targets), vocab, dtype=torch.float64)
        for i, (t, c) in enumerate(zip(targets, conf, strict=True)):
            # The rest of the mass: half on ``runner_up`` (so forbidding t has a clear winner).
            p = torch.full((vocab,), (1 - c) / 2 / (vocab - 2), dtype=torch.float64)
            p[runner_up] = (1 - c) / 2
            p[t] = c
            table[i] = p.log()
        self.table = table
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        if config is not None:
            self.config = config

    @classmethod
    def gen(cls, prompt_len: int, targets: list[int], conf: list[float], **kw) -> FixedModel:
        """Prompt positions propose token 4 (conf 0.99 — they are never candidates unless
        masked)."""
        return cls([4] * prompt_len + targets, [0.99] * prompt_len + conf, **kw)

    def __call__(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.calls.append(
            (tokens.clone(), None if attention_mask is None else attention_mask.clone())
        )
        return self.table[_real_positions(tokens, attention_mask)]  # (B, L, V)


class MixModel:
    """A random fixed embedding + mixing "model" whose logits depend on the whole canvas."""

    def __init__(
        self, vocab: int = 12, d: int = 8, max_len: int = 64, seed: int = 0, scale: float = 3.0
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        kw = dict(generator=g, dtype=torch.float64)
        self.emb = torch.randn(vocab, d, **kw)
        self.pos = torch.randn(max_len, d, **kw)
        self.W = torch.randn(d, d, **kw) / d**0.5
        self.out = torch.randn(d, vocab, **kw) * scale / d**0.5
        self.calls = 0

    def __call__(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.calls += 1
        real = (
            torch.ones_like(tokens, dtype=torch.bool) if attention_mask is None else attention_mask
        )
        h = self.emb[tokens] + self.pos[_real_positions(tokens, attention_mask)]  # (B, L, d)
        m = real.unsqueeze(-1).to(h.dtype)
        ctx = (torch.tanh(h @ self.W) * m).sum(1, keepdim=True) / m.sum(
            1, keepdim=True
        )  # (B, 1, d)
        logits = (h + ctx) @ self.out  # (B, L, V)
        logits[..., MASK] = -1e4  # like a trained model: [MASK] is never a target
        return logits


def commit_steps(result: GenerateResult, row: int = 0) -> list[int]:
    """For each generated position, the (0-based) step at which it was committed."""
    start, end = result.region
    out = []
    for col in range(start, end):
        out.append(next(s for s, canvas in enumerate(result.history) if canvas[row, col] != MASK))
    return out


# -- an independent re-implementation of LLaDA's reference generate() ------------------------


def llada_reference(
    model,
    prompt,
    *,
    steps,
    gen_length,
    block_length,
    temperature=0.0,
    cfg_scale=0.0,
    remasking="low_confidence",
    mask_id=MASK,
):
    """ML-GSAI/LLaDA generate.py, written out plainly (model returns logits directly)."""
    P = prompt.shape[1]
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    prompt_index = x != mask_id
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    for nb in range(num_blocks):
        block_masks = (x[:, P + nb * block_length : P + (nb + 1) * block_length] == mask_id).sum(1)
        base, rem = block_masks // steps_per_block, block_masks % steps_per_block
        counts = torch.zeros(1, steps_per_block, dtype=torch.long) + base[:, None]
        counts[0, : int(rem[0])] += 1
        for i in range(steps_per_block):
            mask_index = x == mask_id
            if cfg_scale > 0:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                logits, un_logits = torch.chunk(model(torch.cat([x, un_x])), 2, dim=0)
                logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
            else:
                logits = model(x)
            if temperature == 0:
                noisy = logits
            else:
                lg = logits.to(torch.float64)
                noise = torch.rand_like(lg, dtype=torch.float64)
                noisy = lg.exp() / (-torch.log(noise)) ** temperature
            x0 = noisy.argmax(-1)
            if remasking == "low_confidence":
                p = F.softmax(logits.to(torch.float64), dim=-1)
                x0_p = torch.gather(p, -1, x0[..., None])[..., 0]
            else:
                x0_p = torch.rand(x0.shape)
            x0_p[:, P + (nb + 1) * block_length :] = float("-inf")
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, float("-inf"))
            transfer = torch.zeros_like(x0, dtype=torch.bool)
            _, idx = torch.topk(confidence[0], k=int(counts[0, i]))
            transfer[0, idx] = True
            x[transfer] = x0[transfer]
    return x


# -- schedule ---------------------------------------------------------------------------------


def test_count_schedule_10_over_4():
    block = torch.zeros(2, 12, dtype=torch.bool)
    block[0, :10] = True
    block[1, :5] = True
    counts = num_transfer_tokens(block, 4)
    assert counts.tolist() == [[3, 3, 2, 2], [2, 1, 1, 1]]
    assert num_transfer_tokens(block[:1], 12).tolist() == [[1] * 10 + [0, 0]]


# -- commit order -----------------------------------------------------------------------------


CONF = [0.9, 0.5, 0.7, 0.6]


def test_commit_order_one_per_step():
    model = FixedModel.gen(1, [6, 7, 8, 9], CONF)
    cfg = SampleConfig(gen_length=4, steps=4)
    r = generate(model, [5], cfg, **IDS, return_history=True)
    assert r.gen_ids == [[6, 7, 8, 9]]
    assert commit_steps(r) == [0, 3, 1, 2]  # positions committed in the order 0, 2, 3, 1


def test_commit_order_two_per_step():
    model = FixedModel.gen(1, [6, 7, 8, 9], CONF)
    r = generate(model, [5], SampleConfig(gen_length=4, steps=2), **IDS, return_history=True)
    assert commit_steps(r) == [0, 1, 0, 1]  # {0, 2} then {1, 3}


def test_more_steps_than_tokens():
    model = FixedModel.gen(1, [6, 7, 8, 9], CONF)
    r = generate(model, [5], SampleConfig(gen_length=4, steps=6), **IDS, return_history=True)
    assert r.nfe == 6 and len(r.history) == 6
    assert commit_steps(r) == [0, 3, 1, 2]  # steps 4 and 5 commit nothing
    assert r.gen_ids == [[6, 7, 8, 9]]


def test_blocks_never_commit_past_block_end():
    # The second block is the most confident, yet the first block goes first.
    conf = [0.3, 0.4, 0.5, 0.6, 0.95, 0.94, 0.93, 0.92]
    model = FixedModel.gen(2, list(range(4, 12)), conf)
    r = generate(
        model,
        [5, 5],
        SampleConfig(gen_length=8, steps=4, block_length=4),
        **IDS,
        return_history=True,
    )
    assert commit_steps(r) == [1, 1, 0, 0, 2, 2, 3, 3]
    r1 = generate(model, [5, 5], SampleConfig(gen_length=8, steps=4), **IDS, return_history=True)
    assert commit_steps(r1) == [3, 3, 2, 2, 0, 0, 1, 1]  # one block: pure diffusion


def test_one_block_equals_no_block():
    model = MixModel(seed=3)
    a = generate(
        model,
        [5, 6, 7],
        SampleConfig(gen_length=8, steps=8, block_length=None),
        **IDS,
        return_history=True,
    )
    b = generate(
        model,
        [5, 6, 7],
        SampleConfig(gen_length=8, steps=8, block_length=8),
        **IDS,
        return_history=True,
    )
    assert torch.equal(a.tokens, b.tokens)
    assert all(torch.equal(x, y) for x, y in zip(a.history, b.history, strict=True))


def test_masks_inside_prompt_are_filled_as_the_reference_with_prompt_masks_reference():
    # LLaDA's reference: prompt position 1 is a mask with the highest confidence: it takes
    # the first step's slot, budgeted for the generated part only.
    ref = dict(prompt_masks="reference")
    model = FixedModel([4, 11, 4, 6, 7], [0.99, 0.98, 0.99, 0.6, 0.5])
    r = generate(
        model, [5, MASK, 5], SampleConfig(gen_length=2, steps=2, **ref), **IDS, return_history=True
    )
    assert r.tokens.tolist() == [[5, 11, 5, 6, MASK]]  # the budget (2) was spent on 11 and 6
    assert r.history[0].tolist() == [[5, 11, 5, MASK, MASK]]
    # A less confident prompt mask loses its slot to the generated positions.
    model2 = FixedModel([4, 11, 4, 6, 7], [0.99, 0.2, 0.99, 0.6, 0.5])
    r2 = generate(model2, [5, MASK, 5], SampleConfig(gen_length=2, steps=2, **ref), **IDS)
    assert r2.tokens.tolist() == [[5, MASK, 5, 6, 7]]
    want = llada_reference(
        model2, torch.tensor([[5, MASK, 5]]), steps=2, gen_length=2, block_length=2
    )
    assert torch.equal(r2.tokens, want)


@pytest.mark.parametrize("confidences", [[0.99, 0.98, 0.99, 0.6, 0.5], [0.99, 0.2, 0.99, 0.6, 0.5]])
@pytest.mark.parametrize("block_length", [None, 1])
def test_masks_inside_prompt_are_counted_and_every_mask_is_filled(confidences, block_length):
    # By default a prompt [MASK] is counted in the schedule: 3 masks over 2 steps = 2 + 1,
    # and nothing stays masked whatever the confidences or blocks.
    model = FixedModel([4, 11, 4, 6, 7], confidences)
    steps = 2
    cfg = SampleConfig(gen_length=2, steps=steps, block_length=block_length)
    r = generate(model, [5, MASK, 5], cfg, **IDS, return_history=True)
    assert not (r.tokens == MASK).any()
    assert r.tokens[0, [0, 2, 3, 4]].tolist() == [5, 5, 6, 7]
    assert r.nfe == steps
    first = r.history[0][0].tolist()
    assert sum(t == MASK for t in first) == 1  # 2 of the 3 masks went in the first step


def test_mask_id_is_never_proposed():
    # A model that ranks the mask id first: the reference would leave the position (and, by
    # the count schedule, others) masked; unmask proposes the best real token instead.
    model = FixedModel.gen(1, [MASK, 7], [0.9, 0.8])
    r = generate(model, [5], SampleConfig(gen_length=2, steps=2), **IDS)
    ref = llada_reference(model, torch.tensor([[5]]), steps=2, gen_length=2, block_length=2)
    assert (ref == MASK).any()
    assert not (r.tokens == MASK).any()
    assert r.tokens[0, 2] == 7


# -- equality with the reference ----------------------------------------------------------------


@pytest.mark.parametrize(
    "gen_length,steps,block_length,cfg_scale",
    [
        (8, 8, 8, 0.0),
        (8, 4, 4, 0.0),
        (12, 6, 4, 0.0),
        (12, 12, 3, 0.0),
        (8, 3, 8, 0.0),
        (8, 4, 4, 0.5),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_llada_reference(gen_length, steps, block_length, cfg_scale, seed):
    model = MixModel(seed=seed)
    g = torch.Generator().manual_seed(100 + seed)
    prompts = [torch.randint(3, 12, (n,), generator=g).tolist() for n in (3, 6, 1)]
    cfg = SampleConfig(
        gen_length=gen_length, steps=steps, block_length=block_length, cfg_scale=cfg_scale
    )
    batch = generate(model, prompts, cfg, **IDS)
    P = max(map(len, prompts))
    for i, p in enumerate(prompts):
        ref = llada_reference(
            model,
            torch.tensor([p]),
            steps=steps,
            gen_length=gen_length,
            block_length=block_length,
            cfg_scale=cfg_scale,
        )
        alone = generate(model, p, cfg, **IDS)
        if alone.ended_at is not None:  # stopped after EOS: the reference's tail is EOS here
            ref[0, alone.ended_at :] = EOS
        assert torch.equal(alone.tokens, ref)
        assert batch.tokens[i, P - len(p) :].tolist() == ref[0].tolist()  # padded row == row alone
        assert batch.tokens[i, : P - len(p)].tolist() == [PAD] * (P - len(p))


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
def test_global_rng_draws_match_reference(remasking):
    """With no generator and no seed, draws come from the global RNG in the reference's order."""
    model = MixModel(seed=5)
    prompt = [4, 5, 6]
    torch.manual_seed(7)
    ref = llada_reference(
        model,
        torch.tensor([prompt]),
        steps=4,
        gen_length=8,
        block_length=4,
        temperature=0.8,
        remasking=remasking,
    )
    torch.manual_seed(7)
    cfg = SampleConfig(gen_length=8, steps=4, block_length=4, temperature=0.8, remasking=remasking)
    ours = generate(model, prompt, cfg, **IDS)
    assert torch.equal(ours.tokens, ref)


def test_padded_batch_equals_rows_alone_fixed_model():
    model = FixedModel(
        [4, 4, 4, 4] + list(range(4, 10)), [0.99, 0.98, 0.97, 0.96, 0.9, 0.4, 0.6, 0.5, 0.8, 0.7]
    )
    cfg = SampleConfig(gen_length=6, steps=4, block_length=3)
    prompts = [[5, 6, 7, 8], [9], [10, 11]]
    batch = generate(model, prompts, cfg, **IDS)
    assert model.calls[-1][1] is not None  # the padding mask reached the model
    for i, p in enumerate(prompts):
        alone = generate(model, p, cfg, **IDS)
        assert batch.tokens[i, 4 - len(p) :].tolist() == alone.tokens[0].tolist()
        assert batch.gen_ids[i] == alone.gen_ids[0]


def test_padded_batch_equals_rows_alone_transformer():
    model_mod = pytest.importorskip("unmask.model")
    from unmask.config import model_preset

    cfg = model_preset("tiny", vocab_size=32, max_seq_len=32)
    torch.manual_seed(0)
    model = model_mod.Transformer(cfg).double().eval()
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12]]
    scfg = SampleConfig(gen_length=8, steps=4, block_length=4, cfg_scale=0.5)
    special = dict(mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=cfg.eos_id)
    batch = generate(model, prompts, scfg, **special)
    for i, p in enumerate(prompts):
        alone = generate(model, p, scfg, **special)
        assert batch.gen_ids[i] == alone.gen_ids[0]


# -- randomness, guidance, EOS, remasking --------------------------------------------------------


def test_temperature_seed_determinism():
    model = MixModel(seed=2, scale=0.5)  # flat logits: sampling matters
    cfg = SampleConfig(gen_length=8, steps=4, temperature=1.0, seed=11)
    a = generate(model, [4, 5], cfg, **IDS)
    b = generate(model, [4, 5], cfg, **IDS)
    assert torch.equal(a.tokens, b.tokens)
    g1 = generate(model, [4, 5], cfg, **IDS, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a.tokens, g1.tokens)  # config.seed == an explicit generator with that seed
    outs = {
        tuple(
            generate(
                model, [4, 5], SampleConfig(gen_length=8, steps=4, temperature=1.0, seed=s), **IDS
            ).gen_ids[0]
        )
        for s in range(4)
    }
    assert len(outs) > 1
    greedy = generate(model, [4, 5], SampleConfig(gen_length=8, steps=4), **IDS)
    assert torch.equal(
        greedy.tokens,
        generate(model, [4, 5], SampleConfig(gen_length=8, steps=4, seed=3), **IDS).tokens,
    )


def test_gumbel_noise_formula():
    logits = torch.randn(2, 3, 5)
    assert add_gumbel_noise(logits, 0.0) is logits
    g = torch.Generator().manual_seed(0)
    out = add_gumbel_noise(logits, 0.7, torch.Generator().manual_seed(0))
    u = torch.rand(logits.shape, dtype=torch.float64, generator=g)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, logits.double() - 0.7 * (-u.log()).log())
    llada = logits.double().exp() / (-u.log()) ** 0.7  # LLaDA's form: the same argmax
    assert torch.equal(out.argmax(-1), llada.argmax(-1))


def test_gumbel_noise_at_huge_temperatures_stays_uniform_over_allowed_tokens():
    """LLaDA's exp(logits) / (-log u) ** T overflows for large T (every score 0, argmax the
    first id) and gives 0 / 0 = NaN for a forbidden token (logit -inf), which argmax picks.
    In log space a huge temperature samples uniformly over the allowed tokens."""
    V = 8
    logits = torch.zeros(1, 4000, V)
    logits[..., :2] = float("-inf")  # forbidden, as [MASK] and [PAD] are
    logits[..., 2] = 5.0
    for T in (200.0, 1e6, 1e300, 1.7e308):
        picks = add_gumbel_noise(logits, T, torch.Generator().manual_seed(1)).argmax(-1)
        counts = torch.bincount(picks.flatten(), minlength=V)
        assert counts[:2].sum() == 0, (T, counts)
        expected = 4000 / (V - 2)
        chi2 = float((((counts[2:] - expected) ** 2) / expected).sum())
        assert chi2 < 20.5, (T, counts)  # chi-square, 5 degrees of freedom, p = 0.001


class GuidanceModel:
    """Conditional logits when the prompt (position 0) is visible, unconditional otherwise."""

    def __init__(self) -> None:
        self.cond = torch.full((8,), -5.0)
        self.cond[3], self.cond[4] = 1.0, 0.9
        self.un = torch.full((8,), -5.0)
        self.un[3], self.un[4] = 1.0, 0.5
        self.calls: list[torch.Tensor] = []

    def __call__(self, tokens, attention_mask=None):
        self.calls.append(tokens.clone())
        sees_prompt = tokens[:, :1] != MASK  # (B, 1)
        return (
            torch.where(sees_prompt[..., None], self.cond, self.un).expand(*tokens.shape, 8).clone()
        )


def test_cfg_formula_and_one_nfe_per_step():
    model = GuidanceModel()
    plain = generate(model, [5], SampleConfig(gen_length=2, steps=2), **IDS)
    assert plain.gen_ids == [[3, 3]]
    model.calls.clear()
    # un + 2·(cond - un): token 4 scores 0.5 + 2·0.4 = 1.3 > token 3's 1.0
    guided = generate(model, [5], SampleConfig(gen_length=2, steps=2, cfg_scale=1.0), **IDS)
    assert guided.gen_ids == [[4, 4]]
    assert guided.nfe == 2 and len(model.calls) == 2
    first = model.calls[0]
    assert first.shape == (2, 3)  # cond and uncond in one doubled batch
    assert first[0].tolist() == [5, MASK, MASK] and first[1].tolist() == [MASK, MASK, MASK]
    second = model.calls[1]
    assert second[1, 0] == MASK and second[1].tolist()[1:] == second[0].tolist()[1:]


def test_forbid_eos():
    model = FixedModel.gen(1, [EOS, EOS, 7], [0.9, 0.8, 0.7])
    r = generate(model, [5], SampleConfig(gen_length=3, steps=3), **IDS)
    assert r.gen_ids == [[EOS, EOS, 7]]
    r2 = generate(model, [5], SampleConfig(gen_length=3, steps=3, forbid_eos=True), **IDS)
    assert r2.gen_ids == [[15, 15, 7]]  # the runner-up instead of EOS
    with pytest.raises(UserError, match="EOS"):
        generate(
            model,
            [5],
            SampleConfig(gen_length=3, steps=3, forbid_eos=True),
            mask_id=MASK,
            pad_id=PAD,
            eos_id=None,
        )


def test_random_remasking():
    model = FixedModel.gen(1, list(range(4, 12)), [0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35])
    orders = set()
    for seed in range(4):
        cfg = SampleConfig(gen_length=8, steps=8, remasking="random", seed=seed)
        r = generate(model, [5], cfg, **IDS, return_history=True)
        assert r.gen_ids == [list(range(4, 12))]
        steps = commit_steps(r)
        assert sorted(steps) == list(range(8))  # one per step, as scheduled
        orders.add(tuple(steps))
        again = generate(model, [5], cfg, **IDS, return_history=True)
        assert commit_steps(again) == steps
    assert len(orders) > 1  # not the confidence order every time


def test_logit_shift_from_model_config():
    torch.testing.assert_close(
        shift_logits(torch.arange(4.0).view(1, 4, 1)).flatten(), torch.tensor([0.0, 0, 1, 2])
    )
    targets, conf = [4, 6, 7, 8], [0.9, 0.8, 0.7, 0.6]
    plain = generate(FixedModel(targets, conf), [5], SampleConfig(gen_length=3, steps=3), **IDS)
    assert plain.gen_ids == [[6, 7, 8]]
    shifted_model = FixedModel(targets, conf, config=SimpleNamespace(logit_shift=True))
    shifted = generate(shifted_model, [5], SampleConfig(gen_length=3, steps=3), **IDS)
    assert shifted.gen_ids == [[4, 6, 7]]  # position i uses the logits of i - 1


def test_hf_style_output_with_logits_attribute():
    inner = FixedModel.gen(1, [6, 7], [0.9, 0.8])

    def model(tokens, attention_mask=None):
        return SimpleNamespace(logits=inner(tokens, attention_mask))

    assert generate(model, [5], SampleConfig(gen_length=2, steps=2), **IDS).gen_ids == [[6, 7]]


# -- bookkeeping: NFE, history, callback, texts ----------------------------------------------------


def test_nfe_history_and_callback():
    model = MixModel(seed=1)
    seen: list[tuple[int, list[list[int]]]] = []
    r = generate(
        model,
        [[4, 5], [6]],
        SampleConfig(gen_length=8, steps=8, block_length=4),
        **IDS,
        return_history=True,
        step_callback=lambda s, c: seen.append((s, c.tolist())),
    )
    assert r.nfe == 8 and model.calls == 8 and r.steps == 8
    assert len(r.history) == 8 and torch.equal(r.history[-1], r.tokens)
    assert [s for s, _ in seen] == list(range(1, 9))
    assert all(h.tolist() == c for h, (_, c) in zip(r.history, seen, strict=True))
    assert generate(model, [4], SampleConfig(gen_length=4, steps=2), **IDS).history is None


def test_texts_cut_at_first_eos():
    assert cut_at_eos([5, 6, EOS, 7, EOS], EOS) == [5, 6]
    assert cut_at_eos([5, 6], EOS) == [5, 6]
    assert cut_at_eos([5, EOS], None) == [5, EOS]
    model = FixedModel.gen(
        1, [ord("h") + 4, ord("i") + 4, EOS, ord("x") + 4], [0.9, 0.8, 0.7, 0.6], vocab=260
    )
    r = generate(model, [5], SampleConfig(gen_length=4, steps=2), **IDS)
    assert r.texts(FakeTokenizer()) == ["hi"]


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(gen_length=0), "gen_length must be positive"),
        (dict(steps=0), "steps must be positive"),
        (
            dict(gen_length=10, block_length=4),
            r"multiple of block_length \(4\); try block_length 2 or 5",
        ),
        (dict(gen_length=16, block_length=4, steps=6), r"number of blocks \(4 .*try 4 or 8"),
        (dict(block_length=0), "block_length must be positive"),
        (dict(temperature=-1.0), "temperature"),
        (dict(cfg_scale=-0.5), "cfg_scale"),
        (
            dict(remasking="lowest"),
            "unknown remasking 'lowest'; choose one of low_confidence, random",
        ),
        (dict(policy="nope"), "unknown policy 'nope'"),
    ],
)
def test_validation_errors(kwargs, message):
    model = FixedModel.gen(1, [6] * 70, [0.5] * 70)
    with pytest.raises(UserError, match=message):  # found by the config or by the decoder
        generate(model, [5], SampleConfig(**{"gen_length": 8, "steps": 8, **kwargs}), **IDS)


def test_max_seq_len_error():
    model = FixedModel.gen(3, [6] * 8, [0.5] * 8, config=SimpleNamespace(max_seq_len=10))
    with pytest.raises(
        UserError, match=r"exceeds the model's max_seq_len \(10\); use gen_length <= 7"
    ):
        generate(model, [5, 5, 5], SampleConfig(gen_length=8, steps=8), **IDS)
    assert generate(model, [5, 5], SampleConfig(gen_length=8, steps=8), **IDS).nfe == 8


def test_custom_policy_registry(monkeypatch):
    class Leftmost(CommitPolicy):
        """Commit the leftmost candidate each step, ignoring confidence."""

        def select(self, state: StepState) -> torch.Tensor:
            first = state.candidates.long().argmax(dim=1)  # (B,)
            pick = torch.zeros_like(state.candidates)
            pick[torch.arange(pick.shape[0]), first] = state.candidates.any(dim=1)
            return pick

    monkeypatch.setitem(POLICIES, "leftmost", lambda cfg: Leftmost())
    model = FixedModel.gen(1, [6, 7, 8, 9], CONF)
    r = generate(
        model,
        [5],
        SampleConfig(gen_length=4, steps=4, policy="leftmost"),
        **IDS,
        return_history=True,
    )
    assert commit_steps(r) == [0, 1, 2, 3]


# -- live view -------------------------------------------------------------------------------------


class FakeTokenizer:
    """Bytes at id 4 + b; specials 0-3 (mask, pad, eos, bos)."""

    mask_id, pad_id, eos_id, bos_id, vocab_size = 0, 1, 2, 3, 260

    def encode(self, text: str) -> list[int]:
        return [b + 4 for b in text.encode()]

    def token_bytes(self, i: int) -> bytes:
        return bytes([i - 4]) if i >= 4 else b""

    def decode(self, ids, *, skip_special: bool = True) -> str:
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")


class DecodeOnlyTokenizer(FakeTokenizer):
    token_bytes = None  # type: ignore[assignment]

    def decode(self, ids, *, skip_special: bool = True) -> str:
        return b"".join(bytes([i - 4]) for i in ids if i >= 4).decode("utf-8", errors="replace")


def _ids(text: str) -> list[int]:
    return FakeTokenizer().encode(text)


def test_live_view_renders_masks_text_and_new_tokens():
    out = io.StringIO()
    view = LiveView(
        FakeTokenizer(),
        start=1,
        total_steps=2,
        stream=out,
        enabled=True,
        color=True,
        width=80,
        height=24,
    )
    e = _ids("é")  # two tokens, one character
    step1 = torch.tensor([[9, *e, MASK, MASK]])
    view(1, step1)
    frame1 = out.getvalue()
    assert "\x1b[1;32mé\x1b[0m" in frame1  # new, highlighted, multi-byte decoded
    assert "\x1b[2m░░\x1b[0m" in frame1 and "step 1/2" in frame1
    view(2, torch.tensor([[9, *e, *_ids("a"), EOS]]))
    frame2 = out.getvalue()[len(frame1) :]
    assert frame2.startswith("\r\x1b[1A\x1b[J")  # redrawn in place: up over text row + status row
    assert "é\x1b[1;32ma" in frame2  # old text plain, new text highlighted
    assert "0 masked" in frame2
    view.close()
    assert out.getvalue().endswith("\n")


def test_live_view_cursor_up_for_multiline_frames():
    out = io.StringIO()
    view = LiveView(FakeTokenizer(), stream=out, enabled=True, color=False, width=4, height=50)
    view(1, torch.tensor([_ids("abcdefgh\nxy")]))
    view(2, torch.tensor([_ids("abcdefgh\nxy")]))
    # "abcdefgh" wraps to 2 rows at width 4, "xy" 1 row, status line 1+ rows (width 4) -> moves up
    second = out.getvalue().split("\x1b[J")[0]
    assert re.search(r"\r\x1b\[\d+A$", second)


def test_live_view_no_color(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    view = LiveView(FakeTokenizer(), stream=out, enabled=True, width=80, height=24)
    view(1, torch.tensor([[*_ids("hi"), MASK]]))
    view(2, torch.tensor([[*_ids("hi"), *_ids("!")]]))
    text = out.getvalue()
    assert not SGR.search(text)
    assert "hi░" in text and "hi!" in text
    monkeypatch.delenv("NO_COLOR")
    assert LiveView(FakeTokenizer(), stream=io.StringIO(), enabled=True).color


def test_live_view_disabled_when_not_a_tty_and_sanitizes():
    out = io.StringIO()
    view = LiveView(FakeTokenizer(), stream=out)
    assert not view.enabled
    view(1, torch.tensor([_ids("x")]))
    view.close()
    assert out.getvalue() == ""
    loud = LiveView(FakeTokenizer(), stream=out, enabled=True, color=False, width=80, height=24)
    loud(1, torch.tensor([[*_ids("a\x1b[2Jb\tc")]]))
    assert "a\\x1b[2Jb    c" in out.getvalue()  # escape_controls, as the final print


def test_live_view_decode_fallback_and_batch():
    out = io.StringIO()
    view = LiveView(
        DecodeOnlyTokenizer(), stream=out, enabled=True, color=False, width=80, height=24
    )
    view(1, torch.tensor([[*_ids("ab"), MASK], [*_ids("c"), EOS, MASK]]))
    text = out.getvalue()
    assert "[0] ab░" in text and "[1] c·░" in text


def test_live_view_as_step_callback():
    out = io.StringIO()
    model = FixedModel.gen(1, _ids("hey"), [0.9, 0.8, 0.7], vocab=260)
    view = LiveView(
        FakeTokenizer(),
        start=1,
        total_steps=3,
        stream=out,
        enabled=True,
        color=False,
        width=80,
        height=24,
    )
    generate(model, [5], SampleConfig(gen_length=3, steps=3), **IDS, step_callback=view)
    view.close(clear=True)
    text = out.getvalue()
    assert "h░░" in text and "he░" in text and "hey" in text and "step 3/3" in text


# -- CLI -------------------------------------------------------------------------------------------


class TailModel:
    """The last ``len(targets)`` positions propose ``targets`` (confidence falling left to
    right)."""

    def __init__(self, targets: list[int], vocab: int, config) -> None:
        self.targets, self.vocab, self.config = targets, vocab, config

    def eval(self) -> TailModel:
        return self

    def __call__(self, tokens, attention_mask=None):
        B, L = tokens.shape
        logits = torch.zeros(B, L, self.vocab)
        logits[:, :, 4] = 1.0
        for j, t in enumerate(self.targets):
            logits[:, L - len(self.targets) + j, t] = 10.0 - 0.5 * j
        return logits


def _fake_loaded(path, *, device="cpu", **_):
    cfg = SimpleNamespace(
        mask_id=MASK, pad_id=PAD, eos_id=EOS, bos_id=3, max_seq_len=64, logit_shift=False
    )
    model = TailModel(_ids("ok!") + [EOS] * 5, 260, cfg)
    return Loaded(model=model, tokenizer=FakeTokenizer(), config=cfg, path=path)


def test_cli_generate_json(monkeypatch, capsys):
    ckpt = pytest.importorskip("unmask.checkpoint")
    from unmask.cli import main

    monkeypatch.setattr(ckpt, "load", _fake_loaded)
    rc = main(
        [
            "generate",
            "--model",
            "demo",
            "--gen-length",
            "8",
            "--steps",
            "4",
            "--block-length",
            "4",
            "--json",
            "hello",
            "hi",
        ]
    )
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["text"] for r in data["results"]] == ["ok!", "ok!"]
    # both rows wrote EOS in the first block: the run stops there (docs/sampling.md, Blocks)
    assert data["nfe"] == 2 and len(data["results"][0]["tokens"]) == 8
    assert data["tokens_per_s"] > 0 and data["config"]["block_length"] == 4


def test_cli_generate_text_and_errors(monkeypatch, capsys, tmp_path):
    ckpt = pytest.importorskip("unmask.checkpoint")
    from unmask.cli import main

    monkeypatch.setattr(ckpt, "load", _fake_loaded)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\n\ntwo\n")
    assert (
        main(
            [
                "generate",
                "--model",
                "demo",
                "--gen-length",
                "8",
                "--steps",
                "8",
                "--prompt-file",
                str(prompts),
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out.count("ok!") == 2 and "NFE" in captured.err
    assert "one" in captured.out and "two" in captured.out  # prompt shown before its continuation
    assert (
        main(["generate", "--model", "demo", "--gen-length", "10", "--block-length", "4", "x"]) == 2
    )
    err = capsys.readouterr().err
    assert (
        err.startswith("unmask generate: error: --gen-length (10) must be a multiple")
        and err.count("\n") == 1
    )
    assert main(["generate", "--model", "demo"]) == 2
    assert "no prompt" in capsys.readouterr().err
    # --prompt TEXT (repeatable) is a prompt like a positional one, after the positional ones
    flags = ["generate", "--model", "demo", "--gen-length", "8", "--steps", "8", "--json"]
    assert main([*flags, "one", "--prompt", "two", "--prompt", "three"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["prompt"] for r in data["results"]] == ["one", "two", "three"]
    assert (
        main(["generate", "--model", "demo", "--gen-length", "60", "--steps", "60", "x" * 10]) == 2
    )
    assert "max_seq_len" in capsys.readouterr().err


def test_cli_generate_real_checkpoint(tmp_path, capsys):
    ckpt = pytest.importorskip("unmask.checkpoint")
    model_mod = pytest.importorskip("unmask.model")
    tok_mod = pytest.importorskip("unmask.tokenizer")
    from unmask.cli import main
    from unmask.config import model_preset

    tok = tok_mod.byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32, **tok.special_ids())
    torch.manual_seed(0)
    ckpt.save_checkpoint(tmp_path / "run", model=model_mod.Transformer(cfg), tokenizer=tok)
    args = [
        "generate",
        "--model",
        str(tmp_path / "run"),
        "--gen-length",
        "8",
        "--steps",
        "4",
        "--json",
        "--seed",
        "1",
    ]
    assert main([*args, "--temperature", "1.0", "ab", "c"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["results"]) == 2 and all(len(r["tokens"]) == 8 for r in data["results"])
    assert main(["generate", "--model", str(tmp_path / "nope"), "x"]) == 2
    assert "no such folder" in capsys.readouterr().err
