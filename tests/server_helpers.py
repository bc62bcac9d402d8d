"""Shared pieces of the server tests: tiny models and an app factory (not a test module)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from unmask.checkpoint import Loaded
from unmask.config import ModelConfig, model_preset
from unmask.model import Transformer
from unmask.tokenizer import Tokenizer, byte_tokenizer, train_bpe

ECHO_TEXT = "abcdefghijklmnopqrstuvwxyz"


def tiny_config(max_seq_len: int = 64) -> ModelConfig:
    tok = byte_tokenizer()
    return model_preset(
        "tiny", vocab_size=tok.vocab_size, max_seq_len=max_seq_len, **tok.special_ids()
    )


class Echo(nn.Module):
    """A mask predictor that is sure of ECHO_TEXT[p % 26] at canvas column p (byte tokenizer
    ids)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
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

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.calls += 1
        self.gate.wait(timeout=10)
        return self.inner(tokens, attention_mask=attention_mask)


class Broken(nn.Module):
    """A model whose forward fails."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise RuntimeError("boom: secret internals")


def loaded(model: nn.Module, tokenizer: Tokenizer | None = None) -> Loaded:
    return Loaded(
        model=model,
        tokenizer=tokenizer or byte_tokenizer(),
        config=model.config,
        path=Path("runs/tiny/checkpoint"),
    )


def random_transformer(seed: int = 0, tokenizer: Tokenizer | None = None) -> Transformer:
    """A tiny random model for ``tokenizer`` (default: the byte tokenizer)."""
    torch.manual_seed(seed)
    if tokenizer is None:
        return Transformer(tiny_config()).eval()
    return Transformer(
        model_preset(
            "tiny", vocab_size=tokenizer.vocab_size, max_seq_len=64, **tokenizer.special_ids()
        )
    ).eval()


BPE_TEXT = "The cat sat on the mat. Once upon a time the cat sat here."


def bpe_tokenizer() -> Tokenizer:
    """A tiny byte-level BPE (milliseconds to train) in which words of BPE_TEXT are one
    token each with their leading space (``" cat"``), as in GPT-2's vocabulary."""
    return train_bpe([BPE_TEXT] * 8, vocab_size=300)


class Mixer(nn.Module):
    """A deterministic mask predictor for exact batching tests: the logits of a real column
    depend on its position among the row's real columns and on every committed real token
    of the row (so the commit order matters), and on nothing else (so left padding and the
    other rows of a batch change nothing, bit for bit)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        real = (
            torch.ones_like(tokens, dtype=torch.bool)
            if attention_mask is None
            else attention_mask.bool()
        )
        rel = real.long().cumsum(dim=1) - 1  # (B, L) position among the real columns
        visible = real & (tokens != self.config.mask_id)
        ctx = (tokens * visible * (rel + 1)).sum(dim=1) % 97  # (B,)
        v = torch.arange(self.config.vocab_size)
        phase = (rel[:, :, None] * 7 + ctx[:, None, None] * 13 + v * 3) % 101  # (B, L, V)
        return (torch.sin(phase.double()) * 4.0 + v * 1e-3).float()  # (B, L, V); v breaks ties


class Recording(nn.Module):
    """Wraps a model; records the rows of every forward (``sizes``)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.sizes: list[int] = []

    @property
    def supports_kv_cache(self) -> bool:
        return bool(getattr(self.inner, "supports_kv_cache", False))

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None, **cache: object
    ) -> torch.Tensor:
        self.sizes.append(tokens.shape[0])
        return self.inner(tokens, attention_mask=attention_mask, **cache)


class Stepped(Recording):
    """Wraps a model; every forward waits for a permit (``allow``) and records its batch size,
    so a test can hold the worker at a step boundary of its choosing."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__(inner)
        self.permits = threading.Semaphore(0)
        self.entered = 0
        """Forwards started (the last may be waiting for its permit)."""

    def allow(self, n: int = 1) -> None:
        for _ in range(n):
            self.permits.release()

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None, **cache: object
    ) -> torch.Tensor:
        self.entered += 1
        if not self.permits.acquire(timeout=10):
            raise RuntimeError("Stepped: no permit within 10 s")
        return super().forward(tokens, attention_mask, **cache)


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``cond`` until it holds; fail after ``timeout`` seconds."""
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out waiting"
        time.sleep(0.002)
