"""Repetition penalties (``unmask.sampling.penalties``): the formula by hand, every decoder that
reads logits against an independent reference, exactness of the two speculative decoders under
penalties (greedy and sampled), and the one-line refusals."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
import torch

from unmask import api
from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.loaded import Loaded
from unmask.model import Transformer
from unmask.sampling import generate, generate_ar
from unmask.sampling import penalties as pen_mod
from unmask.sampling.hybrid import HybridRun
from unmask.sampling.penalties import (
    Penalties,
    banned_ids,
    prefix_counts,
    special_ids,
    text_counts,
    token_counts,
)
from unmask.sampling.speculative import SpeculativeRun
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def reference(logits: torch.Tensor, prompt: list[int], gen: list[int], r: float = 1.0,
              a: float = 0.0, f: float = 0.0, n: int = 0,
              exempt: tuple[int, ...] = ()) -> torch.Tensor:
    """The penalties written out token by token (the definition the module implements; the
    model's special ids are never counted)."""
    out = logits.clone()
    for v in (set(prompt) | set(gen)) - set(exempt):
        out[v] = out[v] / r if out[v] > 0 else out[v] * r
    for v in set(gen) - set(exempt):
        out[v] -= a + f * gen.count(v)
    for v in banned_next(prompt + gen, n, exempt):
        out[v] = float("-inf")
    return out


def banned_next(text: list[int], n: int, exempt: tuple[int, ...] = ()) -> set[int]:
    """The tokens that would complete an n-gram ``text`` already holds (none with a special
    id), written out by hand."""
    if n < 1 or len(text) < n - 1:
        return set()
    ctx = text[len(text) - n + 1:]
    if any(t in exempt for t in ctx):
        return set()
    return {text[i + n - 1] for i in range(len(text) - n + 1)
            if text[i:i + n - 1] == ctx and not any(t in exempt for t in text[i:i + n])}


def test_the_formula_by_hand():
    logits = torch.tensor([2.0, -2.0, 1.0, 0.5, 3.0])
    seen = torch.tensor([1.0, 1.0, 2.0, 0.0, 0.0])  # prompt + generated
    gen = torch.tensor([0.0, 1.0, 2.0, 0.0, 0.0])  # generated only
    got = Penalties(repetition=2.0, presence=0.5, frequency=0.25).apply(logits, seen, gen)
    # 2/2; -2*2 - 0.5 - 0.25; 1/2 - 0.5 - 0.5; untouched; untouched
    assert got.tolist() == pytest.approx([1.0, -4.75, -0.5, 0.5, 3.0])
    assert got.tolist() == pytest.approx(
        reference(logits, [0, 1, 2], [1, 2, 2], 2.0, 0.5, 0.25).tolist())
    assert Penalties.of(SampleConfig()) is None  # neutral: no work anywhere
    assert Penalties.of(SampleConfig(presence_penalty=-0.5)) == Penalties(presence=-0.5)



def _dense_where(p: Penalties, logits, seen, gen, where):
    """``Penalties.apply(..., where=...)`` as it was: every position of the canvas computed,
    the unmarked ones put back (the reference of the sparse path)."""
    V = logits.shape[-1]
    cols = (seen.reshape(-1, V) > 0).any(dim=0).nonzero().flatten()
    sub = logits.index_select(-1, cols)
    pen = sub
    if p.repetition != 1.0:
        hit = seen.index_select(-1, cols) > 0
        pen = torch.where(hit, torch.where(pen > 0, pen / p.repetition, pen * p.repetition), pen)
    g = gen.index_select(-1, cols)
    pen = pen - p.presence * (g > 0).to(pen.dtype) - p.frequency * g
    pen = torch.where(where[..., None], pen, sub)
    return logits.clone().index_copy_(-1, cols, pen)


@pytest.mark.parametrize("knobs", [dict(repetition=1.3), dict(presence=0.4, frequency=-0.2),
                                   dict(repetition=0.8, presence=-0.3, frequency=0.5)])
def test_penalising_marked_positions_equals_the_dense_computation(knobs):
    """With ``where`` (the commit loop's open positions) only the marked positions are read
    and written: bit for bit what computing the whole canvas and putting the rest back gave,
    -inf and NaN logits included, with counts per row (the canvas: each position at its own
    row's tokens) and per position."""
    g = torch.Generator().manual_seed(3)
    p = Penalties(**knobs)
    for trial in range(20):
        B, L, V = 1 + trial % 3, 7, 11
        logits = torch.randn(B, L, V, generator=g) * 3
        logits[torch.rand(B, L, V, generator=g) < 0.1] = float("-inf")
        logits[0, 0, 0] = float("nan")
        seen = (torch.rand(B, 1, V, generator=g) < 0.4).float() * 2
        gen = seen * (torch.rand(B, 1, V, generator=g) < 0.5)
        where = torch.rand(B, L, generator=g) < 0.5
        want = _dense_where(p, logits, seen, gen, where)
        got = p.apply(logits.clone(), seen, gen, where=where, inplace=True)
        assert torch.equal(got.isnan(), want.isnan()), trial
        assert torch.equal(got.nan_to_num(0.0), want.nan_to_num(0.0)), trial
        assert torch.equal(p.apply(logits, seen, gen, where=where).nan_to_num(0.0),
                           want.nan_to_num(0.0))
        # counts per position (not per row): the general path
        each, each_gen = seen.expand(B, L, V).clone(), gen.expand(B, L, V).clone()
        got = p.apply(logits.clone(), each, each_gen, where=where, inplace=True)
        assert torch.equal(got.nan_to_num(0.0), want.nan_to_num(0.0)), trial


def test_the_canvas_penalty_computes_only_the_open_positions():
    """A commit loop's penalty works on the open positions' columns, never on a (B, L, K)
    slice of the whole canvas: no tensor it makes holds more than (open positions) x (seen
    tokens), a row of counts per row (B, V) or a mask of the canvas (B, L) (the whole-canvas
    version took up to 12x as long at eight rows of the demo's canvas)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and not func._schema.is_mutable:  # memory made
                made = out.untyped_storage().nbytes() // out.element_size()  # (not a view's)
                self.numel = max(self.numel, made)
            return out

    B, L, V = 2, 64, 50
    tokens = torch.full((B, L), 0)
    tokens[:, :8] = torch.arange(4, 12)  # 8 committed tokens per row, the rest open
    tokens[:, 8:12] = 0
    locked = torch.zeros(B, L, dtype=torch.bool)
    locked[:, 12:] = True  # only 4 open positions per row
    c = pen_mod.PenaltyConstraint(Penalties(repetition=1.3, presence=0.5), mask_id=0,
                                  locked=locked, attention_mask=None, exempt=(0,))
    logits = torch.randn(B, L, V)
    with Largest() as seen:
        c.apply(logits, tokens)
    assert seen.numel <= max(B * 4 * 8, B * V, B * L), seen.numel  # the canvas: B * L * 8

def test_counts_and_prefix_counts():
    tokens = torch.tensor([[3, 3, 1, 9], [0, 2, 2, 2]])
    keep = torch.tensor([[True, True, False, True], [True, True, True, False]])
    c = token_counts(tokens, keep, 4)  # id 9 is outside the vocabulary: ignored
    assert c.tolist() == [[0, 0, 0, 2], [1, 0, 2, 0]]
    base = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    drafts = torch.tensor([[1, 1], [2, 0]])
    live = torch.tensor([[True, True], [True, False]])
    pc = prefix_counts(base, drafts, live)  # position j sees the first j live drafts
    assert pc.tolist() == [
        [[1, 0, 0], [1, 1, 0], [1, 2, 0]],
        [[0, 0, 0], [0, 0, 1], [0, 0, 1]],
    ]


def causal(seed: int) -> Transformer:
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, attention="causal",
                       init_std=0.3, **TOK.special_ids())  # fmt: skip
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


KNOBS = [dict(r=1.5), dict(a=0.7, f=0.4), dict(r=1.3, a=-0.3, f=0.9), dict(n=2),
         dict(r=1.2, n=3)]


def as_config(knobs: dict) -> dict:
    return dict(repetition_penalty=knobs.get("r", 1.0), presence_penalty=knobs.get("a", 0.0),
                frequency_penalty=knobs.get("f", 0.0),
                no_repeat_ngram_size=knobs.get("n", 0))  # fmt: skip


def ar_reference(m: Transformer, prompt: list[int], n: int, knobs: dict) -> list[int]:
    """Greedy decoding without a cache, the penalties by ``reference``."""
    start = prompt or [m.config.eos_id]  # an empty prompt's start token is not text
    gen: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            logits = m(torch.tensor([start + gen]))[0, -1]
            logits = reference(logits, prompt, gen, **knobs, exempt=special_ids(m.config))
            logits[m.config.mask_id] = float("-inf")
            gen.append(int(logits.argmax()))
    return gen


PROMPTS = [[10, 20, 30, 40, 50], [7, 8], [], [100, 101, 100, 101]]


@pytest.mark.parametrize("knobs", KNOBS)
def test_ar_greedy_equals_the_reference_loop(knobs):
    m = causal(0)
    want = [ar_reference(m, p, 16, knobs) for p in PROMPTS]
    start = m.config.eos_id
    got = generate_ar(m, PROMPTS, max_new_tokens=16, eos_id=None, start_id=start,
                      penalties=Penalties.of(SampleConfig(**as_config(knobs))))  # fmt: skip
    assert got.gen_ids == want  # padded batch, an empty prompt: as each row alone
    plain = generate_ar(m, PROMPTS, max_new_tokens=16, eos_id=None, start_id=start)
    assert plain.gen_ids != want  # the penalties changed the text


@pytest.mark.parametrize("knobs", KNOBS)
@pytest.mark.parametrize("draft_length", [2, 5])
def test_speculative_greedy_equals_ar_with_the_same_penalties(knobs, draft_length):
    verifier = causal(1)
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64,
                       attention="bidirectional", init_std=0.3, **TOK.special_ids())  # fmt: skip
    torch.manual_seed(11)
    drafter = Transformer(cfg).double().eval()
    penalties = Penalties.of(SampleConfig(**as_config(knobs)))
    prompts = [p for p in PROMPTS if p]
    want = generate_ar(verifier, prompts, max_new_tokens=20, eos_id=None, penalties=penalties)
    got = SpeculativeRun(verifier, drafter, prompts, max_new_tokens=20, eos_id=None,
                         draft_length=draft_length, penalties=penalties).run()  # fmt: skip
    assert got.gen_ids == want.gen_ids


def hybrid_model(seed: int) -> Transformer:
    cfg = model_preset("tiny", vocab_size=12, max_seq_len=64, attention="causal",
                       init_std=0.6, draft_block=3, mask_id=0, pad_id=1, eos_id=2,
                       bos_id=3)  # fmt: skip
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


@pytest.mark.parametrize("knobs", KNOBS)
@pytest.mark.parametrize("predraft", ["all", "ends"])
def test_hybrid_greedy_equals_ar_with_the_same_penalties(knobs, predraft):
    m = hybrid_model(0)
    prompts = [[4, 5, 6, 7, 4], [7, 6], [5, 6, 7, 4, 5, 6, 7, 4]]
    penalties = Penalties.of(SampleConfig(**as_config(knobs)))
    want = generate_ar(m, prompts, max_new_tokens=18, eos_id=None, penalties=penalties)
    for rows in (prompts, prompts[:1]):
        got = HybridRun(m, rows, max_new_tokens=18, eos_id=None, predraft=predraft,
                        penalties=penalties).run()  # fmt: skip
        assert got.gen_ids == want.gen_ids[: len(rows)]


def exact_marginals(next_logits, prompt: list[int], V: int, n: int, mask_id: int | list[int],
                    knobs: dict, exempt: tuple[int, ...]) -> list[torch.Tensor]:
    """Exact distributions of generated tokens 1..n at temperature 1 with the penalties, by
    enumerating every path (``next_logits(seq) -> (V,)``); ``mask_id``: the id, or ids, never
    proposed."""
    out = [torch.zeros(V, dtype=torch.float64) for _ in range(n)]
    for path in itertools.product(range(V), repeat=n):
        prob = 1.0
        for j in range(n):
            logits = reference(next_logits(prompt + list(path[:j])).double(), prompt,
                               list(path[:j]), **knobs, exempt=exempt)  # fmt: skip
            logits[mask_id] = float("-inf")
            prob *= float(torch.softmax(logits, dim=-1)[path[j]])
        for j in range(n):
            out[j][path[j]] += prob
    return out


def tv(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().sum() / 2)


def marginals(rows: list[list[int]], V: int, n: int) -> list[torch.Tensor]:
    counts = torch.zeros(n, V, dtype=torch.float64)
    for row in rows:
        for j in range(n):
            counts[j, row[j]] += 1
    return list(counts / counts.sum(dim=1, keepdim=True))


STRONG = dict(r=1.5, a=0.5, f=1.5)


NGRAM = dict(r=1.2, n=2)


@pytest.mark.parametrize("knobs", [STRONG, NGRAM])
def test_speculative_sampling_is_distributed_as_ar_with_penalties(monkeypatch, knobs):
    """Temperature 1 over a Markov verifier: the committed tokens follow the penalised AR
    distribution; judging every draft by the committed text alone (ignoring the drafts before
    it) fails the same check."""
    from tests.test_speculative import MASK, TABLE, FixedDrafter, Markov, V

    prompt, n = [1, 2], 3
    def verifier() -> Markov:  # no pad token: every one of 0..3 is text (mask 4 is exempt)
        m = Markov()
        m.config = dataclasses.replace(m.config, pad_id=None)
        return m

    exempt = special_ids(verifier().config)
    assert exempt == (MASK,)
    exact = exact_marginals(lambda seq: TABLE[seq[-1]], prompt, V, n, MASK, knobs, exempt)
    plain = exact_marginals(lambda seq: TABLE[seq[-1]], prompt, V, n, MASK, {}, exempt)
    assert max(tv(e, p) for e, p in zip(exact, plain, strict=True)) > 0.1  # they matter
    penalties = Penalties.of(SampleConfig(**as_config(knobs)))

    def draw(rows: int) -> list[list[int]]:
        return SpeculativeRun(verifier(), FixedDrafter(), [prompt] * rows, max_new_tokens=n,
                              draft_length=2, temperature=1.0, eos_id=None, penalties=penalties,
                              generator=torch.Generator().manual_seed(0)).run().gen_ids  # fmt: skip

    got = marginals(draw(3000), V, n)
    assert max(tv(e, g) for e, g in zip(exact, got, strict=True)) < 0.05
    if knobs is not STRONG:
        return
    monkeypatch.setattr(pen_mod, "prefix_counts",
                        lambda base, drafts, live=None, exempt=(): base[:, None].expand(
                            -1, drafts.shape[1] + 1, -1))  # fmt: skip
    wrong = marginals(draw(3000), V, n)
    assert max(tv(e, g) for e, g in zip(exact, wrong, strict=True)) > 0.1


@pytest.mark.parametrize("knobs", [STRONG, NGRAM])
def test_hybrid_sampling_is_distributed_as_ar_with_penalties(knobs):
    m = hybrid_model(5)
    prompt, n, V = [4, 6, 5], 3, m.config.vocab_size
    with torch.no_grad():
        exact, plain = (exact_marginals(lambda seq: m(torch.tensor([seq]))[0, -1], prompt, V, n,
                                        [m.config.mask_id, *banned_ids(m.config)], k,
                                        special_ids(m.config))
                        for k in (knobs, {}))
    assert max(tv(e, p) for e, p in zip(exact, plain, strict=True)) > 0.1  # they matter
    penalties = Penalties.of(SampleConfig(**as_config(knobs)))
    rows: list[list[int]] = []
    for s in range(150):
        rows += HybridRun(m, [prompt] * 10, max_new_tokens=n, temperature=1.0, eos_id=None,
                          penalties=penalties,
                          generator=torch.Generator().manual_seed(s)).run().gen_ids  # fmt: skip
    got = marginals(rows, V, n)
    assert max(tv(e, g) for e, g in zip(exact, got, strict=True)) < 0.05


class Constant:
    """Every position proposes token 5 (logit 3), then 6 (2), then 7 (1.5); the rest 0."""

    def __call__(self, tokens: torch.Tensor, attention_mask=None) -> torch.Tensor:
        logits = torch.zeros(*tokens.shape, 16, dtype=torch.float64)
        logits[..., 5], logits[..., 6], logits[..., 7] = 3.0, 2.0, 1.5
        return logits


@pytest.mark.parametrize(
    ("prompt", "n", "pen", "want"),
    [
        ([9], 3, {}, [5, 5, 5]),
        ([9], 3, dict(frequency_penalty=1.2), [5, 5, 6]),  # 5, 6 (2 > 1.8), 5 (1.8 > 1.5, .8)
        ([9], 3, dict(presence_penalty=2.0), [5, 6, 7]),  # 5, 6 (2 > 1), 7 (1.5 > 1, 0)
        ([9], 3, dict(repetition_penalty=4.0), [5, 6, 7]),  # 5, 6 (2 > .75), 7 (1.5 > .75, .5)
        ([5], 1, dict(repetition_penalty=2.0), [6]),  # the prompt's 5 counts: 1.5 < 2
        ([5, 9], 1, dict(presence_penalty=2.0), [5]),  # presence: generated text only
    ],
)
def test_commit_loop_penalises_masked_positions_by_the_committed_text(prompt, n, pen, want):
    cfg = SampleConfig(gen_length=n, steps=n, **pen)
    r = generate(Constant(), [prompt], cfg, mask_id=0, pad_id=1, eos_id=None)
    assert sorted(r.gen_ids[0]) == want  # one token a step; the order of positions is free


def repeats(text: list[int], n: int, exempt: tuple[int, ...] = ()) -> int:
    """How many n-grams of ``text`` (none with a special id) repeat an earlier one."""
    grams = [tuple(text[i:i + n]) for i in range(len(text) - n + 1)]
    grams = [g for g in grams if not any(t in exempt for t in g)]
    return len(grams) - len(set(grams))


def brute_bans(t: list[int], k: list[bool], p: int, n: int, causal_: bool) -> set[int]:
    """Every token that, written at position p, makes an n-gram of text through p equal to
    another n-gram of text (causal: ending at p, against those that end before it)."""
    L, out = len(t), set()
    for v in range(3):
        tt, kk = t[:p] + [v] + t[p + 1:], k[:p] + [True] + k[p + 1:]
        if causal_:
            kk = kk[: p + 1]  # the text ends at the query
        grams = {s: tuple(tt[s:s + n]) for s in range(len(kk) - n + 1) if all(kk[s:s + n])}
        for s, g in grams.items():
            if s <= p < s + n and (not causal_ or s + n - 1 == p):
                if any(g == h and s2 != s for s2, h in grams.items()):
                    out.add(v)
    return out if 0 <= p < L else set()


@pytest.mark.parametrize("causal_", [True, False])
def test_ngram_bans_equal_a_brute_force_search(causal_, benchmark):
    """The canvas search of the library, and the whole-text left-to-right search that the
    n-gram index replaced (``benchmarks/penalty_cost.py``'s reference, which
    ``test_penalty_index`` compares the index with)."""
    search = (benchmark("penalty_cost").searched_ngram_bans if causal_
              else pen_mod.ngram_bans)
    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        B, L, n = 3, int(torch.randint(1, 14, (1,), generator=g)), 1 + trial % 4
        tokens = torch.randint(0, 3, (B, L), generator=g)  # 3 ids: n-grams repeat often
        ok = torch.rand(B, L, generator=g) < 0.8
        query = torch.randint(-1, L + 1, (B, 4), generator=g)
        if not causal_:  # a canvas asks about its open positions
            ok[torch.arange(B)[:, None], query.clamp(0, L - 1)] = False
        b, q, v = search(tokens, ok, query, n)
        got = {(int(i), int(j), int(t)) for i, j, t in zip(b, q, v, strict=True)}
        want = {(i, j, v) for i in range(B) for j, p in enumerate(query[i].tolist())
                for v in brute_bans(tokens[i].tolist(), ok[i].tolist(), p, n, causal_)}
        assert got == want, (trial, tokens, ok, query, n)



def test_a_canvas_searches_every_place_of_the_query_in_one_pass(monkeypatch):
    """``ngram_bans`` on a canvas looks for the query at every place of an n-gram in one
    vectorised pass: the number of tensor operations of that search does not grow with n (a
    loop over the places made n passes of ~30 small operations each, every step of a commit
    loop with ``no_repeat_ngram_size``)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.ops += 1
            return func(*args, **(kwargs or {}))

    empty = torch.zeros(0, dtype=torch.long)
    monkeypatch.setattr(pen_mod, "_self_repeat", lambda *a: (empty, empty, empty))
    tokens = torch.randint(4, 9, (2, 40), generator=torch.Generator().manual_seed(0))
    ok = torch.ones(2, 40, dtype=torch.bool)
    ok[:, 20:] = False
    counts = []
    for n in (2, 3, 4):
        Count.ops = 0
        with Count():
            pen_mod.ngram_bans(tokens, ok, torch.tensor([[20, 21]] * 2), n)
        counts.append(Count.ops)
    assert counts[0] == counts[1] == counts[2], counts

def test_a_ban_never_leaves_a_position_without_a_token():
    """A constraint allows two tokens at position 1 and one at position 0; banning both of
    position 1's keeps them (nothing else is left), banning position 0's only one keeps it."""
    logits = torch.full((1, 3, 5), float("-inf"))
    logits[0, 0, 2] = 1.0
    logits[0, 1, 3], logits[0, 1, 4] = 1.0, 2.0
    logits[0, 2] = 0.0
    bans = (torch.tensor([0, 0, 0, 0]), torch.tensor([0, 1, 1, 2]), torch.tensor([2, 3, 4, 1]))
    out = pen_mod.ban(logits.clone(), bans)
    assert out[0, 0, 2] == 1.0 and out[0, 1, 3] == 1.0 and out[0, 1, 4] == 2.0
    assert out[0, 2, 1] == float("-inf") and torch.isfinite(out[0, 2, [0, 2, 3, 4]]).all()
    out = pen_mod.ban(logits.clone(), (bans[0][1:2], bans[1][1:2], bans[2][1:2]))
    assert out[0, 1, 3] == float("-inf") and out[0, 1, 4] == 2.0  # one of two: banned


def test_a_constraint_wins_over_the_ban_left_to_right():
    """Constrained causal decoding (``ARRun(allowed=...)``) that allows only token 7 after a
    prompt of 7s: the bigram (7, 7) is banned, but nothing else is allowed, so 7 it is."""
    from unmask.sampling.ar import ARRun

    m = causal(0)
    only7 = torch.zeros(1, m.config.vocab_size, dtype=torch.bool)
    only7[0, 7] = True
    run = ARRun(m, [[7, 7, 7]], max_new_tokens=5, eos_id=None, allowed=lambda t, x: only7,
                penalties=Penalties(repetition=1.3, ngram=2))  # fmt: skip
    assert run.run().gen_ids == [[7] * 5]


def test_the_canvas_asks_only_where_a_ban_can_reach():
    """``PenaltyConstraint`` asks ``ngram_bans`` about the open positions near committed text
    only: the same bans as asking about every open position."""
    g = torch.Generator().manual_seed(1)
    for trial in range(30):
        B, L, n, V = 2, 12, 1 + trial % 3, 6
        tokens = torch.randint(4, V, (B, L), generator=g)
        tokens[torch.rand(B, L, generator=g) < 0.4] = 0  # masks
        locked = torch.zeros(B, L, dtype=torch.bool)
        c = pen_mod.PenaltyConstraint(Penalties(ngram=n), mask_id=0, locked=locked,
                                      attention_mask=None, exempt=(0,))  # fmt: skip
        got = c.apply(torch.zeros(B, L, V), tokens)
        open_ = tokens == 0
        every = torch.where(open_, torch.arange(L).expand(B, L), -1)
        b, q, v = pen_mod.ngram_bans(tokens, ~open_, every, n)
        want = torch.zeros(B, L, V)
        want[b, every[b, q], v] = float("-inf")
        assert torch.equal(got, want), trial


@pytest.mark.parametrize("n", [2, 3])
def test_no_repeated_ngram_left_to_right_or_on_the_canvas(n):
    """Eight text ids (4..11): a random model loops; with the ban, neither the causal decoder
    nor the commit loop (one token a step) writes an n-gram twice."""
    def tiny(attention: str, seed: int) -> Transformer:
        cfg = model_preset("tiny", vocab_size=12, max_seq_len=64, attention=attention,
                           init_std=0.6, mask_id=0, pad_id=1, eos_id=2, bos_id=3)  # fmt: skip
        torch.manual_seed(seed)
        return Transformer(cfg).double().eval()

    prompt, exempt = [4, 5, 6, 4, 5], (0, 1, 2, 3)
    given = repeats(prompt, n, exempt)  # the prompt's own repeat stays
    ar, mdlm = tiny("causal", 0), tiny("bidirectional", 1)
    for knobs in ({}, dict(no_repeat_ngram_size=n)):
        pen = Penalties.of(SampleConfig(**knobs))
        texts = [generate_ar(ar, [prompt], max_new_tokens=24, eos_id=None,
                             penalties=pen).gen_ids[0],
                 generate(mdlm, [prompt], SampleConfig(gen_length=24, steps=24, **knobs),
                          mask_id=0, pad_id=1, eos_id=None).gen_ids[0]]  # fmt: skip
        for text in texts:
            if knobs:
                assert repeats(prompt + text, n, exempt) == given
            else:
                assert repeats(prompt + text, n, exempt) > given  # the model loops


@pytest.mark.parametrize("n", [2, 3])
def test_no_repeated_ngram_among_tokens_committed_in_one_step(n):
    """Tokens committed in one step are placed one by one against the ban (most confident
    first), so it holds at several tokens a step too: 4 a step, the threshold policy, and
    sampled. Before, they were not checked against each other and most rows repeated."""
    cfg = model_preset("tiny", vocab_size=12, max_seq_len=64, init_std=0.6, mask_id=0,
                       pad_id=1, eos_id=2, bos_id=3)
    torch.manual_seed(1)
    mdlm = Transformer(cfg).double().eval()
    prompt, exempt = [4, 5, 6, 4, 5], (0, 1, 2, 3)
    given = repeats(prompt, n, exempt)
    settings = [dict(steps=6), dict(steps=6, temperature=1.0),
                dict(policy="threshold", threshold=0.05)]
    for knobs, seed in itertools.product(settings, range(6)):
        base = SampleConfig(gen_length=24, seed=seed, **knobs)
        off = generate(mdlm, [prompt], base, mask_id=0, pad_id=1, eos_id=None).gen_ids[0]
        on = generate(mdlm, [prompt], dataclasses.replace(base, no_repeat_ngram_size=n),
                      mask_id=0, pad_id=1, eos_id=None).gen_ids[0]
        assert repeats(prompt + on, n, exempt) == given, (knobs, seed, on)
        if seed == 0:
            assert repeats(prompt + off, n, exempt) > given  # the model loops without it


def test_special_tokens_are_never_penalised():
    """EOS in the text (a document separator, an earlier turn's end) must not keep the model
    from stopping: the commit loop and the left-to-right decoders never count special ids."""
    cfg = SampleConfig(gen_length=1, steps=1, repetition_penalty=2.0, frequency_penalty=2.0)
    assert generate(Constant(), [[5]], cfg, mask_id=0, pad_id=1, eos_id=None).gen_ids == [[6]]
    assert generate(Constant(), [[5]], cfg, mask_id=0, pad_id=1, eos_id=5).gen_ids == [[5]]
    cfg = causal(4).config
    eos, bos = cfg.eos_id, cfg.bos_id
    counts = text_counts(Penalties(repetition=2.0), torch.tensor([[eos, 7, bos]]),
                         torch.ones(1, 3, dtype=torch.bool), [False], cfg)  # fmt: skip
    out = counts.penalise(torch.ones(1, cfg.vocab_size))
    assert (out[0, eos], out[0, bos], out[0, 7], out[0, 8]) == (1.0, 1.0, 0.5, 1.0)


def test_decoders_without_logits_refuse_and_bad_values_are_one_line():
    with pytest.raises(UserError, match="repetition_penalty must be a finite number > 0"):
        SampleConfig(repetition_penalty=0)
    with pytest.raises(UserError, match=r"frequency_penalty must be in \[-2, 2\]"):
        SampleConfig(frequency_penalty=3)
    with pytest.raises(UserError, match="presence_penalty must be in"):
        SampleConfig(presence_penalty=float("nan"))
    sedd_cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=32,
                            objective="sedd", **TOK.special_ids())  # fmt: skip
    sedd = Loaded(model=Transformer(sedd_cfg).eval(), tokenizer=TOK, config=sedd_cfg,
                  path=Path("runs/x"))  # fmt: skip
    with pytest.raises(UserError, match="presence_penalty applies to the decoders"):
        api.start(sedd, [5, 6], SampleConfig(gen_length=4, steps=4, presence_penalty=0.5))


