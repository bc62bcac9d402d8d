"""The commit counts of a block under each schedule: exact totals, and no step that commits
nothing while a row has at least as many masks as steps (cosine's rounding gave 10 over 8 steps
as 0, 1, 1, 1, 1, 2, 2, 2, and 65 over 64 thirteen empty steps though 64 over 64 is one a
step)."""

from __future__ import annotations

import pytest
import torch

from unmask.sampling import num_transfer_tokens
from unmask.schedules import SCHEDULES, get_schedule


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_no_step_is_empty_while_masks_outnumber_steps(name) -> None:
    schedule = get_schedule(name)
    for steps in range(1, 70):
        for n in range(steps, 3 * steps + 2):
            counts = schedule.transfer_counts(n, steps)
            assert sum(counts) == n and len(counts) == steps, (n, steps, counts)
            assert min(counts) >= 1, (name, n, steps, counts)
        for n in range(steps):  # fewer masks than steps: the empty steps come last
            counts = num_transfer_tokens(torch.ones(1, n, dtype=torch.bool), steps,
                                         schedule)[0].tolist()
            assert counts == [1] * n + [0] * (steps - n)


def test_cosine_keeps_its_shape() -> None:
    cos = get_schedule("cosine")
    assert cos.transfer_counts(10, 8) == [1, 1, 1, 1, 1, 1, 2, 2]
    assert cos.transfer_counts(8, 4) == [1, 1, 3, 3]  # few first, many last, as before
    assert cos.transfer_counts(32, 8) == [1, 1, 3, 4, 5, 6, 6, 6]
    assert get_schedule("linear").transfer_counts(10, 4) == [3, 3, 2, 2]  # LLaDA's counts
