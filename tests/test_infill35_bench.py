"""``benchmarks/infill.py``: each row of the variable-length table is the choice ``unmask
infill`` makes with that ``--length-score`` (review of session 35)."""

from __future__ import annotations

import torch

from unmask.config import InfillOptions, SampleConfig, model_preset
from unmask.gapset import GapFiller, GapSample
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


def test_the_per_token_row_is_scored_as_length_score_per_token_scores(benchmark):
    """The ``diffusion (ELBO/tok)`` row was read from the candidates of the ``total`` run: the
    continuous-time bound per token, where ``length_score="per_token"`` scores with the count
    estimator and more copies for close calls (``paired_per_token_terms``); its lengths and
    NFE were not those of any ``unmask infill`` run."""
    bench = benchmark("infill")
    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64)).eval()
    options = InfillOptions(max_candidates=5, elbo_samples=2)
    window = tok.encode("the cat sat on the mat and the dog sat")
    samples = [GapSample(window=window, start=s, length=2, lo=1, hi=5) for s in (4, 8, 15, 20)]
    rows = {r["method"]: r for r in bench.run_variable({2: samples}, GapFiller(model, tok,
                                                                                 options), None)}
    own = GapFiller(model, tok, InfillOptions(max_candidates=5, elbo_samples=2,
                                              length_score="per_token"))
    runs = [own(x, x.lo, x.hi, SampleConfig(steps=x.hi)) for x in samples]
    got = rows[bench.ELBO["per_token"]]
    assert got["nfe"] == sum(r.nfe for r in runs) / len(runs)
    assert got["mean_len_err"] == sum(len(r.gaps[0].tokens) - 2 for r in runs) / len(runs)
