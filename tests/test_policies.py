"""Confidence measures and the parallel commit policies (threshold, factor, entropy)."""

from __future__ import annotations

import math

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.sampling import CONFIDENCES, POLICIES, StepState, generate, make_policy
from unmask.sampling.policies import REMASKING, entropy, scorer

MASK, PAD, EOS = 0, 1, 2
IDS = dict(mask_id=MASK, pad_id=PAD, eos_id=EOS)


class FixedModel:
    """Position i (counted over real tokens) proposes ``targets[i]`` with probability ``conf[i]``;
    the rest of the mass is spread evenly (so the logits never depend on the canvas)."""

    def __init__(self, targets: list[int], conf: list[float], vocab: int = 16) -> None:
        table = torch.empty(len(targets), vocab, dtype=torch.float64)
        for i, (t, c) in enumerate(zip(targets, conf, strict=True)):
            p = torch.full((vocab,), (1 - c) / (vocab - 1), dtype=torch.float64)
            p[t] = c
            table[i] = p.log()
        self.table = table
        self.calls = 0

    @classmethod
    def gen(cls, prompt_len: int, targets: list[int], conf: list[float]) -> FixedModel:
        return cls([4] * prompt_len + targets, [0.99] * prompt_len + conf)

    def __call__(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.calls += 1
        if attention_mask is None:
            pos = torch.arange(tokens.shape[1]).expand_as(tokens)
        else:
            pos = (attention_mask.long().cumsum(1) - 1).clamp_min(0)
        return self.table[pos]  # (B, L, V)


def commit_steps(result, row: int = 0) -> list[int]:
    start, end = result.region
    return [
        next(s for s, c in enumerate(result.history) if c[row, col] != MASK)
        for col in range(start, end)
    ]


def state_of(confidence: list[list[float]], logits: torch.Tensor | None = None) -> StepState:
    conf = torch.tensor(confidence, dtype=torch.float64)
    cand = torch.isfinite(conf)
    B, L = conf.shape
    return StepState(
        step=0,
        block=0,
        block_step=0,
        steps_per_block=L,
        block_start=0,
        block_end=L,
        x0=torch.zeros(B, L, dtype=torch.long),
        confidence=conf,
        candidates=cand,
        logits=torch.zeros(B, L, 4) if logits is None else logits,
    )


NEG = float("-inf")


# -- confidence measures --------------------------------------------------------------------------


def test_confidence_measures_analytic():
    p = torch.tensor(
        [[[0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]]],
        dtype=torch.float64,
    )
    logits = p.log()  # (1, 3, 4), -inf where p = 0
    x0 = torch.tensor([[1, 2, 0]])
    prob = CONFIDENCES["prob"](logits, x0, None)
    torch.testing.assert_close(prob, torch.tensor([[0.3, 0.25, 1.0]], dtype=torch.float64))
    margin = CONFIDENCES["margin"](logits, x0, None)
    torch.testing.assert_close(margin, torch.tensor([[0.2, 0.0, 1.0]], dtype=torch.float64))
    H0 = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    torch.testing.assert_close(
        entropy(logits), torch.tensor([[H0, math.log(4), 0.0]], dtype=torch.float64)
    )
    neg = CONFIDENCES["neg_entropy"](logits, x0, None)
    torch.testing.assert_close(neg, torch.tensor([[math.exp(-H0), 0.25, 1.0]], dtype=torch.float64))


def test_prob_is_llada_low_confidence_and_random_overrides():
    logits = torch.randn(2, 5, 7)
    x0 = logits.argmax(-1)
    low = REMASKING["low_confidence"](logits, x0, None)
    assert torch.equal(scorer(SampleConfig())(logits, x0, None), low)
    assert torch.equal(
        scorer(SampleConfig(confidence="margin"))(logits, x0, None),
        CONFIDENCES["margin"](logits, x0, None),
    )
    assert scorer(SampleConfig(remasking="random")) is REMASKING["random"]
    # a measure that random remasking would replace: refused, not silently ignored
    with pytest.raises(UserError, match=r"^confidence 'margin' ranks proposals under remasking "
                                        r"low_confidence; remasking 'random' replaces"):
        scorer(SampleConfig(remasking="random", confidence="margin"))


def test_margin_changes_the_llada_commit_order():
    # Position 0: p(top) 0.5 but runner-up 0.45 -> small margin; position 1: 0.4 vs spread -> larger
    # margin.
    V = 8
    p = torch.full((2, V), 0.0, dtype=torch.float64)
    p[0, 5], p[0, 6] = 0.5, 0.45
    p[0, 7] = 0.05
    p[1, 5] = 0.4
    p[1, 6:] = 0.3
    table = torch.cat([torch.full((1, V), -5.0, dtype=torch.float64), p.clamp_min(1e-12).log()])

    def model(tokens, attention_mask=None):
        return table.expand(tokens.shape[0], -1, -1)

    by_prob = generate(model, [4], SampleConfig(gen_length=2, steps=2), **IDS, return_history=True)
    by_margin = generate(
        model,
        [4],
        SampleConfig(gen_length=2, steps=2, confidence="margin"),
        **IDS,
        return_history=True,
    )
    assert commit_steps(by_prob) == [0, 1] and commit_steps(by_margin) == [1, 0]


# -- the rules on hand-made states -----------------------------------------------------------------


def test_threshold_rule_per_row():
    policy = make_policy(SampleConfig(policy="threshold", threshold=0.8))
    st = state_of([[0.9, 0.85, 0.5, NEG], [0.3, 0.2, 0.1, 0.05], [NEG, NEG, NEG, NEG]])
    assert policy.select(st).tolist() == [
        [True, True, False, False],  # both above the bar
        [True, False, False, False],  # nothing above: the top-1 anyway
        [False, False, False, False],  # no candidates, nothing committed
    ]


def test_factor_rule():
    # Bars for ranks 0, 1, 2, 3 with f = 1: 0.5, 0.667, 0.75, 0.8 (rank 0 always commits).
    policy = make_policy(SampleConfig(policy="factor", factor=1.0))
    st = state_of([[0.7, 0.95, 0.8, 0.3], [0.2, 0.1, NEG, NEG], [0.99, 0.98, 0.97, 0.96]])
    assert policy.select(st).tolist() == [
        [False, True, True, False],  # 0.95 (r0), 0.8 >= 0.667 (r1), 0.7 < 0.75 (r2) stops
        [True, False, False, False],
        [True, True, True, True],
    ]
    loose = make_policy(SampleConfig(policy="factor", factor=3.0))  # bars: -0.5, 0, 0.25, 0.4
    assert loose.select(st).tolist()[0] == [True, True, True, False]


def test_entropy_bound_rule():
    # Entropies (nats) of 4 positions, confidence order 0, 1, 2, 3.
    def dist(h_target: float) -> torch.Tensor:  # two-point distribution with entropy h
        lo, hi = 1e-9, 0.5
        for _ in range(80):
            q = (lo + hi) / 2
            h = -(q * math.log(q) + (1 - q) * math.log(1 - q))
            lo, hi = (q, hi) if h < h_target else (lo, q)
        return torch.tensor([math.log(1 - q), math.log(q), -1e9, -1e9], dtype=torch.float64)

    H = [0.05, 0.1, 0.3, 0.02]
    logits = torch.stack([dist(h) for h in H])[None]  # (1, 4, 4)
    torch.testing.assert_close(
        entropy(logits), torch.tensor([H], dtype=torch.float64), atol=1e-6, rtol=0
    )
    conf = [[0.9, 0.8, 0.7, 0.6]]
    # prefix sums - max: {0}: 0, {0,1}: 0.05, {0,1,2}: 0.15, {0,1,2,3}: 0.17
    for gamma, n in [(0.0, 1), (0.05, 2), (0.1, 2), (0.16, 3), (0.2, 4)]:
        policy = make_policy(SampleConfig(policy="entropy", entropy_bound=gamma))
        assert policy.select(state_of(conf, logits)).tolist() == [[i < n for i in range(4)]], gamma


# -- in the loop: blocks, batches, dynamic steps ---------------------------------------------------


def test_threshold_generation_blocks_and_step_counts():
    conf = [0.95, 0.5, 0.97, 0.6, 0.99, 0.98, 0.3, 0.92]
    model = FixedModel.gen(1, list(range(4, 12)), conf)
    cfg = SampleConfig(
        gen_length=8, block_length=4, policy="threshold", threshold=0.9, steps=8
    )  # 4 steps a block for 4 masks: the bound never binds
    r = generate(model, [5], cfg, **IDS, return_history=True)
    assert r.gen_ids == [list(range(4, 12))]
    # block 1: {0, 2} then 3 (top-1) then 1; block 2: {4, 5, 7} then 6
    assert commit_steps(r) == [0, 2, 0, 1, 3, 3, 4, 3]
    assert r.nfe == r.steps == 5 == model.calls


def test_dynamic_policies_take_steps_as_their_bound():
    """``steps`` with a dynamic policy was accepted and not used (the run above took 5
    forwards at steps 3). Now it bounds the forwards, as in LLaDA 2.x's ``generate``: each
    block takes its share of the steps at most, and every step commits at least LLaDA's
    scheduled count over that share, the most confident first."""
    conf = [0.95, 0.5, 0.97, 0.6, 0.99, 0.98, 0.3, 0.92]
    model = FixedModel.gen(1, list(range(4, 12)), conf)
    for policy in ("threshold", "factor", "entropy"):
        cfg = SampleConfig(gen_length=8, block_length=4, policy=policy, threshold=0.9,
                           factor=0.1, entropy_bound=0.0, steps=3)  # 2 + 1 steps
        model.calls = 0
        r = generate(model, [5], cfg, **IDS, return_history=True)
        assert r.gen_ids == [list(range(4, 12))], policy
        assert r.nfe == r.steps == 3 == model.calls, policy
        # block 1, 2 steps for 4 masks: 2 a step at least (threshold: {0, 2} pass, then
        # {3, 1}); block 2, 1 step: all 4
        assert commit_steps(r) == [0, 1, 0, 1, 2, 2, 2, 2], policy
    # a bound over the masks changes nothing: the count is one, the top-1
    loose = SampleConfig(gen_length=8, block_length=4, policy="threshold", steps=64)
    assert generate(model, [5], loose, **IDS).nfe == 5


def test_dynamic_policies_batch_rows_equal_rows_alone():
    model = FixedModel(
        [4, 4, 4] + list(range(4, 12)), [0.99] * 3 + [0.95, 0.5, 0.97, 0.6, 0.99, 0.98, 0.3, 0.92]
    )
    prompts = [[5, 6, 7], [8], [9, 10]]
    for policy in ("threshold", "factor", "entropy"):
        cfg = SampleConfig(gen_length=8, block_length=4, policy=policy, entropy_bound=0.5)
        batch = generate(model, prompts, cfg, **IDS)
        for i, p in enumerate(prompts):
            assert batch.gen_ids[i] == generate(model, p, cfg, **IDS).gen_ids[0], policy


def test_dynamic_policies_on_a_transformer_fill_every_block():
    from unmask.model import Transformer

    mcfg = model_preset(
        "tiny", vocab_size=48, max_seq_len=64, init_std=1.0
    )  # peaked enough to parallelize
    torch.manual_seed(0)
    model = Transformer(mcfg).double().eval()
    ids = dict(mask_id=mcfg.mask_id, pad_id=mcfg.pad_id, eos_id=mcfg.eos_id)
    llada = generate(
        model, [[5, 6, 7], [8]], SampleConfig(gen_length=16, steps=16, block_length=4), **ids
    )
    for policy, extra in [
        ("threshold", dict(threshold=0.5)),
        ("factor", dict(factor=2.0)),
        ("entropy", dict(entropy_bound=1.0)),
    ]:
        cfg = SampleConfig(gen_length=16, block_length=4, policy=policy, **extra)
        r = generate(model, [[5, 6, 7], [8]], cfg, **ids, return_history=True)
        assert not bool((r.tokens == mcfg.mask_id).any()), policy  # mask-id proposals are forbidden
        assert 4 <= r.nfe < llada.nfe, policy
        for h in r.history:  # blocks are still filled left to right
            gen = h[:, 3:] != mcfg.mask_id
            for b in range(3):
                assert bool(
                    (gen[:, 4 * b : 4 * b + 4].all(1) | ~gen[:, 4 * (b + 1) :].any(1)).all()
                )
    one = generate(
        model,
        [[5, 6, 7], [8]],
        SampleConfig(gen_length=16, block_length=4, policy="threshold", threshold=1.0),
        **ids,
    )
    assert one.nfe == 16


# -- validation and the CLI ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(policy="threshold", threshold=0.0),
         r"^threshold must be a finite number in \(0, 1\], got 0.0$"),
        (dict(policy="threshold", threshold=1.5), r"threshold must be a finite number in \(0, 1\]"),
        (dict(policy="factor", factor=0.0), "^factor must be a finite number > 0, got 0.0$"),
        (dict(policy="factor", factor=-1.0), "factor must be"),
        (dict(policy="entropy", entropy_bound=-0.1),
         "^entropy_bound must be a finite number >= 0, got -0.1$"),
        (
            dict(confidence="certainty"),
            "unknown confidence 'certainty'; choose one of margin, neg_entropy, prob",
        ),
        (
            dict(policy="fast"),
            "unknown policy 'fast'; choose one of entropy, factor, llada, threshold",
        ),
        (dict(policy="threshold", remasking="random"), "needs remasking low_confidence"),
    ],
)
def test_validation_errors(kwargs, message):
    model = FixedModel.gen(1, [6] * 8, [0.5] * 8)
    with pytest.raises(UserError, match=message):
        generate(model, [5], SampleConfig(gen_length=8, steps=8, **kwargs), **IDS)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("policy,field", [("threshold", "threshold"), ("factor", "factor"),
                                          ("entropy", "entropy_bound")])
