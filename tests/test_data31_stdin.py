"""``unmask prepare -`` reads standard input (it said "-: no such file or directory"): as its
bytes, compressed or not, read once and saved in the dataset's staging folder, since a BPE
tokenizer is trained on a first pass; JSON Lines told by the first line, as in a ``.json``
file. The output is checked before standard input is read, two ``-`` are refused, messages
name ``<stdin>``, and Ctrl-C while it is read leaves nothing behind."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unmask import data
from unmask.cli import main
from unmask.files import staging_prefix

TEXT = "The first line of the corpus.\r\nAnd a second one, with é and 中文.\n\n"


class _Stdin(io.TextIOWrapper):
    """Standard input over ``raw`` bytes, as a pipe gives them."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(io.BytesIO(raw), encoding="utf-8")


def _stdin(monkeypatch: pytest.MonkeyPatch, raw: bytes) -> _Stdin:
    stream = _Stdin(raw)
    monkeypatch.setattr(sys, "stdin", stream)
    return stream


def _tokens(folder: Path) -> bytes:
    return b"".join((folder / s).read_bytes()
                    for s in json.loads((folder / "index.json").read_text())["splits"]["train"][
                        "shards"])


ARGS = ["--val-fraction", "0", "--no-progress"]


@pytest.mark.parametrize("line_docs", [False, True])
def test_dash_reads_standard_input_as_the_same_text_in_a_file_reads(
        tmp_path, monkeypatch, capsys, line_docs):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(TEXT.encode() * 30)
    flags = [*ARGS, "--vocab-size", "300", *(["--line-docs"] if line_docs else [])]
    assert main(["prepare", str(corpus), "-o", str(tmp_path / "file"), *flags]) == 0
    _stdin(monkeypatch, TEXT.encode() * 30)
    assert main(["prepare", "-", "-o", str(tmp_path / "piped"), *flags]) == 0, (
        capsys.readouterr().err)
    assert _tokens(tmp_path / "piped") == _tokens(tmp_path / "file")
    assert ((tmp_path / "piped" / "tokenizer.json").read_bytes()
            == (tmp_path / "file" / "tokenizer.json").read_bytes())
    index = json.loads((tmp_path / "piped" / "index.json").read_text())
    assert index["sources"] == ["<stdin>"]
    # the copy of standard input is not part of the dataset, and no staging folder is left
    assert sorted(p.name for p in (tmp_path / "piped").iterdir()) == [
        "index.json", "tokenizer.json", "train-00000.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "file", "piped"]


def test_gzipped_json_lines_on_standard_input_are_records_in_stream_order(
        tmp_path, monkeypatch, capsys):
    lines = "".join(json.dumps({"text": f"record {i}"}) + "\n" for i in range(5))
    (tmp_path / "after.txt").write_text("a text file after it")
    _stdin(monkeypatch, gzip.compress(lines.encode()))
    assert main(["prepare", "-", str(tmp_path / "after.txt"), "-o", str(tmp_path / "out"),
                 "--tokenizer", "byte", *ARGS]) == 0, capsys.readouterr().err
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["n_documents"] == 6
    assert index["sources"] == ["<stdin>", str(tmp_path / "after.txt")]
    ids = [b - 4 if b > 3 else 0x7C for b in _tokens(tmp_path / "out")[::2]]
    assert bytes(ids).decode() == "|".join(
        [*(f"record {i}" for i in range(5)), "a text file after it", ""])


def test_errors_name_stdin_and_the_output_is_checked_before_it_is_read(
        tmp_path, monkeypatch, capsys):
    _stdin(monkeypatch, b"caf\xe9\n")
    assert main(["prepare", "-", "-o", str(tmp_path / "out"), "--tokenizer", "byte"]) == 2
    assert capsys.readouterr().err.startswith(
        "unmask prepare: error: <stdin>:1: invalid UTF-8 (byte 0xe9)")
    assert list(tmp_path.iterdir()) == []

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    stream = _stdin(monkeypatch, b"some text\n")
    assert main(["prepare", "-", "-o", str(taken)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert stream.buffer.tell() == 0  # a pipe's text is not swallowed by a refused run

    # nor by a mistyped tokenizer, or a file that is not text beside it
    (tmp_path / "a.tar").write_bytes(b"x" * 257 + b"ustar\x0000" + b"\0" * 300)
    for flags in (["--tokenizer", str(tmp_path / "typo.json")], [str(tmp_path / "a.tar")]):
        assert main(["prepare", "-", *flags, "-o", str(tmp_path / "new")]) == 2
        assert capsys.readouterr().err.count("\n") == 1
        assert stream.buffer.tell() == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "taken"]

    assert main(["prepare", "-", "-", "-o", str(tmp_path / "two")]) == 2
    assert capsys.readouterr().err == (
        "unmask prepare: error: -: standard input given twice; it can be read only once\n")


def test_ctrl_c_while_standard_input_is_read_leaves_nothing(tmp_path, monkeypatch):
    class Interrupted(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:  # noqa: ANN001
            raise KeyboardInterrupt

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(Interrupted())))
    with pytest.raises(KeyboardInterrupt):
        data.prepare("-", tmp_path / "deep" / "out", tokenizer="byte", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_path_named_dash_is_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("-").write_text("a file whose name is a dash\n")
    _stdin(monkeypatch, b"standard input\n")
    info = data.prepare([Path("-")], "out", tokenizer="byte", val_fraction=0, progress=False)
    assert info.n_tokens["train"] == len("a file whose name is a dash\n") + 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_a_pipe_given_as_a_file_points_at_standard_input(tmp_path):
    fifo = tmp_path / "fd63"  # what `unmask prepare <(zcat corpus.gz)` passes
    os.mkfifo(fifo)
    with pytest.raises(data.UserError) as e:
        data.prepare([fifo], tmp_path / "out", tokenizer="byte", progress=False)
    assert str(e.value) == (f"{fifo}: a pipe, not a file (it can be read only once); pipe it to "
                            "standard input instead: ... | unmask prepare - -o DIR")


def test_a_killed_prepares_copy_of_standard_input_is_removed_by_the_next(tmp_path):
    """A prepare killed (SIGKILL) while it read standard input left its copy (the size of the
    corpus) in a staging folder the next prepare did not recognise as its own."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "data"
    stale = out.with_name(staging_prefix(out, dead.pid) + "0badcafe")
    stale.mkdir()
    (stale / ".stdin").write_bytes(b"text read from a pipe\n" * 100)
    (tmp_path / "a.txt").write_text("one document of text\n")
    info = data.prepare(tmp_path / "a.txt", out, tokenizer="byte", val_fraction=0,
                        progress=False)
    assert f"removed {stale}, left by a prepare that was killed" in info.notes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "data"]


def test_inputs_may_be_a_generator(tmp_path):
    """``Path.glob`` gives a generator: it is looked through for ``-`` and then read."""
    for i in range(3):
        (tmp_path / f"{i}.txt").write_text(f"document {i}\n")
    info = data.prepare(sorted(tmp_path.glob("*.txt")).__iter__(), tmp_path / "out",
                        tokenizer="byte", val_fraction=0, progress=False)
    assert info.n_documents == 3


def test_a_generator_of_folders_with_no_file_is_the_one_line_refusal(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.UserError, match=r"empty: no files to read below it"):
        data.resolve_inputs(tmp_path.glob("empty"))  # was a TypeError: not subscriptable


def test_a_terminal_on_standard_input_is_told_how_to_end_the_corpus(
        tmp_path, monkeypatch, capsys):
    class Terminal(_Stdin):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal(b"typed in by hand\n"))
    assert main(["prepare", "-", "-o", str(tmp_path / "out"), "--tokenizer", "byte",
                 *ARGS]) == 0
    err = capsys.readouterr().err
    assert err == ("unmask prepare: reading the corpus from the terminal; end it with "
                   "Ctrl-D (Ctrl-Z Enter on Windows)\n")
    _stdin(monkeypatch, b"piped in\n")  # a pipe: nothing said
    assert main(["prepare", "-", "-o", str(tmp_path / "out2"), "--tokenizer", "byte",
                 *ARGS]) == 0
    assert capsys.readouterr().err == ""
