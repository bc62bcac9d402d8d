"""Session 36 audit of the converters: a user converting a publisher folder with a damaged
index or tokenizer files gets one line naming the file that is wrong, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from convert_helpers import WORDS, load_error, word_tokenizer_json
from llada2_helpers import write_llada2_folder
from test_convert import make_dream, make_llada
from test_dit import make_mdlm
from test_moe import make_llada_moe

import unmask
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


def _without_mask(folder: Path) -> None:
    """The folder's tokenizer.json rewritten without ``<|mask|>`` (a tokenizer copied from
    another model), its other tokens at their ids."""
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    specials = [t for t, i in sorted(vocab.items(), key=lambda kv: kv[1])
                if t not in ("<unk>", "<|mask|>", *WORDS)]
    word_tokenizer_json(folder / "tokenizer.json", specials)


@pytest.mark.parametrize("family", ["llada-moe", "llada2"])
def test_a_tokenizer_without_the_families_mask_is_refused_not_given_one(tmp_path, capsys,
                                                                       family) -> None:
    """LLaDA-MoE and LLaDA 2.x name their mask in the tokenizer alone (``<|mask|>``): a
    tokenizer.json without it loaded with ``[MASK]`` appended at a padded embedding row the
    model never learnt as its mask, and converted and generated noise without a word."""
    folder = tmp_path / family
    if family == "llada-moe":
        make_llada_moe(folder)
    else:
        write_llada2_folder(folder)
    _without_mask(folder)
    msg = load_error(folder)
    assert msg.startswith(f"{folder / 'tokenizer.json'}: has no mask token"), msg
    assert "<|mask|>" in msg
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 2
    assert "has no mask token" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_mdlm_still_gets_its_mask_appended_at_its_last_row(tmp_path: Path) -> None:
    """The DiT families fix the mask at the last embedding row; GPT-2's tokenizer has none and
    the loader appends it there, as before."""
    make_mdlm(tmp_path / "mdlm")
    m = unmask.load(tmp_path / "mdlm", weights=False)
    assert m.config.mask_id == m.config.vocab_size - 1 == m.tokenizer.mask_id