def test_policy_parameters_follow_one_rule(policy, field, value):
    """One rule for the three bars: a finite number in range. ``entropy_bound=inf`` was taken
    (it commits everything in one step) while ``factor=inf`` was refused."""
    model = FixedModel.gen(1, [6] * 8, [0.5] * 8)
    config = SampleConfig(gen_length=8, steps=8, policy=policy, **{field: value})
    with pytest.raises(UserError, match=f"^{field} must be a finite number "):
        generate(model, [5], config, **IDS)


def test_dynamic_policy_ignores_steps_divisibility():
    model = FixedModel.gen(1, [6] * 8, [0.95] * 8)
    r = generate(
        model, [5], SampleConfig(gen_length=8, block_length=2, steps=5, policy="threshold"), **IDS
    )
    assert r.nfe == 4  # one step per block of 2 (bounds 2, 1, 1, 1)
    with pytest.raises(UserError, match="multiple of the number of blocks"):
        generate(model, [5], SampleConfig(gen_length=8, block_length=2, steps=5), **IDS)
    # fewer steps than blocks: a bound no run can keep, refused in one line (was ignored)
    few = SampleConfig(gen_length=8, block_length=2, steps=3, policy="threshold")
    with pytest.raises(UserError, match=r"^steps \(3\) must be at least the number of blocks "
                                        r"\(4 = gen_length 8 / block_length 2\)"):
        generate(model, [5], few, **IDS)


