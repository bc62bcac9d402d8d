"""Infill's length search on a Dream-style model (``config.logit_shift``: the logits at i
predict token i + 1, so no logits predict a row's first token): the lower-variance bound
(``length_score="per_token"``, ``count_elbo_terms``) scores the tokens after the first, as
``unmask.evaluate.sequence_elbo_terms`` and the ``mdlm`` loss do."""

from __future__ import annotations

import itertools
import math

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
