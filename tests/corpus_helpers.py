"""A prepared corpus of random sentences for training tests (byte tokenizer)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def word_corpus(root: Path, words: Sequence[str], lines: int, seed: int, end: str = ".") -> Path:
    """``lines`` sentences of 8 words drawn from ``words`` with ``seed``, each ended by ``end``,
    written to ``root/a.txt`` and prepared (byte tokenizer, 10% held out) into
    ``root/prepared``."""
    from unmask.data import prepare

    g = torch.Generator().manual_seed(seed)
    text = []
    for _ in range(lines):
        idx = torch.randint(0, len(words), (8,), generator=g).tolist()
        text.append(" ".join(words[i] for i in idx) + end)
    (root / "a.txt").write_text("\n".join(text) + "\n")
    out = root / "prepared"
    prepare([root / "a.txt"], out, tokenizer="byte", val_fraction=0.1, progress=False)
    return out
