"""unmask: train, run, infill with and serve masked diffusion language models."""

from unmask.errors import UserError

__version__ = "0.1.0"

__all__ = ["UserError", "__version__"]
