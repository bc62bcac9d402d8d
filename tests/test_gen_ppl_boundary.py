"""Generative perplexity with prompts (``unmask eval``'s gen-ppl, ``ReferenceScorer``): the
prompt and its continuation are tokenized as one text, as the reference model reads running
text, and split where the prompt's own tokens end. Tokenized apart, the boundary was scored
on tokens the reference never sees there (``ld`` after `` wor``; `` `` then ``sat``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unmask.evaluate import generative_perplexity
from unmask.scoring import ReferenceScorer

PIECES = ["Hello", " world", " wor", "ld", "The", " cat", " sat", "sat", " on", " the", " mat"]
VOCAB = ["<s>"] + PIECES + sorted({c for p in PIECES for c in p} | {" "})
ID = {p: i for i, p in enumerate(VOCAB)}
V = len(VOCAB)


def encode(text: str) -> list[int]:
    """Greedy longest match, as a BPE merges the longest pieces it knows."""
    out, i = [], 0
    while i < len(text):
        piece = max((p for p in VOCAB[1:] if text.startswith(p, i)), key=len)
        out.append(ID[piece])
        i += len(piece)
    return out


TABLE = torch.randn(V, V, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def bigram(ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return TABLE[ids]  # (B, T, V): the next token's logits depend on this one only


def nll_of(pieces: list[str], after: list[str]) -> float:
    """NLL of ``pieces`` following ``after`` under the bigram table."""
    seq = [ID[p] for p in after + pieces]
    return sum(float(-F.log_softmax(TABLE[seq[k - 1]], -1)[seq[k]])
               for k in range(len(after), len(seq)))


@pytest.fixture
def scorer() -> ReferenceScorer:
    return ReferenceScorer(bigram, encode, start_id=ID["<s>"])


def test_a_word_cut_by_the_prompt_is_scored_as_the_reference_spells_it(scorer):
    assert encode("Hello wor") == [ID["Hello"], ID[" wor"]]
    s = scorer.score(["ld"], prompts=["Hello wor"])[0]
    assert s.n_tokens == 1  # " world": the token that holds the continuation's text
    assert s.nll == pytest.approx(nll_of([" world"], ["<s>", "Hello"]))


def test_a_prompts_trailing_space_goes_with_the_continuation(scorer):
    a = scorer.score(["sat on the mat"], prompts=["The cat "])[0]
    b = scorer.score([" sat on the mat"], prompts=["The cat"])[0]
    assert (a.n_tokens, a.nll) == (b.n_tokens, pytest.approx(b.nll))
    assert a.nll == pytest.approx(nll_of([" sat", " on", " the", " mat"], ["<s>", "The", " cat"]))
    assert scorer.score([""], prompts=["The cat "])[0].n_tokens == 0  # nothing to score


def test_a_cut_at_a_token_boundary_scores_the_whole_texts_tokens(scorer):
    whole = "The cat sat on the mat"
    tokens = [VOCAB[i] for i in encode(whole)]
    for k in range(1, len(tokens)):
        prompt = "".join(tokens[:k])
        s = scorer.score([whole[len(prompt):]], prompts=[prompt])[0]
        assert s.n_tokens == len(tokens) - k
        assert s.nll == pytest.approx(nll_of(tokens[k:], ["<s>", *tokens[:k]]))
    ppl = generative_perplexity(["ld"], prompts=["Hello wor"], scorer=scorer)
    assert ppl == pytest.approx(torch.tensor(nll_of([" world"], ["<s>", "Hello"])).exp().item())
