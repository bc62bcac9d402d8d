"""``Tokenizer.encode_arrays``: what ``unmask prepare`` writes, ``encode_batch``'s ids as int64
arrays; the byte tokenizer makes them from the UTF-8 bytes without Python lists."""

from __future__ import annotations

import numpy as np
import pytest

from unmask.errors import UserError
from unmask.tokenizer import byte_tokenizer, train_bpe

TEXTS = ["", "héllo wörld 🙂", "[MASK] </s> [EOS]", "a\r\nb\u2028c\x00", "中文字符 " * 50]


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_arrays_are_the_ids_of_encode_batch(kind):
    tok = byte_tokenizer() if kind == "byte" else train_bpe(TEXTS * 20, 300)
    arrays = tok.encode_arrays(TEXTS)
    assert [a.dtype for a in arrays] == [np.dtype(np.int64)] * len(TEXTS)
    assert [a.tolist() for a in arrays] == tok.encode_batch(TEXTS)
    assert not any(tok.is_special(i) for a in arrays for i in a)


def test_a_text_that_is_not_unicode_is_a_user_error():
    with pytest.raises(UserError, match="unpaired surrogate"):
        byte_tokenizer().encode_arrays(["ok", "a\ud800b"])
