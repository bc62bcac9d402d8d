"""Session 35 (sampling): the commit loop samples the law it says it samples.

A two-position canvas and a mask predictor whose logits at each position depend on the
token at the other one (a table), so the law of the pair is exact and small: step 1 proposes
both positions from ``softmax(logits / T)`` (Gumbel-max), the policy keeps one (random
remasking: either, with probability 1/2; ``low_confidence``: the higher model probability of
its proposal, ties to the left; ``threshold``: both when the second clears the bar), and
step 2 proposes the other given the first. Pearson's chi-square (``chi2_helpers``) against
that law, with fixed seeds; a wrong temperature, a wrong order or a step that forgot the
committed token fails (checked by breaking each)."""

from __future__ import annotations

import pytest
import torch
from chi2_helpers import chi2_bar, pearson

from unmask.config import SampleConfig
from unmask.sampling import generate

V, MASK, PAD = 6, 0, 1
N = 6000
_g = torch.Generator().manual_seed(7)
TABLE = torch.randn(2, V, V, generator=_g, dtype=torch.float64) * 1.5
"""TABLE[j][t]: the logits of position j when the other position holds t (MASK: open)."""


class Pair:
    """Logits of the last two columns from the token at the other one (``TABLE``)."""

    def __call__(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = torch.zeros(*x.shape, V, dtype=torch.float64)  # (B, L, V)
        out[:, -2] = TABLE[0][x[:, -1]]
        out[:, -1] = TABLE[1][x[:, -2]]
        return out


def _p(j: int, other: int, T: float = 1.0) -> torch.Tensor:
    logits = TABLE[j][other].clone()
    logits[MASK] = float("-inf")  # the loop never proposes [MASK]
    return torch.softmax(logits / T, dim=-1)


def law(T: float, rule: str, threshold: float = 0.0) -> torch.Tensor:
    """(V, V) exact law of (first, second) token under ``rule``."""
    P = torch.zeros(V, V, dtype=torch.float64)
    p0, p1 = _p(0, MASK), _p(1, MASK)  # the confidences: probabilities at T = 1
    for a in range(V):
        for b in range(V):
            pr = _p(0, MASK, T)[a] * _p(1, MASK, T)[b]
            if pr == 0:
                continue
            first = bool(p0[a] >= p1[b])  # column 0 wins a tie
            if rule == "random":
                w = 0.5
            else:
                w = float(first)
                if rule == "threshold" and (p1[b] if first else p0[a]) >= threshold:
                    P[a, b] += pr  # both clear it: committed together
                    continue
            P[a] += pr * w * _p(1, a, T)  # column 0 kept, column 1 proposed again
            P[:, b] += pr * (1 - w) * _p(0, b, T)
    return P


def sampled(config: SampleConfig) -> torch.Tensor:
    out = generate(Pair(), [[3]] * N, config, mask_id=MASK, pad_id=PAD, eos_id=None)
    pair = out.tokens[:, -2:]
    return torch.bincount(pair[:, 0] * V + pair[:, 1], minlength=V * V).reshape(V, V)


@pytest.mark.parametrize(("remasking", "T"), [
    ("random", 1.0), ("random", 0.5), ("low_confidence", 1.0), ("low_confidence", 2.0),
])
def test_llada_one_token_a_step_samples_its_law(remasking: str, T: float) -> None:
    config = SampleConfig(gen_length=2, steps=2, temperature=T, remasking=remasking, seed=11)
    counts = sampled(config)
    stat, df = pearson(counts, law(T, "random" if remasking == "random" else "confidence") * N)
    assert stat < chi2_bar(df), (stat, df)


@pytest.mark.parametrize(("T", "threshold"), [(1.0, 0.3), (0.7, 0.2)])
def test_threshold_commits_together_by_its_law(T: float, threshold: float) -> None:
    config = SampleConfig(gen_length=2, steps=2, temperature=T, policy="threshold",
                          threshold=threshold, seed=5)
    counts = sampled(config)
    assert counts.sum() == N
    stat, df = pearson(counts, law(T, "threshold", threshold) * N)
    assert stat < chi2_bar(df), (stat, df)


def test_temperature_zero_is_the_argmax_path() -> None:
    config = SampleConfig(gen_length=2, steps=2, temperature=0.0, seed=3)
    out = generate(Pair(), [[3]] * 4, config, mask_id=MASK, pad_id=PAD, eos_id=None)
    p0, p1 = _p(0, MASK), _p(1, MASK)
    a, b = int(p0.argmax()), int(p1.argmax())
    want = [a, int(_p(1, a).argmax())] if p0[a] >= p1[b] else [int(_p(0, b).argmax()), b]
    assert out.tokens[:, -2:].tolist() == [want] * 4
