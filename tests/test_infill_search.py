"""The length search of several variable-length gaps (``unmask.infill.fill``): which lengths
it picks against an exactly known likelihood, its cost in model calls, and its limit."""

from __future__ import annotations

import dataclasses
import itertools
import math
import pickle
import re

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.infill import Gap, InfillOptions, SearchLimitError, infill, parse_template
from unmask.infill.fill import search_calls
from unmask.infill.template import plan_template
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
V = TOK.vocab_size


class Counting:
    """Random logits that ignore the canvas (position i always scores row i of a fixed table;
    specials never win), counting its calls: a cheap predictor for counting work."""

    def __init__(self, seed: int = 0, width: int = 256) -> None:
        g = torch.Generator().manual_seed(seed)
        self.table = 2 * torch.randn(width, V, generator=g)
        self.table[:, [TOK.mask_id, TOK.pad_id, TOK.eos_id, TOK.bos_id]] = -30.0
        self.table[:, 128:] = -30.0
        self.calls = 0

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        self.calls += 1
        B, L = tokens.shape
        return self.table[:L].expand(B, L, V).clone()


def _tiny(seed: int) -> Transformer:
    cfg = model_preset("tiny", vocab_size=V, max_seq_len=32, attention="bidirectional",
                       init_std=0.5, **TOK.special_ids())
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


@torch.no_grad()
def _exact(model: Transformer, row: list[int]) -> float:
    """The masked-diffusion bound on -log p(row), every mask set enumerated (a set of k of the
    n tokens weighs (k-1)! (n-k)! / n!; as tests/test_infill.py::_exact_bound, batched)."""
    n = len(row)
    sets = [S for k in range(1, n + 1) for S in itertools.combinations(range(n), k)]
    masked = torch.zeros(len(sets), n, dtype=torch.bool)
    for i, S in enumerate(sets):
        masked[i, list(S)] = True
    w = torch.tensor([math.factorial(len(S) - 1) * math.factorial(n - len(S)) / math.factorial(n)
                      for S in sets], dtype=torch.float64)  # fmt: skip
    x0 = torch.tensor([row]).expand(len(sets), n)
    lp = torch.log_softmax(model(torch.where(masked, TOK.mask_id, x0)).double(), -1)
    ce = -lp.gather(-1, x0[..., None])[..., 0]
    return float((ce * masked * w[:, None]).sum())


def _row(template: str, gaps: list) -> list[int]:
    texts = re.split(r"\[MASK:[0-9-]+\]", template)
    out = list(TOK.encode(texts[0]))
    for g, t in zip(gaps, texts[1:], strict=True):
        out += list(g.tokens) + list(TOK.encode(t))
    return out


def test_coordinate_search_finds_the_exact_best_lengths_on_tiny_models():
    """Two [MASK:1-3] gaps, one variable gap at a time (max_joint=1), on random tiny models:
    the lengths whose text has the lowest exact bound, among all 9 combinations the
    exhaustive search filled, are found about as often as that search finds them (9 and 10
    of these 12 models). Larger runs in docs/infill.md ("Many variable gaps"): 46/60 with
    two [MASK:1-4] (the exhaustive search 47/60), 39/60 with the one sweep before."""
    template = "ab[MASK:1-3]c[MASK:1-3]"
    hits = {"coordinate": 0, "every": 0}
    for seed in range(12):
        model = _tiny(seed)
        cfg = SampleConfig(temperature=0.0, seed=seed)
        every = infill(model, TOK, template, cfg,
                       options=InfillOptions(elbo_seed=seed, max_joint=100))  # fmt: skip
        exact = {c.lengths: _exact(model, _row(template, c.gaps)) for c in every.candidates}
        best = min(exact, key=exact.__getitem__)
        coord = infill(model, TOK, template, cfg,
                       options=InfillOptions(elbo_seed=seed, max_joint=1))  # fmt: skip
        assert len(coord.candidates) > 3  # the coordinate search ran
        for name, r in (("coordinate", coord), ("every", every)):
            hits[name] += tuple(len(g.tokens) for g in r.gaps) == best
    assert hits["coordinate"] >= hits["every"] - 1 and hits["coordinate"] >= 8, hits


def test_the_coordinate_search_is_deterministic_in_its_seeds():
    template = "a[MASK:1-4]b[MASK:1-4]c[MASK:1-4]d"
    opts = InfillOptions(max_joint=1, elbo_seed=3)
    runs = [infill(_tiny(1), TOK, template, SampleConfig(seed=5), options=opts)
            for _ in range(2)]  # fmt: skip
    a, b = (r.as_dict() for r in runs)
    assert a == b and len(a["candidates"]) > 4