def test_cli_flags_for_new_fields():
    import argparse

    from unmask.commands.generate import add_sample_flags, sample_config_from_args

    p = argparse.ArgumentParser()
    add_sample_flags(p)
    args = p.parse_args(
        [
            "--policy",
            "threshold",
            "--threshold",
            "0.7",
            "--cache",
            "dual",
            "--confidence",
            "margin",
            "--skip-empty-steps",
            "--top-k",
            "5",
            "--top-p",
            "0.9",
            "--entropy-bound",
            "0.3",
        ]
    )
    cfg = sample_config_from_args(args)
    assert (cfg.policy, cfg.threshold, cfg.cache, cfg.confidence) == (
        "threshold",
        0.7,
        "dual",
        "margin",
    )
    assert cfg.skip_empty_steps and cfg.top_k == 5 and cfg.top_p == 0.9 and cfg.entropy_bound == 0.3
    assert set(POLICIES) >= {"llada", "threshold", "factor", "entropy"}
    with pytest.raises(SystemExit):
        p.parse_args(["--cache", "lru"])


# -- statistics of the draws (fixed seeds) -------------------------------------------------------


class TableModel:
    """Every masked position gets the same logits ``row`` (V,), whatever the canvas."""

    def __init__(self, row: torch.Tensor) -> None:
        self.row = row

    def __call__(self, tokens, attention_mask=None):
        return self.row.expand(*tokens.shape, -1).clone()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_samples_softmax_over_allowed_tokens(temperature):
    """One masked position, one step: the token is a draw from softmax(logits / T) over the
    tokens the loop allows (the mask id is never proposed), 4000 rows with one seed."""
    row = torch.tensor([5.0, 2.0, 1.0, 0.0, -1.0, 1.5], dtype=torch.float64)
    n = 4000
    r = generate(TableModel(row), [[4]] * n,
                 SampleConfig(gen_length=1, steps=1, temperature=temperature, seed=7), **IDS)
    got = torch.bincount(torch.tensor(r.gen_ids).flatten(), minlength=6).double() / n
    allowed = row.clone()
    allowed[MASK] = float("-inf")
    want = torch.softmax(allowed / temperature, dim=0)
    assert got[MASK] == 0
    assert (got - want).abs().max() < 0.03  # 4 standard errors at most


