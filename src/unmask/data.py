"""Corpus → token shards, and reading them back.

Inside:

- ``prepare(inputs, out, ...)``: text / gzip / xz / bzip2 / JSONL files and directories → a
  directory of ``uint16``/``uint32`` token shards split into train and validation, plus
  ``index.json`` and ``tokenizer.json`` (see docs/data.md). Streams: neither the corpus nor
  the token stream is ever held in memory.
- ``PreparedInfo``: what ``prepare`` wrote (counts, paths).
- ``TokenDataset(directory, split)``: the shards of one split as one token stream, read
  window by window; random training windows (``sample``) and sequential validation windows
  (``windows``).
- ``resolve_inputs(inputs)``: the files a list of input paths stands for.

Documents are separated by EOS in the token stream (a text file is one document, or
with ``line_docs`` each of its non-blank lines). The split is deterministic: the stream
is cut into blocks of ``SPLIT_BLOCK`` tokens (the last one takes the tail) and the
validation split gets ``max(val_fraction · tokens, min_val_tokens)`` of them, rounded up
to whole blocks: the blocks whose ``blake2b(seed, i)`` is smallest. This works for a
corpus that is one huge document as well as for millions of small ones.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import gzip
import hashlib
import heapq
import itertools
import json
import lzma
import math
import numbers
import os
import re
import secrets
import shlex
import shutil
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from unmask.errors import UserError, refuse
from unmask.files import (
    LINE_END,
    STDIN_NAME,
    BadJSON,
    check_creatable,
    named,
    not_a_folder,
    parse_json,
    plain_name,
)
from unmask.flag_checks import (  # MAX_VOCAB_SIZE: moved there, kept importable
    MAX_VOCAB_SIZE,  # noqa: F401
    check_prepare_numbers,
    missing_dataset,
    missing_input,
)
from unmask.folders import is_checkpoint, is_dataset
from unmask.sniff import lfs_pointer, safetensors_file
from unmask.sniff import not_text as _not_text
from unmask.tokenizer import (
    Tokenizer,
    byte_tokenizer,
    load_tokenizer,
    load_tokenizer_with_ids,
    train_bpe,
)

INDEX_VERSION = 1
SPLIT_BLOCK = 4096
"""Tokens per split block: the unit that goes to train or validation as a whole."""
SPLITS = ("train", "val")
MIN_VAL_TOKENS = 8 * SPLIT_BLOCK
"""Default smallest validation split: 32,768 tokens, what one default evaluation of
``unmask train`` reads (8 batches × 32 rows × 128 tokens), so it never repeats a window."""

_CHUNK_CHARS = 1 << 12
"""Longest piece of a document fed at once to a tokenizer that ``_cuts_exactly``: the pieces
are cut where its pre-tokenization splits anyway (``_cut``), so their size does not change
the tokens, and HF tokenizers encode 4K-character pieces in about 2/3 of the CPU time of 64K
ones (python-docs, 11 MB, a 4,096-token BPE: 9.4 s -> 5.8-7.7 s), the same bytes written."""
_CHUNK_CHARS_OTHER = 1 << 16
"""The same for other tokenizers, where a cut may change a token or two (a Llama-2-style
normalizer puts a word start at the start of every piece): long pieces, few cuts."""
_READ_BYTES = 1 << 16  # longest read from a plain-text file (a line or part of one)
_BATCH_CHARS = 1 << 20  # characters per encode_batch call
_NOT_DATASET = "is not a prepared dataset; run `unmask prepare` first"


@dataclass(frozen=True, kw_only=True)
class PreparedInfo:
    """Summary of a directory written by ``prepare``."""

    out: Path
    """The dataset directory."""
    vocab_size: int
    """Token ids are in ``[0, vocab_size)``."""
    dtype: str
    """Shard element type, little-endian: ``uint16`` or ``uint32``."""
    special_ids: dict[str, int]
    """``mask_id``, ``pad_id``, ``eos_id``, ``bos_id``."""
    n_documents: int
    """Non-empty documents read (each followed by one EOS)."""
    n_tokens: dict[str, int] = field(default_factory=dict)
    """Tokens per split (``train``, ``val``), EOS included."""
    n_bytes: dict[str, int] = field(default_factory=dict)
    """UTF-8 bytes of text per split (special tokens count 0)."""
    notes: tuple[str, ...] = ()
    """What the user should know about the result (e.g. a validation split below the minimum
    because the corpus is small); the CLI prints them."""

    @property
    def bytes_per_token(self) -> float:
        """Text bytes per token over both splits (for bits-per-byte)."""
        t = sum(self.n_tokens.values())
        return sum(self.n_bytes.values()) / t if t else 0.0


# ----------------------------------------------------------------------------- inputs


def _hidden(parts: Sequence[str]) -> bool:
    return any(p.startswith(".") for p in parts)


def _walk(root: Path) -> list[Path]:
    """The entries below ``root`` that are not folders, hidden ones (``.name``) left out.
    Links to folders are followed (``rglob`` skipped them: a corpus folder holding a link to
    another disk lost that text silently); each real folder is walked once, so a link to an
    enclosing folder ends instead of looping, and a folder reached twice is read once."""
    seen: set[str] = set()
    out: list[Path] = []
    for d, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(d)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        shown = sorted(x for x in dirs if not x.startswith("."))
        # real folders first: a folder also reached through a link keeps its own name
        dirs[:] = sorted(shown, key=lambda x: os.path.islink(os.path.join(d, x)))
        out.extend(Path(d) / n for n in names if not n.startswith("."))
    return out


def _annexed(link: Path) -> bool:
    """Whether the symbolic link ``link`` points into a git-annex store (``.git/annex/objects``):
    a file whose content was not fetched when its target is missing."""
    try:
        return ".git/annex/objects/" in os.readlink(link).replace(os.sep, "/")
    except OSError:
        return False


def _dangling(link: Path) -> UserError:
    """The refusal of the symbolic link ``link`` to a missing file, given as an input or (a
    git-annex one) found below an input folder."""
    if _annexed(link):
        return UserError(f"{link}: a git-annex link whose content is not here "
                         f"({os.readlink(link)}); fetch it (git annex get) or remove the link")
    return UserError(f"{link}: a symbolic link to a missing file ({os.readlink(link)})")


def _real(p: Path, cache: dict[str, str]) -> str:
    """``str(p.resolve())``, through ``cache`` (path -> resolved path, for files and the
    folders that hold them): each folder is resolved once and a file on its own only when it is
    a link. ``resolve`` walks every component of every path, and the checks of a folder of
    20,000 files spent 2/3 of their time there."""
    key = os.fspath(p)
    real = cache.get(key)
    if real is None:
        if os.path.islink(key):
            real = os.path.realpath(key)
        else:
            parent, name = os.path.split(key)
            held = cache.get(parent)
            if held is None:
                held = cache[parent] = os.path.realpath(parent)
            real = os.path.join(held, name)
        cache[key] = real
    return real


def _under(real: str, folder: str) -> bool:
    """Whether the resolved path ``real`` is the resolved ``folder`` or below it."""
    return real == folder or real.startswith(os.path.join(folder, ""))


STDIN = "-"
"""The input that stands for standard input (the string; ``Path("-")`` is a file so named)."""


def _is_stdin(item: object) -> bool:
    return isinstance(item, str) and item == STDIN


def _input_list(inputs: Any) -> list[Any]:
    """``inputs`` as a list: one path, not the characters of its name; a generator (what
    ``Path(...).glob('*.txt')`` gives) read once."""
    return [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)


def resolve_inputs(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    exclude: Sequence[Path] = (),
    skipped: list[str] | None = None,
    stdin: Path | None = None,
) -> list[Path]:
    """The files that ``inputs`` (a list of paths, or one path) stand for, in order.

    Files are taken as given; directories are searched recursively in sorted order,
    skipping hidden files and folders (names starting with ``.``), datasets ``prepare`` wrote
    (an earlier ``-o`` inside the corpus folder: its shards are token ids, not text) and
    anything under ``exclude``. A missing path, a prepared dataset given as an input, a
    checkpoint folder (a model: its weights are not text) given or found below a folder, or a
    git-annex link below a folder whose content was not fetched raises ``UserError``. Other
    links below a folder to missing files (a source tree's links to build outputs) are
    skipped, with a note appended to ``skipped`` when it is given. With ``stdin``, the input
    ``"-"`` (``STDIN``; at most once) stands for that file, which need not exist yet: the one
    standard input is saved to (``prepare``).
    """
    inputs = _input_list(inputs)
    if not inputs:
        raise UserError("no input files given")
    if stdin is not None and sum(map(_is_stdin, inputs)) > 1:
        raise UserError(f"{STDIN}: standard input given twice; it can be read only once")
    excluded = [str(e.resolve()) for e in exclude]
    folders: dict[str, str] = {}  # resolved once each (``_real``)

    def is_excluded(p: Path) -> bool:
        r = _real(p, folders)
        return any(_under(r, e) for e in excluded)

    files: list[Path] = []
    for item in inputs:
        if stdin is not None and _is_stdin(item):
            files.append(stdin)
            continue
        if not os.fspath(item):
            raise UserError(missing_input(item) or "")
        p = Path(item)
        if p.is_dir():
            if not _not_prepared(p):
                raise UserError(f"{p}: a dataset written by unmask prepare (token ids), not "
                                "text; give the text it was prepared from")
            # its weights would be read as text (with errors='replace'); the folder itself only:
            # a run's checkpoint/ is named below, its hidden .checkpoint.old/ is skipped
            # a run folder (its train_config.json) whose only checkpoint is the hidden
            # .checkpoint.old/ of a save cut short is a model too
            if ((p / "config.json").is_file() and (p / "model.safetensors").is_file()) or (
                    (p / "train_config.json").is_file() and is_checkpoint(p)):
                raise UserError(f"{p}: a checkpoint folder (a model), not text; give the text "
                                "files to prepare")
            below = _walk(p)
            datasets = [d.parent for d in below
                        if d.name == "index.json" and not _not_prepared(d.parent)]
            kept = [q for q in below
                    if not is_excluded(q) and not any(d in q.parents for d in datasets)]
            dangling = [q for q in kept if q.is_symlink() and not q.exists()]
            annexed = next((q for q in dangling if _annexed(q)), None)
            if annexed is not None:  # content not fetched: a corpus of them read as empty
                raise _dangling(annexed)
            if dangling:  # a source tree's links to build outputs not built: not text anyway
                if skipped is not None:
                    more = f" and {len(dangling) - 1} more" if len(dangling) > 1 else ""
                    skipped.append(f"skipped {len(dangling)} symbolic link(s) to missing files "
                                   f"below {p} ({dangling[0]} -> {os.readlink(dangling[0])}"
                                   f"{more})")
                gone = set(dangling)
                kept = [q for q in kept if q not in gone]
            models = {q.parent for q in kept if q.name == "model.safetensors"
                      and is_checkpoint(q.parent)}
            model = min(models) if models else None
            if model is not None and not any(
                    q.is_file() and not models & set(q.parents) for q in kept):
                # nothing but the model (a run folder as `unmask train` writes it): the folder
                # is the model, as --model reads it
                raise UserError(f"{p}: a checkpoint folder (a model), not text; give the text "
                                "files to prepare")
            if model is not None:
                raise UserError(f"{model}: a checkpoint folder (a model) inside the input "
                                f"folder {p}, not text; move it out or give the text files")
            found = [q for q in kept if q.is_file()]
            files.extend(sorted(found, key=lambda q: q.relative_to(p).parts))
        elif p.is_file():
            files.append(p)
        elif p.is_fifo():  # `prepare <(zcat a.gz)`: a pipe is read once, prepare reads twice
            raise UserError(f"{p}: a pipe, not a file (it can be read only once); pipe it to "
                            f"standard input instead: ... | unmask prepare {STDIN} -o DIR")
        elif p.exists():
            raise UserError(f"{p}: not a regular file or directory")
        elif p.is_symlink():  # `ls` shows it: "no such file" puzzled
            raise _dangling(p)
        else:  # nothing there (a shell passes on a pattern that matched nothing as it is)
            raise UserError(missing_input(item) or f"{p}: not a regular file or directory")
    if not files:  # only folders, none with a file to read: "empty corpus" said not why
        names = ", ".join(str(i) for i in inputs[:3]) + (" ..." if len(inputs) > 3 else "")
        raise UserError(f"{names}: no files to read below {'it' if len(inputs) == 1 else 'them'}"
                        " (hidden files and folders, named .*, are skipped, and so are "
                        "datasets unmask prepare wrote)")
    seen: dict[str, Path] = {}
    inodes: dict[tuple[int, int], Path] = {}  # hard links: one file under two names
    for f in files:  # twice in the stream, its text could land in both train and validation
        first = seen.setdefault(_real(f, folders), f)
        if first is not f:
            also = f"once more as {f}" if str(f) != str(first) else "twice"
            why = (f"{f} is a link to it" if os.path.islink(f) else
                   f"it is a link to {f}" if os.path.islink(first) else
                   "a file and a folder holding it?")
            raise UserError(f"{first}: given {also} ({why}); name each file once")
        try:
            st = os.stat(f)
        except OSError:  # standard input's file, not saved yet; a vanished file: read later
            continue
        if st.st_nlink > 1 and st.st_ino:  # 0: a file system without inode numbers
            first = inodes.setdefault((st.st_dev, st.st_ino), f)
            if first is not f:
                raise UserError(f"{first}: given once more as {f} (a hard link to the same "
                                "file); name each file once")
    return files


_HEAD_BYTES = 4096  # what _Source reads ahead to tell text from other formats
_COMPRESSED = {".gz": "gzip", ".xz": "xz", ".bz2": "bzip2"}


def _named(p: Path, ext: str) -> bool:
    """Whether ``p``'s name ends in ``ext``, compressed (``.gz``, ``.xz``, ``.bz2``) or not."""
    name = p.name.lower()
    return any(name.endswith(ext + z) for z in ("", *_COMPRESSED))


def _is_jsonl(p: Path) -> bool:
    return _named(p, ".jsonl") or _named(p, ".ndjson")


_PEEK_BYTES = 1 << 20  # the longest first line of a .json file read to tell JSON Lines
_PEEK_MEMBERS = 10_000  # the most members looked at past _PEEK_BYTES (a long field's record)
_PEEK_STEPS = 1 << 20  # the most brackets _skip_nested steps through one by one
# a run of JSON text that leaves the depth of brackets as it was: strings (brackets in them
# too), numbers, ",", ":" ..., and arrays and objects nested at most two deep, whole
_ATOM = r'[^"\[\]{}]++|"(?:[^"\\]++|\\.)*+"'
_NEST = _ATOM + r"|[\[{](?:" + _ATOM + r"|[\[{](?:" + _ATOM + r")*+[\]}])*+[\]}]"
_FLAT = re.compile(f"(?:{_NEST})*+")


def _skip_nested(text: str, i: int) -> int:
    """Where the JSON array or object that starts at ``text[i]`` ends (just past it), or -1
    where ``text`` ends first, or -2 where it takes more than ``_PEEK_STEPS`` brackets
    deeper than ``_FLAT`` reads at once to tell. Its values are not built (``raw_decode`` of
    64 MB of token ids or records took 0.9-3.4 s and 500 MB only to drop them). Not a check
    of its syntax: the reader parses the line it is in."""
    depth = 0
    for _ in range(_PEEK_STEPS):
        c = text[i : i + 1]
        if c in ("", '"'):  # the end, or a string cut there
            return -1
        depth += 1 if c in "[{" else -1
        if not depth:
            return i + 1
        i = _FLAT.match(text, i + 1).end()
    return -2


def _first_json_line(src: _Source, text_field: str) -> Any:
    """The first non-blank line of ``src`` parsed as JSON, or None where it is not JSON (blank
    lines before it are skipped, as the JSONL reader skips them); read once per ``src``. A
    line longer than ``_PEEK_BYTES`` (a first record over 1 MB, once read as text) gives the
    names of the members of the object it starts that begin in its first ``_PEEK_BYTES``
    (``_object_head``; only ``text_field``'s value). Where those bytes end inside a value
    before ``text_field`` (a long field: ``{"html": "<2 MB>", "text":``, token ids
    ``{"input_ids": [...], "text":``, ``{"meta": {"html": ...}, "text":``, once read as text
    with a note saying the record had no such field), the look goes on in its first 8, then
    64 times ``_PEEK_BYTES`` (no more than the JSONL reader holds to parse that line), at the
    most ``_PEEK_MEMBERS`` members further. A long object of small members (a minified word
    count) is looked at in no more than that many members past its first ``_PEEK_BYTES``. A
    line that long is not given to ``json.loads`` (which builds every value before it fails
    at the cut)."""
    if text_field in src.first_line:
        return src.first_line[text_field]
    limit, obj, at = _PEEK_BYTES, None, 0
    while True:
        line = src.peek_nonblank(1, limit)[0]
        if len(line) < limit or line.endswith(b"\n"):  # whole: parsed (a cut line is not,
            try:  # which would build every value it holds first, to fail at its end)
                obj = json.loads(line.decode("utf-8").removeprefix("\ufeff"))
            except (ValueError, RecursionError):
                obj = None
            break
        # "ignore": a character cut in two at the end of the bytes read
        text = line.decode("utf-8", "ignore").removeprefix("\ufeff")
        obj, at = _object_head(text, text_field, obj, at)
        if (at < 0 or text_field in obj or _chat_record(obj)
                or limit >= 64 * _PEEK_BYTES):
            break
        limit *= 8
    src.first_line[text_field] = obj
    return obj


def _object_head(
    text: str, keep: str, members: dict[str, Any] | None = None, at: int = 0,
) -> tuple[dict[str, Any] | None, int]:
    """The members of the JSON object that ``text``, the start of a longer line, begins: those
    whose value ends in ``text``, with None for a value (``keep``'s value as it is: a record's
    text field); the one cut off with ``""`` where its value is a string (``"text": "...`` is
    a record's text field) and None where not. None where ``text`` does not start a JSON
    object. With them, where ``text`` ends inside a value, the place to go on from with a
    longer ``text`` (given back as ``at``, with the ``members`` read so far, and then at most
    ``_PEEK_MEMBERS`` members more), else -1 (also where the object ends with ``text``)."""
    space, decoder = json.decoder.WHITESPACE, json.JSONDecoder()
    most = len(members) + _PEEK_MEMBERS if members is not None else -1
    if members is None:
        at = space.match(text, 0).end()
        if text[at : at + 1] != "{":
            return None, -1
        members = {}
    i = at
    while len(members) != most:
        at = i  # the "{" or "," before the next member
        i = space.match(text, i + 1).end()
        if text[i : i + 1] != '"':
            return (members if i == len(text) else None), -1
        try:
            key, i = json.decoder.scanstring(text, i + 1)
        except ValueError:  # the key is cut off
            return members, -1
        i = space.match(text, i).end()
        if text[i : i + 1] != ":":
            return (members if i == len(text) else None), -1
        i = space.match(text, i + 1).end()
        value = None
        if key != keep and text[i : i + 1] in ("[", "{"):
            end = _skip_nested(text, i)
        else:
            try:
                value, end = decoder.raw_decode(text, i)
            except (ValueError, RecursionError):
                end = -1
        if end < 0:  # the value is cut off (or, -2, too deep to tell cheaply)
            members[key] = "" if text[i : i + 1] == '"' else None
            return members, at if end == -1 else -1
        members[key], i = (value if key == keep else None), end
        i = space.match(text, i).end()
        if text[i : i + 1] == "}" and not text[i + 1 :].strip():  # a line of ``limit`` bytes
            return members, -1
        if text[i : i + 1] != ",":
            return (members if i == len(text) else None), -1
    return members, -1


def _json_lines(src: _Source, text_field: str) -> bool:
    """Whether a ``.json`` file is JSON Lines (what ``datasets``' ``to_json`` writes): its first
    line is a JSON object whose ``text_field`` is a string, or chat or prompt/response records
    (``messages``, ``prompt`` + ``response``: refused as JSONL with a pointer to SFT), or it
    has the field (null, a number: refused with its line, as in a ``.jsonl``) and more lines
    follow. Any other ``.json`` (a one-line config file, a JSON array, one document
    pretty-printed over many lines) is text."""
    obj = _first_json_line(src, text_field)
    if not isinstance(obj, dict):
        return False
    if isinstance(obj.get(text_field), str) or _chat_record(obj):
        return True
    return text_field in obj and bool(src.peek_nonblank(2, _PEEK_BYTES)[1])


def _chat_record(obj: dict[str, Any]) -> bool:
    """Whether a JSON record is chat (``messages``) or prompt/response data."""
    return "messages" in obj or {"prompt", "response"} <= obj.keys()


def _json_record(obj: Any) -> bool:
    """Whether ``obj``, the first line of a file, is a record of JSON Lines: an object with a
    string member (its text, under ``--text-field``'s name or another) or chat data. Not
    ``["x"]`` or ``{"a": 1}`` (a line of code, a one-line config)."""
    return isinstance(obj, dict) and (
        _chat_record(obj) or any(isinstance(v, str) for v in obj.values()))


def _json_text_said(src: _Source, text_field: str) -> str:
    """The end of ``prepare``'s note on ``src``, JSON read as plain text (a ``.json`` file,
    standard input, another file whose first line is a record): what its first line is, and
    what to do. JSON Lines in a file not named as JSON (``data.txt``): name it ``.jsonl``, or
    fine-tune on its chat records; an object without the string ``text_field``: its fields
    and ``--text-field``; anything else (an array, a pretty-printed object): ``jq``."""
    obj = _first_json_line(src, text_field)
    by_name = src.stdin or _named(src.path, ".json")  # told JSON Lines by the first line
    if isinstance(obj, dict) and not by_name:
        if _chat_record(obj):
            return f"(its first line is a chat record); {_sft_advice(src)}"
        if isinstance(obj.get(text_field), str):
            return ("(its first line is a JSON record, as in JSON Lines); name the file .jsonl "
                    "to read one record a line")
    if isinstance(obj, dict):  # records without the field, or a config file
        keys = ", ".join(map(str, itertools.islice(obj, 8))) or "none"
        name = "the field of the text" if by_name else "the file .jsonl and the field of the text"
        return (f"(its first line is a JSON object without a string field {text_field!r}; "
                f"fields: {keys}); if it is JSON Lines, name {name} with --text-field "
                "(text_field= in Python)")
    fix = ("pipe a JSON array of records through jq -c '.[]' first" if src.stdin else
           "convert a JSON array of records with jq -c '.[]' in.json > out.jsonl")
    return (f"(the first line is not a JSON object with a field {text_field!r}, as in JSON "
            f"Lines); {fix}")


def _json_document(src: _Source) -> bool:
    """Whether ``src`` starts like a JSON object or an array of records or strings: ``{`` then
    ``"`` or ``}``, or ``[`` then ``{`` or ``"`` (blank lines and spaces around them, as
    pretty-printed; a byte-order mark). Told from the start of the first non-blank line (at
    most ``_HEAD_BYTES`` of it: a one-line array may be gigabytes long), and of the next one
    where that line is only the bracket (a pretty-printed object's first line is ``{``); a look
    at 4 KB of short lines cost a folder of text files 40% more CPU. Text that starts with a
    bracket (``[Verse 1]``, ``[[a wiki link]]``, ``{curly}``) is not one."""
    head = src.peek_nonblank(1, _HEAD_BYTES)[0].removeprefix(codecs.BOM_UTF8).lstrip()
    if head[:1] not in (b"{", b"["):
        return False
    after = head[1:].lstrip()[:1] or src.peek_nonblank(2, _HEAD_BYTES)[1].lstrip()[:1]
    return (head[:1] == b"{" and after in (b'"', b"}")) or (
        head[:1] == b"[" and after in (b"{", b'"'))


def _reads_as_jsonl(src: _Source, text_field: str) -> bool:
    """Whether ``prepare`` reads ``src`` as JSONL: by name (``.jsonl``, ``.ndjson``), or a
    ``.json`` file or standard input (which has no name) holding JSON Lines
    (``_json_lines``)."""
    return _is_jsonl(src.path) or (
        (src.stdin or _named(src.path, ".json")) and _json_lines(src, text_field))


def _compression(head: bytes) -> str | None:
    """``gzip``, ``xz`` or ``bzip2`` by the file's magic bytes (whatever its name), else None."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head[:3] == b"BZh" and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):  # block or end magic
        return "bzip2"
    return None


class _Source:
    """One input file opened for binary reading, with progress. gzip, xz and bzip2 files are
    decompressed (told by their first bytes, whatever their name); archives, UTF-16/32 and
    other binary data are refused in one line naming the file (``name``: the path, or
    ``<stdin>`` for standard input saved to the file ``path``, with ``stdin``)."""

    def __init__(
        self, path: Path, on_progress: Callable[[int], None], errors: str = "strict", *,
        stdin: bool = False,
    ) -> None:
        self.path = path
        self.stdin = stdin
        self.name = STDIN_NAME if stdin else str(path)
        self.first_line: dict[str, Any] = {}  # _first_json_line's, by text field
        try:
            self._raw: BinaryIO = open(path, "rb")  # closed in close()
            head = self._raw.read(_HEAD_BYTES)
            self._raw.seek(0)
        except OSError as e:
            raise UserError(f"{self.name}: cannot read ({e.strerror})") from None
        self._stream: Any = self._raw
        self.kind = _compression(head)
        named = next((k for z, k in _COMPRESSED.items() if path.name.lower().endswith(z)), None)
        try:
            if named and head and self.kind != named:
                raise UserError(f"{self.name}: not a valid {named} file (no {named} header)")
            if self.kind == "gzip":
                self._stream = gzip.GzipFile(fileobj=self._raw, mode="rb")
            elif self.kind == "xz":
                self._stream = lzma.LZMAFile(self._raw, mode="rb")
            elif self.kind == "bzip2":
                self._stream = bz2.BZ2File(self._raw, mode="rb")
            self._on_progress = on_progress
            self._pos = 0
            self._head = head
            if self.kind is None:
                self._raw.seek(len(head))
            else:  # the first decompressed bytes
                self._head = b""
                while len(self._head) < _HEAD_BYTES:
                    more = self._guard(lambda: self._stream.read(_HEAD_BYTES - len(self._head)))
                    if not more:
                        break
                    self._head += more
            problem = (_not_text(self._head, self.kind, errors)
                       or safetensors_file(self._head, self.kind) or lfs_pointer(self._head))
            if problem:
                raise UserError(f"{self.name}: {problem}")
        except BaseException:
            self.close()
            raise

    def _guard(self, read: Callable[[], bytes]) -> bytes:
        try:
            return read()
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:
            what = f"not a valid {self.kind} file" if self.kind else "cannot read"
            raise UserError(f"{self.name}: {what} ({e})") from None

    def readline(self, limit: int = -1) -> bytes:
        if self._head:  # bytes read ahead by __init__ come first
            n = len(self._head) if limit < 0 else min(limit, len(self._head))
            nl = self._head.find(b"\n", 0, n)
            n = nl + 1 if nl >= 0 else n
            line, self._head = self._head[:n], self._head[n:]
            if not self._head and not line.endswith(b"\n") and len(line) != limit:
                rest = -1 if limit < 0 else limit - len(line)
                line += self._guard(lambda: self._stream.readline(rest))
        else:
            line = self._guard(lambda: self._stream.readline(limit))
        pos = self._raw.tell()
        if pos != self._pos:
            self._on_progress(pos - self._pos)
            self._pos = pos
        return line

    def peek(self, n: int) -> bytes:
        """The first ``n`` bytes (fewer at the end), left to be read again."""
        chunks: list[bytes] = []
        while n > 0 and (line := self.readline(n)):
            chunks.append(line)
            n -= len(line)
        head = b"".join(chunks)
        self._head = head + self._head
        return head

    def peek_nonblank(self, n: int, limit: int) -> list[bytes]:
        """The first ``n`` lines that are not blank (b"" past the end, or where they start
        more than ``limit`` bytes in; each at most ``limit`` bytes, the first without its
        byte-order mark), left to be read again."""
        lines: list[bytes] = []
        found: list[bytes] = []
        read = 0
        while len(found) < n and read <= limit and (line := self.readline(limit)):
            lines.append(line)
            read += len(line)
            if (line.removeprefix(codecs.BOM_UTF8) if len(lines) == 1 else line).strip():
                found.append(line)
        self._head = b"".join(lines) + self._head
        return found + [b""] * (n - len(found))

    def peek_line(self, limit: int) -> bytes:
        """The first line (at most ``limit`` bytes), left to be read again."""
        line = self.readline(limit)
        self._head = line + self._head
        return line

    def close(self) -> None:
        if self._stream is not self._raw:
            self._stream.close()
        self._raw.close()


REPLACE_HINT = "pass --errors replace (errors='replace') to replace undecodable bytes"
"""How ``prepare`` (which has ``--errors``) gets past undecodable bytes."""


def _decode_error(
    path: str | Path, lineno: int, e: UnicodeDecodeError, fix: str = REPLACE_HINT,
    offset: int | None = None,
) -> UserError:
    """``file:line: invalid UTF-8 (byte 0xNN)``; with ``offset`` (the bad byte's place in the
    file, given when it is far into a long line, where the line number says little) also
    ``at byte offset N``."""
    bad = e.object[e.start : e.start + 1].hex() if isinstance(e.object, bytes) else "?"
    at = f" at byte offset {offset}" if offset is not None else ""
    return UserError(f"{path}:{lineno}: invalid UTF-8 (byte 0x{bad}{at}); {fix}")


class _Lines:
    """Line number and byte offset of an incrementally decoded file, for ``_decode_error``."""

    FAR = 4096  # bytes into a line beyond which an error also gives its byte offset

    def __init__(self) -> None:
        self.lineno = 1
        self.offset = 0  # bytes read so far
        self.line_start = 0

    def read(self, raw: bytes) -> None:
        self.offset += len(raw)

    def ended(self, raw: bytes) -> None:
        if raw.endswith(b"\n"):
            self.lineno += 1
            self.line_start = self.offset

    def error(self, path: str | Path, e: UnicodeDecodeError) -> UserError:
        # the decoder's input is the bytes it held back plus the last read: it ends at offset
        at = self.offset - len(e.object) + e.start if isinstance(e.object, bytes) else 0
        return _decode_error(path, self.lineno, e, offset=at if at - self.line_start >= self.FAR
                             else None)


_SPACE = r"[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_WHITESPACE = re.compile(_SPACE)
_WORD_END = re.compile(rf"\S(?={_SPACE})")
"""A character before whitespace as the tokenizers' regex (Unicode ``White_Space``) sees it;
Python's ``\\s`` also takes the separators U+001C-U+001F, which that regex leaves in words."""


def _reach(size: int) -> int:
    """How far past ``size`` characters ``_cut`` looks for whitespace before it cuts hard: up
    to the pieces of tokenizers that do not ``_cuts_exactly`` (``_CHUNK_CHARS_OTHER``)."""
    return max(size, _CHUNK_CHARS_OTHER)


def _cut(text: str, size: int, start: int = 0) -> int:
    """Where to cut ``text[start:]`` (longer than ``size``), as an index into ``text``: the
    last place before ``start + size`` where a whitespace run begins, preferably a space:
    GPT-2-style pre-tokenization (byte-level BPE) ends a piece there anyway and treats a run at
    the start of a string as it does mid-text, so the pieces encode to the tokens of the whole
    text (a cut after a newline in a run of blank lines, or inside a run of spaces, gave
    different ones). A piece starting with a space also keeps SentencePiece-style tokenizers
    from adding a word start of their own. Where no run begins there (CJK paragraphs, minified
    code, base64, or a window that is all one run of whitespace), the first place up to
    ``start + _reach(size)`` where one does; without any, a hard cut there, the one place where
    the tokens may differ from those of the whole text. Reads only
    ``text[start:start + _reach(size)]``, and copies none of it."""
    end = start + size
    c = text.rfind(" ", start + 1, end)
    while c > start and text[c - 1].isspace():  # inside a run of whitespace: look further back
        c = text.rfind(" ", start + 1, c)
    if c > start:
        return c
    ends = [m.end() for m in _WORD_END.finditer(text, start, end)]
    if ends:
        return ends[-1]
    reach = start + _reach(size)
    ahead = _WORD_END.search(text, end - 1, reach)  # (not inside a run the window ends in)
    return ahead.end() if ahead else min(reach, len(text))


def _cuts_exactly(tok: Tokenizer) -> bool:
    """Whether cutting text where whitespace begins (``_cut``) leaves its tokens as they are:
    byte-level BPE with GPT-2's pre-tokenization regex, no prefix space and no normalizer
    (ours, GPT-2's, RoBERTa's), or a byte-level vocabulary without merges (``byte``), and no
    added tokens (matched before pre-tokenization) that hold whitespace or take it in from
    beside them (``lstrip``/``rstrip``/``single_word``)."""
    hf = tok.hf
    if hf.normalizer is not None or hf.pre_tokenizer is None:
        return False
    for added in hf.get_added_tokens_decoder().values():
        # matched before pre-tokenization: a cut may split one that holds whitespace, or the
        # whitespace it takes in (lstrip/rstrip) from the token beside it
        if not added.special and (added.lstrip or added.rstrip or added.single_word
                                  or _WHITESPACE.search(added.content) or added.content.isspace()):
            return False
    pre = json.loads(hf.pre_tokenizer.__getstate__())
    if pre.get("type") != "ByteLevel" or pre.get("add_prefix_space"):
        return False
    return bool(pre.get("use_regex", True)) or json.loads(hf.model.__getstate__()).get(
        "merges") == []


def _split_text(text: str, size: int | None = None) -> Iterator[str]:
    """``text`` in pieces of at most ``size`` (default ``_CHUNK_CHARS``) characters, cut where
    whitespace begins (``_cut``; longer only where ``size`` characters hold none). Each
    character is copied once: into its piece."""
    size = _CHUNK_CHARS if size is None else size
    start = 0
    while len(text) - start > size:
        c = _cut(text, size, start)
        if c == len(text):  # no whitespace to its end, within reach: one piece
            break
        yield text[start:c]
        start = c
    yield text[start:] if start else text


def _cut_held(text: str, size: int) -> tuple[list[str], str]:
    """The pieces ``_split_text`` gives of ``text`` that do not depend on what follows it
    (those that start more than ``_reach(size)`` characters before its end), and the rest."""
    pieces = []
    start = 0
    while len(text) - start > _reach(size):
        c = _cut(text, size, start)
        pieces.append(text[start:c])
        start = c
    return pieces, text[start:] if start else text


def _plain_pieces(src: _Source, errors: str, chunk: int) -> Iterator[tuple[str, bool]]:
    """One document (the whole file) in the pieces ``_split_text`` cuts it into (about
    ``chunk`` characters), holding at most ``_reach(chunk)`` characters and a read; nothing
    for a file that is empty or only whitespace (held back until a character that is not)."""
    dec = codecs.getincrementaldecoder("utf-8")(errors)
    where = _Lines()
    buf: list[str] = []
    n = 0
    first = True
    seen = False  # a character that is not whitespace
    while True:
        line = src.readline(_READ_BYTES)
        final = not line
        where.read(line)
        try:
            text = dec.decode(line, final=final)
        except UnicodeDecodeError as e:
            raise where.error(src.name, e) from None
        if first and text:
            text = text.removeprefix("\ufeff")  # a BOM is an encoding mark, not text
            first = False
        where.ended(line)
        if text:
            buf.append(text)
            n += len(text)
            seen = seen or not text.isspace()
        if n > _reach(chunk) and not final and seen:
            done, pending = _cut_held("".join(buf), chunk)
            for p in done:
                yield p, False
            buf, n = [pending], len(pending)
        if final:
            break
    rest = "".join(buf)
    if seen:  # (rest or pieces already yielded)
        pieces = list(_split_text(rest, chunk))
        for i, p in enumerate(pieces):
            yield p, i == len(pieces) - 1


def _line_pieces(src: _Source, errors: str, chunk: int) -> Iterator[tuple[str, bool]]:
    """Each non-blank line one document, its line end (``\\n``, ``\\r\\n`` or a lone ``\\r``,
    old Mac style) left out; a line longer than ``chunk`` characters comes in the pieces
    ``_split_text`` cuts it into."""
    dec = codecs.getincrementaldecoder("utf-8")(errors)
    where = _Lines()
    pending = ""  # the current line, not yet yielded (no line end in it)
    held = ""  # a \r read last, perhaps the first half of a \r\n
    first = True
    emitted = False  # pieces of the current line already yielded
    seen = False  # a character of the current line that is not whitespace (so it is one)
    checked = 0  # characters of ``pending`` known to be whitespace, while not ``seen``

    def line_end(line: str) -> Iterator[tuple[str, bool]]:
        if emitted or line.strip():
            pieces = list(_split_text(line, chunk))
            for i, p in enumerate(pieces):
                yield p, i == len(pieces) - 1

    while True:
        raw = src.readline(_READ_BYTES)
        final = not raw
        where.read(raw)
        try:
            text = dec.decode(raw, final=final)
        except UnicodeDecodeError as e:
            raise where.error(src.name, e) from None
        where.ended(raw)
        if first and text:
            text = text.removeprefix("\ufeff")
            first = False
        # only the new text is searched for line ends (``pending`` holds none): searching all
        # of a line held whole (only whitespace so far) was quadratic in its length (8 MB of
        # spaces, then a word: 8.6 s in the split alone)
        text, held = held + text, ""
        if not final and text.endswith("\r"):  # perhaps the first half of a \r\n
            text, held = text[:-1], "\r"
        head, *lines = LINE_END.split(text)
        pending += head
        if lines:
            *ended, last = lines
            for line in (pending, *ended):
                yield from line_end(line)
                emitted, seen, checked = False, False, 0
            pending = last
        if final:
            yield from line_end(pending)
            return
        if not seen:  # a line of only whitespace is held whole, to be no document
            new = pending[checked:]
            seen, checked = bool(new) and not new.isspace(), len(pending)
        if seen and len(pending) > _reach(chunk):
            done, pending = _cut_held(pending, chunk)
            for p in done:
                yield p, False
            emitted = emitted or bool(done)


def _jsonl_objects(
    src: _Source, errors: str, fix: str = REPLACE_HINT
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``file:line``, object) for every non-blank line of a JSONL source; one-line errors
    naming file and line for undecodable bytes (``fix`` says what to do), invalid JSON and
    non-object lines."""
    lineno = 0
    first = True  # the first line that is not blank
    while True:
        # an array is told from its first bytes: a one-line array was read and parsed whole
        # before it was refused (126 MB of records: 1.2 GB resident; a few GB: out of memory)
        head = src.peek_line(_HEAD_BYTES) if first else b""
        if head.removeprefix(codecs.BOM_UTF8 if lineno == 0 else b"").lstrip().startswith(b"["):
            raise _array_error(src.path, src.kind)
        raw = src.readline()
        if not raw:
            return
        lineno += 1
        where = f"{src.name}:{lineno}"
        try:
            line = raw.decode("utf-8", errors)
        except UnicodeDecodeError as e:
            raise _decode_error(src.name, lineno, e, fix) from None
        if lineno == 1:
            line = line.removeprefix("\ufeff")  # json.loads rejects a BOM
        if not line.strip():
            continue
        array = first and line.lstrip().startswith("[")  # past the bytes ``head`` saw
        opened = first and line.strip() == "{"  # an object pretty-printed over many lines
        first = False
        try:  # a line cut short: its end's column, not column 1 of the next line
            obj = parse_json(line.rstrip("\r\n"), src.name, line=lineno)
        except BadJSON:
            if array:  # "[" alone on line 1: a pretty-printed array (Alpaca's data files)
                raise _array_error(src.path, src.kind) from None
            # not "line 1: not valid JSON (Expecting property name ...)"; a lone "{" (a file
            # cut short) is not converted by jq: its JSON error
            if opened and src.peek_nonblank(1, _HEAD_BYTES)[0].lstrip()[:1] in (b'"', b"}"):
                raise _array_error(src.path, src.kind, pretty=True) from None
            if _ends_at_lone_cr(line):  # "{...}\r{...}\r": one line to readline
                raise _array_error(src.path, src.kind, cr=True) from None
            raise
        if not isinstance(obj, dict):
            if array and isinstance(obj, list):
                raise _array_error(src.path, src.kind)
            raise UserError(f"{where}: expected a JSON object, got {_json_kind(obj)}")
        yield where, obj


def _ends_at_lone_cr(line: str) -> bool:
    """Whether ``line`` (that failed to parse) is a JSON value ended by a lone ``\\r`` and
    more after it: JSON Lines with old Mac line ends, the whole file one line to a reader of
    lines. Only then: a raw CR inside a string (``{"t": "x }\\r{ y"}``) is its own error, with
    its line, where ``tr`` would split the record."""
    text = line.lstrip(" \t\r\n")
    try:
        end = json.JSONDecoder().raw_decode(text)[1]
    except (ValueError, RecursionError):  # not even the first record is whole
        return False
    rest = text[end:].lstrip(" \t")
    return rest.startswith("\r") and bool(rest.strip())


def _array_error(path: Path, kind: str | None = None, *, pretty: bool = False,
                 cr: bool = False) -> UserError:
    """The refusal of a JSON array of records where JSON Lines (one object a line) go, with the
    jq command that converts it, writing next to it (jq reads no compressed file: one is
    decompressed into it); with ``pretty``, of JSON objects written over many lines (``jq -c
    .`` puts each on one); with ``cr``, of records ended by a lone ``\\r`` (old Mac line ends:
    the whole file one line), with the ``tr`` command."""
    base = path.name.split(".")[0]
    name = f"{base}.jsonl" if f"{base}.jsonl" != path.name else f"{base}-lines.jsonl"
    target = shlex.quote(str(path.with_name(name)))
    source = shlex.quote(str(path))
    unpack = {"gzip": "gzip -dc", "xz": "xz -dc", "bzip2": "bzip2 -dc"}.get(kind or "")
    tool = "tr '\\r' '\\n'" if cr else "jq -c ." if pretty else "jq -c '.[]'"
    command = (f"{unpack} {source} | {tool} > {target}" if unpack else
               f"{tool} < {source} > {target}" if cr else f"{tool} {source} > {target}")
    what = ("records ended by a lone \\r (old Mac line ends)" if cr else
            "JSON written over many lines" if pretty else "a JSON array")
    return UserError(f"{path}: {what}, not JSON Lines (one JSON object a line); convert "
                     f"it with {command}")


def read_jsonl(
    path: str | os.PathLike[str], *, errors: str = "strict"
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``file:line``, object) for every non-blank line of a JSONL file (``.gz`` too)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: {'a folder, not a JSONL file' if p.is_dir() else 'no such file'}")
    src = _Source(p, lambda n: None)
    try:  # its readers (SFT data, task files) have no --errors flag
        yield from _jsonl_objects(src, errors, "save the file as UTF-8")
    finally:
        src.close()


def _json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words (``null``, not Python's ``NoneType``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _sft_advice(src: _Source) -> str:
    """What to do with chat or prompt/response records, which ``prepare`` does not read."""
    what, data = ("it saved to a file", "FILE") if src.stdin else ("the file itself", src.path)
    return ("chat or prompt/response data is not prepared: fine-tune a model on "
            f"{what} (unmask train --objective sft --init RUN --data {data}; docs/training.md)")


def _jsonl_pieces(
    src: _Source, text_field: str, errors: str, chunk: int
) -> Iterator[tuple[str, bool]]:
    """One document per JSON line (``obj[text_field]``) in pieces; blank lines are skipped."""
    sft = _sft_advice(src)
    for where, obj in _jsonl_objects(src, errors):
        if text_field not in obj:
            keys = ", ".join(map(str, list(obj)[:8])) or "none"
            fix = sft if _chat_record(obj) else "choose one with --text-field"
            raise UserError(f"{where}: no field {text_field!r} (fields: {keys}); {fix}")
        text = obj[text_field]
        if not isinstance(text, str):  # --text-field messages: chat, pointed at SFT too
            fix = f"; {sft}" if _chat_record(obj) else ""
            raise UserError(f"{where}: field {text_field!r} is {_json_kind(text)}, not a "
                            f"string{fix}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates from \ud800-style escapes
            if errors == "strict":
                raise UserError(
                    f"{where}: field {text_field!r} holds unpaired surrogates (not valid UTF-8); "
                    "pass --errors replace (errors='replace') to replace them"
                ) from None
            text = text.encode("utf-8", "replace").decode("utf-8")
        if not text or text.isspace():  # no document, as a blank line of --line-docs
            continue
        pieces = list(_split_text(text, chunk))
        for i, p in enumerate(pieces):
            yield p, i == len(pieces) - 1


def _iter_pieces(
    files: Sequence[Path],
    *,
    text_field: str,
    errors: str,
    on_progress: Callable[[int], None],
    line_docs: bool = False,
    chunk: int | None = None,
    stdin: Path | None = None,
    jsonl: Sequence[bool],
) -> Iterator[tuple[str, bool]]:
    """``(piece, end_of_document)`` over all files; pieces are about ``chunk`` characters
    (default ``_CHUNK_CHARS``; ``_split_text``). ``stdin``: the file that holds standard
    input (named ``<stdin>``). ``jsonl``: which files are JSONL, by place, as told
    already (``_reads_as_jsonl``)."""
    chunk = _CHUNK_CHARS if chunk is None else chunk
    for i, path in enumerate(files):
        src = _Source(path, on_progress, errors, stdin=path == stdin)
        try:
            if jsonl[i]:
                yield from _jsonl_pieces(src, text_field, errors, chunk)
            elif line_docs:
                yield from _line_pieces(src, errors, chunk)
            else:
                yield from _plain_pieces(src, errors, chunk)
        finally:
            src.close()


# ----------------------------------------------------------------------------- writing


class _ShardWriter:
    """Appends tokens of one split to ``{split}-NNNNN.bin`` files of ``shard_tokens`` each."""

    def __init__(
        self, directory: Path, split: str, dtype: np.dtype, shard_tokens: int, byte_len: np.ndarray
    ) -> None:
        self.directory = directory
        self.split = split
        self.dtype = dtype
        self.shard_tokens = shard_tokens
        self.byte_len = byte_len
        self.shards: list[str] = []
        self.n_tokens = 0
        self.n_bytes = 0
        self._f: BinaryIO | None = None
        self._in_shard = 0

    def write(self, tokens: np.ndarray) -> None:
        self.n_tokens += len(tokens)
        self.n_bytes += int(self.byte_len[tokens].sum())
        data = tokens.astype(self.dtype)
        pos = 0
        while pos < len(data):
            if self._f is None or self._in_shard >= self.shard_tokens:
                self._open_next()
            assert self._f is not None
            take = min(self.shard_tokens - self._in_shard, len(data) - pos)
            self._f.write(data[pos : pos + take].tobytes())
            self._in_shard += take
            pos += take

    def _open_next(self) -> None:
        self.close()
        name = f"{self.split}-{len(self.shards):05d}.bin"
        self.shards.append(name)
        self._f = open(self.directory / name, "wb", buffering=1 << 20)
        self._in_shard = 0

    def close(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            try:
                f.flush()
                os.fsync(f.fileno())  # on disk before the folder is renamed into place
            finally:  # closed even when the flush fails (a full disk)
                f.close()


def _write_index(directory: Path, index: dict[str, Any]) -> None:
    """``directory/index.json``, on disk (fsync) before the folder is renamed into place."""
    with open(directory / "index.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(index, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(directory: Path) -> None:
    """fsync a folder's entries (the names of new files, a rename), where the system can."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows opens no folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _block_rank(seed: int, i: int) -> int:
    """Where block ``i`` stands in the validation draw: blake2b of ``i`` keyed with the seed
    (stable across platforms and versions, unlike a library RNG's stream)."""
    key = f"unmask-split:{seed}".encode()
    h = hashlib.blake2b(i.to_bytes(8, "little"), key=key, digest_size=8).digest()
    return int.from_bytes(h, "big")


def _val_block_count(
    n_tokens: int, n_blocks: int, *, val_fraction: float, min_val_tokens: int
) -> tuple[int, str]:
    """How many blocks go to validation, and a note when that is not what was asked: the
    corpus is too small for the minimum (validation then gets only its fraction, at least
    one block) or for a fraction over one half. Validation never gets more than half the
    corpus; its blocks are whole ``SPLIT_BLOCK``s (``_split_stream`` keeps the oversized
    tail block in training), so it gets exactly the count times ``SPLIT_BLOCK`` tokens."""
    if val_fraction <= 0:
        return 0, ""
    if n_blocks < 2:
        raise UserError(
            f"corpus too small to split: {n_tokens} tokens, fewer than 2 blocks of "
            f"{SPLIT_BLOCK}; add text or pass --val-fraction 0 (val_fraction=0 in Python)"
        )
    by_fraction = max(1, math.ceil(val_fraction * n_tokens / SPLIT_BLOCK))
    by_minimum = math.ceil(min_val_tokens / SPLIT_BLOCK)
    half = n_tokens // (2 * SPLIT_BLOCK)  # the most blocks that leave training no smaller
    why = ""
    k = max(by_fraction, by_minimum)
    if by_minimum > by_fraction and by_minimum > half:  # train would be the smaller part
        k, why = by_fraction, (
            f"below the minimum of {min_val_tokens:,}: the corpus ({n_tokens:,} tokens) is "
            "too small for both; add text for stable validation numbers"
        )
    if k > half:  # rounding up to blocks, or a fraction over one half
        k = half
        if val_fraction > 0.5:
            why = f"not its fraction ({val_fraction:g}): validation is never larger than training"
    if not why:
        return k, ""
    val = k * SPLIT_BLOCK
    return k, f"validation gets {val:,} tokens ({100 * val / n_tokens:.1f}%), {why}"


def _split_stream(
    stream: BinaryIO, n_tokens: int, dtype: np.dtype, writers: dict[str, _ShardWriter], *,
    seed: int, n_val: int,
) -> None:
    """Copy the token stream (``n_tokens`` of ``dtype`` in the file ``stream``) block by block
    to the split each block belongs to, in order. The ``n_val`` blocks whose ``_block_rank``
    is smallest go to validation, drawn from the whole blocks only: a trailing partial block
    joins the last block, which then holds more than ``SPLIT_BLOCK`` tokens and always goes to
    training. Read a block at a time, not memory-mapped: a map's pages stayed in the process's
    resident memory once read, the whole stream by the end (twice the corpus with ``byte``)."""
    n_blocks = max(1, n_tokens // SPLIT_BLOCK)
    drawn = n_blocks - (n_tokens > n_blocks * SPLIT_BLOCK)  # leave an oversized tail out
    # the n_val smallest without sorting all: memory for n_val ranks, not for every block
    # (2.5M blocks, a 40 GB corpus: +250 MB resident to sort them)
    val_blocks = set(heapq.nsmallest(n_val, range(drawn), key=lambda i: _block_rank(seed, i)))
    for i in range(n_blocks):
        hi = n_tokens if i == n_blocks - 1 else (i + 1) * SPLIT_BLOCK  # last takes the tail
        n = hi - i * SPLIT_BLOCK
        block = np.frombuffer(stream.read(n * dtype.itemsize), dtype=dtype)
        if len(block) != n:
            raise OSError(f"{stream.name}: the token stream ended early")
        writers["val" if i in val_blocks else "train"].write(block)
    assert writers["val"].n_tokens <= writers["train"].n_tokens, "validation outgrew training"


# ----------------------------------------------------------------------------- prepare


def _real_out(out: Path) -> Path:
    """``out``, or the folder it links to when it is a symbolic link (a dataset folder linked
    to a bigger disk): the dataset is built beside that folder and renamed into it, so the
    link keeps pointing at the new dataset."""
    if not out.is_symlink():
        return out
    try:
        target = out.resolve()
    except (OSError, RuntimeError):  # a loop (RuntimeError before Python 3.13): a traceback
        raise UserError(f"{out}: a symbolic link in a loop; give a folder, or a link to one"
                        ) from None
    if not target.is_dir():
        what = "a missing path" if not target.exists() else "something that is not a folder"
        raise UserError(f"{out}: a symbolic link to {what} ({target}); "
                        "give a folder, or a link to one")
    return target


_MOUNTS = "/proc/self/mountinfo"  # Linux: the mount points this process sees


def _mount_point(path: Path) -> bool:
    """Whether ``path`` (resolved) is a mount point, which no folder can be renamed onto.
    ``os.path.ismount`` (a device of its own) says so of a btrfs subvolume too, an ordinary
    folder to the rename (an empty one is removed and replaced): on Linux the mount table
    decides; elsewhere, or with no ``/proc``, ``ismount`` does."""
    if not os.path.ismount(path):
        return False
    try:
        with open(_MOUNTS, "rb") as f:
            table = f.read()
    except OSError:
        return True
    target = os.fsencode(path)
    # field 5 is the mount point, with space, tab, newline and backslash written \ooo
    return any(
        re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4]) == target
        for fields in (line.split(b" ") for line in table.splitlines()) if len(fields) > 4
    )


