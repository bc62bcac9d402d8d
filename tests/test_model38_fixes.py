"""Session 38, helper ``model``: SEDD log-score made in place, model/config audit fixes."""

from __future__ import annotations

import math

import torch

from unmask.model import log_expm1, sedd_log_score
from unmask.sedd import AbsorbingGraph


def test_the_in_place_log_scores_leave_their_inputs_and_match_the_formula() -> None:
    """A guard of the in-place log-score (``sedd_log_score``, ``log_score_from_logits``): the
    caller's head output or logits stay as they were, and the values are the formula's."""
    g = torch.Generator().manual_seed(0)
    V = 7
    head = torch.randn(2, 5, V, generator=g)
    tokens = torch.randint(0, V, (2, 5), generator=g)
    sigma = torch.tensor([0.3, 4.0])
    before = head.clone()
    score = sedd_log_score(head, tokens, sigma)
    assert torch.equal(head, before)
    want = head - log_expm1(sigma)[:, None, None] - math.log(V - 1)
    want = want.scatter(-1, tokens[..., None], 0.0)
    assert torch.equal(score, want)
    graph = AbsorbingGraph(V, 0)
    log_score = graph.log_score_from_logits(head, tokens, sigma)
    assert torch.equal(head, before)
    logits = head.index_fill(-1, torch.tensor([0]), float("-inf"))
    want = torch.log_softmax(logits, dim=-1) - log_expm1(sigma)[:, None, None]
    assert torch.equal(log_score, want.scatter(-1, tokens[..., None], 0.0))
