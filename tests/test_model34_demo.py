"""``unmask demo``'s showcase lines (session 34)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("rate, shown", [(0.3333, "0.33"), (5.55, "5.5"), (22.4, "22"),
                                         (1234.6, "1,235")])
def test_a_slow_rate_is_not_zero_tokens_per_second(rate, shown):
    """8 tokens over --steps 1000 in 24 s were written "0 tokens/s"."""
    from unmask.commands.demo import shown_rate

    assert shown_rate(rate) == shown
