"""A tokenizer folder's ``tokenizer_config.json`` names its special tokens (session 34)."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from unmask.tokenizer import load_tokenizer

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"


def _folder(tmp_path, config: dict | None):
    """A byte-level BPE tokenizer folder whose special tokens have names ``load_tokenizer``
    does not search for (DeepSeek's), with ``config`` as its ``tokenizer_config.json``."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[BOS, EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(["hello world, some text"] * 20, trainer)
    folder = tmp_path / "tok"
    folder.mkdir()
    hf.save(str(folder / "tokenizer.json"))
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def test_special_tokens_named_in_tokenizer_config_are_used(tmp_path):
    """Before, only names in ``*_CANDIDATES`` were found: documents ended in an appended
    ``[EOS]`` the model never saw, not the tokenizer's own end of sentence, and BOS was
    that ``[EOS]`` too. The pad it names is not taken (``[PAD]`` appended, as before the file
    was read: only EOS and BOS change what a dataset's ids mean)."""
    folder = _folder(tmp_path, {"bos_token": {"content": BOS, "special": True},
                                "eos_token": EOS, "pad_token": PAD, "add_bos_token": True})
    for path in (folder, folder / "tokenizer.json"):
        tok = load_tokenizer(path)
        named = {k: tok.id_to_token(v) for k, v in tok.special_ids().items()}
        assert named == {"mask_id": "[MASK]", "pad_id": "[PAD]", "eos_id": EOS, "bos_id": BOS}
        assert tok.vocab_size == HFTokenizer.from_file(str(folder / "tokenizer.json")) \
            .get_vocab_size() + 2  # [MASK] and [PAD] appended, no [EOS]


def test_a_token_found_by_name_is_kept(tmp_path):
    """An instruct model's tokenizer_config.json names its turn end (``<|eot_id|>``) as EOS;
    the end of text found by name stays the document separator, as before and as the model
    folder's config.json says."""
    folder = _folder(tmp_path, {"eos_token": EOS})
    hf = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    hf.add_special_tokens(["<|end_of_text|>"])
    hf.save(str(folder / "tokenizer.json"))
    tok = load_tokenizer(folder)
    assert tok.id_to_token(tok.eos_id) == "<|end_of_text|>"


def test_explicit_tokens_win_and_unusable_config_entries_are_ignored(tmp_path):
    folder = _folder(tmp_path, {"eos_token": "<not in vocab>", "pad_token": "e",
                                "bos_token": None})
    tok = load_tokenizer(folder, eos_token=PAD)
    assert tok.id_to_token(tok.eos_id) == PAD
    tok = load_tokenizer(folder)  # nothing usable: the search by name, as without the file
    assert [tok.id_to_token(i) for i in (tok.pad_id, tok.eos_id)] == ["[PAD]", "[EOS]"]
    assert tok.bos_id == tok.eos_id


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_broken_tokenizer_config_is_the_search_by_name(tmp_path, text):
    folder = _folder(tmp_path, None)
    (folder / "tokenizer_config.json").write_text(text)
    tok = load_tokenizer(folder)
    assert tok.id_to_token(tok.eos_id) == "[EOS]"


def test_prepare_ends_documents_with_the_configured_eos(tmp_path):
    from unmask.data import TokenDataset, prepare

    folder = _folder(tmp_path, {"eos_token": EOS})
    (tmp_path / "a.txt").write_text("hello world\nsome text\n")
    prepare([tmp_path / "a.txt"], tmp_path / "d", tokenizer=str(folder), line_docs=True,
            val_fraction=0, progress=False)
    ds = TokenDataset(tmp_path / "d", "train")
    tok = ds.tokenizer()
    ids = ds.read(0, ds.n_tokens).tolist()
    assert tok.id_to_token(ids[-1]) == EOS and ids.count(tok.eos_id) == 2


def test_a_dataset_of_a_publisher_folder_with_unusual_token_names_reads_back(tmp_path):
    """``config.json`` named the special tokens by id; the dataset keeps only tokenizer.json,
    so reading it found other tokens by name and every use of the dataset (``unmask train``,
    ``TokenDataset.tokenizer``) failed with "tokenizer.json does not match index.json"."""
    from unmask.data import TokenDataset, prepare

    folder = _folder(tmp_path, None)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llada", "architectures": ["LLaDAModelLM"],
        "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}))
    (tmp_path / "a.txt").write_text("hello world\nsome text\n")
    prepare([tmp_path / "a.txt"], tmp_path / "d", tokenizer=str(folder), line_docs=True,
            val_fraction=0, progress=False)
    tok = TokenDataset(tmp_path / "d", "train").tokenizer()
    assert [tok.id_to_token(i) for i in (tok.bos_id, tok.eos_id, tok.pad_id)] == [BOS, EOS, PAD]


def test_a_checkpoint_of_a_foreign_tokenizer_loads_its_special_tokens(tmp_path):
    """A model trained on such a dataset saved its tokenizer.json and the ids in config.json;
    loading it searched by name and appended [EOS]: 'tokenizer has 279 tokens, model only
    277', so the trained model could not be loaded at all. Its pad is the config's (a
    ``pad_token`` given, as a dataset made while ``load_tokenizer`` took the config's pad has
    it): the saved ids win over the ``[PAD]`` the search would now append."""
    from unmask.checkpoint import native_parts
    from unmask.config import ModelConfig, save_json

    tok = load_tokenizer(_folder(tmp_path, {"eos_token": EOS, "bos_token": BOS,
                                            "pad_token": PAD}), pad_token=PAD)
    ckpt = tmp_path / "run" / "checkpoint"
    tok.save(ckpt)
    save_json(ModelConfig(vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2,
                          **tok.special_ids()), ckpt / "config.json")
    (ckpt / "model.safetensors").write_bytes(b"")  # not read
    got = native_parts(tmp_path / "run")[2]
    assert got.special_ids() == tok.special_ids() and got.vocab_size == tok.vocab_size


def test_a_git_lfs_pointer_in_place_of_tokenizer_json_says_so(tmp_path):
    """A clone without git-lfs leaves a pointer (Llama-3's 9 MB tokenizer.json is in LFS):
    it was 'not a valid tokenizer.json (expected value at line 1 column 1)'."""
    from unmask.errors import UserError

    (tmp_path / "tokenizer.json").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32 + "\nsize 9085657\n")
    with pytest.raises(UserError, match=r"tokenizer.json: a Git LFS pointer, .*git lfs pull"):
        load_tokenizer(tmp_path)


