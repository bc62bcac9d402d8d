"""``unmask.sniff``: what the first bytes of a file that is not UTF-8 text show it to be."""

from __future__ import annotations

import bz2
import gzip
import lzma

import pytest

from unmask.errors import UserError
from unmask.files import read_user_text
from unmask.sniff import not_text

EN = "In the beginning God created the heaven and the earth. " * 80
RU = "В начале сотворил Бог небо и землю. Земля же была безвидна и пуста. " * 60
ZH = "起初神创造天地。地是空虚混沌，渊面黑暗；神的灵运行在水面上。" * 60


@pytest.mark.parametrize(
    ("pack", "told"),
    [
        (gzip.compress, "gzip-compressed data, not text; decompress it first (gunzip)"),
        (lzma.compress, "xz-compressed data, not text; decompress it first (unxz)"),
        (bz2.compress, "bzip2-compressed data, not text; decompress it first (bunzip2)"),
    ],
)
def test_compressed_files_named_where_read_as_text(tmp_path, pack, told):
    """A gzipped prompt file, template or gap set was "binary data, not text"."""
    assert not_text(pack(EN.encode())[:4096]) == told
    p = tmp_path / "prompts.txt"
    p.write_bytes(pack(EN.encode()))
    with pytest.raises(UserError, match=rf"prompts.txt: {told.split(',')[0]}"):
        read_user_text(p)
    # text that merely starts with the letters of bzip2's magic is text
    assert not_text(b"BZh91AY&SY is what a bzip2 stream starts with\n" * 20) is None


@pytest.mark.parametrize("text", [EN, RU, ZH])
def test_encodings_with_and_without_byte_order_marks(text):
    assert not_text(text.encode("utf-8")[:4096]) is None
    assert not_text(text.encode("utf-16")[:4096]).startswith("UTF-16 text: convert")
    assert not_text(text.encode("utf-32")[:4096]).startswith("UTF-32 text: convert")
    for enc in ("UTF-16LE", "UTF-16BE", "UTF-32LE"):
        assert not_text(text.encode(enc)[:4096]).startswith(f"{enc} text (no byte-order mark)")


@pytest.mark.parametrize("text", [RU, ZH])
@pytest.mark.parametrize("cut", [4095, 4094, 4093])
def test_a_head_that_cuts_a_multibyte_character_is_text(text, cut):
    """The first 4,096 bytes end inside a character: still UTF-8 as far as they go."""
    head = text.encode("utf-8")[:cut]
    assert not_text(head) is None


def test_archives_and_documents_are_named():
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", EN)
    assert not_text(buf.getvalue()[:4096]).startswith("a zip archive, not text; unpack")
    assert not_text(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(range(256)) * 4).startswith(
        "a PDF document")
    assert not_text(b"%PDF-1.4 is a format of documents.\n" * 20) is None  # text about it
