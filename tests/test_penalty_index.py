"""The incremental n-gram index of the left-to-right decoders (``NgramIndex``) bans exactly
what searching the whole text at every step did, so ``ar``, ``speculative`` and ``hybrid``
decode token for token as before, and a step's work no longer grows with the text."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from unmask.config import SampleConfig, model_preset
from unmask.model import Transformer
from unmask.sampling.ar import ARRun, forbid_id
from unmask.sampling.hybrid import HybridRun
from unmask.sampling.penalties import (
    NgramIndex,
    Penalties,
    TextCounts,
    token_counts,
)
from unmask.sampling.speculative import SpeculativeRun

V = 12  # a small vocabulary: n-grams repeat, so bans are common
MASK, PAD, EOS, BOS = 0, 1, 2, 3


def searched(search, text: list[int | None], drafts: list[int | None],
             n: int) -> list[set[int]]:
    """The bans at the positions after ``text`` and each draft by the whole-text ``search``
    (``benchmarks/penalty_cost.py``'s ``searched_ngram_bans``, the causal mode the library's
    ``ngram_bans`` had)."""
    seq = text + drafts
    L = len(seq) + 1
    tokens = torch.tensor([[0 if t is None else t for t in seq] + [0]])
    ok = torch.tensor([[t is not None for t in seq] + [False]])
    query = torch.arange(len(text), L)[None]
    b, q, v = search(tokens, ok, query, n)
    out: list[set[int]] = [set() for _ in range(len(drafts) + 1)]
    for qi, vi in zip(q.tolist(), v.tolist(), strict=True):
        out[qi].add(vi)
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_the_index_bans_what_the_whole_text_search_bans(n, benchmark):
    """Random texts (holes: padding, special ids) grown in random pieces, then random drafts
    (a hole among them too): at every position the same set as the whole-text search."""
    search = benchmark("penalty_cost").searched_ngram_bans
    rng = random.Random(n)
    checked = hits = 0
    for _ in range(60):
        def tok() -> int | None:
            return None if rng.random() < 0.08 else rng.randrange(4, 4 + rng.randint(2, 5))

        text = [None] * rng.randint(0, 3) + [tok() for _ in range(rng.randint(0, 12))]
        index = NgramIndex(n, [text])
        for _ in range(rng.randint(0, 4)):
            more = [tok() for _ in range(rng.randint(0, 5))]
            index.extend(0, more)
            text += more
        for _ in range(3):
            drafts = [tok() for _ in range(rng.randint(0, 5))]
            got = index.bans(0, drafts)
            assert got == searched(search, text, drafts, n), (text, drafts)
            checked += len(got)
            hits += sum(map(bool, got))
    assert hits > checked // 10  # the texts repeat: many checks ban something


def tiny(attention: str, seed: int, **kw) -> Transformer:
    cfg = model_preset("tiny", vocab_size=V, max_seq_len=64, attention=attention, init_std=0.6,
                       mask_id=MASK, pad_id=PAD, eos_id=EOS, bos_id=BOS, **kw)  # fmt: skip
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


PROMPTS = [[4, 5, 6, 7, 4, 5, 6], [7, 6], [5, 6, EOS, 4, 5, 6, 7, 4, 5], [8, 9, 8]]
PENALTIES = [dict(no_repeat_ngram_size=2), dict(no_repeat_ngram_size=3,
                                                repetition_penalty=1.3)]


def decode(kind: str, temperature: float, penalties: Penalties, eos: int | None,
           seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    common = dict(max_new_tokens=20, temperature=temperature, eos_id=eos, generator=g,
                  penalties=penalties)
    if kind == "ar":
        return ARRun(tiny("causal", seed), PROMPTS, **common).run().gen_ids
    if kind == "speculative":
        return SpeculativeRun(tiny("causal", seed), tiny("bidirectional", seed + 1), PROMPTS,
                              draft_length=3, **common).run().gen_ids  # fmt: skip
    return HybridRun(tiny("causal", seed, draft_block=3), PROMPTS, **common).run().gen_ids


@pytest.mark.parametrize("kind", ["ar", "speculative", "hybrid"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("knobs", PENALTIES)
def test_decoders_decode_as_with_the_whole_text_search(benchmark, kind, temperature, knobs):
    """Ragged rows (an EOS inside one prompt), rows that end at EOS while others go on,
    drafts accepted and rejected, greedy and sampled with a fixed seed: the same tokens as
    the bookkeeping before the index (``benchmarks/penalty_cost.py``'s reference)."""
    old_code = benchmark("penalty_cost").old_code
    penalties = Penalties.of(SampleConfig(**knobs))
    for seed in range(3):
        for eos in (None, EOS):
            with old_code():
                want = decode(kind, temperature, penalties, eos, seed)
            got = decode(kind, temperature, penalties, eos, seed)
            assert got == want, (seed, eos)
            plain = decode(kind, temperature, None, eos, seed)
            assert plain != want or eos is not None  # the ban changed the text


class Largest(TorchDispatchMode):
    """The most elements of any tensor an op makes while inside."""

    def __init__(self) -> None:
        super().__init__()
        self.most = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.most = max(self.most, t.numel())
        return out


def test_a_step_does_not_grow_with_the_text():
    """Penalising the next position and the positions after 4 drafts, then committing: no
    tensor larger than the step's logits or its ban triples (3 × B × 5 × V at most) at a
    text of 2,000 tokens as at one of 20 (the whole-text search made (B, W, ...) tensors at
    every step: 119,910 elements at 2,000 tokens)."""
    pen = Penalties(repetition=1.2, ngram=4)
    most = []
    for L in (20, 2000):
        prompt = torch.randint(4, V, (2, L), generator=torch.Generator().manual_seed(L))
        counts = TextCounts(pen, prompt, torch.ones_like(prompt, dtype=torch.bool), (0, 1))
        counts.penalise(torch.randn(2, V))  # the first call counts the prompt, once
        with Largest() as seen:
            counts.penalise(torch.randn(2, V), inplace=True)
            drafts = prompt[:, :4]
            counts.penalise(torch.randn(2, 5, V), drafts, torch.ones_like(drafts).bool())
            counts.add(drafts[:, :2])
        most.append(seen.most)
    assert max(most) <= 3 * 2 * 5 * V


def test_forbid_id_writes_in_place_only_when_asked():
    x = torch.zeros(2, 5)
    y = forbid_id(x, (0, 3))
    assert y is not x and not x.isinf().any() and y.isinf().sum() == 4
    z = forbid_id(x, (0, 3), inplace=True)
    assert z is x and x[:, [0, 3]].isinf().all() and x.isinf().sum() == 4


def test_token_counts_into_running_counts():
    """A step's counts added to the running ones in place equal counting anew."""
    tokens = torch.tensor([[5, 5, 2, 9], [7, 1, 1, 30]])
    keep = torch.tensor([[True, True, True, False], [True, True, True, True]])
    fresh = token_counts(tokens, keep, 16, (1, 2))
    a, b = torch.ones(2, 16), torch.zeros(2, 16, dtype=torch.float64)
    assert token_counts(tokens, keep, 16, (1, 2), into=(a, b)) is a
    assert torch.equal(a, fresh + 1) and torch.equal(b, fresh.double())
    assert fresh[0, 5] == 2 and fresh[0, 2] == 0 and fresh[1].sum() == 1  # 30: not an id


def test_the_benchmark_runs_and_checks_old_against_new(benchmark, monkeypatch, tmp_path, capsys):
    """``benchmarks/penalty_cost.py`` at a tiny size: a row per length and batch, both
    decoders' tokens compared inside (it raises when they differ)."""
    bench = benchmark("penalty_cost")
    out = tmp_path / "cost.json"
    monkeypatch.setattr("sys.argv", ["penalty_cost.py", "--lengths", "6", "12", "--batches",
                                     "2", "--steps", "2", "--repeats", "1", "--json", str(out)])
    rows = bench.main()
    assert [(r["length"], r["batch"]) for r in rows] == [(6, 2), (12, 2)]
    assert all(r["replay_old_ms"] > 0 and r["replay_new_ms"] > 0 for r in rows)
    assert out.exists() and capsys.readouterr().out.count("\n| 6 | 2 |") == 1
