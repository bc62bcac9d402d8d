"""Python bytecode (``__pycache__/*.pyc`` in a source tree given to ``prepare``) and compiled
gettext catalogues (``.mo``) are named as what they are: the docstrings or messages in them
made some pass for 8-bit text under ``errors='replace'``, read into the corpus as noise."""

from __future__ import annotations

import py_compile
import struct

import pytest

from unmask.data import prepare
from unmask.errors import UserError
from unmask.sniff import not_text


def test_python_bytecode_is_not_text(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text('"""' + "A long docstring, as modules have. " * 200 + '"""\nX = 1\n')
    pyc = tmp_path / "__pycache__" / "mod.pyc"
    py_compile.compile(str(src), cfile=str(pyc), doraise=True)
    assert "Python bytecode" in (not_text(pyc.read_bytes()[:4096], None, "replace") or "")
    with pytest.raises(UserError, match=r"mod\.pyc: Python bytecode"):
        prepare(tmp_path, tmp_path / "d", tokenizer="byte", val_fraction=0, errors="replace",
                progress=False)


def test_a_compiled_gettext_catalogue_is_not_text():
    text = b"Project-Id-Version: x\nContent-Type: text/plain; charset=UTF-8\n" * 20
    head = struct.pack("<7I", 0x950412DE, 0, 1, 28, 36, 0, 44) + b"\0" * 16 + text
    assert "gettext" in (not_text(head, None, "replace") or "")
    assert "gettext" in (not_text(struct.pack(">I", 0x950412DE) + head[4:]) or "")


@pytest.mark.parametrize("start", [b"ab\r\n", b"\r\n\r\n", b"# \r\n", "é\r\n".encode()])
def test_text_with_a_line_end_early_is_still_text(start):
    assert not_text(start + b"plain text follows\r\n" * 20) is None


@pytest.mark.parametrize("start", [b"1\r\r\n", b"I\r\r\n", b"\n\x0c\r\n", b"\r\r\r\n"])
def test_text_shaped_like_the_bytecode_magic_is_still_text(tmp_path, start):
    """One character, then a CR or a form feed, then CRLF (``1\\r\\r\\n``: a chapter number
    with the doubled CR of Windows' text mode writing ``\\r\\n``) has the shape of CPython's
    bytecode magic: such a file was refused as "Python bytecode"."""
    text = start + b"Verse text.\r\r\n" * 300
    assert not_text(text[:4096]) is None and not_text(text[:4096], None, "replace") is None
    (tmp_path / "ch.txt").write_bytes(text)
    info = prepare(tmp_path / "ch.txt", tmp_path / "d", tokenizer="byte", val_fraction=0,
                   progress=False)
    assert info.n_documents == 1 and info.n_tokens["train"] > 4200
