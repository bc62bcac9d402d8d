"""Pearson's chi-square test of sampled counts against an exact law, shared by the joint-law
tests of the causal decoders (test_causal34_speculative, test_causal34_hybrid)."""

from __future__ import annotations

import torch


def pearson(counts: torch.Tensor, expected: torch.Tensor, pool: float = 5.0) -> tuple[float, int]:
    """Pearson's statistic of ``counts`` against ``expected`` (same shape, same total), the
    cells expected under ``pool`` summed into one; and its degrees of freedom (cells - 1).
    A count in a cell the law cannot reach (expected 0) fails at once."""
    counts, expected = counts.double().reshape(-1), expected.double().reshape(-1)
    assert counts[expected == 0].sum() == 0, "a draw the law cannot give"
    big = expected >= pool
    obs, exp = counts[big], expected[big]
    small = expected[~big].sum()
    if small > 0:
        obs = torch.cat([obs, counts[~big].sum()[None]])
        exp = torch.cat([exp, small[None]])
    return float(((obs - exp) ** 2 / exp).sum()), len(exp) - 1


def chi2_bar(df: int, p: float = 1e-3) -> float:
    """The chi-square statistic (``df`` degrees of freedom) a true law exceeds with probability
    ``p``: the survival function Q(df / 2, x / 2) solved by bisection (27.88 at df 9, p 0.001)."""
    a = torch.tensor(df / 2, dtype=torch.float64)
    lo, hi = 0.0, float(df + 100 + 20 * df**0.5)
    for _ in range(200):
        mid = (lo + hi) / 2
        if torch.special.gammaincc(a, torch.tensor(mid / 2, dtype=torch.float64)) > p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
