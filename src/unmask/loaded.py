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
    """The ``unmask.tokenizer.Tokenizer`` (``encode``, ``decode``, the special ids)."""
    config: Any
    """The ``unmask.config.ModelConfig`` of the model (its sizes, special ids, objective)."""
    path: Path
    """The folder the checkpoint was read from (a run's ``checkpoint/``, or the publisher's)."""
    family: str = "unmask"
    """Where the weights came from: ``unmask`` (native) or the importer's name (``llada``,
    ``dream``)."""
    name: str = ""
    """The model as the caller named it, for messages: ``load``'s ``path`` argument as given
    (``demo``, ``runs/mine``), where ``path`` is the folder that name resolved to (the
    package's ``assets/demo``, ``runs/mine/checkpoint``). Empty: not known (a ``Loaded``
    built by hand), and ``shown`` is ``path``."""

    @property
    def shown(self) -> str:
        """The model as messages name it: ``name`` as typed, else the folder ``path``."""
        return self.name or str(self.path)


__all__ = ["Loaded"]
