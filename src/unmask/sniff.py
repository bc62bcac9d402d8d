"""What the first bytes of a file show it to be when it is not UTF-8 text.

Inside: ``not_text(head)`` (an archive, another compression, Python bytecode, UTF-16/32 with
or without a byte-order mark, binary data, with what to do; None for text),
``safetensors_file(head)`` (model weights, whose JSON header passes for text),
``lfs_pointer(head)`` (a Git LFS pointer in place of a file: the one test and ``LFS_ADVICE``
for ``unmask prepare`` and ``unmask convert``) and ``is_utf8_start``. Used by
``unmask prepare`` for every input and by ``files.read_user_text`` for the files a user
names (prompts, templates, forms), so both refuse the same things with the same line.
The standard library only: it sits at the bottom of the import graph.
"""

from __future__ import annotations

import codecs
import math
import unicodedata
from collections import Counter


def is_utf8_start(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) is valid UTF-8 as far as it goes."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _entropy(counts: Counter[int]) -> float:
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values())


_NOT_IN_TEXT = ("Cn", "Co", "Cs")  # unassigned, private use, lone surrogate
_SPACE_THEN_LETTER = "\u2061\u2062\u2063\u2064\u206a\u206b\u206c\u206d\u206e\u206f"
"""Invisible operators and deprecated format characters, never in text: what a space byte and
a lower-case letter of 8-bit text (`` a`` to `` o``) read as in UTF-16BE or LE."""
_NOT_8BIT_TEXT = (*range(9), 11, 12, *range(14, 32), *range(127, 160))  # C0, DEL, C1


def utf16_without_bom(head: bytes) -> str | None:
    """``UTF-16LE`` or ``UTF-16BE`` when ``head`` (at least 128 bytes) reads as text in that
    encoding, whatever its script; else None. Four signs, all needed: a code unit's high byte
    names its script's block, so the bytes at one parity take far fewer values than at the
    other (8-bit text looks alike at both); read in that byte order, at most 2% of the
    characters are controls, unassigned or private-use code points (binary data decodes to
    those, or to lone surrogates, which fail outright) or what a space and a letter of 8-bit
    text make (``_SPACE_THEN_LETTER``); at least a quarter of the code units
    repeat earlier ones (text repeats its letters, spaces and punctuation; numbers and other
    binary data of 16-bit words hardly repeat); and at least 1 byte in 20 is one 8-bit text
    does not use (C0 or C1 controls, DEL), so Latin-1 or cp1252 text, whose byte pairs are
    mostly assigned CJK code points, is not taken for UTF-16."""
    n = len(head) // 2
    if n < 64:
        return None
    even, odd = Counter(head[0:2 * n:2]), Counter(head[1:2 * n:2])
    if sum(abs(even[b] - odd[b]) for b in even | odd) < n:  # total variation < 1/2
        return None
    enc = "UTF-16LE" if _entropy(odd) < _entropy(even) else "UTF-16BE"  # odd: LE's high bytes
    try:
        text = codecs.getincrementaldecoder(enc)().decode(head[: 2 * n], final=False)
    except UnicodeDecodeError:
        return None
    cats = Counter(unicodedata.category(c) for c in text if c not in "\t\n\r")
    bad = cats["Cc"] + sum(cats[c] for c in _NOT_IN_TEXT)
    bad += sum(text.count(c) for c in _SPACE_THEN_LETTER)
    unusual = sum((even | odd)[b] for b in _NOT_8BIT_TEXT)
    if bad * 50 > len(text) or len(set(text)) * 4 > len(text) * 3 or unusual * 20 < 2 * n:
        return None
    return enc


def safetensors_file(head: bytes, kind: str | None) -> str | None:
    """What to say of a safetensors file (model weights), else None. Its first bytes are the
    length of its JSON header (8 bytes, little-endian: the upper ones NUL) and that header,
    which passes for text, so ``not_text`` read it as text: with ``errors='replace'`` a
    checkpoint's ``model.safetensors`` became ~20 M tokens of noise."""
    size = int.from_bytes(head[:8], "little") if len(head) >= 10 else 0
    if 2 <= size < 1 << 32 and head[8:9] == b"{":
        packed = f" ({kind}-compressed)" if kind else ""
        return f"a safetensors file (model weights){packed}, not text"
    return None


LFS_POINTER = b"version https://git-lfs.github.com/spec/"
"""How a Git LFS pointer file starts: what ``git clone`` of a repository (a Hugging Face model
or dataset) leaves in place of each large file when ``git lfs`` is not installed."""


LFS_ADVICE = ("a Git LFS pointer, not the file's content (a git clone without git-lfs?); run "
              "`git lfs install && git lfs pull` in its repository, or download it with "
              "`hf download`")
"""What is said of a Git LFS pointer (after the file's name), wherever one is found."""


def lfs_pointer(head: bytes) -> str | None:
    """What to say of a Git LFS pointer (``head``: a file's first bytes, at least 200 of them
    when it is longer: a few lines naming the real file's hash and size), with what to do;
    else None. The one test and advice for ``unmask prepare``'s inputs and ``unmask
    convert``'s files."""
    if head.startswith(LFS_POINTER) and b"\noid sha256:" in head[:200]:
        return LFS_ADVICE
    return None


