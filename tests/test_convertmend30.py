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


def _both(tmp_path: Path) -> Path:
    """A sharded LLaDA (seed 1) saved over an unsharded one (seed 0): transformers' cleanup
    removes only ``*-NNNNN-of-NNNNN*`` files, so the old ``model.safetensors`` stays."""
    torch.manual_seed(0)
    make_llada(tmp_path / "base", n_shards=1)
    torch.manual_seed(1)
    make_llada(tmp_path / "ft", n_shards=2)
    shutil.copy(tmp_path / "base" / "model.safetensors", tmp_path / "ft" / "model.safetensors")
    return tmp_path / "ft"


def test_model_safetensors_beside_a_complete_shard_index_is_refused(tmp_path) -> None:
    """Both files complete: the stale single file was read silently (a fine-tuned sharded save
    over an earlier unsharded one loaded the earlier weights); either could be the stale one,
    so the folder is refused in one line naming both."""
    folder = _both(tmp_path)
    both = r"both model\.safetensors and the shards model\.safetensors\.index\.json lists"
    for call in (lambda: unmask.load(folder), lambda: convert(folder, tmp_path / "out")):
        with pytest.raises(UserError, match=f"{both}.*move one aside"):
            call()
    assert not (tmp_path / "out").exists()
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 2
    (folder / "model.safetensors").unlink()  # the user removes the stale one: the shards load
    torch.manual_seed(1)
    make_llada(tmp_path / "fresh", n_shards=2)
    x = torch.tensor([[3, 17, 5, 9]])
    assert torch.equal(unmask.load(folder).model(x), unmask.load(tmp_path / "fresh").model(x))


def test_an_index_without_a_weight_map_beside_model_safetensors_is_ignored(tmp_path) -> None:
    """An index that lists nothing is no rival: ``model.safetensors`` loads, as transformers
    reads the folder (it loaded before the shard-index rule too); alone, it is one line."""
    torch.manual_seed(0)
    make_llada(tmp_path / "m", n_shards=1)
    x = torch.tensor([[3, 17, 5, 9]])
    want = unmask.load(tmp_path / "m").model(x)
    for body in ({}, {"weight_map": {}}, {"metadata": {}}):
        (tmp_path / "m" / "model.safetensors.index.json").write_text(json.dumps(body))
        assert torch.equal(unmask.load(tmp_path / "m").model(x), want)
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(UserError, match="no weight_map"):
        unmask.load(tmp_path / "m")


def test_an_index_listing_model_safetensors_itself_is_read(tmp_path) -> None:
    """An index whose one shard is ``model.safetensors`` is not two saves."""
    torch.manual_seed(0)
    make_llada(tmp_path / "src", n_shards=1)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "src" / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    index = {"weight_map": dict.fromkeys(keys, "model.safetensors")}
    (tmp_path / "src" / "model.safetensors.index.json").write_text(json.dumps(index))
    assert unmask.load(tmp_path / "src").model(torch.tensor([[3, 17]])).isfinite().all()


def test_asking_whether_a_streamed_weight_is_there_reads_nothing(tmp_path, monkeypatch) -> None:
    """``StreamedWeights`` is a Mapping: ``in`` and ``keys()`` went through ``__getitem__``,
    reading the tensor (cast, NaN check) and opening its file to answer yes."""
    from unmask.convert import stream
    from unmask.convert.load import build_meta, model_config, streamed_weights

    torch.manual_seed(0)
    make_llada(tmp_path / "src", n_shards=2)
    imp, config, _ = model_config(tmp_path / "src")
    model = build_meta(config, tmp_path / "src" / "config.json")
    opened: list[Path] = []
    real = stream.open_file
    monkeypatch.setattr(stream, "open_file", lambda f, stack: opened.append(f) or real(f, stack))
    with streamed_weights(model, imp, tmp_path / "src") as tensors:
        opened.clear()  # the checks read the headers
        assert "embed.weight" in tensors and "embed.weight" in tensors.keys()
        assert "nope" not in tensors
        assert opened == []
        assert tensors.get("embed.weight") is not None and opened  # a read reads
