"""Special tokens from tokenizer_config.json and config.json (session 34 review).

A Llama-2 / Mistral / Zephyr fine-tune's tokenizer_config.json often says
``"pad_token": "</s>"`` (its EOS) or ``"<unk>"``: taking that pad made such folders load with
pad = EOS / unk and one token fewer than before tokenizer_config.json was read, so datasets
and models made before no longer matched a new ``prepare`` of the same folder."""

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


def test_a_config_pad_of_its_own_is_taken(tmp_path: Path) -> None:
    hf_folder = _llama_folder(tmp_path, None)
    hf = HFTokenizer.from_file(str(hf_folder / "tokenizer.json"))
    hf.add_special_tokens(["<|my_pad|>"])
    hf.save(str(hf_folder / "tokenizer.json"))
    (hf_folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<|my_pad|>"}))
    tok = load_tokenizer(hf_folder)
    assert _roles(tok)["pad_id"] == "<|my_pad|>" and tok.vocab_size == 278


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
