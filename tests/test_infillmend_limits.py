"""Limits and messages of the length search (review of session 29).

- ``elbo_seed``, ``default_max_len`` and the ``elbo_samples`` cap were checked in ``infill``
  only: ``fill_plan(options=InfillOptions(elbo_seed=10**23))`` and ``plan_template`` with a
  huge ``default_max_len`` skipped them. ``InfillOptions`` checks them as it is made.
"""

from __future__ import annotations

import pytest
import torch

from unmask.config import InfillOptions
from unmask.errors import UserError
from unmask.infill import Gap, plan_template
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def uniform(tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    return torch.zeros(*tokens.shape, TOK.vocab_size)  # (B, L, V)


@pytest.mark.parametrize("fields, message", [
    ({"elbo_seed": 10**23}, r"elbo_seed must be from 0 to 2\*\*63 - 1"),
    ({"elbo_seed": -1}, r"elbo_seed must be from 0 to 2\*\*63 - 1"),
    ({"default_max_len": 10**11}, "default_max_len must be at most 131,072 tokens"),
    ({"elbo_samples": 1025}, "elbo_samples must be at most 1024"),
    ({"max_joint": 0}, "max_joint must be at least 1, got 0"),
    ({"max_search_calls": -1}, "max_search_calls must be 0 .no limit. or positive"),
])
def test_the_options_refuse_their_limits_as_they_are_made(fields, message):
    with pytest.raises(UserError, match=f"^{message}"):
        InfillOptions(**fields)
    InfillOptions(elbo_seed=2**63 - 1, default_max_len=1 << 17, elbo_samples=1024,
                  max_search_calls=0)


def test_plan_template_refuses_a_default_max_len_out_of_range():
    gap = ["a", Gap(regex="b+"), "c"]
    with pytest.raises(UserError, match="^default_max_len must be at most 131,072 tokens"):
        plan_template(gap, TOK, default_max_len=10**6)
    with pytest.raises(UserError, match="^default_max_len must be at least 1, got 0"):
        plan_template(gap, TOK, default_max_len=0)
    with pytest.raises(UserError, match="^max_candidates must be at least 1, got 0"):
        plan_template(gap, TOK, max_candidates=0)
    assert plan_template(gap, TOK, default_max_len=3).holes[0].feasible == [1, 2, 3]
