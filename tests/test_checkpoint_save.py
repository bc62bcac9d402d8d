"""``save_checkpoint`` as a kill sees it: interrupted anywhere (Ctrl-C, an exception, a kill
between its renames), the run directory still loads a whole checkpoint, the old one or the
new one, never a half-written one. (A save killed outright leaves its staging folder, which the
resume removes: ``unmask.train``.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import unmask
from unmask import checkpoint
from unmask.checkpoint import TMP_PREFIX, save_checkpoint
from unmask.config import model_preset
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


def _models():
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids())
    torch.manual_seed(0)
    return tok, Transformer(cfg), Transformer(cfg)


def _first(path) -> torch.Tensor:
    return next(iter(unmask.load(path).model.parameters()))


@pytest.mark.parametrize("nth", [1, 2])
def test_a_save_interrupted_at_either_rename_leaves_the_old_checkpoint(tmp_path, monkeypatch, nth):
    tok, old, new = _models()
    run = tmp_path / "run"
    save_checkpoint(run, model=old, tokenizer=tok)
    before = _first(run).clone()
    real, seen = os.replace, []

    def replace(src, dst):
        if Path(dst).parent == run:  # the swap's renames, not the files written inside
            seen.append(dst)
            if len(seen) == nth:
                raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(run, model=new, tokenizer=tok)
    monkeypatch.setattr(checkpoint.os, "replace", real)
    assert torch.equal(_first(run), before)  # the last good checkpoint, whole
    assert not list(run.glob(TMP_PREFIX + "*"))
    save_checkpoint(run, model=new, tokenizer=tok)  # the next save recovers
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint"]
    assert torch.equal(_first(run), next(iter(new.parameters())))


def test_a_save_interrupted_while_writing_leaves_the_old_checkpoint(tmp_path):
    tok, old, new = _models()
    run = tmp_path / "run"
    save_checkpoint(run, model=old, tokenizer=tok)
    before = _first(run).clone()

    class Broken:
        def save(self, folder):
            (Path(folder) / "tokenizer.json").write_text("{")  # half a file, then Ctrl-C
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(run, model=new, tokenizer=Broken())
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint"]
    assert torch.equal(_first(run), before)



def test_quantised_weights_given_as_weights_are_refused_before_writing(tmp_path):
    """``save_checkpoint(weights=...)`` (the FSDP path: weights gathered for the model) is
    checked as the model's own weights are: torchao's tensors are one line, nothing written
    (they went to ``write_safetensors`` and failed there, unchecked)."""
    pytest.importorskip("torchao")
    tok, plain, _ = _models()
    save_checkpoint(tmp_path / "src", model=plain, tokenizer=tok)
    quantised = unmask.load(tmp_path / "src", quantize="int8").model
    dst = tmp_path / "saved"
    with pytest.raises(unmask.UserError) as e:
        save_checkpoint(dst, model=plain, tokenizer=tok, weights=quantised.state_dict(),
                        trainer_state={"step": 1})
    assert "a quantised model is not saved" in str(e.value) and "\n" not in str(e.value)
    assert not dst.exists()
    save_checkpoint(dst, model=quantised, tokenizer=tok, weights=plain.state_dict())
    assert torch.equal(_first(dst), next(iter(plain.parameters())))  # plain weights: saved
