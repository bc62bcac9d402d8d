"""Session 34 (store): ``unmask.checkpoint.load(weights=False)``, the one place that knows how a
checkpoint folder is read without its weights (distill's ``--student`` check reads it so)."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import save_file
from test_convert import make_llada

from unmask.checkpoint import load, save_checkpoint
from unmask.config import model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


def _native(tmp_path: Path) -> Path:
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=16, **tok.special_ids())
    return save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)


def test_weightless_load_of_a_native_checkpoint_reads_no_weight(tmp_path: Path) -> None:
    ckpt = _native(tmp_path)
    full = load(ckpt)
    got = load(ckpt, weights=False)
    assert got.config == full.config and got.tokenizer.vocab_size == full.tokenizer.vocab_size
    assert {p.device.type for p in got.model.parameters()} == {"meta"}
    # the headers are checked as load checks them: a tensor of another shape is refused
    sd = {k: v.clone() for k, v in full.model.state_dict().items() if k != "lm_head.weight"}
    sd["embed.weight"] = sd["embed.weight"][:-1].contiguous()
    save_file(sd, str(ckpt / "model.safetensors"))
    with pytest.raises(UserError, match="embed"):
        load(ckpt, weights=False)


def test_weightless_load_of_a_publisher_folder(tmp_path: Path) -> None:
    folder = tmp_path / "llada"
    make_llada(folder)
    full = load(folder)
    got = load(folder, weights=False)
    assert got.config == full.config and got.family == full.family == "llada"
    assert {p.device.type for p in got.model.parameters()} == {"meta"}
    assert got.model.embed.weight.dtype == full.model.embed.weight.dtype
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(UserError, match="missing"):
        load(folder, weights=False)
