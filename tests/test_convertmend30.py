"""``unmask convert`` / ``--to`` since they stream without ``load()``: the checks ``load`` made
are still made (an empty SRC), an unsupported folder is named as such, and a folder holding
both ``model.safetensors`` and a complete shard index is refused rather than read either way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_convert import make_llada

import unmask
from unmask.cli import main
from unmask.convert import convert, export
from unmask.errors import UserError


@pytest.fixture
def native(tmp_path) -> Path:
    """A native checkpoint of a tiny LLaDA (and its publisher folder, ``src`` beside it)."""
    torch.manual_seed(0)
    make_llada(tmp_path / "src", n_shards=1)
    return convert(tmp_path / "src", tmp_path / "native")


@pytest.mark.parametrize("where", ["native", "src"])
def test_an_empty_src_is_refused_not_the_working_folder(tmp_path, native, monkeypatch,
                                                        capsys, where) -> None:
    """`unmask convert "" OUT` (an unset variable) converted, or exported, the working folder
    when it was a checkpoint: load() refused an empty path, the streamed convert skipped it."""
    monkeypatch.chdir(tmp_path / where)
    for args in (["--dtype", "fp16"], ["--to", "llada"]):
        assert main(["convert", "", str(tmp_path / "out"), *args]) == 2
        assert "path is empty" in capsys.readouterr().err
    with pytest.raises(UserError, match="path is empty"):
        convert("", tmp_path / "out")
    with pytest.raises(UserError, match="path is empty"):
        export("", tmp_path / "out", family="llada")
    assert not (tmp_path / "out").exists()


def test_an_empty_path_is_refused_by_native_parts(tmp_path, native, monkeypatch) -> None:
    """``native_parts`` (the checks convert, export and load share) refuses "" itself."""
    from unmask.checkpoint import native_parts

    monkeypatch.chdir(native)
    with pytest.raises(UserError, match="path is empty"):
        native_parts("")


def test_export_of_an_unsupported_publisher_folder_says_it_is_unsupported(tmp_path) -> None:
    """`convert GPT2_FOLDER OUT --to llada` advised `unmask convert GPT2_FOLDER NATIVE` first,
    which fails: the folder's family is not supported, and that is what is said."""
    make_llada(tmp_path / "gpt2", n_shards=1)
    (tmp_path / "gpt2" / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "vocab_size": 100}))
    with pytest.raises(UserError, match="model_type 'gpt2' is not supported") as e:
        export(tmp_path / "gpt2", tmp_path / "out", family="llada")
    assert "unmask convert" not in str(e.value)
    with pytest.raises(UserError, match="model_type 'gpt2' is not supported"):
        convert(tmp_path / "gpt2", tmp_path / "out")  # what the old advice led to