def test_many_gaps_fit_the_call_limit_and_later_runs_fill_one_gap():
    """Twelve [MASK:1-4] gaps: 4^12 combinations. After the first run every other gap keeps
    its text, so a run has at most 4 steps (one gap's masks), not one per mask of the whole
    canvas; the search stops adding sweeps at max_search_calls. Before, each of the 12 runs
    refilled all 12 gaps (steps up to 64): 12 x (37 + 4) = 492 calls for one sweep."""
    template = "x" + "[MASK:1-4]y" * 12
    pred = Counting()
    plan = plan_template(parse_template(template), TOK, max_seq_len=256, max_candidates=6,
                         default_max_len=16)
    first_sweep = search_calls(plan, SampleConfig(), InfillOptions(), mask_id=TOK.mask_id,
                               pad_id=TOK.pad_id)
    assert first_sweep <= 41 + 11 * (4 + 4)
    r = infill(pred, TOK, template)
    assert pred.calls == r.nfe  # every scoring call is one forward of its copies
    assert first_sweep <= r.nfe <= InfillOptions().max_search_calls
    pred = Counting()
    r = infill(pred, TOK, template, options=InfillOptions(max_search_calls=150))
    assert first_sweep <= pred.calls == r.nfe <= 150


def test_a_search_over_the_call_limit_is_refused_before_any_model_work():
    pred = Counting()
    template = "[MASK:1-50] " * 5
    with pytest.raises(UserError) as e:
        infill(pred, TOK, template, options=InfillOptions(max_search_calls=100))
    msg = str(e.value)
    assert "\n" not in msg and pred.calls == 0
    assert msg.startswith("template '[MASK:1-50] [MASK:1-50] [MASK:1-50] [MASK:1-50] [MASK:1-50] '")
    assert "5 variable-length gaps needs up to" in msg and "over the limit of 100" in msg
    assert "raise max_search_calls" in msg
    # the limit counts what the search really does: the first sweep fits exactly
    plan = plan_template(parse_template("a [MASK:1-9] b [MASK:1-9] c [MASK:1-9]"), TOK,
                         max_seq_len=256, max_candidates=6, default_max_len=16)
    need = search_calls(plan, SampleConfig(), InfillOptions(), mask_id=TOK.mask_id,
                        pad_id=TOK.pad_id)
    with pytest.raises(UserError, match=f"needs up to {need} model calls"):
        infill(pred, TOK, "a [MASK:1-9] b [MASK:1-9] c [MASK:1-9]",
               options=InfillOptions(max_search_calls=need - 1))
    r = infill(pred, TOK, "a [MASK:1-9] b [MASK:1-9] c [MASK:1-9]",
               options=InfillOptions(max_search_calls=need))
    assert r.nfe == need  # no room for a second sweep
    with pytest.raises(UserError, match="max_search_calls must be 0"):
        infill(pred, TOK, "a [MASK:1-3]", options=InfillOptions(max_search_calls=-1))


def test_fixed_length_gaps_are_never_limited():
    pred = Counting()
    r = infill(pred, TOK, "a [MASK:40] b [MASK:40]", options=InfillOptions(max_search_calls=1))
    assert len(r.gaps[0].tokens) == 40 and r.candidates == []


def test_the_call_limit_holds_with_blocks_and_counts_no_block_misfit():
    """With ``block_length``, a run's steps are rounded up to a multiple of its blocks, and a
    run whose other gaps are shorter than their longest has fewer blocks, which can round up
    to more steps: ``search_calls`` counted the runs after the first at the longest only (45
    planned, 53 made at block_length 5) and refused, as not fitting whole blocks, a canvas at
    the longest lengths that the search never builds."""
    template = "In the [MASK:1-6] God [MASK:1-6] the [MASK:1-6] and the earth."
    config = SampleConfig(block_length=5)
    plan = plan_template(parse_template(template), TOK, max_seq_len=256, max_candidates=6,
                         default_max_len=16)
    need = search_calls(plan, config, InfillOptions(), mask_id=TOK.mask_id, pad_id=TOK.pad_id)
    pred = Counting()
    r = infill(pred, TOK, template, config, options=InfillOptions(max_search_calls=need))
    assert pred.calls == r.nfe <= need
    template = "x" + "[MASK:1-4]y" * 6
    free = infill(Counting(), TOK, template, SampleConfig(block_length=4),
                  options=InfillOptions(max_search_calls=0))
    capped = infill(Counting(), TOK, template, SampleConfig(block_length=4))
    assert capped.text == free.text and capped.nfe == free.nfe <= InfillOptions().max_search_calls


def test_a_block_length_longer_than_a_short_canvas_fits_the_longest_one_below_it():
    """A length search builds canvases shorter than the template's longest: a block length
    whose whole blocks overrun one ("block_length 2 does not fit a canvas of 21 tokens", where
    the exhaustive search had filled longer canvases) becomes the longest that fits there,
    and the planned calls still bound the real ones."""
    for template, bl in (("[MASK:1-6] God [MASK:1-6] the [MASK:1-6]", 2),
                         ("[MASK:1-3] x [MASK:1-3]", 4), ("a[MASK:1-5]", 7)):
        config = SampleConfig(block_length=bl)
        plan = plan_template(parse_template(template), TOK, max_seq_len=256, max_candidates=6,
                             default_max_len=16)
        need = search_calls(plan, config, InfillOptions(), mask_id=TOK.mask_id,
                            pad_id=TOK.pad_id)
        pred = Counting()
        r = infill(pred, TOK, template, config, options=InfillOptions(max_search_calls=need))
        assert pred.calls == r.nfe <= need, template


