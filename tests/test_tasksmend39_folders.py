"""One rule for "a folder can be made at this path", told before the work: the nearest of the
path and the folders above it that is there must be a folder (``files.not_a_folder``), used by
``run_checks.check_out`` (train/distill ``--out``), ``data``'s ``-o`` (prepare), ``lm_eval.
check_output_path``, ``tasks.write_task`` and ``files.check_creatable``. Each had its own walk
over ``path.parents`` with ``Path.exists``, which follows a symbolic link and says no for a link
to nowhere or into a loop: the walk went on to the folder above, passed the path, and ``mkdir``
failed after the work (``prepare -o LOOP`` with a ``RuntimeError`` traceback)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from unmask import files
from unmask.cli import main
from unmask.errors import UserError
from unmask.run_checks import check_out


@pytest.fixture
def place(tmp_path, monkeypatch) -> Path:
    """A folder holding a file, a link to it, a link to nowhere, two links in a loop, a fifo,
    a folder with a file in it and a link to that folder; the working folder."""
    (tmp_path / "afile").write_text("mine\n")
    (tmp_path / "linkfile").symlink_to(tmp_path / "afile")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    (tmp_path / "loopa").symlink_to("loopb")
    (tmp_path / "loopb").symlink_to("loopa")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "realdir").mkdir()
    (tmp_path / "realdir" / "kept.txt").write_text("kept\n")
    (tmp_path / "linkdir").symlink_to(tmp_path / "realdir")
    monkeypatch.chdir(tmp_path)
    return tmp_path


BLOCKED = [("afile", "afile"), ("afile/x/y", "afile"), ("linkfile/x", "linkfile"),
           ("dangling", "dangling"), ("dangling/x", "dangling"), ("loopa", "loopa"),
           ("loopa/x", "loopa"), ("fifo/x", "fifo"), ("afile/../ok", "afile")]  # fmt: skip
FINE = [("realdir", "realdir"), ("linkdir", "linkdir"), ("linkdir/new/deeper", "linkdir"),
        ("new/deeper", "."), ("realdir/../new", "realdir/.."), ("new/../x", ".")]  # fmt: skip


@pytest.mark.parametrize(("path", "blocker"), BLOCKED)
def test_the_nearest_thing_there_that_is_no_folder_is_named(place, path, blocker):
    assert files.not_a_folder(Path(path)) == Path(blocker)
    assert files.nearest_present(Path(path)) == Path(blocker)


@pytest.mark.parametrize(("path", "nearest"), FINE)
def test_a_folder_a_link_to_one_and_new_folders_are_not_refused(place, path, nearest):
    """The valid inputs: an existing folder, a link to one, new folders under either."""
    assert files.not_a_folder(Path(path)) is None
    assert files.nearest_present(Path(path)) == Path(nearest)
    Path(path).mkdir(parents=True, exist_ok=True)  # what the callers do after the check


@pytest.mark.parametrize("path", ["dangling", "dangling/x", "loopa", "loopa/x", "fifo/x"])
def test_train_out_under_a_link_to_nowhere_is_refused_before_the_run(place, path):
    with pytest.raises(UserError, match=f"^--out {path}: "):
        check_out(path)
    with pytest.raises(UserError, match="cannot be written"):
        files.check_creatable(Path(path) / "model.safetensors")


@pytest.mark.parametrize("path", [p for p, _ in FINE])
def test_train_out_that_can_be_made_is_accepted(place, path):
    check_out(path)
    files.check_creatable(Path(path) / "model.safetensors")
    check_out(path, make=True)
    assert Path(path).is_dir()


def test_train_out_that_is_a_file_keeps_its_message(place):
    with pytest.raises(UserError, match="--out afile: a file is there"):
        check_out("afile")
    with pytest.raises(UserError, match=r"--out dangling: a link to no folder is there"):
        check_out("dangling")


@pytest.mark.parametrize(("path", "want"), [
    ("loopa", "loopa: a symbolic link in a loop; give a folder, or a link to one"),
    ("loopa/x", "loopa/x: loopa is not a folder"),  # both were RuntimeError tracebacks
    ("dangling/x", "dangling/x: dangling is not a folder"),  # "File exists", after the sniff
    ("afile/x", "afile/x: afile is a file, not a folder"),
    ("dangling", "dangling: a symbolic link to a missing path"),
])  # fmt: skip
def test_prepare_out_under_a_link_to_nowhere_is_one_line(place, capsys, path, want):
    (place / "a.txt").write_text("some text\n")
    assert main(["prepare", "a.txt", "-o", path, "--tokenizer", "byte"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and want in err and "Traceback" not in err
    assert sorted(p.name for p in place.iterdir()) == [
        "a.txt", "afile", "dangling", "fifo", "linkdir", "linkfile", "loopa", "loopb", "realdir"]


def test_prepare_into_a_link_to_a_folder_and_below_one_is_accepted(place):
    from unmask import data

    (place / "a.txt").write_text("some text\n" * 20)
    for out in ("linkdir/new", "new/data"):
        data.prepare([Path("a.txt")], Path(out), tokenizer="byte", val_fraction=0,
                     progress=False)
        assert (Path(out) / "index.json").is_file()


@pytest.mark.parametrize(("path", "want"), [
    ("dangling/x", "lm-eval could not write its results in dangling/x (dangling is not a "
                   "folder)"),  # said "dangling/x is a file"
    ("loopa/x", "(loopa is not a folder)"),
    ("dangling", "dangling is a link to no folder, not a folder lm-eval can write"),
    ("afile", "afile is a file, not a folder lm-eval can write its results in"),
])  # fmt: skip
def test_lm_eval_output_path_names_what_is_in_the_way(place, path, want):
    lm_eval = pytest.importorskip("unmask.lm_eval")
    with pytest.raises(UserError, match=f"^--output-path {path}: ") as e:
        lm_eval.check_output_path(path)
    assert want in str(e.value)


@pytest.mark.parametrize("path", ["realdir", "linkdir", "linkdir/new", "new/r.json"])
def test_lm_eval_output_path_that_can_be_made_is_accepted(place, path):
    lm_eval = pytest.importorskip("unmask.lm_eval")
    folder = lm_eval.check_output_path(path)
    assert folder.is_dir()


def test_no_permission_to_look_is_raised_not_taken_for_absent(place, monkeypatch):
    """A folder above that may not be searched (EACCES) is not "nothing there": taken so,
    the check would pass and ``mkdir`` fail after the work. The ``OSError`` reaches the
    commands' handler (one line), as ``Path.exists``'s did."""
    import errno

    lstat = os.lstat

    def denied(path, *args, **kwargs):
        if Path(path) == Path("realdir/locked/x"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return lstat(path, *args, **kwargs)

    monkeypatch.setattr(files.os, "lstat", denied)
    with pytest.raises(PermissionError):
        files.not_a_folder(Path("realdir/locked/x"))