def test_random_remasking_commits_a_uniform_position_first():
    row = torch.zeros(6, dtype=torch.float64)
    row[5] = 3.0
    n = 4000
    r = generate(TableModel(row), [[4]] * n,
                 SampleConfig(gen_length=4, steps=4, remasking="random", seed=3), **IDS,
                 return_history=True)
    first = (r.history[0][:, 1:] != MASK).double()  # (n, 4): the one committed at step 1
    assert first.sum(dim=1).eq(1).all()
    assert (first.mean(dim=0) - 0.25).abs().max() < 0.03


@pytest.mark.parametrize("schedule", ["linear", "cosine", "geometric"])
def test_llada_counts_follow_the_checkpoints_schedule(schedule):
    """ModelConfig.schedule: "samplers take the number of tokens to reveal per step from it"
    (docs/training.md: a cosine checkpoint reveals few tokens first, many last); the loop
    used the linear counts whatever the checkpoint said."""
    from types import SimpleNamespace

    from unmask.schedules import get_schedule

    model = FixedModel.gen(1, [5, 6, 7, 8, 9, 10, 11, 12], [0.9] * 8)
    model.config = SimpleNamespace(schedule=schedule, schedule_eps=1e-3)
    r = generate(model, [4], SampleConfig(gen_length=8, steps=4), **IDS, return_history=True)
    masks = [8] + [int((h[0, 1:] == MASK).sum()) for h in r.history]  # left after each step
    per_step = [a - b for a, b in zip(masks[:-1], masks[1:], strict=True)]
    assert per_step == get_schedule(schedule).transfer_counts(8, 4)
    assert per_step == {"linear": [2, 2, 2, 2], "cosine": [1, 1, 3, 3],
                        "geometric": [3, 3, 1, 1]}[schedule]


