"""Speculative decoding, session 34's audit: the joint law of the committed tokens (not only
each position's marginal) is the verifier's, and greedy stays ``ar``'s at the context end."""

from __future__ import annotations

import pytest
import torch
from chi2_helpers import chi2_bar, pearson

from unmask.sampling import generate_ar
from unmask.sampling import speculative as spec_mod
from unmask.sampling.ar import row_generators
from unmask.sampling.protocol import make_generator
from unmask.sampling.speculative import SpeculativeRun


def _pairs(per_row: bool, runs: int = 2000, **kw) -> torch.Tensor:
    """(runs, 2) the first two of 4 tokens after prompt [1, 2] of ``runs`` seeded rows in one
    batch: the Markov verifier of tests/test_speculative.py, the context-dependent
    ``ChainDrafter`` of tests/test_rows_speculative.py (its second draft drawn given the
    first with ``draft_steps=2``)."""
    from test_rows_speculative import ChainDrafter
    from test_speculative import Markov

    gens = row_generators(range(runs)) if per_row else make_generator(0)
    r = SpeculativeRun(Markov(), ChainDrafter(), [[1, 2]] * runs, max_new_tokens=4,
                       temperature=1.0, eos_id=None, generator=gens, **kw).run()  # fmt: skip
    return torch.tensor(r.gen_ids)[:, :2]  # the first round drafts up to 3 of 4


def _chi2(ids: torch.Tensor) -> tuple[float, int]:
    """Pearson's statistic (``chi2_helpers.pearson``) of the (x1, x2) pair counts against the
    verifier's exact joint law P(x1 | 2) P(x2 | x1) ([MASK] forbidden); its degrees of
    freedom."""
    from test_speculative import MASK, TABLE

    t = TABLE.clone()
    t[:, MASK] = float("-inf")
    step = torch.softmax(t, dim=-1)  # (V, V)
    joint = step[2][:MASK, None] * step[:MASK, :MASK]  # (4, 4)
    counts = torch.zeros(MASK, MASK, dtype=torch.float64)
    for a, b in ids.tolist():
        counts[a, b] += 1
    return pearson(counts, joint * ids.shape[0])


SETTINGS = [{"draft_length": 1}, {"draft_length": 2}, {"draft_length": 2, "draft_steps": 2},
            {"draft_length": 3, "draft_steps": 3, "draft_threshold": 0.3}]  # fmt: skip
"""draft_length 1 puts the bonus token (the draw from p after every draft accepted) at x2;
the longer drafts put an accepted draft or the correction there."""


@pytest.mark.parametrize("per_row", [True, False])
@pytest.mark.parametrize("kw", SETTINGS)
def test_the_first_two_tokens_follow_the_verifiers_joint_law(per_row, kw):
    """A chi-square test of the pairs (x1, x2), fixed seeds (the same statistic every run):
    the accepted draft, the correction and (draft_length 1) the bonus token are each drawn
    given the token before them, not only with the right marginals."""
    stat, df = _chi2(_pairs(per_row, **kw))
    assert stat < chi2_bar(df), (stat, df)


def test_a_correction_drawn_from_p_fails_the_joint_check(monkeypatch):
    """The control: a rejected draft replaced by a draw from p (not from the normalised
    residual max(0, p - q)) over-weights the tokens the drafter likes, and the same check
    sees it."""
    right = spec_mod.accept_sampled

    def from_p(draft, q, p, generator=None, lengths=None):
        n, out = right(draft, q, p, generator, lengths)
        B, k = draft.shape
        if k == 0:
            return n, out
        redraw = spec_mod._draw(p[:, :k].reshape(B * k, -1), generator).reshape(B, k)
        fixed = torch.where(torch.arange(k)[None, :] == n[:, None], redraw, out[:, :k])
        return n, torch.cat([fixed, out[:, k:]], dim=1)

    monkeypatch.setattr(spec_mod, "accept_sampled", from_p)
    stat, df = _chi2(_pairs(False, draft_length=2))
    assert stat > 2 * chi2_bar(df), (stat, df)


class Oracle(torch.nn.Module):
    """A drafter that knows ``ar``'s greedy continuation of each prompt (``answers``, keyed by
    the prompt) and proposes it at every masked position, but a wrong token at the positions
    ``wrong`` says: the rows of a batch accept drafts of different lengths, every round."""

    def __init__(self, config, prompts, answers, wrong) -> None:
        super().__init__()
        self.config, self.wrong = config, wrong
        self.answers = {tuple(p): a for p, a in zip(prompts, answers, strict=True)}

    def forward(self, tokens, attention_mask=None):
        B, L = tokens.shape
        logits = torch.zeros(B, L, self.config.vocab_size, dtype=torch.float64)
        for i in range(B):
            row = tokens[i].tolist()
            m = L  # the masks follow the row's text (left padding may hold the mask id too)
            while m > 0 and row[m - 1] == self.config.mask_id:
                m -= 1
            text, best = row[:m], (-1, [], 0)
            for p, a in self.answers.items():  # which prompt, how many tokens committed
                for c in range(len(a) + 1):
                    n = len(p) + c
                    if n <= len(text) and text[len(text) - n:] == [*p, *a[:c]] and n > best[0]:
                        best = (n, a, c)
            _, answer, c = best
            for j in range(m, L):
                g = c + j - m
                want = answer[g] if g < len(answer) else 0
                if self.wrong(i, g):
                    want = (want + 1) % self.config.vocab_size
                logits[i, j, want] = 50.0
        return logits


def test_greedy_equals_ar_up_to_the_context_end_with_rows_accepting_differently():
    """Prompts of 5, 2 and 8 tokens, gen_length filling the verifier's whole context (64), an
    EOS one row writes, and a drafter that is right except where ``wrong`` says (row 0 every
    4th position, row 1 every 7th, row 2 never): each row accepts its own lengths, and the
    output is ``ar``'s token for token."""
    from test_speculative import PROMPTS, transformer

    verifier = transformer("causal", 3)
    gen = verifier.config.max_seq_len - max(len(p) for p in PROMPTS)  # 56: the context's end
    free = generate_ar(verifier, PROMPTS, max_new_tokens=gen, eos_id=None)
    eos = free.gen_ids[1][30]  # a token row 1 writes: treat it as EOS
    ar = generate_ar(verifier, PROMPTS, max_new_tokens=gen, eos_id=eos, pad_id=0)
    drafter_cfg = transformer("bidirectional", 4).config
    drafter = Oracle(drafter_cfg, PROMPTS, free.gen_ids,
                     wrong=lambda i, g: (i == 0 and g % 4 == 3) or (i == 1 and g % 7 == 6))
    for k in (3, 8):
        r = SpeculativeRun(verifier, drafter, PROMPTS, max_new_tokens=gen, draft_length=k,
                           eos_id=eos, pad_id=0).run()  # fmt: skip
        assert r.gen_ids == ar.gen_ids
        assert 0 < r.accepted < r.drafted
