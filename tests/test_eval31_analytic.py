"""Analytic values of the held-out bound and the lm-eval log-likelihoods: a model whose
logits are all zero predicts every token uniformly over its V ids, so its exact NLL is
log V nats a token (log2 V bits), and every masked-diffusion estimate of it is log V too:
exactly for LLaDA's stratified estimator (each draw weighs its l masked tokens by L / l),
in expectation for the time-sampled training bound."""

import math
import statistics

import pytest
import torch

from unmask.config import model_preset
from unmask.evaluate import (
    ar_loglikelihood,
    block_elbo_loglikelihood,
    elbo_loglikelihood,
    evaluate_loss,
    exact_elbo,
)
from unmask.model import Transformer

WORDS = "the lord said unto moses go down and speak to the people of israel".split()


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    from unmask.data import TokenDataset, prepare

    root = tmp_path_factory.mktemp("uniform")
    g = torch.Generator().manual_seed(0)
    lines = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (8,), generator=g).tolist())
             for _ in range(1500)]
    (root / "a.txt").write_text("\n".join(lines) + "\n")
    prepare([root / "a.txt"], root / "d", tokenizer="bpe", vocab_size=300, val_fraction=0.01,
            line_docs=True, min_val_tokens=0, progress=False)
    return TokenDataset(root / "d", "val")


def _uniform(V: int, specials: dict, **kw) -> Transformer:
    model = Transformer(model_preset("tiny", vocab_size=V, max_seq_len=32, **specials, **kw))
    for p in model.parameters():
        p.data.zero_()  # zero logits everywhere: uniform over the vocabulary
    return model.eval()


def test_a_uniform_causal_model_scores_log2_v_bits_per_token_exactly(split):
    tok = split.tokenizer()
    V = tok.vocab_size
    r = evaluate_loss(_uniform(V, tok.special_ids(), attention="causal"), split,
                      objective="ar", seq_len=32, batch_size=4, max_batches=None)
    assert r.exact and r.loss == pytest.approx(math.log(V), rel=1e-6)
    windows = torch.stack(list(split.windows(32)))
    scored = windows[:, 1:]  # each window's first token is context
    nbytes = int(tok.token_byte_lengths()[scored.numpy()].sum())
    assert r.n_tokens == scored.numel()
    assert r.bpb * nbytes == pytest.approx(math.log2(V) * scored.numel(), rel=1e-6)


def test_a_uniform_diffusion_models_bound_is_log_v_in_expectation(split):
    tok = split.tokenizer()
    V = tok.vocab_size
    model = _uniform(V, tok.special_ids())
    losses = [evaluate_loss(model, split, objective="mdlm", seq_len=32, batch_size=4,
                            max_batches=None, seed=s).loss for s in range(8)]
    assert not evaluate_loss(model, split, objective="mdlm", seq_len=32, batch_size=4).exact
    assert statistics.fmean(losses) == pytest.approx(math.log(V), rel=0.02)
    assert len(set(losses)) == len(losses)  # each seed its own noise: a Monte Carlo estimate


def test_uniform_log_likelihoods_are_exact_for_every_estimator():
    V, L = 50, 6
    specials = {"mask_id": 0, "pad_id": 1, "eos_id": 2}
    context, target = [5, 6, 7], [8, 9, 10, 11, 12, 13]
    want = -L * math.log(V)
    diffusion = _uniform(V, specials)
    for seed in (0, 1):
        r = elbo_loglikelihood(diffusion, context, target, mask_id=0, n_samples=5,
                               generator=torch.Generator().manual_seed(seed))
        assert r.logprob == pytest.approx(want, rel=1e-6) and r.stderr == pytest.approx(0)
    assert exact_elbo(diffusion, context, target, mask_id=0) == pytest.approx(want, rel=1e-6)
    blocks = _uniform(V, specials, attention="block-causal", block_size=4)
    r = block_elbo_loglikelihood(blocks, context, target, mask_id=0, block_size=4, n_samples=3,
                                 generator=torch.Generator().manual_seed(0))
    assert r.logprob == pytest.approx(want, rel=1e-6) and r.stderr == pytest.approx(0)
    causal = _uniform(V, specials, attention="causal")
    (r,) = ar_loglikelihood(causal, [(context, target)], start_id=2)
    assert r.logprob == pytest.approx(want, rel=1e-6) and r.stderr == 0
