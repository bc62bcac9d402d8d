"""Session 33 (quantscore): the reference scorer against a hand calculation, and its
refusals of a file given as the model's folder."""

from __future__ import annotations

import math

import pytest
import torch

from unmask.errors import UserError
from unmask.scoring import ReferenceScorer

V = 5
TABLE = torch.randn(V, V, generator=torch.Generator().manual_seed(0))


def _bigram(ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return TABLE[ids]  # the logits at t depend on token t only


def _encode(text: str) -> list[int]:
    return [ord(c) - ord("a") for c in text]


def _hand(ids: list[int]) -> float:
    lp = torch.log_softmax(TABLE, -1)
    return -sum(float(lp[a, b]) for a, b in zip(ids[:-1], ids[1:], strict=False))


def test_nll_and_perplexity_match_a_hand_calculation() -> None:
    """Each token after the start token is scored by the bigram that predicts it; an empty
    text scores nothing; a text past ``max_length`` loses its end; batching changes nothing."""
    scorer = ReferenceScorer(_bigram, _encode, start_id=0)
    texts = ["bcd", "", "eeeeedcb", "b"]
    for batch_size in (1, 3):
        got = scorer.score(texts, batch_size=batch_size)
        for text, s in zip(texts, got, strict=True):
            assert s.n_tokens == len(text)
            assert s.nll == pytest.approx(_hand([0, *_encode(text)]), rel=1e-5, abs=1e-6)
    total = sum(_hand([0, *_encode(t)]) for t in texts)
    assert scorer.perplexity(texts) == pytest.approx(math.exp(total / 12), rel=1e-5)
    short = ReferenceScorer(_bigram, _encode, start_id=0, max_length=4)
    (s,) = short.score(["bcdeb"])
    assert s.n_tokens == 3 and s.nll == pytest.approx(_hand([0, 1, 2, 3]), rel=1e-5)


def test_a_file_given_as_the_folder_says_so(tmp_path) -> None:
    """``from_pretrained("x/model.gguf")`` said "no such folder" of a file that is there; now
    it names the folder to give and the ``gguf_file`` argument."""
    pytest.importorskip("transformers")
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(UserError, match=r"a file, not a folder.*gguf_file='model.gguf'"):
        ReferenceScorer.from_pretrained(gguf)
    other = tmp_path / "config.json"
    other.write_text("{}")
    with pytest.raises(UserError, match="a file, not a folder: give the folder that holds it$"):
        ReferenceScorer.from_pretrained(other)