def test_prepare_with_a_dataset_or_checkpoint_tokenizer_keeps_its_special_tokens(tmp_path):
    """``prepare(..., tokenizer="data/tokenizer.json")`` (docs: "same tokenizer") or a run
    directory searched the copy by name: a foreign tokenizer's EOS became an appended
    ``[EOS]``, so the new dataset's ids disagreed with the first one's and the model's."""
    from unmask.config import ModelConfig, save_json
    from unmask.data import TokenDataset, prepare

    folder = _folder(tmp_path, {"eos_token": EOS, "bos_token": BOS, "pad_token": PAD})
    (tmp_path / "a.txt").write_text("hello world\nsome text\n")
    kw = {"line_docs": True, "val_fraction": 0, "progress": False}
    first = prepare([tmp_path / "a.txt"], tmp_path / "d", tokenizer=str(folder), **kw)
    tok = TokenDataset(first.out, "train").tokenizer()
    ckpt = tmp_path / "run" / "checkpoint"
    tok.save(ckpt)
    save_json(ModelConfig(vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2,
                          **tok.special_ids()), ckpt / "config.json")
    (ckpt / "model.safetensors").write_bytes(b"")  # not read
    for i, spec in enumerate([first.out, first.out / "tokenizer.json", tmp_path / "run", ckpt]):
        again = prepare([tmp_path / "a.txt"], tmp_path / f"e{i}", tokenizer=str(spec), **kw)
        assert (again.vocab_size, TokenDataset(again.out, "train").special_ids) == \
            (first.vocab_size, tok.special_ids()), spec


def test_another_tokenizer_in_a_datasets_place_is_still_refused(tmp_path):
    """The special tokens index.json names by id are taken only where the file has special
    tokens there: an ordinary token at the EOS id is another tokenizer, not the dataset's."""
    from unmask.data import TokenDataset, prepare
    from unmask.errors import UserError

    folder = _folder(tmp_path, {"eos_token": EOS})
    (tmp_path / "a.txt").write_text("hello world\n")
    out = prepare([tmp_path / "a.txt"], tmp_path / "d", tokenizer=str(folder), val_fraction=0,
                  progress=False).out
    index = json.loads((out / "index.json").read_text())
    index["special_ids"]["eos_id"] = 100  # an ordinary merge of the file
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="tokenizer.json does not match index.json"):
        TokenDataset(out, "train").tokenizer()
