"""Infill's length search on a Dream-style model (``config.logit_shift``: the logits at i
predict token i + 1, so no logits predict a row's first token): the lower-variance bound
(``length_score="per_token"``, ``count_elbo_terms``) scores the tokens after the first, as
``unmask.evaluate.sequence_elbo_terms`` and the ``mdlm`` loss do."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.evaluate import _mask_predictor, sequence_elbo_terms
from unmask.infill import InfillOptions, infill
from unmask.infill.fill import count_elbo_terms
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def _dream(seed: int) -> Transformer:
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=32,
                       attention="bidirectional", init_std=0.5, logit_shift=True,
                       **TOK.special_ids())
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


@torch.no_grad()
def _exact_after_first(model: Transformer, row: list[int]) -> float:
    """The masked-diffusion bound on -log p of ``row``'s tokens after the first (every mask
    set of positions 1..n-1 enumerated; a set of k of the m weighs (k-1)! (m-k)! / m!)."""
    m = len(row) - 1
    sets = [S for k in range(1, m + 1) for S in itertools.combinations(range(1, m + 1), k)]
    masked = torch.zeros(len(sets), m + 1, dtype=torch.bool)
    for i, S in enumerate(sets):
        masked[i, list(S)] = True
    w = torch.tensor([math.factorial(len(S) - 1) * math.factorial(m - len(S)) / math.factorial(m)
                      for S in sets], dtype=torch.float64)  # fmt: skip
    x0 = torch.tensor([row]).expand(len(sets), m + 1)
    logits = _mask_predictor(model)(torch.where(masked, TOK.mask_id, x0))
    ce = -torch.log_softmax(logits.double(), -1).gather(-1, x0[..., None])[..., 0]
    return float((ce * masked * w[:, None]).sum())


def test_the_count_bound_of_a_dream_model_is_the_exact_bound_of_the_tokens_after_the_first():
    row = list(TOK.encode("wxyz"))
    tokens = torch.tensor([row])
    real = torch.ones_like(tokens, dtype=torch.bool)
    slots = torch.arange(len(row))[None]
    for seed in range(3):
        model = _dream(seed)
        terms, copies = count_elbo_terms(model, tokens, real, slots, mask_id=TOK.mask_id,
                                         n_samples=3000, generator=torch.Generator().manual_seed(0))
        assert float(terms[0, 0]) == 0.0  # no logits predict it: never masked nor counted
        exact = _exact_after_first(model, row)
        se = float(copies[0].std()) / math.sqrt(copies.shape[1])
        assert abs(float(copies[0].mean()) - exact) < 4 * se + 1e-9, (seed, exact)
        # the continuous-time estimate of the same bound (sequence_elbo_terms) agrees
        cont = sequence_elbo_terms(model, tokens, mask_id=TOK.mask_id, n_samples=3000,
                                   generator=torch.Generator().manual_seed(1))
        assert float(cont[0, 0]) == 0.0
        assert abs(float(cont[0].sum()) - exact) < 0.05 * exact + 0.2


def test_per_token_candidates_of_a_dream_model_divide_by_the_tokens_that_have_a_term():
    """``Candidate.elbo`` is ``nll`` over the row's tokens after the first (the ``total``
    bound's rule, ``unmask.evaluate.sequence_elbo``), not over all its tokens."""
    model = _dream(0)
    r = infill(model, TOK, "ab[MASK:1-3]", SampleConfig(temperature=0.0, seed=0),
               options=InfillOptions(length_score="per_token", elbo_samples=8))
    assert len(r.candidates) == 3
    for c in r.candidates:
        n = len(TOK.encode(c.text))
        assert math.isclose(c.elbo * (n - 1), c.nll, rel_tol=1e-9)


class _ShiftedOracle:
    """A Dream-style predictor of ``truth``: the logits at i put their mass on token i + 1,
    whatever is masked (so position 0's own logits say the second token)."""

    def __init__(self, truth: str) -> None:
        self.truth = torch.tensor(TOK.encode(truth))
        self.config = model_preset("tiny", vocab_size=TOK.vocab_size, logit_shift=True)

    def __call__(self, x, attention_mask=None):
        n, length = x.shape
        logits = torch.full((n, length, TOK.vocab_size), -30.0)
        nxt = torch.cat([self.truth[1:], self.truth[:1]])[:length]
        logits[:, torch.arange(length), nxt] = 30.0
        return logits


def test_lowest_on_a_dream_model_never_scores_the_first_token_by_the_seconds_logits():
    """With nothing before it (the byte tokenizer has no start context), no logits predict a
    Dream-style model's first token: ``token_confidence`` is NaN there and ``--lowest`` takes
    the typo, not the first character (scored ~0 by the logits of the second, it was picked
    and refilled with the second's token: "hhe cXt")."""
    from unmask.errors import UserError
    from unmask.infill import edit, token_confidence

    model = _ShiftedOracle("the cat")
    ids = TOK.encode("the cXt")
    for mode in ("masked", "visible"):
        conf = token_confidence(model, ids, mask_id=TOK.mask_id, mode=mode)
        assert math.isnan(float(conf[0])) and int(torch.nan_to_num(conf, 2.0).argmin()) == 5
        ctx = token_confidence(model, ids[1:], mask_id=TOK.mask_id, mode=mode, context=ids[:1])
        assert not ctx.isnan().any()  # after context every token has its prediction
    r = edit(model, TOK, "the cXt", lowest=1, config=SampleConfig(temperature=0.0))
    assert r.text == "the cat" and r.spans == [(5, 6)]
    with pytest.raises(UserError, match=r"^lowest 7: the text has 7 tokens and its first \(no "
                       r"logits predict it: logit_shift\) is kept, so at most 6 can be"):
        edit(model, TOK, "the cXt", lowest=7)