@pytest.mark.parametrize("policy", ["threshold", "factor", "entropy"])
def test_dynamic_reference_prompt_masks_batch_rows_equal_rows_alone(policy):
    """prompt_masks 'reference': a row whose own block is filled while another row's is not
    committed (the top-1 is always kept) one of its prompt masks at every waiting step,
    where alone it moves on to the next block: its tokens depended on the batch."""
    from unmask.model import Transformer

    differ = 0
    for seed in range(3):
        cfg = model_preset("tiny", vocab_size=48, max_seq_len=64, init_std=0.5)
        torch.manual_seed(seed)
        model = Transformer(cfg).double().eval()
        ids = dict(mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=cfg.eos_id)
        M = cfg.mask_id
        prompts = [[5, M, 7, M], [9, 10, 11, 12, 13, 14], [20, M]]
        for bar in (0.05, 0.2, 0.6):
            conf = SampleConfig(gen_length=12, steps=12, block_length=4, policy=policy,
                                threshold=bar, factor=2 * bar, entropy_bound=bar,
                                prompt_masks="reference")
            batch = generate(model, prompts, conf, **ids)
            for i, p in enumerate(prompts):
                alone = generate(model, [p], conf, **ids)
                differ += batch.gen_ids[i] != alone.gen_ids[0]
                differ += batch.prompt_ids[i] != alone.prompt_ids[0]
    assert differ == 0


