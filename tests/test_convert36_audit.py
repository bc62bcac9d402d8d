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
from unmask.convert.load import publisher_tokenizer
from unmask.errors import UserError


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


def _make(family: str, folder: Path) -> None:
    (make_llada_moe if family == "llada-moe" else write_llada2_folder)(folder)


def _mask_entry(tid: int, content: str = "<|mask|>") -> dict[str, dict[str, object]]:
    """A tokenizer_config.json ``added_tokens_decoder`` holding one special token."""
    return {str(tid): {"content": content, "special": True, "lstrip": False, "rstrip": False,
                       "normalized": False, "single_word": False}}


@pytest.mark.parametrize("family", ["llada-moe", "llada2"])
def test_a_mask_the_tokenizer_config_adds_is_taken_at_its_id(tmp_path, capsys,
                                                            family) -> None:
    """tokenizer.json without ``<|mask|>``, tokenizer_config.json giving it in
    ``added_tokens_decoder`` at the next id and naming it ``mask_token``: transformers reads
    the mask there; the converter refused the folder, saying the file named no mask_token."""
    folder = tmp_path / family
    _make(family, folder)
    _without_mask(folder)
    n = len(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"])
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"added_tokens_decoder": _mask_entry(n), "mask_token": "<|mask|>"}))
    m = unmask.load(folder, weights=False)
    assert m.config.mask_id == m.tokenizer.mask_id == n
    assert m.tokenizer.id_to_token(n) == "<|mask|>"
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 0, capsys.readouterr().err
    out = unmask.load(tmp_path / "out", weights=False)
    assert out.config.mask_id == n and out.tokenizer.id_to_token(n) == "<|mask|>"
    assert publisher_tokenizer(folder).mask_id == n


def test_a_config_mask_off_the_vocabulary_is_named_as_missing(tmp_path) -> None:
    """A mask_token tokenizer.json lacks (its ``added_tokens_decoder`` id beyond the next one,
    where transformers would put it at another row than the model learnt) is refused in
    words that say so, not "names no mask_token"."""
    folder = tmp_path / "moe"
    make_llada_moe(folder)
    _without_mask(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"added_tokens_decoder": _mask_entry(46), "mask_token": "<|mask|>"}))
    msg = load_error(folder)
    assert "mask_token '<|mask|>' is not among its tokens" in msg, msg


def test_a_config_mask_that_is_the_unknown_token_is_not_the_mask(tmp_path) -> None:
    """tokenizer_config.json naming ``<unk>`` its mask: load_tokenizer does not take it (every
    character the vocabulary lacks would read as a mask); the converter took it, as mask 0.
    One rule for both: refused, and the message says why."""
    folder = tmp_path / "moe"
    make_llada_moe(folder)
    _without_mask(folder)
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"mask_token": "<unk>", "unk_token": "<unk>"}))
    msg = load_error(folder)
    assert "mask_token '<unk>' is another role's token" in msg, msg


def test_publisher_tokenizer_refuses_a_folder_without_the_families_mask(tmp_path) -> None:
    """``unmask prepare --tokenizer`` reads a folder as the model load does: a LLaDA-MoE
    tokenizer without ``<|mask|>`` got ``[MASK]`` appended there (a corpus prepared for a
    model that then refuses to load)."""
    folder = tmp_path / "moe"
    make_llada_moe(folder)
    _without_mask(folder)
    with pytest.raises(UserError, match="has no mask token"):
        publisher_tokenizer(folder)


def _renamed_mask(folder: Path) -> int:
    """The folder's ``<|mask|>`` renamed ``<|special_mask|>`` at its id; that id."""
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    specials = [("<|special_mask|>" if t == "<|mask|>" else t)
                for t, i in sorted(vocab.items(), key=lambda kv: kv[1])
                if t not in ("<unk>", *WORDS)]
    return word_tokenizer_json(folder / "tokenizer.json", specials)["<|special_mask|>"]


@pytest.mark.parametrize("family", ["llada-moe", "llada2"])
@pytest.mark.parametrize("how", ["config.json", "string", "object"])
def test_a_mask_named_by_the_folder_still_loads(tmp_path, family, how) -> None:
    """The refusal of a mask-less tokenizer leaves alone the folders that name their mask:
    by config.json ``mask_token_id``, or by tokenizer_config.json ``mask_token`` (a string or
    an added-token object)."""
    folder = tmp_path / family
    _make(family, folder)
    tid = _renamed_mask(folder)
    if how == "config.json":
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "mask_token_id": tid}))
    else:
        named = "<|special_mask|>" if how == "string" else {"content": "<|special_mask|>"}
        (folder / "tokenizer_config.json").write_text(json.dumps({"mask_token": named}))
    m = unmask.load(folder, weights=False)
    assert m.config.mask_id == m.tokenizer.mask_id == tid
    assert m.tokenizer.id_to_token(tid) == "<|special_mask|>"
