"""Helpers of the publisher-folder tests (test_convert, test_dit, test_moe): a word-level
tokenizer.json, random tensors, and the one-line error of a folder that does not load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

import unmask
from unmask.errors import UserError

WORDS = [f"w{i}" for i in range(40)]


def word_tokenizer_json(path: Path, specials: list[str]) -> dict[str, int]:
    """A word-level tokenizer.json: ``<unk>``, ``WORDS``, then the family's special tokens
    (like the real ones, whose specials sit at the end of the vocabulary). Returns token -> id."""
    vocab = {w: i for i, w in enumerate(["<unk>", *WORDS, *specials])}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.add_special_tokens(specials)
    hf.save(str(path))
    return vocab


def rand(*shape: int, scale: float = 0.3) -> torch.Tensor:
    return torch.randn(*shape) * scale


def load_error(path: Path) -> str:
    """The message of the ``UserError`` that ``unmask.load(path)`` raises; it must be one line."""
    with pytest.raises(UserError) as e:
        unmask.load(path)
    msg = str(e.value)
    assert "\n" not in msg
    return msg
