"""A Dream folder as published: Qwen2's slow tokenizer files (``vocab.json``, ``merges.txt``,
``tokenizer_config.json`` with its added tokens), no ``tokenizer.json``. It stopped with
"tokenizer.json: missing"; the tokenizer is now built as ``transformers`` builds Qwen2's
(``unmask.convert.qwen2_tokenizer``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import test_convert
import torch
from convert_helpers import load_error
from test_convert import make_dream, reference_logits

import unmask
from unmask.cli import main
from unmask.convert.qwen2_tokenizer import qwen2_tokenizer

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("1", "2"), ("Ġ", "1"), ("'", "s")]
TEXTS = ["the 12 cats's 3.5\n\nthe", "<|im_start|>user\nthe 123<|mask|><|mask|> e\u0301",
         "  two  spaces\tand\r\nnewlines  "]


def _byte_alphabet() -> list[str]:
    """GPT-2 / Qwen2's printable stand-ins for the 256 bytes (``bytes_to_unicode``)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs, strict=True))]


def write_qwen2_files(folder: Path) -> dict[str, int]:
    """vocab.json (the byte alphabet and the merged tokens), merges.txt and a
    tokenizer_config.json whose added_tokens_decoder puts SPECIALS after the vocabulary, as
    Dream's; returns token -> id."""
    vocab = {c: i for i, c in enumerate(_byte_alphabet())}
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))
    added = {str(len(vocab) + j): {"content": t, "lstrip": False, "normalized": False,
                                   "rstrip": False, "single_word": False, "special": True}
             for j, t in enumerate(SPECIALS)}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": added, "tokenizer_class": "DreamTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "mask_token": "<|mask|>",
    }))
    return {**vocab, **{e["content"]: int(k) for k, e in added.items()}}


def test_the_qwen2_tokenizer_splits_as_qwen2_does(tmp_path: Path) -> None:
    ids = write_qwen2_files(tmp_path)
    tok = qwen2_tokenizer(tmp_path)
    assert tok is not None
    # digits one by one, whatever merges.txt says ("1 2" would join them in GPT-2's split)
    assert tok.encode("12", add_special_tokens=False).ids == [ids["1"], ids["2"]]
    assert tok.encode(" the", add_special_tokens=False).ids == [ids["Ġthe"]]
    assert tok.encode("x<|mask|>", add_special_tokens=False).ids == [ids["x"], ids["<|mask|>"]]
    for text in TEXTS:
        enc = tok.encode(text, add_special_tokens=False)
        assert tok.decode(enc.ids, skip_special_tokens=False) == \
            text.replace("e\u0301", "\u00e9")  # NFC
    transformers = pytest.importorskip("transformers")
    ref = transformers.Qwen2Tokenizer.from_pretrained(str(tmp_path))
    for text in TEXTS:
        assert tok.encode(text, add_special_tokens=False).ids == \
            ref(text, add_special_tokens=False)["input_ids"], text


def test_added_tokens_out_of_sequence_are_one_line(tmp_path: Path) -> None:
    from unmask.errors import UserError

    write_qwen2_files(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    first = min(cfg["added_tokens_decoder"], key=int)
    cfg["added_tokens_decoder"][str(int(first) + 10)] = cfg["added_tokens_decoder"].pop(first)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="added token '<|im_start|>' has id") as e:
        qwen2_tokenizer(tmp_path)
    assert "\n" not in str(e.value)


def dream_as_published(folder: Path, monkeypatch: pytest.MonkeyPatch,
                       n_shards: int) -> tuple[Any, dict[str, int]]:
    """A Dream folder as its publisher ships it (``make_dream``'s weights, Qwen2's slow
    tokenizer files, no tokenizer.json; config.json naming the special tokens by id): the
    reference model and the token ids ``write_qwen2_files`` gave."""
    monkeypatch.setattr(test_convert, "VOCAB", 300)  # the byte alphabet + merges + specials
    ref = make_dream(folder, n_shards=n_shards)
    (folder / "tokenizer.json").unlink()
    ids = write_qwen2_files(folder)
    cfg = json.loads((folder / "config.json").read_text())
    eos = ids["<|endoftext|>"]
    cfg |= {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos,
            "mask_token_id": ids["<|mask|>"]}
    (folder / "config.json").write_text(json.dumps(cfg))
    return ref, ids


def test_a_dream_folder_without_tokenizer_json_loads_and_converts(tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    folder = tmp_path / "dream"
    ref, ids = dream_as_published(folder, monkeypatch, n_shards=2)
    eos = ids["<|endoftext|>"]

    loaded = unmask.load(folder)  # was: tokenizer.json: missing
    assert loaded.config.mask_id == ids["<|mask|>"] and loaded.config.eos_id == eos
    tokens = loaded.tokenizer.encode("the 12 the")
    # Qwen2 keeps the space before a number apart, and each digit alone
    assert tokens == [ids["t"], ids["he"], ids["Ġ"], ids["1"], ids["2"], ids["Ġthe"]]
    with torch.no_grad():
        got = loaded.model(torch.tensor([tokens]))[0].double()
    torch.testing.assert_close(got, reference_logits(ref, tokens), atol=1e-4, rtol=1e-4)

    assert main(["convert", str(folder), str(tmp_path / "native")]) == 0
    native = unmask.load(tmp_path / "native")
    assert (tmp_path / "native" / "tokenizer.json").is_file()
    for text in TEXTS:
        assert native.tokenizer.encode(text) == loaded.tokenizer.encode(text)
    assert native.config.mask_id == loaded.config.mask_id

    (folder / "merges.txt").unlink()  # neither tokenizer.json nor the files to build one
    assert load_error(folder).startswith(f"{folder / 'tokenizer.json'}: missing")


@pytest.mark.parametrize("name", ["vocab.json", "merges.txt"])
def test_a_git_lfs_pointer_in_place_of_the_bpe_files_is_named(tmp_path: Path, name: str) -> None:
    """A pointer where vocab.json or merges.txt belongs was "do not make a BPE tokenizer
    (expected value at line 1 column 1)", not the `git lfs pull` the shards' pointers get."""
    from unmask.errors import UserError

    write_qwen2_files(tmp_path)
    (tmp_path / name).write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 9\n")
    with pytest.raises(UserError, match=f"{name}: a Git LFS pointer") as e:
        qwen2_tokenizer(tmp_path)
    assert "git lfs pull" in str(e.value) and "\n" not in str(e.value)


def test_prepare_tokenizes_with_a_dream_folder_as_the_model_reads_it(tmp_path, monkeypatch) -> None:
    """``unmask prepare --tokenizer DREAM_FOLDER`` stopped with advice to build tokenizer.json
    with ByteLevelBPETokenizer, which splits numbers otherwise and loses the mask token (the
    model's load then refused the folder): it now tokenizes as ``unmask.load`` does."""
    from unmask.data import TokenDataset

    folder = tmp_path / "dream"
    _, ids = dream_as_published(folder, monkeypatch, n_shards=1)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"the {i} cats's 12 the\n\n" for i in range(200)))
    out = tmp_path / "ds"
    assert main(["prepare", str(corpus), "-o", str(out), "--tokenizer", str(folder),
                 "--val-fraction", "0"]) == 0
    want = unmask.load(folder).tokenizer
    train = TokenDataset(out, "train")
    head = train.read(0, 12).tolist()
    assert head[:6] == want.encode("the 0 cats's 12 the")[:6]
    assert ids["<|mask|>"] not in train.read(0, train.n_tokens).tolist()
