"""``unmask prepare`` after a prepare was killed (SIGKILL, the out-of-memory killer): the
hidden staging folder it left beside the output is removed by the next prepare into the same
output, with a note; a live prepare's, another machine's, and any folder holding something
prepare does not write are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from unmask import data
from unmask.files import staging_prefix as _staging_prefix

KW = {"tokenizer": "byte", "val_fraction": 0, "progress": False}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _left(out: Path, pid: int, *, host: str | None = None, files=("train-00000.bin",
                                                                 ".stream.bin")) -> Path:
    tmp = out.with_name(_staging_prefix(out, pid, host=host) + "0badcafe")
    tmp.mkdir()
    for name in files:
        (tmp / name).write_bytes(b"\0" * 64)
    return tmp


def test_a_killed_prepares_staging_folder_is_removed_by_the_next(tmp_path):
    (tmp_path / "a.txt").write_text("one document of text\n")
    out = tmp_path / "data"
    stale = _left(out, _dead_pid())
    info = data.prepare(tmp_path / "a.txt", out, **KW)
    assert not stale.exists()
    assert f"removed {stale}, left by a prepare that was killed" in info.notes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "data"]


def test_a_sigkilled_prepare_leaves_nothing_after_the_next(tmp_path):
    """The real thing: a prepare killed while it tokenizes a corpus."""
    corpus = tmp_path / "big.txt"
    corpus.write_text("some words of text to tokenize, line after line\n" * 400_000)
    out = tmp_path / "data"
    code = (f"from unmask import data\ndata.prepare({str(corpus)!r}, {str(out)!r}, "
            "tokenizer='byte', val_fraction=0, progress=False)")  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        for _ in range(600):  # until its staging folder holds the token stream
            if any(p.name.startswith(".data.tmp-") and (p / ".stream.bin").exists()
                   for p in tmp_path.iterdir()):  # fmt: skip
                break
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".data.tmp-")]
    (tmp_path / "small.txt").write_text("a small corpus\n")
    data.prepare(tmp_path / "small.txt", out, overwrite=True, **KW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.txt", "data", "small.txt"], (
        leftovers)


def test_folders_that_are_not_a_dead_prepares_are_left_alone(tmp_path):
    (tmp_path / "a.txt").write_text("one document of text\n")
    out = tmp_path / "data"
    dead = _dead_pid()
    keep = [
        _left(out, os.getpid()),  # a prepare still running
        _left(out, dead, host="another_machine"),  # its process id is not ours to ask about
        _left(out, dead, files=("train-00000.bin", "notes.txt")),  # something of the user's
    ]
    other = tmp_path / ".data.tmp-mine"  # a name of the user's
    other.mkdir()
    info = data.prepare(tmp_path / "a.txt", out, **KW)
    assert all(p.is_dir() for p in [*keep, other])
    assert not any("left by a prepare" in n for n in info.notes)