def _own_folder(out: Path) -> Path:
    """``out`` resolved; a ``UserError`` when it or the nearest folder above it that is there
    is not a folder (``not_a_folder``: a file, a link to nowhere or into a loop, which
    ``resolve`` failed on with a traceback), it has no name of its own (``.``, ``..``, ``/``),
    is the current folder (it would be replaced under the shell that is in it) or a mount point
    (no folder can be renamed onto it)."""
    blocked = not_a_folder(out)
    if blocked == out:
        raise UserError(f"{out}: exists and is not a directory")
    if blocked is not None:  # the dataset is built beside out, in that folder
        what = "a file, not a folder" if blocked.is_file() else "not a folder"
        raise UserError(f"{out}: {blocked} is {what}")
    whole = out.resolve()
    if out.name in ("", "..") or whole == Path.cwd().resolve() or whole.parent == whole:
        raise UserError(f"{out}: give the dataset a folder of its own (e.g. {out / 'data'}); "
                        f"it is built beside that folder and renamed into it")
    if _mount_point(whole):  # an empty disk: the rename failed (EBUSY) after all the work
        raise UserError(f"{out}: a mount point (a disk of its own), which the dataset cannot "
                        f"be renamed into; give a folder inside it (e.g. {out / 'data'})")
    return whole


