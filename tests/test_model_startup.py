"""Building a model to load it must not draw init values on meta tensors: that path goes
through ``torch._refs``, which imports TorchDynamo and SymPy on first use (6-8 s of every
command's start-up on a 2-core CPU). Checked by what a fresh process imports, not by time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from unmask.checkpoint import load, save_checkpoint
from unmask.config import model_preset
from unmask.model import Transformer, materialise, meta_model
from unmask.tokenizer import byte_tokenizer


def _checkpoint(tmp_path: Path, tie: bool) -> Path:
    tok = byte_tokenizer()
    cfg = model_preset(
        "tiny", vocab_size=tok.vocab_size, max_seq_len=16, tie_embeddings=tie,
        **tok.special_ids(),
    )
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    return tmp_path / "run"


def test_loading_a_checkpoint_imports_neither_dynamo_nor_sympy(tmp_path: Path) -> None:
    run = _checkpoint(tmp_path, tie=False)
    code = (
        "import sys; from unmask.checkpoint import load; "
        f"load({str(run)!r}); "
        "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_loaded_weights_equal_the_saved_ones_and_ties_stay_tied(tmp_path: Path) -> None:
    for tie in (False, True):
        run = _checkpoint(tmp_path / str(tie), tie=tie)
        torch.manual_seed(0)
        tok = byte_tokenizer()
        cfg = model_preset(
            "tiny", vocab_size=tok.vocab_size, max_seq_len=16, tie_embeddings=tie,
            **tok.special_ids(),
        )
        want = Transformer(cfg).state_dict()
        got = load(run).model
        for name, value in got.state_dict().items():
            assert torch.equal(value, want[name]), name
        assert (got.lm_head.weight is got.embed.weight) == tie


def test_meta_model_has_the_real_shapes_and_materialise_keeps_ties() -> None:
    tok = byte_tokenizer()
    cfg = model_preset(
        "tiny", vocab_size=tok.vocab_size, max_seq_len=16, tie_embeddings=True,
        **tok.special_ids(),
    )
    real = Transformer(cfg)
    meta = meta_model(cfg)
    assert all(p.is_meta for p in meta.parameters())
    assert [(n, p.shape) for n, p in meta.named_parameters()] == [
        (n, p.shape) for n, p in real.named_parameters()
    ]
    materialise(meta, "cpu")
    assert not any(p.is_meta for p in meta.parameters())
    assert meta.lm_head.weight is meta.embed.weight
    assert all(p.requires_grad for p in meta.parameters())
    # the initialisers are back in place afterwards
    w = torch.empty(4, 4)
    torch.nn.init.normal_(w)
    assert w.std() > 0
