"""Session 36 audit of the converters: a user converting a publisher folder with a damaged
index or tokenizer files gets one line naming the file that is wrong, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from convert_helpers import load_error
from test_convert import make_dream, make_llada

from unmask.cli import main


@pytest.mark.parametrize("value", [["model-00001-of-00002.safetensors"], {"a": 1}])
def test_an_index_naming_a_shard_by_a_list_or_object_is_one_line(tmp_path, capsys,
                                                                 value) -> None:
    """A weight_map value that is a JSON list or object (unhashable) was a TypeError
    traceback from building the set of shard names."""
    folder = tmp_path / "llada"
    make_llada(folder)
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    first = next(iter(data["weight_map"]))
    data["weight_map"][first] = value
    index.write_text(json.dumps(data))
    assert "weight_map values must be shard file names" in load_error(folder)
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "weight_map values" in err, err
    assert not (tmp_path / "out").exists()


def test_a_bad_chat_template_is_named_by_its_own_file_alone(tmp_path: Path) -> None:
    """The tokenizer_config.json whose chat_template is wrong is named once, not behind
    config.json's path ("config.json: tokenizer_config.json: ...")."""
    folder = tmp_path / "dream"
    make_dream(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": 5}))
    msg = load_error(folder)
    assert msg.startswith(f"{folder / 'tokenizer_config.json'}: chat_template"), msg
    assert "config.json:" not in msg.replace("tokenizer_config.json:", "")
