"""``Loaded``: a model ready for inference with its tokenizer and config, as ``unmask.load``
returns it for a native checkpoint (``unmask.checkpoint``) and a publisher folder
(``unmask.convert``) alike. Its own module so both build it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Loaded:
    """A model ready for inference, with its tokenizer and config."""

    model: Any
    """The ``torch.nn.Module`` (in eval mode)."""
    tokenizer: Any
    config: Any
    path: Path
    family: str = "unmask"
    """Where the weights came from: ``unmask`` (native) or the importer's name (``llada``,
    ``dream``)."""


__all__ = ["Loaded"]
