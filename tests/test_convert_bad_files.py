"""Files a user's folder holds in place of the real ones: Git LFS pointers, what ``git clone``
of a Hugging Face repository leaves without git-lfs. Each was safetensors' "header too large"
(or a JSON parse error for ``tokenizer.json``); now one line saying what the file is and how to
fetch it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_convert import make_llada

from unmask.cli import main

POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 29528\n"
)


def _native(path: Path) -> Path:
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids())
    return save_checkpoint(path, model=Transformer(cfg), tokenizer=tok)


@pytest.mark.parametrize("which", ["shard", "tokenizer", "native"])
def test_a_git_lfs_pointer_is_named_with_its_fix(tmp_path, capsys, which: str) -> None:
    torch.manual_seed(0)
    if which == "native":
        src = tmp_path / "run"
        _native(src)
        file = next(src.rglob("model.safetensors"))
    else:
        src = tmp_path / "llada"
        make_llada(src, n_shards=2)
        file = src / "tokenizer.json" if which == "tokenizer" else \
            sorted(src.glob("model-*.safetensors"))[1]
    file.write_text(POINTER)
    assert main(["convert", str(src), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{file}: a Git LFS pointer, not the file's content" in err, err
    assert "git lfs pull" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra", [[], ["--to", "llada"]])
def test_the_empty_working_folder_as_destination_is_one_line(
        tmp_path, capsys, monkeypatch, extra: list[str]) -> None:
    """``unmask convert SRC .`` in an empty folder did the whole conversion and then failed
    with "Invalid argument: ." (the folder written beside DST cannot replace ``.``)."""
    src = _native(tmp_path / "run")
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for dst in (".", str(here)):
        assert main(["convert", str(src.parent), dst, *extra]) == 2
        err = capsys.readouterr().err
        assert "is the working folder; give the path of a new folder in it" in err, err
        assert err.count("\n") == 1
    assert list(here.iterdir()) == []
    assert main(["convert", str(src.parent), "converted", *extra]) == 0  # the suggestion works
    assert (here / "converted" / "model.safetensors").is_file()


def test_a_destination_through_dot_dot_is_one_line_before_any_work(
        tmp_path, capsys, monkeypatch) -> None:
    """``unmask convert SRC nosuch/..`` converted, then failed ("Directory not empty") and
    left ``nosuch/`` behind: the ``..`` check ran only where DST already was a folder."""
    src = _native(tmp_path / "run")
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["convert", str(src.parent), "nosuch/.."]) == 2
    err = capsys.readouterr().err
    assert "names a folder through '.' or '..'; give the path of a new folder" in err, err
    assert err.count("\n") == 1
    assert list(here.iterdir()) == []
