"""The task folder's four files are written all or none, even when a rename in the swap fails
or is interrupted; a failed write names the user's file; a killed write's staging folder is
removed by the next write."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unmask.tasks import write_task

NAMES = ("train.txt", "sft.jsonl", "eval.jsonl", "task.json")


def _files(folder: Path) -> dict[str, bytes | None]:
    """The folder's files by name (a folder, the staging one: None)."""
    return {p.name: None if p.is_dir() else p.read_bytes() for p in folder.iterdir()}


def _old_and_new(tmp_path: Path) -> tuple[Path, dict[str, bytes], dict[str, bytes]]:
    """A task folder of seed 0 and the files a rewrite with seed 1 would give it."""
    new = tmp_path / "new"
    write_task("countdown3", new, n_train=30, n_eval=5, seed=1)
    folder = tmp_path / "task"
    write_task("countdown3", folder, n_train=30, n_eval=5, seed=0)
    return folder, _files(folder), _files(new)


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
@pytest.mark.parametrize("at", range(8))  # 4 old files moved aside, then 4 new ones moved in
def test_a_rename_that_fails_or_is_interrupted_leaves_the_old_files(tmp_path, monkeypatch,
                                                                   at, error):
    """The four renames ran one after another with nothing put back: a Ctrl-C or a failing
    rename after the first left the new train.txt beside the old eval.jsonl, whose held-out
    items it may hold. At no rename does the folder mix the two sets, and the old one is
    whole again after the failure, with no staging folder left."""
    folder, old, new = _old_and_new(tmp_path)
    real, calls = os.replace, []

    def replace(a, b):
        seen = {n: b for n, b in _files(folder).items() if b is not None}
        # every file present is of one set, never both
        assert all(seen[n] == old[n] for n in seen) or all(seen[n] == new[n] for n in seen)
        calls.append(b)
        if len(calls) == at + 1:
            raise KeyboardInterrupt if error is KeyboardInterrupt else OSError(
                errno.EIO, "Input/output error", str(a), None, str(b))
        real(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(error) as caught:
        write_task("countdown3", folder, n_train=30, n_eval=5, seed=1)
    monkeypatch.undo()
    assert _files(folder) == old
    if error is OSError:  # the user's file, not the staging path
        assert Path(caught.value.filename).parent == folder
        assert Path(caught.value.filename).name in NAMES
    write_task("countdown3", folder, n_train=30, n_eval=5, seed=1)
    assert _files(folder) == new


def test_a_full_disk_names_the_file_of_the_task_folder(tmp_path, monkeypatch):
    """An fsync that failed (ENOSPC) said only 'No space left on device', no file."""
    folder, old, _ = _old_and_new(tmp_path)
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as caught:
        write_task("countdown3", folder, n_train=30, n_eval=5, seed=1)
    monkeypatch.undo()
    assert caught.value.filename == str(folder / "eval.jsonl")
    assert _files(folder) == old


def test_a_folder_in_the_way_is_named_and_nothing_is_written(tmp_path):
    """A folder named eval.jsonl failed the third rename: the new train.txt and sft.jsonl
    stayed, and the error named a staging path that was gone."""
    folder = tmp_path / "task"
    (folder / "eval.jsonl").mkdir(parents=True)
    with pytest.raises(IsADirectoryError) as caught:
        write_task("countdown3", folder, n_train=10, n_eval=5)
    assert caught.value.filename == str(folder / "eval.jsonl")
    assert [p.name for p in folder.iterdir()] == ["eval.jsonl"]
    assert (folder / "eval.jsonl").is_dir()


KILLED = """
import os, signal, sys
from unmask.tasks import write_task
real, calls = os.fsync, []
def fsync(fd):
    calls.append(fd)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    real(fd)
os.fsync = fsync
write_task("countdown3", sys.argv[1], n_train=20, n_eval=5, seed=1)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="SIGKILL of a child: POSIX")
def test_a_killed_writes_staging_folder_is_removed_by_the_next(tmp_path):
    """A write killed (SIGKILL, the out-of-memory killer) left a hidden staging folder with
    the new train.txt in the task folder for good; the next write removes it."""
    folder = tmp_path / "task"
    write_task("countdown3", folder, n_train=20, n_eval=5, seed=0)
    old = _files(folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-c", KILLED, str(folder)], env=env)
    assert r.returncode == -9
    assert len(list(folder.iterdir())) == 5  # the staging folder beside the old files
    assert {n: old[n] for n in NAMES} == {n: (folder / n).read_bytes() for n in NAMES}
    write_task("countdown3", folder, n_train=20, n_eval=5, seed=1)
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)
    assert json.loads((folder / "task.json").read_text())["seed"] == 1


def test_a_second_ctrl_c_while_the_old_files_are_put_back_keeps_them(tmp_path, monkeypatch):
    """Interrupted again while putting the old files back, the write left them to be deleted
    with its staging folder; they stay there (the folder still never mixes the two sets)."""
    folder, old, new = _old_and_new(tmp_path)
    real, calls = os.replace, []

    def replace(a, b):
        calls.append(b)
        if len(calls) in (6, 8):  # a new file moved in, then the second old one put back
            raise KeyboardInterrupt
        real(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        write_task("countdown3", folder, n_train=30, n_eval=5, seed=1)
    monkeypatch.undo()
    here = {n: b for n, b in _files(folder).items() if b is not None}
    assert here and all(old[n] == b for n, b in here.items())
    kept = {p.name: p.read_bytes() for p in folder.glob(".*/old/*")}
    assert {**here, **kept} == old


KILLED_ASIDE = """
import os, signal, sys
real, calls = os.replace, []
def replace(a, b):
    calls.append(a)
    if len(calls) == 5:  # the 4 old files set aside, before the first new one moves in
        os.kill(os.getpid(), signal.SIGKILL)
    real(a, b)
os.replace = replace
from unmask.tasks import write_task
write_task("countdown3", sys.argv[1], n_train=20, n_eval=5, seed=1)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="SIGKILL of a child: POSIX")
def test_a_failed_write_keeps_the_old_set_a_killed_one_left_aside(tmp_path, monkeypatch):
    """A write killed after it set the old files aside leaves them only in its staging
    folder; the next write removed that folder before writing, so when it then failed (a
    full disk) the old set was gone. Stale staging folders are cleared after a write
    succeeds."""
    folder = tmp_path / "task"
    write_task("countdown3", folder, n_train=20, n_eval=5, seed=0)
    old = _files(folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", KILLED_ASIDE, str(folder)], env=env).returncode
    [hidden] = list(folder.iterdir())  # no file of either set beside it
    assert {n: (hidden / "old" / n).read_bytes() for n in NAMES} == {n: old[n] for n in NAMES}

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        write_task("countdown3", folder, n_train=20, n_eval=5, seed=1)
    assert {n: (hidden / "old" / n).read_bytes() for n in NAMES} == {n: old[n] for n in NAMES}
    monkeypatch.undo()
    write_task("countdown3", folder, n_train=20, n_eval=5, seed=1)
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)
