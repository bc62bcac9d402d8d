"""Shared pieces of the server tests: tiny models and an app factory (not a test module)."""

from __future__ import annotations

import threading
from pathlib import Path

import torch
from torch import nn

from unmask.checkpoint import Loaded
from unmask.config import ModelConfig, model_preset
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

ECHO_TEXT = "abcdefghijklmnopqrstuvwxyz"


def tiny_config(max_seq_len: int = 64) -> ModelConfig:
    tok = byte_tokenizer()
    return model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=max_seq_len, **tok.special_ids())


class Echo(nn.Module):
    """A mask predictor that is sure of ECHO_TEXT[p % 26] at canvas column p (byte tokenizer ids)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L = tokens.shape
        logits = torch.full((B, L, self.config.vocab_size), -10.0)  # (B, L, V)
        cols = torch.arange(L)
        ids = torch.tensor([4 + ord(ECHO_TEXT[p % len(ECHO_TEXT)]) for p in range(L)])
        logits[:, cols, ids] = 10.0
        return logits


def echo_text(prompt_len: int, n: int) -> str:
    """What Echo generates for an unpadded prompt of ``prompt_len`` tokens."""
    return "".join(ECHO_TEXT[p % len(ECHO_TEXT)] for p in range(prompt_len, prompt_len + n))


class Gated(nn.Module):
    """Wraps a model; every forward waits for ``gate`` (bounded), counting calls."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.gate = threading.Event()
        self.calls = 0

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.calls += 1
        self.gate.wait(timeout=10)
        return self.inner(tokens, attention_mask=attention_mask)


class Broken(nn.Module):
    """A model whose forward fails."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        raise RuntimeError("boom: secret internals")


def loaded(model: nn.Module) -> Loaded:
    return Loaded(model=model, tokenizer=byte_tokenizer(), config=model.config, path=Path("runs/tiny/checkpoint"))


def random_transformer(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(tiny_config()).eval()
