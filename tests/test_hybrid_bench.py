"""``benchmarks/hybrid.py``'s draft agreement, against a model whose predictions are known."""

import pytest
import torch

V, MASK = 50, 0


class Counting(torch.nn.Module):
    """Text is x[t] = t mod V (from 1, skipping the mask id 0). The causal columns predict the
    next count; a draft column at position p predicts the count at p, plus ``error`` where the
    position satisfies ``wrong`` (so chosen draft positions miss)."""

    def __init__(self, wrong=lambda p: torch.zeros_like(p, dtype=torch.bool)) -> None:
        super().__init__()
        self.wrong = wrong

    @staticmethod
    def count(p: torch.Tensor) -> torch.Tensor:
        return 1 + p % (V - 1)

    def forward(self, ids, positions=None, attn_bias=None):
        B, T = ids.shape
        pos = torch.arange(T) if positions is None else positions
        pos = pos.expand(B, T)
        draft = ids == MASK
        want = torch.where(draft, self.count(pos), self.count(pos + 1))
        want = torch.where(draft & self.wrong(pos), self.count(pos + 7), want)
        return torch.nn.functional.one_hot(want, V).float()


def _windows(n=3, L=40):
    return Counting.count(torch.arange(L)).expand(n, L).clone()


def test_draft_agreement_is_one_for_a_perfect_drafter_and_counts_misses(benchmark):
    hybrid = benchmark("hybrid")
    k = 4
    got = hybrid.draft_agreement(Counting(), MASK, _windows(), k)
    assert got["causal"] == 1.0
    assert got["truth"] == [1.0] * k and got["greedy"] == [1.0] * k
    assert got["drafts"] == 3 * len(range(1, 40 - k, k))
    # boundaries b = 1 + 4j: draft position i sits at b + i = 2 + 4j + (i - 1), so a miss at
    # every position p = 3 (mod 4) is position 2 of every block and nothing else
    miss = Counting(wrong=lambda p: p % 4 == 3)
    got = hybrid.draft_agreement(miss, MASK, _windows(), k)
    assert got["truth"] == pytest.approx([1.0, 0.0, 1.0, 1.0])
    assert got["greedy"] == pytest.approx([1.0, 0.0, 1.0, 1.0])
    assert got["causal"] == 1.0


def test_greedy_agreement_follows_the_model_not_the_text(benchmark):
    """Held-out text the model does not predict: drafts that continue the model's own greedy
    text agree with it and not with the text."""
    hybrid = benchmark("hybrid")
    text = torch.randint(1, V, (2, 30), generator=torch.Generator().manual_seed(0))
    got = hybrid.draft_agreement(Counting(), MASK, text, 3)
    assert got["causal"] < 0.2
    assert all(v < 0.2 for v in got["truth"])
    # the model predicts counts by position whatever the text: its greedy continuation is
    # the counts, and so are its drafts
    assert got["greedy"] == [1.0] * 3
