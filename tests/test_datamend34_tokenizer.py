"""Special tokens from tokenizer_config.json and config.json (session 34 review).

A Llama-2 / Mistral / Zephyr fine-tune's tokenizer_config.json often says
``"pad_token": "</s>"`` (its EOS) or ``"<unk>"``, a Llama-3-Instruct one ``"<|eot_id|>"``
(its EOS by the config), an unsloth one ``"<|finetune_right_pad_id|>"`` (a token of its own):
taking that pad made such folders load with another pad and one token fewer than before
tokenizer_config.json was read, so datasets and models made before no longer matched a new
``prepare`` of the same folder. The config's pad is never taken now: ``[PAD]`` is appended."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from unmask.tokenizer import load_tokenizer


def _llama_folder(tmp_path: Path, config: dict | None, name: str = "tok") -> Path:
    """A byte-level BPE with ``<unk>``, ``<s>``, ``</s>`` (Llama-2's special tokens)."""
    hf = HFTokenizer(models.BPE(unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(["hello world, some text"] * 20, trainer)
    folder = tmp_path / name
    folder.mkdir()
    hf.save(str(folder / "tokenizer.json"))
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def _roles(tok) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {k: tok.id_to_token(i) for k, i in tok.special_ids().items()}


@pytest.mark.parametrize("config", [
    {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"},
    {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"},
    {"pad_token": {"content": "<unk>", "special": True}},  # the model's unk, config names none
    {"pad_token": "<s>"},
    {"mask_token": "</s>", "pad_token": "<unk>"},
])
def test_a_config_pad_that_is_another_roles_token_leaves_the_tokenizer_as_before(
    tmp_path: Path, config: dict
) -> None:
    before = load_tokenizer(_llama_folder(tmp_path, None, "plain"))  # as before the config
    tok = load_tokenizer(_llama_folder(tmp_path, config))
    assert _roles(tok) == _roles(before) == {
        "mask_id": "[MASK]", "pad_id": "[PAD]", "eos_id": "</s>", "bos_id": "<s>"}
    assert tok.vocab_size == before.vocab_size == 278


def _folder(tmp_path: Path, specials: list[str], config: dict, unigram: bool = False) -> Path:
    if unigram:  # SentencePiece-like: the model names its unk by id only
        hf = HFTokenizer(models.Unigram())
        hf.pre_tokenizer = pre_tokenizers.Metaspace()
        hf.train_from_iterator(["hello world, some text here"] * 20, trainers.UnigramTrainer(
            vocab_size=60, special_tokens=specials, unk_token="<unk>"))
    else:
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        hf.train_from_iterator(["hello world, some text"] * 20, trainers.BpeTrainer(
            vocab_size=300, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder = tmp_path / ("cfg" if config else "plain")
    folder.mkdir()
    hf.save(str(folder / "tokenizer.json"))
    if config:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


LLAMA3 = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]


@pytest.mark.parametrize("specials, config, unigram, size, eos", [
    # Llama-3-Instruct: the pad is the config's EOS, not the EOS found by name
    (LLAMA3, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
              "pad_token": "<|eot_id|>"}, False, 278, "<|end_of_text|>"),
    # unsloth's Llama-3.1: a pad token of its own
    ([*LLAMA3, "<|finetune_right_pad_id|>"], {"bos_token": "<|begin_of_text|>",
     "eos_token": "<|eot_id|>", "pad_token": "<|finetune_right_pad_id|>"}, False, 279,
     "<|end_of_text|>"),
    # a SentencePiece Unigram whose config names its <unk> as pad, and no unk_token
    (["<unk>", "<s>", "</s>"], {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>"},
     True, 20, "</s>"),
    # a DeepSeek-like pad of its own: EOS and BOS are the config's, the pad is not
    (["<bos>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"], {"eos_token": "<｜end▁of▁sentence｜>",
     "pad_token": "<｜▁pad▁｜>"}, False, 278, "<｜end▁of▁sentence｜>"),
])
def test_a_config_pad_is_not_taken(  # type: ignore[no-untyped-def]
    tmp_path: Path, specials, config, unigram, size, eos
) -> None:
    """Each folder loads as before tokenizer_config.json was read: ``[PAD]`` appended; and
    with the file only the EOS it names where the search by name finds none."""
    before = load_tokenizer(_folder(tmp_path, specials, {}, unigram))
    tok = load_tokenizer(_folder(tmp_path, specials, config, unigram))
    assert _roles(tok)["pad_id"] == _roles(before)["pad_id"] == "[PAD]"
    assert tok.vocab_size == size and _roles(tok)["eos_id"] == eos
    assert before.vocab_size == size + (eos not in LLAMA3 + ["</s>"])  # [EOS] appended


def test_a_config_mask_of_its_own_is_taken_but_not_the_unigram_unk(tmp_path: Path) -> None:
    """A mask the config names is taken where it is a token of its own; a Unigram model's
    ``<unk>`` (named by id only, inside the model) is not one."""
    specials = ["<unk>", "<s>", "</s>", "<mask_x>"]
    folder = _folder(tmp_path, specials, {"mask_token": "<mask_x>"}, True)
    size = HFTokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size()
    tok = load_tokenizer(folder)
    assert _roles(tok)["mask_id"] == "<mask_x>" and tok.vocab_size == size + 1  # [PAD]
    (folder / "tokenizer_config.json").write_text(json.dumps({"mask_token": "<unk>"}))
    tok = load_tokenizer(folder)
    assert _roles(tok)["mask_id"] == "[MASK]" and tok.vocab_size == size + 2


def test_a_dataset_made_with_a_config_pad_still_reads_back(tmp_path: Path, monkeypatch) -> None:
    """A dataset prepared while the config's pad was taken (index.json: pad = the folder's
    ``<|finetune_right_pad_id|>``, no ``[PAD]`` in its tokenizer.json) reads back with its
    own ids, and a new ``prepare`` with it as the tokenizer keeps them."""
    import unmask.tokenizer as tk
    from unmask.data import TokenDataset, prepare

    pad = "<|finetune_right_pad_id|>"
    folder = _folder(tmp_path, [*LLAMA3, pad], {"pad_token": pad})
    (tmp_path / "a.txt").write_text("hello world\nsome text\n")
    kw = {"line_docs": True, "val_fraction": 0, "progress": False}
    with monkeypatch.context() as m:  # the earlier rule: the config's pad taken
        m.setattr(tk, "PAD_CANDIDATES", (*tk.PAD_CANDIDATES, pad))
        old = prepare([tmp_path / "a.txt"], tmp_path / "d", tokenizer=str(folder), **kw)
    ds = TokenDataset(old.out, "train")
    tok = ds.tokenizer()
    assert tok.id_to_token(tok.pad_id) == pad and tok.vocab_size == old.vocab_size == 278
    again = prepare([tmp_path / "a.txt"], tmp_path / "e", tokenizer=str(old.out), **kw)
    assert TokenDataset(again.out, "train").special_ids == ds.special_ids
    assert load_tokenizer(folder).vocab_size == 279  # the folder itself: [PAD] appended


def test_a_native_checkpoints_roles_follow_its_config_json(tmp_path: Path) -> None:
    """A Dream-like checkpoint whose config.json has BOS = ``<|endoftext|>`` (id 0) while its
    vocabulary also holds ``<|beginoftext|>``, which the search by name picks: the ids the
    model was trained with win, as the publisher-folder loader reads them."""
    from unmask.checkpoint import native_parts
    from unmask.config import ModelConfig, save_json

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_end|>", "<|beginoftext|>", "<|mask|>"]
    hf.train_from_iterator(["hello world"] * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    hf.save(str(ckpt / "tokenizer.json"))
    save_json(ModelConfig(vocab_size=hf.get_vocab_size(), d_model=16, n_layers=1, n_heads=2,
                          mask_id=3, pad_id=0, eos_id=0, bos_id=0), ckpt / "config.json")
    (ckpt / "model.safetensors").write_bytes(b"")  # not read
    assert load_tokenizer(ckpt).bos_id == 2  # by name
    tok = native_parts(ckpt)[2]
    assert _roles(tok) == {"mask_id": "<|mask|>", "pad_id": "<|endoftext|>",
                           "eos_id": "<|endoftext|>", "bos_id": "<|endoftext|>"}
    assert tok.vocab_size == hf.get_vocab_size()