def test_refills_of_broken_constraints_count_toward_the_call_limit():
    """Several tokens of a regex gap committed in one step can break it, and its refill made
    a model call per re-masked position: a search planned at exactly the limit (6 calls)
    made 14. Now a refill is made only while it fits; past that, the broken gap is completed
    from its automaton without the model, and every gap still satisfies its regex."""
    template = ["<", Gap(min_len=2, max_len=8, regex=r"(ab|ba)+"), ">"]
    config = SampleConfig(steps=2)
    plan = plan_template(template, TOK, max_seq_len=256, max_candidates=6, default_max_len=16)
    need = search_calls(plan, config, InfillOptions(), mask_id=TOK.mask_id, pad_id=TOK.pad_id)
    repaired = 0
    for seed in range(3):
        pred = Counting(seed)
        r = infill(pred, TOK, template, config, options=InfillOptions(max_search_calls=need))
        assert pred.calls == r.nfe <= need, (seed, r.nfe, need)
        assert re.fullmatch(r"<(ab|ba)+>", r.text) and len(r.candidates) == 4, r.text
        repaired += r.repaired
        # room for the refills: they are made with the model, as without a limit
        free = infill(Counting(seed), TOK, template, config,
                      options=InfillOptions(max_search_calls=0))
        roomy = infill(Counting(seed), TOK, template, config,
                       options=InfillOptions(max_search_calls=free.nfe))
        assert roomy.as_dict() == free.as_dict()
    assert repaired  # the predictor does break the gap


def test_the_coordinate_search_counts_refills_in_its_later_sweeps_too():
    """Over ``max_joint`` combinations, every run, first sweep or later, keeps its refills
    within the limit (before: 36 to 58 calls at limits of 20 to 60)."""
    template = ["x"] + [p for _ in range(4) for p in (Gap(min_len=2, max_len=6,
                                                          regex=r"(ab|ba)+"), "y")]
    config = SampleConfig(steps=2)
    options = InfillOptions(max_joint=2)
    plan = plan_template(template, TOK, max_seq_len=256, max_candidates=6, default_max_len=16)
    need = search_calls(plan, config, options, mask_id=TOK.mask_id, pad_id=TOK.pad_id)
    for limit in (need, need + 5, need + 40):
        for seed in range(2):
            pred = Counting(seed)
            r = infill(pred, TOK, template, config,
                       options=dataclasses.replace(options, max_search_calls=limit))
            assert pred.calls == r.nfe <= limit, (limit, seed, r.nfe)
            assert all(re.fullmatch(r"(ab|ba)+", g.text) for g in r.gaps), r.text


def test_a_search_over_the_limit_is_a_search_limit_error_with_its_numbers():
    """The server words the refusal without "raise max_search_calls" from these fields (its
    clients cannot set the limit), not by cutting the library's text."""
    with pytest.raises(SearchLimitError) as e:
        infill(Counting(), TOK, "[MASK:1-50] " * 5, options=InfillOptions(max_search_calls=100))
    err = e.value
    assert isinstance(err, UserError) and (err.variable, err.limit) == (5, 100)
    assert err.need > 100 and str(err) == err.message()
    assert str(err).endswith(", or raise max_search_calls (0: no limit)")
    assert err.message(raise_hint=False) == str(err).removesuffix(
        ", or raise max_search_calls (0: no limit)")
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


def test_a_refused_template_of_gap_objects_is_named_in_the_template_syntax():
    """Gaps built in Python were spelled ``[MASK:]`` (no gap of the syntax, lengths lost)."""
    template = ["The ", Gap(min_len=1, max_len=20), " sat ", Gap(3), Gap(min_len=2, name="x"),
                Gap(max_len=9), "."]
    with pytest.raises(SearchLimitError, match=re.escape(
            "template 'The [MASK:1-20] sat [MASK:3][MASK:x:2-?][MASK:?-9].': ")):
        infill(Counting(), TOK, template, options=InfillOptions(max_search_calls=5))


@pytest.mark.parametrize("template", ["ab[MASK:1-4]cd", "[MASK:1-4]cd", "ab [MASK:1-4] cd",
                                      "ab[MASK:0-3]"])
def test_one_gap_gets_the_length_whose_text_has_the_lowest_exact_bound(template):
    """Brute force: every candidate's text scored alone by the exact bound (all mask sets
    enumerated); the search, scoring all candidates at once with shared noise, picks its
    argmin on random tiny models: a gap at either end, between spaces, or allowed empty."""
    for seed in range(4):
        model = _tiny(seed)
        r = infill(model, TOK, template, SampleConfig(temperature=0.0, seed=seed),
                   options=InfillOptions(elbo_seed=seed, elbo_samples=64))
        assert sorted(c.lengths for c in r.candidates) == [(n,) for n in range(
            0 if "0-" in template else 1, 4 if "0-" in template else 5)]
        exact = {c.lengths: _exact(model, list(TOK.encode(c.text))) for c in r.candidates}
        chosen = next(c for c in r.candidates if c.text == r.text)
        assert chosen.lengths == min(exact, key=exact.__getitem__), (seed, exact)