def test_cli_flags_reach_the_decoder(tmp_path, capsys):
    import json

    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main

    ar = str(save_checkpoint(tmp_path / "ar", model=causal(0).float(), tokenizer=TOK))
    argv = ["generate", "--model", ar, "--gen-length", "24", "--temperature", "0", "--json",
            "--no-live", "--device", "cpu", "abab"]  # fmt: skip
    out = []
    for flags in ([], ["--frequency-penalty", "2"]):
        assert main([*argv, *flags]) == 0
        out.append(json.loads(capsys.readouterr().out)["results"][0]["tokens"])
    assert out[0] != out[1]
    assert main([*argv, "--repetition-penalty", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--repetition-penalty must be a finite number > 0" in err


@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_server_equals_api_with_penalties(attention):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, attention=attention,
                       init_std=0.1, **TOK.special_ids())  # fmt: skip
    torch.manual_seed(3)  # a model that repeats one token: the penalties must show
    lm = Loaded(model=Transformer(cfg).eval(), tokenizer=TOK, config=cfg, path=Path("runs/x"))
    body = {"prompt": "abcabc", "max_tokens": 12, "frequency_penalty": 1.5,
            "repetition_penalty": 1.3, "no_repeat_ngram_size": 2}  # fmt: skip
    want = api.generate(lm, "abcabc", config=SampleConfig(
        gen_length=12, steps=12, frequency_penalty=1.5, repetition_penalty=1.3,
        no_repeat_ngram_size=2)).texts[0]
    plain = api.generate(lm, "abcabc", config=SampleConfig(gen_length=12, steps=12)).texts[0]
    app = create_app(lm, limits=ServerLimits(max_steps=64), chat_template="plain")
    with TestClient(app) as c:
        r = c.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == want != plain


def test_a_sedd_server_refuses_penalties_before_any_stream():
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=32, objective="sedd",
                       **TOK.special_ids())  # fmt: skip
    lm = Loaded(model=Transformer(cfg).eval(), tokenizer=TOK, config=cfg, path=Path("runs/x"))
    app = create_app(lm, limits=ServerLimits(max_steps=64), chat_template="plain")
    with TestClient(app) as c:
        for stream in (False, True):
            r = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 4, "stream": stream,
                                                "frequency_penalty": 0.5})  # fmt: skip
            err = r.json()["error"]
            assert r.status_code == 400 and err["param"] == "frequency_penalty"
            assert "not to decoder 'sedd'" in err["message"]
        assert c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 4,
                                               "frequency_penalty": 0}).status_code == 200


