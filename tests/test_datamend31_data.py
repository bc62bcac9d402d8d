"""Review fixes of ``unmask prepare`` (session 31): JSON piped to ``-`` gets the note a ``.json``
file gets (a JSON array was trained on as text, ``[{"text": ...`` and all, without a word),
JSON Lines after blank lines are records, ``<stdin>`` is named in input order in that note,
the Ctrl-D hint is printed only for a run that goes on, and ``-o`` an empty folder that only
looks like a mount point (a btrfs subvolume: a device of its own) is taken."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from unmask import data
from unmask.cli import main
from unmask.errors import UserError

ARGS = ["--tokenizer", "byte", "--val-fraction", "0", "--no-progress"]


class _Stdin(io.TextIOWrapper):
    """Standard input over ``raw`` bytes, as a pipe gives them."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(io.BytesIO(raw), encoding="utf-8")


class _Terminal(_Stdin):
    def isatty(self) -> bool:
        return True


def _prepare(monkeypatch, capsys, out: Path, piped: bytes, *inputs: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", _Stdin(piped))
    rc = main(["prepare", *(inputs or ["-"]), "-o", str(out), *ARGS])
    got = capsys.readouterr()
    return rc, got.out, got.err


JQ_NOTE = ("unmask prepare: note: <stdin> read as plain text, JSON syntax and all (the first "
           "line is not a JSON object with a field 'text', as in JSON Lines); pipe a JSON array "
           "of records through jq -c '.[]' first\n")


@pytest.mark.parametrize("piped", [
    b'[{"text":"a"},{"text":"b"}]\n',
    b'\n  [\n  {\n    "text": "a"\n  },\n  {"text": "b"}\n]\n',  # pretty-printed, blank first
    b'\xef\xbb\xbf["a", "b"]',  # a byte-order mark; an array of strings
])
def test_a_json_array_piped_in_gets_the_note_a_json_file_gets(tmp_path, monkeypatch, capsys,
                                                             piped):
    rc, out, err = _prepare(monkeypatch, capsys, tmp_path / "d", piped)
    assert rc == 0 and "documents        1\n" in out
    assert err == JQ_NOTE


@pytest.mark.parametrize("piped", [b"[Verse 1]\nla la la\n", b"[[a wiki link]] and text\n",
                                   b"plain text\n"])
def test_text_that_starts_with_a_bracket_gets_no_note(tmp_path, monkeypatch, capsys, piped):
    rc, _, err = _prepare(monkeypatch, capsys, tmp_path / "d", piped)
    assert rc == 0 and err == ""


def test_json_lines_after_blank_lines_are_records(tmp_path, monkeypatch, capsys):
    """Piped, or in a ``.json`` file: blank lines first (the JSONL reader skips them) made the
    records one document of text, with no note on standard input."""
    records = b'\r\n \n{"text": "first"}\n\n{"text": "second"}\n'
    rc, out, err = _prepare(monkeypatch, capsys, tmp_path / "piped", records)
    assert rc == 0 and "documents        2\n" in out and err == ""
    (tmp_path / "r.json").write_bytes(b"\xef\xbb\xbf\n" + records)
    rc, out, err = _prepare(monkeypatch, capsys, tmp_path / "file", b"", str(tmp_path / "r.json"))
    assert rc == 0 and "documents        2\n" in out and err == ""
    # a record without the field after blank lines is named as such, not as "not an object"
    rc, _, err = _prepare(monkeypatch, capsys, tmp_path / "body", b'\n\n{"body": "x"}\n')
    assert rc == 0 and "its first line is a JSON object without a string field 'text'; " \
        "fields: body" in err


def test_stdin_is_named_in_input_order_in_the_json_note(tmp_path, monkeypatch, capsys):
    """It was sniffed last and counted as "1 more .json files"."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"body": "x"}\n')
    said = "read as plain text, JSON syntax and all (its first line is a JSON object without"
    rc, _, err = _prepare(monkeypatch, capsys, tmp_path / "a", b'{"note": "y"}\n', "-", str(cfg))
    assert rc == 0 and f"note: <stdin> and 1 more inputs {said} a string field 'text'; " \
        "fields: note)" in err
    rc, _, err = _prepare(monkeypatch, capsys, tmp_path / "b", b'{"note": "y"}\n', str(cfg), "-")
    assert rc == 0 and f"note: {cfg} and 1 more inputs {said} a string field 'text'; " \
        "fields: body)" in err
    other = tmp_path / "other.json"
    other.write_text("[1]\n")
    rc, _, err = _prepare(monkeypatch, capsys, tmp_path / "c", b"", str(cfg), str(other))
    assert rc == 0 and f"note: {cfg} and 1 more .json files {said}" in err


def test_the_terminal_hint_is_said_only_for_a_run_that_goes_on(tmp_path, monkeypatch, capsys):
    """A refused run (``-o`` not empty) said how to end the typed corpus, then refused."""
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    monkeypatch.setattr(sys, "stdin", _Terminal(b"typed in\n"))
    assert main(["prepare", "-", "-o", str(taken), *ARGS]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"unmask prepare: error: {taken} already exists and is not empty")
    assert err.count("\n") == 1
    monkeypatch.setattr(sys, "stdin", _Terminal(b"typed in\n"))
    assert main(["prepare", "-", "-o", str(tmp_path / "new"), *ARGS]) == 0
    assert capsys.readouterr().err == (
        "unmask prepare: reading the corpus from the terminal; end it with Ctrl-D (Ctrl-Z "
        "Enter on Windows)\n")


def test_one_terminal_check_of_standard_input():
    """``unmask.terminal.is_tty``: prepare's and generate's question (a copy each before)."""
    from unmask.commands import generate
    from unmask.terminal import is_terminal, is_tty

    class Closed:
        def isatty(self) -> bool:
            raise ValueError("I/O operation on closed file")

    for stream, default, want in [(_Terminal(b""), False, True), (_Stdin(b""), True, False),
                                  (None, False, False), (None, True, True),
                                  (Closed(), True, True), (object(), False, False)]:
        assert is_tty(stream, default) is want
    assert not is_terminal(Closed()) and not is_terminal(None)
    import unittest.mock as mock

    with mock.patch.object(sys, "stdin", None):  # no standard input: nothing piped in
        assert generate._stdin_is_terminal()
    with mock.patch.object(sys, "stdin", _Stdin(b"")):
        assert not generate._stdin_is_terminal()


def _mounts(tmp_path: Path, *points: Path) -> Path:
    """A mount table as /proc/self/mountinfo writes it (a space as backslash 040)."""
    table = tmp_path / "mountinfo"
    table.write_text("".join(
        f"{30 + i} 1 0:{40 + i} / {str(p).replace(' ', chr(92) + '040')} rw - tmpfs tmpfs rw\n"
        for i, p in enumerate(points)))
    return table


def test_an_empty_folder_with_a_device_of_its_own_but_no_mount_is_taken(tmp_path, monkeypatch,
                                                                        capsys):
    """A btrfs subvolume has its own device number, so ``os.path.ismount`` says yes; it is no
    mount point (the mount table does not list it), and an empty one is removed and replaced
    as any empty folder. It was refused as "a mount point"."""
    (tmp_path / "a.txt").write_text("some text of a corpus\n" * 50)
    vol = tmp_path / "sub vol"
    vol.mkdir()
    ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == vol or ismount(p))
    monkeypatch.setattr(data, "_MOUNTS", str(_mounts(tmp_path, Path("/"), tmp_path / "other")))
    info = data.prepare([tmp_path / "a.txt"], vol, tokenizer="byte", val_fraction=0,
                        progress=False)
    assert info.n_documents == 1 and (vol / "index.json").is_file()
    # listed (a name with a space, escaped in the table): refused, as without a table
    vol2 = tmp_path / "sub vol2"
    vol2.mkdir()
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == vol2 or ismount(p))
    for table in (_mounts(tmp_path, vol2), tmp_path / "no such table"):
        monkeypatch.setattr(data, "_MOUNTS", str(table))
        with pytest.raises(UserError, match="sub vol2: a mount point"):
            data.prepare([tmp_path / "a.txt"], vol2, tokenizer="byte", val_fraction=0,
                         progress=False)
    capsys.readouterr()


@pytest.mark.skipif(not (os.path.ismount("/proc") and os.path.exists("/proc/self/mountinfo")),
                    reason="needs Linux /proc")
def test_a_real_mount_point_is_refused(tmp_path):
    (tmp_path / "a.txt").write_text("some text\n")
    with pytest.raises(UserError, match=r"^/proc: a mount point \(a disk of its own\)"):
        data.prepare([tmp_path / "a.txt"], "/proc", tokenizer="byte", val_fraction=0,
                     progress=False)
