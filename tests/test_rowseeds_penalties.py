"""The commit loop's n-gram ban (``PenaltyConstraint``) costs a fixed number of tensor
operations a step whatever n is: ``ngram_bans`` checks every pair of places a query's token
may take in two overlapping n-grams in one pass, ``_near_text`` every place in one pass. One
call per pair (n(n - 1)/2 of them) and one pass per place made the ban, run once per row of
seeded rows, most of a sampled task's time at n = 4 (a tiny model's forward passes are
shared by the rows, the ban is not)."""

from __future__ import annotations

import itertools

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from unmask.sampling import penalties as pen_mod


class Count(TorchDispatchMode):
    """Counts the tensor operations run inside it."""

    ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        Count.ops += 1
        return func(*args, **(kwargs or {}))


def ops_of(fn, *args) -> int:
    Count.ops = 0
    with Count():
        fn(*args)
    return Count.ops


def canvas(L: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(4, 7, (2, L), generator=torch.Generator().manual_seed(0))
    ok = torch.ones(2, L, dtype=torch.bool)
    ok[:, 20:] = False
    ok[:, 22] = True
    return tokens, ok


def test_the_canvas_ban_does_not_grow_with_n():
    tokens, ok = canvas()
    query = torch.tensor([[20, 21, 23]] * 2)
    counts = [ops_of(pen_mod.ngram_bans, tokens, ok, query, n) for n in (2, 3, 4, 5)]
    # a few operations come and go with torch's state (78 or 85 by the tests run before);
    # one call per pair of places grew them with n (80, 150, 255, 395)
    assert max(counts) - min(counts) <= 10, counts


def test_finding_the_positions_a_ban_can_reach_does_not_grow_with_n():
    _, ok = canvas()
    counts = [ops_of(pen_mod._near_text, ~ok, ok, n) for n in (2, 3, 4, 5)]
    assert max(counts) - min(counts) <= 10, counts  # a pass per place grew with n


def brute(t: list[int], k: list[bool], p: int, n: int, vocab: int) -> set[int]:
    """Every token that, written at open position p, makes an n-gram of text through p equal
    to another n-gram of text on the canvas."""
    if not 0 <= p < len(t):
        return set()
    out = set()
    for v in range(vocab):
        tt, kk = t[:p] + [v] + t[p + 1:], k[:p] + [True] + k[p + 1:]
        grams = {s: tuple(tt[s:s + n]) for s in range(len(t) - n + 1) if all(kk[s:s + n])}
        if any(s <= p < s + n and g == h and s != s2
               for (s, g), (s2, h) in itertools.product(grams.items(), repeat=2)):
            out.add(v)
    return out


def test_the_one_pass_ban_equals_a_brute_force_search():
    """Two letters, n up to 6, queries at the edges and between written tokens: the overlaps
    of a query's own n-grams (its token at two places) are common."""
    g = torch.Generator().manual_seed(3)
    for trial in range(80):
        B, L, n = 2, int(torch.randint(1, 16, (1,), generator=g)), 1 + trial % 6
        tokens = torch.randint(0, 2, (B, L), generator=g)
        ok = torch.rand(B, L, generator=g) < 0.75
        query = torch.randint(-1, L + 1, (B, 5), generator=g)
        ok[torch.arange(B)[:, None], query.clamp(0, L - 1)] = False
        b, q, v = pen_mod.ngram_bans(tokens, ok, query, n)
        got = {(int(i), int(j), int(t)) for i, j, t in zip(b, q, v, strict=True)}
        want = {(i, j, t) for i in range(B) for j, p in enumerate(query[i].tolist())
                for t in brute(tokens[i].tolist(), ok[i].tolist(), p, n, 2)}
        assert got == want, (trial, tokens, ok, query, n)
        near = pen_mod._near_text(~ok, ok, n)  # every banned position is asked about
        asked = {(i, int(p)) for i in range(B) for p in near[i] if p >= 0}
        assert {(i, int(query[i, j])) for i, j, _ in want} <= asked


def test_the_canvas_penalty_finds_special_ids_once_a_step():
    """Counts and n-gram ban read the same text (filled, not a special id): one search for the
    special ids a step, not one per count and one for the ban."""
    from unmask.config import SampleConfig

    class Isin(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Isin.calls += "isin" in str(func)
            return func(*args, **(kwargs or {}))

    pen = pen_mod.Penalties.of(SampleConfig(repetition_penalty=1.3, presence_penalty=0.5,
                                            no_repeat_ngram_size=2))
    tokens = torch.tensor([[4, 5, 2, 4, 0, 0, 5, 0]])
    locked = torch.tensor([[True, True, True, False, False, False, False, False]])
    constraint = pen_mod.PenaltyConstraint(pen, mask_id=0, locked=locked, attention_mask=None,
                                           exempt=(0, 1, 2, 3))
    logits = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0))
    with Isin():
        out = constraint.apply(logits.clone(), tokens)
    assert Isin.calls == 1
    # row 0 holds 4 and 5 (r), generated 4 and 5 once each (a); 2 (EOS) is never counted
    want = logits.clone()
    for p in (4, 5, 7):
        for v in (4, 5):
            x = want[0, p, v]
            want[0, p, v] = (x / 1.3 if x > 0 else x * 1.3) - 0.5
    want[0, 4, 5] = float("-inf")  # 4 5 at 3-4 would repeat the n-gram (4, 5)
    want[0, 5, 4] = float("-inf")  # and 4 5 at 5-6
    assert torch.equal(out, want)
