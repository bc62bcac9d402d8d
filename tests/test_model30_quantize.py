"""Quantisation refusals of session 30 (area model): a dtype torchao's weight-only kernels
cannot take is refused before anything is read."""

from __future__ import annotations

import pytest
import torch

import unmask
from unmask.errors import UserError

pytest.importorskip("torchao")


def test_a_float64_load_is_refused_before_the_weights_are_read(tmp_path, monkeypatch) -> None:
    """``load(quantize=..., dtype=torch.float64)`` materialised the model and read its weights
    before torchao refused them ("Unsupported input dtype: torch.float64"), saying nothing of
    the dtypes it takes; now one line, before any weight is read."""
    from unmask import checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.quantize import quantize_model
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32, **tok.special_ids())
    torch.manual_seed(0)
    checkpoint.save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)

    def read(*args, **kwargs):
        raise AssertionError("the weights were read")

    monkeypatch.setattr(checkpoint, "_stream_weights", read)
    for scheme in ("int8", "int4"):
        with pytest.raises(UserError, match="float32, bfloat16 or float16 weights, not float64"):
            unmask.load(tmp_path / "run", quantize=scheme, dtype=torch.float64)
        with pytest.raises(UserError, match="not float64"):
            quantize_model(Transformer(cfg).double(), scheme, "cpu")
