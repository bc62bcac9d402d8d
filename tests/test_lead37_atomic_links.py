"""``unmask.files``' atomic writers write through a symlink (its target replaced, the link
kept) and in place to a path that is no regular file: every writer of the project at once
(checkpoint files, results, trajectories), not only the benchmarks' ``write_results``."""

from __future__ import annotations

import os
from pathlib import Path

from unmask.files import atomic_write_bytes, atomic_write_text, write_target


def test_a_symlink_stays_a_link_and_its_target_is_written(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write_text(link, "new ✓")
    assert link.is_symlink() and target.read_text(encoding="utf-8") == "new ✓"
    atomic_write_bytes(link, b"\x00\x01")
    assert link.is_symlink() and target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["real.json"]  # no temp


def test_a_fifo_is_written_in_place(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert write_target(fifo) == (fifo, True)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader first: no hang
    try:
        atomic_write_text(fifo, "through")
        assert os.read(reader, 100) == b"through"
    finally:
        os.close(reader)
    assert not fifo.is_file() and fifo.exists()  # still the FIFO, not a regular file


def test_a_plain_path_is_replaced_whole(tmp_path: Path) -> None:
    out = tmp_path / "x.txt"
    assert write_target(out) == (out, False)
    atomic_write_text(out, "a")
    atomic_write_text(out, "b")
    assert out.read_text() == "b" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]