@pytest.mark.parametrize("n", [1, 3, 6, 7])
def test_cosine_counts_are_one_per_step_when_the_steps_cover_the_masks(n):
    """Callers pass ``steps = masks`` to mean one token a step (infill's repair refill, lm_eval,
    distill, the task scorers); cosine's rounding gave 6 masks over 6 steps 0,1,1,1,1,2. With
    at least as many steps as masks every schedule gives LLaDA's counts; above that the
    schedule still shapes them."""
    from types import SimpleNamespace

    from unmask.sampling import num_transfer_tokens
    from unmask.schedules import get_schedule

    cos = get_schedule("cosine")
    for steps in (n, n + 2):
        counts = num_transfer_tokens(torch.ones(1, n, dtype=torch.bool), steps, cos)[0].tolist()
        assert counts == [1] * n + [0] * (steps - n)
    # rows of one block differ: a row with more masks than steps keeps cosine's counts
    masked = torch.tensor([[True] * 8, [True] * 3 + [False] * 5])
    counts = num_transfer_tokens(masked, 4, cos).tolist()
    assert counts == [cos.transfer_counts(8, 4), [1, 1, 1, 0]]

    # end to end: a cosine checkpoint, steps == masks, commits exactly one token per step
    model = FixedModel.gen(1, list(range(5, 5 + n)), [0.9] * n)
    model.config = SimpleNamespace(schedule="cosine", schedule_eps=1e-3)
    cfg = SampleConfig(gen_length=n, steps=n)
    r = generate(model, [4], cfg, **IDS, return_history=True)
    masks = [n] + [int((h[0, 1:] == MASK).sum()) for h in r.history]
    assert [a - b for a, b in zip(masks[:-1], masks[1:], strict=True)] == [1] * n
    assert r.tokens[0, 1:].tolist() == list(range(5, 5 + n))


@pytest.mark.parametrize("template", ["The [MASK:6] sat.", "[MASK:3] on [MASK:4]"])
def test_infill_on_a_cosine_checkpoint_matches_linear_when_steps_cover_the_masks(template):
    """docs/infill.md: ``--steps`` is capped at the masks, "so at most one token is committed
    per step"; under a cosine checkpoint the capped steps committed 0, then 2 at once, so the
    fill differed from linear's (the checkpoint's schedule cannot matter at one token a
    step)."""
    import dataclasses

    from unmask.config import model_preset
    from unmask.infill import infill
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    texts = {}
    for schedule in ("linear", "cosine"):
        cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, **tok.special_ids())
        torch.manual_seed(0)
        model = Transformer(dataclasses.replace(cfg, schedule=schedule)).eval()
        texts[schedule] = [
            infill(model, tok, template, SampleConfig(steps=steps)).text for steps in (7, 100)
        ]
    assert texts["cosine"] == texts["linear"]
