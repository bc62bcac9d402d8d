"""Weights quantised elsewhere, and models quantised here, at the edges of unmask: a release its
publisher quantised (``quantization_config``, or FP8 tensors without it) is refused in one line
for every family; a model quantised at load is not saved; ``--quantize``'s choices and
``api.weights_dtype`` use ``unmask.quantize``'s own names and test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from convert_helpers import load_error
from safetensors.torch import load_file, save_file

import unmask
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.convert import IMPORTERS
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


def _native_run(folder: Path) -> Path:
    """A tiny random native checkpoint."""
    torch.manual_seed(0)
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids())
    save_checkpoint(folder, model=Transformer(cfg), tokenizer=tok)
    return folder


def _exported(tmp_path: Path, family: str) -> Path:
    """A tiny native checkpoint exported to ``family``'s publisher layout (it loads back)."""
    out = tmp_path / family
    assert main(["convert", str(_native_run(tmp_path / "run")), str(out), "--to", family]) == 0
    return out


def _edit_config(folder: Path, **changes: object) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **changes}))


@pytest.mark.parametrize("family", sorted(IMPORTERS))
def test_a_publisher_quantised_config_is_refused_for_every_family(tmp_path, family) -> None:
    """``quantization_config`` is refused once, at import, whatever the family detected (it
    was refused for llada2 and llada-moe only; the others read on into their own checks)."""
    imp = IMPORTERS[family]
    cfg = {"model_type": imp.model_types[0],
           "architectures": list(imp.header.get("architectures", [])),
           "quantization_config": {"quant_method": "awq", "bits": 4}}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    msg = load_error(tmp_path)
    assert f"this {family} release was quantised by its publisher (awq)" in msg, msg
    assert msg.startswith(str(tmp_path / "config.json")) and "--quantize int8 or int4" in msg


@pytest.mark.parametrize("family", ["llada", "transformers"])
def test_a_loadable_folder_with_quantization_config_is_refused_not_loaded(tmp_path, family,
                                                                        capsys) -> None:
    """A folder whose tensors load but whose config says the publisher quantised them (a GPTQ
    release's config over plain tensors) loaded without a word; now one line, exit 2."""
    folder = _exported(tmp_path, family)
    unmask.load(folder)  # loads as exported
    _edit_config(folder, quantization_config={"quant_method": "gptq", "bits": 4})
    assert "quantised by its publisher (gptq)" in load_error(folder)
    capsys.readouterr()
    assert main(["convert", str(folder), str(tmp_path / "native")]) == 2
    err = capsys.readouterr().err
    assert "quantised by its publisher" in err and "Traceback" not in err
    assert not (tmp_path / "native").exists()


def test_fp8_tensors_without_quantization_config_are_refused(tmp_path) -> None:
    """An FP8 tensor (``F8_E4M3``) was upcast as if it were the weight, its scales never read;
    now refused in one line naming it. Integers keep their own message."""
    folder = _exported(tmp_path, "llada")
    path = folder / "model.safetensors"
    tensors = load_file(path)
    key = next(k for k in sorted(tensors) if k.endswith("ff_out.weight"))
    save_file({**tensors, key: tensors[key].to(torch.float8_e4m3fn)}, path)
    msg = load_error(folder)
    assert f"tensor {key} holds F8_E4M3 values" in msg and "--quantize int8 or int4" in msg, msg
    save_file({**tensors, key: tensors[key].to(torch.float8_e5m2)}, path)
    assert "holds F8_E5M2 values" in load_error(folder)
    save_file({**tensors, key: tensors[key].to(torch.int32)}, path)
    assert "holds I32 values, not floating-point weights" in load_error(folder)


def test_save_checkpoint_refuses_a_quantised_model_before_writing(tmp_path) -> None:
    """torchao's weights ended in its "Int8Tensor dispatch" traceback; now one line, and the
    destination is not even created."""
    pytest.importorskip("torchao")
    loaded = unmask.load(_native_run(tmp_path / "run"), quantize="int8")
    dst = tmp_path / "saved"
    with pytest.raises(UserError) as e:
        save_checkpoint(dst, model=loaded.model, tokenizer=loaded.tokenizer)
    msg = str(e.value)
    assert "a quantised model is not saved" in msg and "\n" not in msg, msg
    assert not dst.exists()
    plain = unmask.load(tmp_path / "run")  # the EMA / inference copy is checked too
    with pytest.raises(UserError, match="quantised model is not saved"):
        save_checkpoint(dst, model=plain.model, inference_model=loaded.model,
                        tokenizer=plain.tokenizer)  # fmt: skip
    assert not dst.exists()
    save_checkpoint(dst, model=plain.model, tokenizer=plain.tokenizer)  # unquantised: saved
    assert (dst / "checkpoint" / "model.safetensors").is_file()


def test_quantize_flag_choices_are_unmask_quantize_s(monkeypatch) -> None:
    """``--quantize`` offers ``unmask.quantize.QUANTIZATIONS`` (not a copy of the list)."""
    import argparse

    from unmask import quantize
    from unmask.commands import add_quantize_flag

    monkeypatch.setattr(quantize, "QUANTIZATIONS", ("int8", "int4", "int2"))
    parser = argparse.ArgumentParser()
    add_quantize_flag(parser)
    assert parser.parse_args(["--quantize", "int2"]).quantize == "int2"


def test_weights_dtype_uses_unmask_quantize_s_test(tmp_path, monkeypatch) -> None:
    """``api.weights_dtype`` asks ``unmask.quantize.quantized_layer`` (one test of "is this
    weight quantised"), and says so for a real int8 load."""
    from unmask import api, quantize

    loaded = unmask.load(_native_run(tmp_path / "run"))
    assert api.weights_dtype(loaded) == "fp32"
    monkeypatch.setattr(quantize, "quantized_layer", lambda m: "blocks.0.attn.wq")
    assert api.weights_dtype(loaded) == "fp32 + quantized"
    monkeypatch.undo()
    pytest.importorskip("torchao")
    assert api.weights_dtype(unmask.load(tmp_path / "run", quantize="int8")) == "fp32 + quantized"


def test_a_null_quantization_config_loads_for_llada2(tmp_path) -> None:
    """``"quantization_config": null`` says nothing is quantised; LLaDA 2.x's own key check
    called it an unknown key while every other family loaded it."""
    from llada2_helpers import TINY, write_llada2_folder

    write_llada2_folder(tmp_path, {**TINY, "quantization_config": None})
    assert unmask.load(tmp_path).model is not None
    _edit_config(tmp_path, quantization_config={"quant_method": "fp8"})
    assert "quantised by its publisher (fp8)" in load_error(tmp_path)