def _check_out(out: Path, overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    """Refuse, before any work, an ``out`` the dataset cannot be renamed into: one with no
    name of its own (``.``, ``..``, ``/``) or the current folder (it would be replaced under
    the shell that is in it), a folder holding one of the ``inputs`` (replacing it would
    delete them), a file, or a folder that holds something else."""
    whole = _own_folder(out)
    folders: dict[str, str] = {}
    for f in inputs:
        if _under(os.path.dirname(_real(f, folders)), str(whole)):
            raise UserError(f"{f}: an input inside the output folder {out}, which prepare "
                            "replaces; move it out or give another -o")
    if not out.exists() or not any(out.iterdir()):  # a folder (_own_folder), empty or not
        return
    if not overwrite:
        raise UserError(f"{out} already exists and is not empty; pass --overwrite to replace it")
    why = _not_prepared(out)
    if why:
        raise UserError(
            f"{out} is not empty and is not a prepared dataset ({why}); refusing to overwrite it"
        )


_SHARD_NAME = re.compile(r"^(train|val)-\d{5,}\.bin$")


def _not_prepared(folder: Path) -> str:
    """Why ``folder`` is not a dataset ``prepare`` wrote (so ``--overwrite`` must not delete
    it), or ``""`` when it is: its ``index.json`` parses and has the keys ``prepare`` writes,
    and the folder holds nothing but that, ``tokenizer.json`` and token shards."""
    try:
        index = parse_json((folder / "index.json").read_text(encoding="utf-8"), folder)
    except FileNotFoundError:
        return "no index.json"
    except (OSError, ValueError, UserError):  # not UTF-8; not JSON (nested too deep too)
        return "its index.json is not one unmask wrote"
    if not (
        isinstance(index, dict)
        and str(index.get("created_by", "")).startswith("unmask")
        and isinstance(index.get("splits"), dict)
        and all(k in index for k in ("version", "dtype", "vocab_size", "special_ids"))
    ):
        return "its index.json is not one unmask wrote"
    for entry in sorted(folder.iterdir()):
        ours = entry.name in ("index.json", "tokenizer.json") or _SHARD_NAME.match(entry.name)
        if not ours or entry.is_symlink() or not entry.is_file():
            return f"it also holds {entry.name}{'/' if entry.is_dir() else ''}"
    return ""


def _missing_parents(out: Path) -> list[Path]:
    """The folders above ``out`` that do not exist yet, deepest first: what a failed prepare
    removes again (``_remove_folders``) rather than leave empty folders behind."""
    return [p for p in out.absolute().parents if not p.exists()]


def _remove_folders(made: list[Path]) -> None:
    """Remove the folders of ``made`` (deepest first) while they are empty."""
    for p in made:
        try:
            p.rmdir()
        except OSError:
            return


def _staging(out: Path, tmp: Path | None = None) -> Path:
    """A new hidden folder beside ``out`` to build the dataset in (``tmp``, a name
    ``_staging_name`` gave, or a fresh one), named (as ``unmask convert``
    names its own) by the machine, PID namespace and process that writes it, so that a later
    prepare can tell a killed one's leftovers (``_clear_stale_staging``). ``mkdir``, not
    ``mkdtemp`` (0700), so the dataset gets the usual umask permissions."""
    tmp = _staging_name(out) if tmp is None else tmp
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    return tmp


def _staging_name(out: Path) -> Path:
    """A fresh name for a staging folder beside ``out`` (``_staging``), not yet created."""
    from unmask.files import staging_prefix

    return out.with_name(f"{staging_prefix(out)}{secrets.token_hex(4)}")


_STAGED_FILE = re.compile(
    r"^(?:(?:train|val)-\d{5,}\.bin|\.stream\.bin|\.stdin|tokenizer\.json|index\.json"
    r"|\.tokenizer\.json\.[a-z0-9_]+\.tmp)$"  # Tokenizer.save's temp file (mkstemp's name)
)
"""The files a staging folder of ``prepare`` / ``prepare_slice`` can hold."""


def _clear_stale_staging(out: Path) -> list[str]:
    """Remove the staging folders of prepares into ``out`` that were killed (SIGKILL, the
    out-of-memory killer: nothing ran their cleanup), returning a note for each. Only a
    folder named as ``_staging`` names them, by a process of this machine and PID namespace
    that is gone, and holding nothing but files prepare writes, is removed: a live prepare's,
    another machine's or container's (whose process ids are not ours to ask about), and
    anything else are left alone."""
    from unmask.files import stale_staging

    notes: list[str] = []
    for tmp in stale_staging(out):
        try:
            ours = all(_STAGED_FILE.match(e.name) and e.is_file() and not e.is_symlink()
                       for e in tmp.iterdir())
        except OSError:
            continue
        if ours:
            shutil.rmtree(tmp, ignore_errors=True)
            notes.append(f"removed {tmp}, left by a prepare that was killed")
    return notes


def _exchange(a: Path, b: Path) -> bool:
    """Swap the folders ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``), so
    that each name holds one whole folder at every instant; False where the system or file
    system cannot (then nothing was changed)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    # nonzero (EINVAL, ENOSYS, EPERM): a file system or kernel without the flag
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _install(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished temp directory to ``out``, replacing an old dataset if allowed; its
    files were fsynced as written, so after a crash (power loss) the renamed folder never
    holds empty or cut-off files, and the rename itself is fsynced too. The
    old dataset is swapped out in one step where the system allows (``_exchange``: ``out``
    holds the old dataset or the new one at every instant, so a kill leaves one of them and
    the old one, then under ``tmp``'s name, is removed as a dead prepare's leftover by the
    next one); elsewhere by two renames, the old one put back when the second fails or is
    interrupted (Ctrl-C). There the old dataset is set aside under a staging folder's name
    too, so a kill between the renames or while it is deleted leaves nothing that the next
    prepare does not remove (``_clear_stale_staging``; a kill between the renames leaves
    ``out`` missing until then, the old dataset being replaced)."""
    _check_out(out, overwrite)
    _sync_dir(tmp)  # its files (fsynced as written) under their names, before the rename
    if out.exists() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(tmp, out)
        _sync_dir(out.parent)
        return
    if _exchange(tmp, out):
        _sync_dir(out.parent)
        shutil.rmtree(tmp, ignore_errors=True)  # the old dataset now
        return
    old = _staging_name(out)
    try:
        os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise
    _sync_dir(out.parent)
    try:
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:  # Ctrl-C while deleting it: finish (as prepare does ``tmp``'s)
        shutil.rmtree(old, ignore_errors=True)
        raise


def _save_stdin(path: Path) -> None:
    """Standard input, as its bytes (compressed or not), saved to ``path``: ``prepare`` reads
    its inputs more than once (the BPE tokenizer is trained on a first pass)."""
    from unmask.files import user_stdin

    # said once the run is taken, not before
    stream = user_stdin("unmask prepare: reading the corpus")
    raw = getattr(stream, "buffer", None)  # a text stream with none: a test, an embedding program
    with open(path, "xb") as f:
        if raw is not None:
            shutil.copyfileobj(raw, f, 1 << 20)
        else:
            while text := stream.read(1 << 20):
                f.write(text.encode("utf-8", "surrogateescape"))


def _progress(desc: str, total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
        disable=None if enabled else True, leave=False,  # None: no bar when not a terminal
    )  # fmt: skip


def _make_tokenizer(
    spec: str, vocab_size: int, pieces: Callable[[str], Iterator[tuple[str, bool]]] | None
) -> Tokenizer:
    """The tokenizer ``spec`` names: ``byte``, ``bpe`` (trained on ``pieces``, which only it
    reads) or a path."""
    if spec == "byte":
        return byte_tokenizer()
    if spec == "bpe":
        assert pieces is not None, "BPE is trained on the corpus"
        n_docs = 0
        texts: Iterator[str]

        def count(it: Iterator[tuple[str, bool]]) -> Iterator[str]:
            nonlocal n_docs
            for piece, end in it:
                n_docs += end
                if piece:
                    yield piece

        texts = count(pieces("training tokenizer"))
        tok = train_bpe(texts, vocab_size)
        if n_docs == 0:
            raise UserError("the inputs hold no text (empty corpus)")
        return tok
    p = Path(spec)
    if not p.exists():
        raise UserError(f"--tokenizer {spec}: no such file or folder; give bpe, byte, or the "
                        "path of a tokenizer.json or of a folder holding one (names of models "
                        "on the Hugging Face Hub are not downloaded)")
    from unmask.convert.load import is_publisher_folder, publisher_tokenizer

    if is_publisher_folder(p):  # its config.json names the special tokens; Dream has no
        return publisher_tokenizer(p)  # tokenizer.json (vocab.json + merges.txt, as Qwen2's)
    if p.is_dir() and not (p / "tokenizer.json").is_file():  # a run directory, as elsewhere
        from unmask.checkpoint import checkpoint_dir

        with contextlib.suppress(UserError):  # not a checkpoint: load_tokenizer says what is
            p = checkpoint_dir(p)
    # a dataset's or checkpoint's copy, with the special tokens its index.json or config.json
    # records (a foreign tokenizer's, named by a folder the copy left behind)
    folder = p if p.is_dir() else p.parent
    if p.is_dir() or p.name == "tokenizer.json":
        if is_dataset(folder):
            return TokenDataset(folder, "train").tokenizer()
        if is_checkpoint(folder) and (folder / "config.json").is_file():
            from unmask.checkpoint import native_parts

            return native_parts(folder)[2]
    return load_tokenizer(p)


_KINDS: dict[str, tuple[type, ...]] = {
    "a name or path": (str, os.PathLike), "an integer or None": (numbers.Integral, type(None)),
    "an integer": (numbers.Integral,), "a number": (numbers.Real,), "a str": (str,),
    "a bool": (bool, np.bool_),
}


def _check_argument_types(**given: tuple[Any, str]) -> None:
    """A one-line ``UserError`` naming the first argument that is not what ``_KINDS`` says
    its kind takes (a bool is no number here), instead of a ``TypeError`` from deep inside
    ``prepare`` or a truthy string taken for True."""
    for name, (value, kind) in given.items():
        wanted = _KINDS[kind]
        is_bool = isinstance(value, (bool, np.bool_))
        if (is_bool and bool not in wanted) or not isinstance(value, wanted):
            raise UserError(f"{name} must be {kind}, not {type(value).__name__}")


def prepare(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    tokenizer: str | os.PathLike[str] = "bpe",
    vocab_size: int | None = None,
    text_field: str = "text",
    val_fraction: float = 0.01,
    min_val_tokens: int = MIN_VAL_TOKENS,
    line_docs: bool = False,
    shard_tokens: int = 2**24,
    errors: str = "strict",
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> PreparedInfo:
    """Tokenize a corpus into train/validation token shards under ``out``.

    Args:
        inputs: a list of paths (or one path): text files (one file = one document),
            gzip'd, xz'd or bzip2'd text (told by their first bytes), JSONL files
            (``.jsonl``, ``.jsonl.gz``, ...; one line = one document, text in
            ``text_field``) and directories (searched recursively, sorted, hidden entries
            skipped); ``"-"`` (a str) reads standard input, saved in the staging folder
            until it is tokenized (JSON Lines when its first line is a record with
            ``text_field``, else text).
        out: dataset directory to create. It is built in a hidden temp directory next to
            it and renamed at the end, so an interrupted run leaves nothing half-written.
        tokenizer: ``"bpe"`` (train byte-level BPE of ``vocab_size`` on the corpus),
            ``"byte"`` (bytes + 4 specials), or a path to a ``tokenizer.json`` / directory
            (a ``Path`` is always one: ``Path("bpe")`` is the folder ``./bpe``).
        vocab_size: BPE vocabulary size, specials included (``"bpe"`` only; default
            4096); given with another tokenizer, a ``UserError``.
        text_field: JSONL field holding the text.
        val_fraction: fraction of the tokens held out for validation, in [0, 1), rounded up
            to whole ``SPLIT_BLOCK``-token blocks and at most half the corpus (validation
            is never larger than training); 0 = no validation split.
        min_val_tokens: smallest validation split in tokens (when ``val_fraction`` > 0); a
            corpus too small to spare it (it would leave less for training) gets only its
            fraction, at least one block, and a note in ``PreparedInfo.notes``.
        line_docs: each non-blank line of a text file is one document (separated by EOS
            like documents are), not the whole file; JSONL files are per line anyway.
        shard_tokens: tokens per shard file.
        errors: ``"strict"`` (undecodable bytes are an error naming file:line) or
            ``"replace"`` (replace them with U+FFFD).
        seed: seed of the train/validation assignment.
        progress: show tqdm progress bars (bytes read) on stderr.
        overwrite: replace an existing dataset at ``out``.

    Returns:
        ``PreparedInfo`` with token and byte counts per split.
    """
    _check_argument_types(
        tokenizer=(tokenizer, "a name or path"), vocab_size=(vocab_size, "an integer or None"),
        text_field=(text_field, "a str"), val_fraction=(val_fraction, "a number"),
        min_val_tokens=(min_val_tokens, "an integer"), line_docs=(line_docs, "a bool"),
        shard_tokens=(shard_tokens, "an integer"), errors=(errors, "a str"),
        seed=(seed, "an integer"), progress=(progress, "a bool"), overwrite=(overwrite, "a bool"),
    )
    if isinstance(tokenizer, os.PathLike) and os.fspath(tokenizer) in ("bpe", "byte"):
        tokenizer = os.path.join(".", tokenizer)  # Path("bpe"): the folder, not the built-in
    tokenizer = os.fspath(tokenizer)
    if vocab_size is not None and tokenizer != "bpe":
        raise UserError(f"vocab_size trains a BPE tokenizer (tokenizer='bpe'); tokenizer "
                        f"{tokenizer!r} brings its own vocabulary")
    vocab_size = 4096 if vocab_size is None else int(vocab_size)
    # numpy scalars as the index's JSON takes them
    val_fraction, min_val_tokens = float(val_fraction), int(min_val_tokens)
    shard_tokens, seed, line_docs = int(shard_tokens), int(seed), bool(line_docs)
    out = Path(out)
    if errors not in ("strict", "replace"):
        raise UserError(f"errors={errors!r}; choose strict or replace")
    check_prepare_numbers(tokenizer=tokenizer, vocab_size=vocab_size,
                          val_fraction=val_fraction, min_val_tokens=min_val_tokens)
    if shard_tokens < 1:
        raise UserError(f"shard_tokens={shard_tokens} must be positive")
    inputs_list = _input_list(inputs)
    given, out = out, _real_out(out)
    _own_folder(out)  # (a staging name beside it is taken now)
    tmp = _staging_name(out)  # the folder the dataset is built in, made once `out` is checked
    stdin = tmp / ".stdin" if any(map(_is_stdin, inputs_list)) else None  # saved there
    skipped: list[str] = []  # notes: broken links in the input folders
    files = resolve_inputs(inputs_list, exclude=[out], skipped=skipped, stdin=stdin)
    _check_out(out, overwrite, files)
    check_creatable(out)  # before any work, leaving nothing behind
    # a tokenizer given (byte, a path) is loaded before any pass, and before standard input
    # is read: a mistyped path did not leave the piped corpus read and lost
    tok = None if tokenizer == "bpe" else _make_tokenizer(tokenizer, vocab_size, None)
    # inputs read as plain text, JSON syntax and all (.json files; other files and standard
    # input that start like JSON but are not JSON Lines by name), by their place in `files`
    json_text: dict[int, str] = {}
    # what the note says of the first of them (by place), told from its first line
    first_said = ""
    jsonl = [False] * len(files)  # read as JSONL, by place (told once, not on every pass)

    def sniff(i: int) -> None:
        """Refuse archives, UTF-16, binary data before any pass over the corpus; tell JSONL."""
        nonlocal first_said
        src = _Source(files[i], lambda n: None, errors, stdin=files[i] == stdin)
        try:
            jsonl[i] = _reads_as_jsonl(src, text_field)
            # standard input has no name: JSON told by its first bytes, one line or many; JSON
            # Lines in data.txt was trained on, JSON syntax and all, without a word: told by a
            # first line that is a record (text that starts with a bracket is not one)
            as_text = not jsonl[i] and (
                _named(src.path, ".json") or (_json_document(src) and (
                    src.stdin or _json_record(_first_json_line(src, text_field)))))
            if as_text:
                if not json_text or i < min(json_text):
                    first_said = _json_text_said(src, text_field)
                json_text[i] = src.name
        finally:
            src.close()

    for i, f in enumerate(files):
        if f != stdin:
            sniff(i)
    notes = skipped
    made = _missing_parents(out)  # removed again if the build fails
    out.parent.mkdir(parents=True, exist_ok=True)
    notes.extend(_clear_stale_staging(out))
    _staging(out, tmp)
    stream_file: BinaryIO | None = None
    writers: dict[str, _ShardWriter] = {}
    try:
        if stdin is not None:
            _save_stdin(stdin)
            sniff(files.index(stdin))
        total_bytes = sum(f.stat().st_size for f in files)

        def pieces(desc: str, chunk: int | None = None) -> Iterator[tuple[str, bool]]:
            with _progress(desc, total_bytes, progress) as bar:
                yield from _iter_pieces(
                    files, text_field=text_field, errors=errors, on_progress=bar.update,
                    line_docs=line_docs, chunk=chunk, stdin=stdin, jsonl=jsonl,
                )

        if tok is None:
            tok = _make_tokenizer(tokenizer, vocab_size, pieces)
        V = tok.vocab_size
        n_jsonl = sum(jsonl)
        if text_field != "text" and not n_jsonl:
            notes.append(f"--text-field {text_field} (text_field= in Python) was not used: no "
                         "input is JSONL (.jsonl, .ndjson, or JSON Lines in a .json file)")
        if line_docs and n_jsonl == len(files):
            notes.append("--line-docs (line_docs= in Python) was not used: every input is JSONL, "
                         "one document per record already (it splits text files by line)")
        if json_text:
            names = [json_text[i] for i in sorted(json_text)]
            named_json = all(_named(Path(n), ".json") for n in names)
            kind = ".json files" if named_json else "inputs"
            more = f" and {len(names) - 1} more {kind}" if len(names) > 1 else ""
            said = f"{names[0]}{more} read as plain text, JSON syntax and all"
            notes.append(f"{said} {first_said}")
        if tokenizer == "bpe" and V < vocab_size:
            notes.append(f"the corpus supports a BPE vocabulary of only {V:,} tokens (of the "
                         f"{vocab_size:,} asked): no more pairs of tokens occur twice")
        dtype = np.dtype("<u2") if V <= 2**16 else np.dtype("<u4")
        dtype_name = "uint16" if dtype.itemsize == 2 else "uint32"
        byte_len = tok.token_byte_lengths()

        writers = {s: _ShardWriter(tmp, s, dtype, shard_tokens, byte_len) for s in SPLITS}
        stream_path = tmp / ".stream.bin"  # the whole token stream, split once its length is known
        stream_file = open(stream_path, "wb", buffering=1 << 20)
        eos = np.array([tok.eos_id], dtype=np.int64)
        n_docs = 0
        batch: list[str] = []
        ends: list[bool] = []
        n_chars = 0

        lossy: list[str] = []  # a note when the tokenizer does not give the text back
        checked = 0

        def flush() -> None:
            nonlocal n_chars, checked
            if not batch:
                return
            encoded = tok.encode_arrays(batch)
            for text, ids in zip(batch, encoded, strict=True):
                if checked >= _ROUNDTRIP_CHARS or lossy:
                    break
                checked += len(text)
                lossy.extend(_roundtrip_note(tok, text, ids))
            parts: list[np.ndarray] = []
            for ids, end in zip(encoded, ends, strict=True):
                parts.append(ids)
                if end:
                    parts.append(eos)
            stream_file.write(np.concatenate(parts).astype(dtype).tobytes())
            batch.clear()
            ends.clear()
            n_chars = 0

        chunk = _CHUNK_CHARS if _cuts_exactly(tok) else _CHUNK_CHARS_OTHER
        for piece, end in pieces("tokenizing", chunk):
            batch.append(piece)
            ends.append(end)
            n_docs += end
            n_chars += len(piece)
            if n_chars >= _BATCH_CHARS:
                flush()
        flush()
        if stdin is not None:  # read for the last time: not part of the dataset
            stdin.unlink()
        if n_docs == 0:
            raise UserError("the inputs hold no text (empty corpus)")
        if stream_file.tell() == n_docs * dtype.itemsize:  # EOS after EOS, nothing else
            raise UserError(f"the tokenizer turns the text of the inputs into no tokens at "
                            f"all (only the {n_docs:,} document ends): it has no pieces for "
                            "its characters; choose another tokenizer")
        n_tokens = stream_file.tell() // dtype.itemsize
        stream_file.close()
        k, note = _val_block_count(
            n_tokens, n_tokens // SPLIT_BLOCK, val_fraction=val_fraction,
            min_val_tokens=min_val_tokens,
        )
        with open(stream_path, "rb", buffering=0) as stream:
            _split_stream(stream, n_tokens, dtype, writers, seed=seed, n_val=k)
        stream_path.unlink()
        for w in writers.values():
            w.close()

        tok.save(tmp)
        index = {
            "version": INDEX_VERSION,
            "dtype": dtype_name,
            "vocab_size": V,
            "special_ids": tok.special_ids(),
            "tokenizer": "tokenizer.json",
            "splits": {
                s: {"shards": w.shards, "n_tokens": w.n_tokens, "n_bytes": w.n_bytes}
                for s, w in writers.items()
            },
            "n_documents": n_docs,
            "split_block": SPLIT_BLOCK,
            "val_fraction": val_fraction,
            "min_val_tokens": min_val_tokens,
            "line_docs": line_docs,
            "seed": seed,
            "sources": [STDIN_NAME if f == stdin else str(f) for f in files],
            "created_by": "unmask prepare",
        }
        _write_index(tmp, index)
        _install(tmp, out, overwrite)
    except BaseException as e:
        for f in (stream_file, *writers.values()):
            if f is not None:  # a full disk fails their last flush again: the folder goes anyway
                with contextlib.suppress(OSError):
                    f.close()
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_folders(made)
        if isinstance(e, OSError) and e.filename is None:  # "No space left on device": where
            raise named(e, given) from None
        raise
    return PreparedInfo(
        out=given,
        vocab_size=V,
        dtype=dtype_name,
        special_ids=tok.special_ids(),
        n_documents=n_docs,
        n_tokens={s: w.n_tokens for s, w in writers.items()},
        n_bytes={s: w.n_bytes for s, w in writers.items()},
        notes=(*notes, *lossy, note) if note else (*notes, *lossy),
    )


_ROUNDTRIP_CHARS = 1 << 16
"""Characters at the start of the corpus that ``prepare`` decodes back to check the
tokenizer reproduces its text (``_roundtrip_note``)."""


def _roundtrip_note(tok: Tokenizer, text: str, ids: Sequence[int] | np.ndarray) -> list[str]:
    """A note when ``decode(encode(text))`` is not ``text`` (leading and trailing whitespace
    aside, which SentencePiece-style decoders drop): a foreign tokenizer that lowercases,
    normalizes or replaces unknown words. ``n_bytes`` then counts its tokens, not the text."""
    a, b = text.strip(), tok.decode(ids).strip()
    if a == b:
        return []
    i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(a))
    lo = max(0, i - 10)
    return [f"the tokenizer does not give back the text it encodes ({a[lo : i + 20]!r} came "
            f"back as {b[lo : i + 20]!r}): it lowercases, normalizes or drops characters, so "
            "n_bytes and bits per byte are approximate, not comparable with other tokenizers"]


_SLICE_TOKENS = 1 << 22
"""Tokens ``prepare_slice`` reads and writes at once."""


def prepare_slice(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    train_tokens: int,
    overwrite: bool = False,
) -> PreparedInfo:
    """A prepared dataset holding the first ``train_tokens`` of ``source``'s train split and
    its whole validation split, with the same tokenizer: a small corpus for data-constrained
    runs (``benchmarks/data_constrained.py``) whose held-out numbers compare with the full
    corpus'. Written to a temporary folder and renamed into place, like ``prepare``, a piece
    at a time (``_SLICE_TOKENS``); its ``n_documents`` counts the documents it holds (its
    document ends, and the one cut off at the end of its train split), not the source's."""
    src = TokenDataset(source, "train")
    if not 0 < train_tokens <= src.n_tokens:
        raise UserError(
            f"train_tokens={train_tokens} must be in 1..{src.n_tokens:,} (the train split)"
        )
    given = Path(out)
    out = _real_out(given)
    _check_out(out, overwrite)
    check_creatable(out)  # before any work, leaving nothing behind
    tok = src.tokenizer()
    byte_len = tok.token_byte_lengths()
    dtype = np.dtype(src.index["dtype"]).newbyteorder("<")
    _clear_stale_staging(out)
    made = _missing_parents(out)
    tmp = _staging(out)
    try:
        splits = {}
        n_docs = 0  # documents in the slice: its ends (EOS), and one cut off
        for split, n in (("train", train_tokens), ("val", None)):
            ds = src if split == "train" else TokenDataset(source, "val")
            w = _ShardWriter(tmp, split, dtype, 2**24, byte_len)
            end = ds.n_tokens if n is None else n
            # a piece at a time: the whole slice as int64 was 8 bytes a token in memory
            for start in range(0, end, _SLICE_TOKENS):
                piece = ds.read(start, min(_SLICE_TOKENS, end - start))
                n_docs += int(np.count_nonzero(piece == tok.eos_id))
                w.write(piece)
            if split == "train" and piece[-1] != tok.eos_id:
                n_docs += 1  # the document cut off at the slice's end
            w.close()
            splits[split] = {"shards": w.shards, "n_tokens": w.n_tokens, "n_bytes": w.n_bytes}
        tok.save(tmp)
        index = {
            **src.index,
            "splits": splits,
            "n_documents": n_docs,
            "sliced_from": str(Path(source).resolve()),
            "created_by": "unmask.data.prepare_slice",
        }
        _write_index(tmp, index)
        _install(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_folders(made)
        raise
    return PreparedInfo(
        out=given,
        vocab_size=src.vocab_size,
        dtype=src.index["dtype"],
        special_ids=src.special_ids,
        n_documents=n_docs,
        n_tokens={s: v["n_tokens"] for s, v in splits.items()},
        n_bytes={s: v["n_bytes"] for s, v in splits.items()},
    )


# ----------------------------------------------------------------------------- reading


def read_index(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``index.json`` of a prepared dataset directory."""
    from unmask.folders import checkpoint_given_for_data

    d = Path(directory)
    path = d / "index.json"
    refuse(missing_dataset(d))
    if is_checkpoint(d) and not path.is_file():
        raise UserError(checkpoint_given_for_data(d, flag=""))
    if not d.is_dir() or not path.is_file():
        raise UserError(f"{d} {_NOT_DATASET}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    index = parse_json(text, path)  # one line for a long integer or deep nesting too
    if not isinstance(index, dict) or index.get("version") != INDEX_VERSION:
        raise UserError(f"{path}: unsupported index version (expected {INDEX_VERSION})")
    _check_index(path, index)
    return index


DTYPES = ("uint16", "uint32")
"""Shard element types ``prepare`` writes (little-endian)."""


def _check_index(path: Path, index: dict[str, Any]) -> None:
    """One line naming the field of a hand-edited or foreign ``index.json`` that has the wrong
    type or is missing, instead of a KeyError / numpy error when it is used."""

    def bad(key: str, want: str) -> UserError:
        got = "missing" if key not in where else f"{type(where[key]).__name__} {where[key]!r}"
        return UserError(f"{path}: field {name}{key} is {got[:60]}, expected {want}")

    def count(key: str, lo: int = 0) -> None:
        v = where.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise bad(key, f"an integer >= {lo}")

    where, name = index, ""
    if where.get("dtype") not in DTYPES:
        raise bad("dtype", " or ".join(map(repr, DTYPES)))
    count("vocab_size", 1)
    if not isinstance(where.get("special_ids"), dict):
        raise bad("special_ids", "an object of mask_id, pad_id, eos_id, bos_id")
    if not isinstance(where.get("splits"), dict):
        raise bad("splits", "an object of splits (train, val)")
    if "tokenizer" in where and not plain_name(where["tokenizer"]):
        raise bad("tokenizer", "a file name in the folder")
    where, name = index["special_ids"], "special_ids."
    for key in ("mask_id", "pad_id", "eos_id", "bos_id"):
        count(key)
    for split, info in index["splits"].items():
        where, name = index["splits"], "splits."
        if not isinstance(info, dict):
            raise bad(split, "an object of shards, n_tokens, n_bytes")
        where, name = info, f"splits.{split}."
        shards = where.get("shards")
        # plain names: a crafted index of "../x" or "/etc/x" read files outside the folder
        if not isinstance(shards, list) or not all(map(plain_name, shards)):
            raise bad("shards", "a list of file names in the folder")
        count("n_tokens")
        count("n_bytes")


class TokenDataset:
    """One split of a prepared dataset as a single token stream.

    Shards are concatenated logically (a list of shard files + cumulative offsets); windows
    may cross shard boundaries. Nothing is read until a window is asked for; each window is
    read from its file(s) with ``os.pread`` (no memory map, whose pages would stay resident).
    A shard is opened when first read and its handle kept (at most ``MAX_OPEN_SHARDS`` of
    them, least recently read closed first), so a dataset replaced on disk (``prepare
    --overwrite``) under a run does not change the run's tokens: each shard must be the file
    that was there when the dataset was opened, or reading it is a one-line error. The
    object pickles without its handles (``DataLoader`` workers reopen them).
    """

    MAX_OPEN_SHARDS = 64
    """Shard files held open at once per dataset (splits of ~1,000+ shards stay under the
    usual limit of 1,024 open files; a shard whose handle was closed is opened again)."""

    def __init__(self, directory: str | os.PathLike[str], split: str) -> None:
        self.directory = Path(directory)
        self.index = read_index(self.directory)
        splits = self.index.get("splits", {})
        if split not in splits:
            raise UserError(f"{self.directory}: no split {split!r} (have: {', '.join(splits)})")
        self.split = split
        info = splits[split]
        self._dtype = np.dtype(self.index["dtype"]).newbyteorder("<")
        item = self._dtype.itemsize
        sizes, ids = [], []
        for name in info["shards"]:
            p = self.directory / name
            if not p.is_file():
                raise UserError(f"{p}: shard listed in index.json is missing")
            st = p.stat()
            size = st.st_size
            ids.append((st.st_dev, st.st_ino, size))
            if size == 0 or size % item:
                what = "is empty" if size == 0 else (
                    f"holds {size:,} bytes, not a whole number of {self.index['dtype']} tokens")
                raise UserError(f"{p}: shard {what} (incomplete copy?)")
            sizes.append(size // item)
        self._offsets = np.cumsum([0, *sizes])
        if int(self._offsets[-1]) != int(info["n_tokens"]):
            raise UserError(
                f"{self.directory}: shards hold {int(self._offsets[-1])} tokens of split "
                f"{split!r}, index.json says {info['n_tokens']} (incomplete copy?)"
            )
        self._shards = [self.directory / name for name in info["shards"]]
        self._sizes = sizes
        self._ids = ids  # (device, inode, bytes) of each shard, as opened
        self._n_tokens = int(info["n_tokens"])
        self._n_bytes = int(info["n_bytes"])
        self._no_handles()

    def _no_handles(self) -> None:
        self._fds: OrderedDict[int, int] = OrderedDict()  # shard -> descriptor, LRU first
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)  # descriptors are this process's: reopened on load
        del state["_fds"], state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._no_handles()

    def close(self) -> None:
        """Close the shard files held open (a later read opens them again)."""
        with self._lock:
            while self._fds:
                os.close(self._fds.popitem()[1])

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    @property
    def n_tokens(self) -> int:
        """Tokens in this split, EOS separators included."""
        return self._n_tokens

    @property
    def n_bytes(self) -> int:
        """UTF-8 bytes of text in this split (special tokens count 0)."""
        return self._n_bytes

    @property
    def bytes_per_token(self) -> float:
        """``n_bytes / n_tokens``: converts nats per token to bits per byte."""
        return self._n_bytes / self._n_tokens if self._n_tokens else 0.0

    @property
    def vocab_size(self) -> int:
        return int(self.index["vocab_size"])

    @property
    def special_ids(self) -> dict[str, int]:
        return dict(self.index["special_ids"])

    def __len__(self) -> int:
        return self._n_tokens

    def tokenizer(self) -> Tokenizer:
        """The dataset's tokenizer (``tokenizer.json`` next to the shards), with the special
        tokens ``index.json`` names by id: those of a foreign tokenizer were named by its
        folder (``config.json``, ``tokenizer_config.json``), which the dataset lacks."""
        path = self.directory / self.index.get("tokenizer", "tokenizer.json")
        tok = load_tokenizer_with_ids(path, self.special_ids)
        if tok.special_ids() != self.special_ids or tok.vocab_size != self.vocab_size:
            raise UserError(f"{self.directory}: tokenizer.json does not match index.json")
        return tok

    def token_byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes of each token id's text (special tokens 0), read once from the
        tokenizer: the bytes of the windows an evaluation scores (``evaluate_loss``)."""
        cached = self.__dict__.get("_byte_len")
        if cached is None:
            cached = self.__dict__["_byte_len"] = self.tokenizer().token_byte_lengths()
        return cached

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start + length)`` of the split as an int64 array."""
        if start < 0 or length < 0 or start + length > self._n_tokens:
            raise IndexError(f"window [{start}, {start + length}) outside 0..{self._n_tokens}")
        out = np.empty(length, dtype=np.int64)
        k = int(np.searchsorted(self._offsets, start, side="right")) - 1
        pos = 0
        while pos < length:
            lo = start + pos - int(self._offsets[k])
            take = min(length - pos, self._sizes[k] - lo)
            out[pos : pos + take] = self._read_shard(k, lo, take)
            pos += take
            k += 1
        top = int(out.max()) if length else -1
        if top >= self.vocab_size:  # a shard changed since prepare
            raise UserError(
                f"{self.directory}: token id {top} near token {start} of split "
                f"{self.split!r} is not below the vocabulary size {self.vocab_size} (a corrupt "
                "shard? prepare the data again)"
            )
        return out

    def _read_shard(self, k: int, lo: int, n: int) -> np.ndarray:
        """Tokens ``[lo, lo + n)`` of shard ``k``, read from its held file. Not
        memory-mapped: a map's pages stay in the process's resident memory once read, so
        random training windows grew it to the whole split (a 104 MB split: +103 MB over
        3,000 batches). Not opened per window either: ~10 us each, and a dataset replaced
        under the run would have been read from then on with the old shard sizes."""
        buf = np.empty(n, dtype=self._dtype)
        view = memoryview(buf).cast("B")
        at, got = lo * self._dtype.itemsize, 0
        with self._lock:
            fd = self._fd(k)
            while got < buf.nbytes:
                if hasattr(os, "preadv"):
                    step = os.preadv(fd, [view[got:]], at + got)
                else:  # Windows: no pread; the descriptor is not shared with other readers
                    os.lseek(fd, at + got, os.SEEK_SET)
                    chunk = os.read(fd, buf.nbytes - got)
                    view[got : got + len(chunk)] = chunk
                    step = len(chunk)
                if step == 0:
                    raise UserError(f"{self._shards[k]}: shard ended early (changed since it "
                                    "was opened? prepare the data again)")
                got += step
        return buf

    def _fd(self, k: int) -> int:
        """Shard ``k``'s descriptor, opened the first time (call with ``_lock`` held)."""
        fd = self._fds.get(k)
        if fd is not None:
            self._fds.move_to_end(k)
            return fd
        path = self._shards[k]
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as e:
            raise UserError(f"{path}: cannot open the shard ({e.strerror}; removed or "
                            "replaced since the dataset was opened? prepare the data "
                            "again)") from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino, st.st_size) != self._ids[k]:
            os.close(fd)
            raise UserError(f"{path}: shard changed or replaced since the dataset was "
                            "opened (a new prepare into this folder?); start again on the "
                            "new data")
        while len(self._fds) >= self.MAX_OPEN_SHARDS:
            os.close(self._fds.popitem(last=False)[1])
        self._fds[k] = fd
        return fd

    def _check_len(self, seq_len: int) -> None:
        if seq_len < 1:
            raise UserError(f"seq_len={seq_len} must be positive")
        if self._n_tokens < seq_len:
            raise UserError(
                f"{self.directory}: split {self.split!r} has {self._n_tokens} tokens, "
                f"fewer than seq_len={seq_len}"
            )

    def sample(self, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
        """``(batch_size, seq_len)`` int64 windows at uniformly random offsets.

        Offsets come from ``torch.randint(..., generator=generator)``: the same generator
        state gives the same batch.
        """
        self._check_len(seq_len)
        if batch_size < 0:  # torch's "negative dimension" RuntimeError was a traceback
            raise UserError(f"batch_size={batch_size} must be >= 0")
        starts = torch.randint(
            0, self._n_tokens - seq_len + 1, (batch_size,), generator=generator
        ).tolist()
        x = np.stack([self.read(s, seq_len) for s in starts]) if starts else np.empty((0, seq_len))
        return torch.from_numpy(x.astype(np.int64, copy=False))  # (B, L)

    def num_windows(self, seq_len: int) -> int:
        """Number of non-overlapping ``seq_len`` windows ``windows`` yields (tail dropped)."""
        if seq_len < 1:
            raise UserError(f"seq_len={seq_len} must be positive")
        return self._n_tokens // seq_len

    def windows(self, seq_len: int, *, batch_size: int | None = None) -> Iterator[torch.Tensor]:
        """Consecutive non-overlapping windows from the start of the split (for validation).

        Yields ``(seq_len,)`` int64 tensors, or with ``batch_size`` ``(b, seq_len)``
        tensors of ``b <= batch_size`` windows. The partial tail window is dropped.
        """
        self._check_len(seq_len)
        n = self.num_windows(seq_len)
        if batch_size is None:
            for i in range(n):
                yield torch.from_numpy(self.read(i * seq_len, seq_len))
            return
        if batch_size < 1:
            raise UserError(f"batch_size={batch_size} must be positive")
        for i in range(0, n, batch_size):
            b = min(batch_size, n - i)
            yield torch.from_numpy(self.read(i * seq_len, b * seq_len).reshape(b, seq_len))

    def __repr__(self) -> str:
        return (
            f"TokenDataset({str(self.directory)!r}, split={self.split!r}, "
            f"n_tokens={self._n_tokens}, vocab_size={self.vocab_size})"
        )
