"""Templates with many gaps: the gap constraints cost a step time linear in the gaps (review of
session 32)."""

from __future__ import annotations

import torch

from unmask.config import SampleConfig
from unmask.infill import Gap, infill, template_canvas
from unmask.infill.automaton import GapConstraint
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def test_gaps_that_share_an_automaton_share_one_constraint():
    """One ``GapConstraint`` per hole copied the (B, L, V) logits once per gap every step
    (``index_put``): 800 gaps took 6 s for 8 steps of a model that costs nothing. Holes with
    one automaton (every unconstrained gap: the cached one) are one constraint now; a gap
    with its own language keeps its own."""
    c = template_canvas(["a", Gap(2), "b", Gap(1), "c", Gap(1, choices=["x"]), "d",
                         Gap(3)], TOK)
    assert [p.spans for p in c.constraints] == [[(0, 1, 3), (0, 4, 5), (0, 8, 11)],
                                                [(0, 6, 7)]]
    r = infill(lambda t, attention_mask=None: torch.zeros(*t.shape, TOK.vocab_size), TOK,
               "a[MASK:2]b[MASK]c[MASK:k]d", SampleConfig(steps=2))
    assert r.text.startswith("a") and r.text.endswith("d") and len(r.gaps) == 3


class _Rows:
    """(B, L) tokens that count the rows read out of them."""

    def __init__(self, tokens: torch.Tensor) -> None:
        self.tokens, self.reads = tokens, 0

    def __getitem__(self, r: int) -> torch.Tensor:
        self.reads += 1
        return self.tokens[r]


def test_a_constraint_reads_each_row_once_a_step():
    """``rows_cache.setdefault(r, tokens[r].tolist())`` built the row's list for every span
    (the default is evaluated before the lookup): O(gaps x L) a step, 0.5 s of the 800 gaps'
    run."""
    from unmask.infill import gap_automaton

    tokens = torch.tensor([TOK.encode("a") + ([TOK.mask_id] * 2 + TOK.encode("b")) * 50])
    proc = GapConstraint(gap_automaton(Gap(), TOK), [(0, 1 + 3 * k, 3 + 3 * k) for k in range(50)],
                         mask_id=TOK.mask_id)
    rows = _Rows(tokens)
    proc.apply(torch.zeros(1, tokens.shape[1], TOK.vocab_size), rows)
    assert rows.reads == 1
    rows.reads = 0
    assert proc.violations(rows) and rows.reads == 1