@pytest.mark.parametrize("causal", [False, True])
def test_ngram_bans_in_chunks_of_queries_equal_one_pass(monkeypatch, causal, benchmark):
    """A long canvas compares its queries in chunks (memory bounded by ``_COMPARED``): the
    bans are the same set as in one pass, for every n (and so in the whole-text reference
    of ``benchmarks/penalty_cost.py``)."""
    from unmask.sampling import penalties

    module = benchmark("penalty_cost") if causal else penalties
    search = module.searched_ngram_bans if causal else penalties.ngram_bans
    limit = "COMPARED" if causal else "_COMPARED"
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(4, 9, (3, 40), generator=g)  # 5 ids: many repeated n-grams
    ok = torch.rand(3, 40, generator=g) > 0.2
    query = torch.randint(-2, 42, (3, 17), generator=g)  # some outside [0, L): ask nothing
    found = 0
    for n in (1, 2, 3, 5):
        whole = search(tokens, ok, query, n)
        found += whole[0].numel()
        monkeypatch.setattr(module, limit, 7)  # one query per comparison
        parts = search(tokens, ok, query, n)
        monkeypatch.undo()
        assert sorted(zip(*(t.tolist() for t in whole), strict=True)) == sorted(
            zip(*(t.tolist() for t in parts), strict=True)), n
    assert found > 0
