"""The ``hybrid`` decoder, session 34's audit: its greedy text is ``ar``'s up to the context
end, and its sampled pairs of tokens follow the model's joint law (not only its marginals)."""

from __future__ import annotations

import pytest
import torch
from chi2_helpers import chi2_bar, pearson
from test_hybrid import trained  # noqa: F401  (the module's fixture: a tiny trained hybrid)

from unmask.sampling import generate_ar
from unmask.sampling.hybrid import HybridRun


@pytest.mark.parametrize("predraft", ["all", "ends"])
@pytest.mark.parametrize("eos", [None, 7])
def test_greedy_equals_ar_up_to_the_context_end(trained, predraft, eos):  # noqa: F811
    """Prompts of 2, 3 and 7 tokens and gen_length filling the 64-token context: each row
    accepts its own drafts (the cycle, a wrong start, a broken one), an EOS ends some rows
    (eos 7), and the text is ``ar``'s token for token."""
    m = trained[0]
    prompts = [[4, 5], [9, 8, 7], [6, 7, 8, 9, 4, 6, 5]]
    gen = m.config.max_seq_len - max(len(p) for p in prompts)
    want = generate_ar(m, prompts, max_new_tokens=gen, eos_id=eos, pad_id=1)
    r = HybridRun(m, prompts, max_new_tokens=gen, eos_id=eos, pad_id=1, predraft=predraft).run()
    assert r.gen_ids == want.gen_ids
    assert 0 < r.accepted < r.drafted


def _law(m, prompt: list[int], n: int) -> torch.Tensor:
    """(V,) * n the model's exact joint law of its first ``n`` tokens after ``prompt`` at
    temperature 1 ([MASK] and the banned ids forbidden): one batched forward per position
    over every prefix (V ** (n - 1) rows at the last)."""
    from unmask.sampling.penalties import banned_ids

    V = m.config.vocab_size
    banned = [m.config.mask_id, *banned_ids(m.config)]
    joint = torch.ones(1, dtype=torch.float64)
    prefixes = torch.zeros(1, 0, dtype=torch.long)  # every prefix, in joint's order
    with torch.no_grad():
        for _ in range(n):
            seqs = torch.cat([torch.tensor(prompt).expand(len(prefixes), -1), prefixes], dim=1)
            logits = m(seqs)[:, -1].clone()
            logits[:, banned] = float("-inf")
            joint = (joint[:, None] * torch.softmax(logits, dim=-1)).reshape(-1)
            nxt = torch.arange(V).repeat(len(prefixes))[:, None]
            prefixes = torch.cat([prefixes.repeat_interleave(V, dim=0), nxt], dim=1)
    return joint.reshape([V] * n)


def _hybrid_chi2(runs: int = 2000, **kw) -> list[tuple[float, int]]:
    """Pearson's statistic (``chi2_helpers.pearson``) and degrees of freedom of each pair of
    neighbours (x1, x2), (x2, x3), (x3, x4) of 4 sampled tokens (``runs`` rows of one batch
    after prompt [4, 6, 5], temperature 1, seed 0) against the model's exact law of the pair
    (the 4 tokens' joint law summed over the other two). Round 1 draws x1 and drafts nothing
    to verify; round 2 verifies its drafts of x2 (and x3), so its acceptance count and its
    bonus token decide (x2, x3) and (x3, x4)."""
    from test_hybrid import model

    m = model(5, std=0.6)
    V, prompt = m.config.vocab_size, [4, 6, 5]
    law = _law(m, prompt, 4)
    r = HybridRun(m, [prompt] * runs, max_new_tokens=4, temperature=1.0, eos_id=None,
                  generator=torch.Generator().manual_seed(0), **kw).run()  # fmt: skip
    ids = torch.tensor(r.gen_ids)
    stats = []
    for a in range(3):
        pair = law.sum(dim=[d for d in range(4) if d not in (a, a + 1)])  # (V, V)
        counts = torch.zeros(V, V, dtype=torch.float64)
        counts.index_put_((ids[:, a], ids[:, a + 1]), torch.ones(runs, dtype=torch.float64),
                          accumulate=True)  # fmt: skip
        stats.append(pearson(counts, pair * runs))
    return stats


@pytest.mark.parametrize("kw", [{}, {"draft_threshold": 0.7}, {"draft_block": 1}])
def test_neighbouring_sampled_tokens_follow_the_models_joint_law(kw):
    """Hybrid speculative sampling over the model's own drafts: each pair of neighbours of the
    first 4 tokens passes a chi-square test (p 0.001) against the model's law (fixed seed: the
    same statistics every run; 21.3, 13.5, 11.3 with the whole block, 13.1, 9.9, 9.4 with
    draft_threshold 0.7, 14.8, 3.8, 8.1 with one draft, against bars 27.9 (df 9) and 29.6
    (df 10)): the accepted drafts, the correction and the bonus token are each drawn given
    the tokens before them. Counting rejected drafts after the first rejection (``sum`` for
    ``cumprod``) gives 157 on (x2, x3); a bonus drawn from the position before its own gives
    256 on (x3, x4) (both checked by editing speculative.accept_sampled); see the controls."""
    for stat, df in _hybrid_chi2(**kw):
        assert stat < chi2_bar(df), (stat, df)


def _worst(stats: list[tuple[float, int]]) -> float:
    """The largest statistic of ``_hybrid_chi2``'s, in units of its bar."""
    return max(stat / chi2_bar(df) for stat, df in stats)


def test_accepting_every_draft_fails_the_joint_check(monkeypatch):
    """The control: every draft kept (the bonus token drawn from p) fails it."""
    from unmask.sampling import hybrid as hybrid_mod

    def always_accept(draft, q, p, generator=None, lengths=None):
        B, k = draft.shape
        bonus = torch.multinomial(p[:, k], 1, generator=generator)
        return torch.full((B,), k), torch.cat([draft, bonus], dim=1)

    monkeypatch.setattr(hybrid_mod, "accept_sampled", always_accept)
    assert _worst(_hybrid_chi2()) > 2


def test_a_bonus_drawn_at_the_wrong_position_fails_the_joint_check(monkeypatch):
    """The control: the bonus token (after every draft accepted) drawn from the verifier's
    law of the last draft's position, not the next one's, fails it."""
    from unmask.sampling import hybrid as hybrid_mod

    right = hybrid_mod.accept_sampled

    def wrong_bonus(draft, q, p, generator=None, lengths=None):
        n, out = right(draft, q, p, generator, lengths)
        k = draft.shape[1]
        if k:
            out[:, k] = torch.multinomial(p[:, k - 1], 1, generator=generator)[:, 0]
        return n, out

    monkeypatch.setattr(hybrid_mod, "accept_sampled", wrong_bonus)
    assert _worst(_hybrid_chi2()) > 2
