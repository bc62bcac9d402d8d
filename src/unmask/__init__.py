"""unmask: train, run, infill with and serve masked diffusion language models.

The Python API mirrors the CLI::

    import unmask
    unmask.prepare(["corpus.txt"], "data/corpus")                 # unmask prepare
    run = unmask.train(unmask.TrainConfig(data="data/corpus", out="runs/x", preset="demo"))
    m = unmask.load(run)                                           # model, tokenizer, config
    config = unmask.api.sample_config(m, {"gen_length": 32})     # the checkpoint's options
    out = unmask.api.generate(m, "In the beginning", config=config)
    print(out.texts[0], out.nfe, out.decoder)                      # unmask generate

``unmask.api`` has one entry per task (``generate``, ``chat``, ``infill``, ``edit``,
``fill_form``, and ``start`` for a decoder run stepped by hand); the decoder is the
checkpoint's own (``unmask.sampling.choose_decoder``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unmask.errors import UserError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from unmask.checkpoint import load
    from unmask.config import ModelConfig, SampleConfig, TrainConfig
    from unmask.data import prepare
    from unmask.train import train

_LAZY = {
    "ModelConfig": "unmask.config",
    "SampleConfig": "unmask.config",
    "TrainConfig": "unmask.config",
    "load": "unmask.checkpoint",
    "prepare": "unmask.data",
    "train": "unmask.train",
}


def __getattr__(name: str) -> Any:
    # Keep `import unmask` light: torch-heavy modules load on first use.
    import importlib

    if name == "api":  # the task entries (unmask.api): light, but loaded on first use too
        return importlib.import_module("unmask.api")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unmask' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too, so tab completion and help(unmask) see load, train, api, ...
    return sorted({*globals(), *__all__})


__all__ = [
    "ModelConfig",
    "SampleConfig",
    "TrainConfig",
    "UserError",
    "__version__",
    "api",
    "load",
    "prepare",
    "train",
]
