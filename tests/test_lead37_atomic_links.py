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


def test_another_users_link_in_a_shared_sticky_folder_is_replaced_not_followed(tmp_path):
    """As the kernel's ``fs.protected_symlinks``: in a world-writable sticky folder (/tmp) a
    link planted by another user is not followed (a rename would skip the kernel's check and
    overwrite the victim's file); the link itself is replaced, as before links were followed.
    A link of this user there is followed."""
    import pytest

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    precious = tmp_path / "precious.txt"
    precious.write_text("precious")
    planted = shared / "out.json"
    planted.symlink_to(precious)
    try:
        os.lchown(planted, 65534, 65534)  # another user's link (needs root)
    except (PermissionError, AttributeError):
        pytest.skip("giving a link to another user needs root")
    if os.geteuid() == 65534:
        pytest.skip("runs as the other user")
    atomic_write_text(planted, "results")
    assert precious.read_text() == "precious"
    assert not planted.is_symlink() and planted.read_text() == "results"
    mine = shared / "mine.json"
    mine.symlink_to(precious)
    atomic_write_text(mine, "mine")
    assert mine.is_symlink() and precious.read_text() == "mine"


def test_a_missing_folder_names_the_file_asked_for(tmp_path):
    import pytest

    with pytest.raises(OSError) as e:
        atomic_write_text(tmp_path / "nothere" / "x.json", "a")
    assert e.value.filename == str(tmp_path / "nothere" / "x.json")
