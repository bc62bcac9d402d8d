"""The byte tokenizer encodes plain text without HF, to the same ids (session 34)."""

from __future__ import annotations

import random

import pytest

from unmask.errors import UserError
from unmask.tokenizer import byte_tokenizer, load_tokenizer, with_fim_tokens

TEXTS = ["", "plain ascii", "caf\u00e9 \u4e2d\u6587 \U0001f600 \r\n\t\x00\x7f [MASK] [EOS]",
         "".join(chr(random.Random(0).randrange(0x20, 0x2FFFF)) for _ in range(2000))
         .encode("utf-8", "replace").decode("utf-8", "replace")]


def _hf_ids(tok, texts):
    """The ids of the HF path the fast path replaces: special tokens are plain text there."""
    return [e.ids for e in tok._hf_plain.encode_batch(texts, add_special_tokens=False)]


@pytest.mark.parametrize("saved", [False, True])
def test_byte_ids_are_hf_ids(tmp_path, saved):
    tok = byte_tokenizer()
    if saved:  # a dataset's or checkpoint's copy is recognised too
        tok = load_tokenizer(tok.save(tmp_path))
    assert tok._bytes_plus == 4  # the fast path, not HF
    assert tok.encode_batch(TEXTS) == _hf_ids(tok, TEXTS)
    assert [tok.encode(t) for t in TEXTS] == tok.encode_batch(TEXTS)
    assert tok.encode("[MASK]") == [b + 4 for b in b"[MASK]"]
    assert tok.encode("[MASK]", allow_special=True) == [tok.mask_id]
    assert all(tok.decode(ids) == t for t, ids in zip(TEXTS, tok.encode_batch(TEXTS), strict=True))


def test_other_tokenizers_keep_hf():
    assert with_fim_tokens(byte_tokenizer())._bytes_plus == 0


def test_errors_are_those_of_the_hf_path():
    tok = byte_tokenizer()
    with pytest.raises(UserError, match=r"unpaired surrogate \(U\+D800 at character 1\)"):
        tok.encode_batch(["ok", "a\ud800"])
    with pytest.raises(TypeError):
        tok.encode_batch(["ok", 5])  # type: ignore[list-item]