def not_text(head: bytes, kind: str | None = None, errors: str = "strict") -> str | None:
    """What the first bytes of a (decompressed) input show it to be when that is not UTF-8 text
    (an archive, another compression, UTF-16/32, binary data), with what to do; else None.
    ``kind``: the compression the bytes came out of. A magic string that text can begin with
    (``%PDF-``, ``PAR1``) counts only when the bytes are not UTF-8; under ``errors='replace'``
    bytes with control characters that are mostly printable ASCII (Latin-1 or cp1252 text)
    are read, as the user asked."""
    packed = f" ({kind}-compressed)" if kind else ""
    unpack = "unpack it first ({}) and pass its folder"
    text_like = is_utf8_start(head)
    for magic, what, fix in (
        (b"PK\x03\x04", "a zip archive", unpack.format("unzip")),
        (b"PK\x05\x06", "an empty zip archive", "nothing to read"),
        (b"7z\xbc\xaf\x27\x1c", "a 7z archive", unpack.format("7z x")),
        (b"\x28\xb5\x2f\xfd", "zstd-compressed data", "decompress it first (zstd -d); gzip, xz "
                                                      "and bzip2 files are read as they are"),
        (b"%PDF-", "a PDF document", "extract its text first"),
        (b"PAR1", "a Parquet file", "export its text to JSONL first"),
        # what `unmask prepare` reads as it is, but a prompt file, a template, a gap set or
        # a task file does not (they were "binary data"), or compressed twice
        (b"\x1f\x8b", "gzip-compressed data", "decompress it first (gunzip)"),
        (b"\xfd7zXZ\x00", "xz-compressed data", "decompress it first (unxz)"),
    ):
        if head.startswith(magic) and not (text_like and magic in (b"%PDF-", b"PAR1")):
            return f"{what}{packed}, not text; {fix}"
    if (head[2:4] == b"\r\n" and 2900 <= int.from_bytes(head[:2], "little") < 4096
            and b"\0" in head[4:16]):
        # CPython 3's bytecode magic (a __pycache__ in a source tree): its docstrings made a
        # few in a hundred pass for 8-bit text under errors='replace', read as noise; its
        # header (flags 0, 1 or 3, a size under 16 MB) holds a NUL, which text does not:
        # "1\r\r\n" (a chapter number and a doubled CR) has the magic's shape
        return "Python bytecode (a .pyc file), not text; leave out __pycache__ folders"
    if head[:4] in (b"\xde\x12\x04\x95", b"\x95\x04\x12\xde"):  # its msgid strings, as .pyc's
        return "a compiled gettext catalogue (.mo), not text; give its .po file"
    if head[:3] == b"BZh" and head[4:10] == b"1AY&SY" and not text_like:  # bzip2's block magic
        return f"bzip2-compressed data{packed}, not text; decompress it first (bunzip2)"
    if head[257:263] == b"ustar\x00" or head[257:265] == b"ustar  \x00":  # POSIX, GNU
        return f"a tar archive{packed}, not text; {unpack.format('tar -xf')}"
    for bom, enc in ((b"\xff\xfe\x00\x00", "32"), (b"\x00\x00\xfe\xff", "32"),
                     (b"\xff\xfe", "16"), (b"\xfe\xff", "16")):
        if head.startswith(bom):
            return f"UTF-{enc} text: convert it to UTF-8 (iconv -f UTF-{enc} -t UTF-8)"
    found: str | None = None
    controls = sum(head.count(c) for c in (*range(9), *range(14, 27), *range(28, 32), 127))
    if len(head) >= 8 and head.count(0) * 10 > len(head):  # real UTF-8 text has no NULs
        n = len(head) // 4
        zero = [head[k::4][:n].count(0) >= 0.8 * n for k in range(4)]
        odd, even = head[1::2].count(0), head[0::2].count(0)
        found = (
            "UTF-32LE" if zero[2] and zero[3] and not zero[0] else
            "UTF-32BE" if zero[0] and zero[1] and not zero[3] else
            "UTF-16LE" if odd > 0.4 * len(head) and even * 10 < odd else
            "UTF-16BE" if even > 0.4 * len(head) and odd * 10 < even else
            utf16_without_bom(head)  # as much other script as ASCII
        )  # fmt: skip
        if found is None:
            return "binary data (NUL bytes), not text"
    elif not text_like or controls * 30 > len(head):  # UTF-16 of a script beyond ASCII has
        found = utf16_without_bom(head)  # few NULs or none, and may be valid UTF-8 (Cyrillic)
    if found is not None:
        return (f"{found} text (no byte-order mark): convert it to UTF-8 "
                f"(iconv -f {found} -t UTF-8)")
    if controls * 30 > len(head) and not text_like:
        printable = sum(head.count(c) for c in (9, 10, 13, *range(32, 127)))
        if errors != "replace" or printable < 0.7 * len(head):  # not text in another encoding
            return "binary data, not text"
    return None


__all__ = ["is_utf8_start", "not_text", "utf16_without_bom"]
