"""``python -m unmask.tasks`` / ``write_task`` with ``--out`` a file, or under one: one line,
exit 2, before the items are made. It was found after them (``sudoku9``'s default size takes
minutes), as "File exists: PATH"."""

from __future__ import annotations

import dataclasses

import pytest

from unmask import tasks
from unmask.errors import UserError
from unmask.tasks.__main__ import main


@pytest.fixture
def unmade(monkeypatch):
    """``sudoku4``'s generator replaced by one that fails the test if it runs."""

    def make(*args, **kwargs):
        pytest.fail("the items were made before the folder was checked")

    spec = dataclasses.replace(tasks.TASKS["sudoku4"], make=make)
    monkeypatch.setitem(tasks.TASKS, "sudoku4", spec)


@pytest.mark.parametrize("under", ["", "sub"])
def test_a_file_where_the_folder_goes_is_refused_before_the_items_are_made(
        tmp_path, capsys, unmade, under):
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    out = file / under if under else file
    with pytest.raises(UserError, match="not a folder the task's files can be written in"):
        tasks.write_task("sudoku4", out, n_train=2, n_eval=1)
    assert main(["sudoku4", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and str(out) in err and "File exists" not in err
    assert file.read_text() == "mine\n"


def test_a_new_folder_under_new_folders_is_still_made(tmp_path):
    out = tmp_path / "a" / "b"
    record = tasks.write_task("countdown3", out, n_train=2, n_eval=1)
    assert record["eval_items"] == 1 and (out / "eval.jsonl").is_file()


@pytest.mark.parametrize(("link", "under"), [
    ("gone", ""), ("gone", "sub"),  # a link to nowhere: "File exists", after the items
    ("loop", ""), ("loop", "sub"),  # a link into a loop: "Too many levels of symbolic links"
])  # fmt: skip
def test_a_link_to_no_folder_is_refused_before_the_items_are_made(
        tmp_path, capsys, unmade, link, under):
    out = tmp_path / "out"
    if link == "gone":
        out.symlink_to(tmp_path / "gone")
    else:
        out.symlink_to(tmp_path / "other")
        (tmp_path / "other").symlink_to(out)
    target = out / under if under else out
    want = "not a folder the task's files can be written in"
    with pytest.raises(UserError, match=want):
        tasks.write_task("sudoku4", target, n_train=2, n_eval=1)
    assert main(["sudoku4", "--out", str(target), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and want in err
    assert not under or f"({out} is not a folder)" in err


@pytest.mark.parametrize("where", ["existing", "link", "link/new"])
def test_an_existing_folder_or_a_link_to_one_is_still_written_in(tmp_path, where):
    """The valid inputs the check must never refuse: a folder with files in it, a symbolic
    link to one, and a new folder under such a link."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "notes.txt").write_text("mine\n")
    (tmp_path / "link").symlink_to(real)
    out = real if where == "existing" else tmp_path / where
    record = tasks.write_task("countdown3", out, n_train=2, n_eval=1)
    assert record["eval_items"] == 1 and (out / "eval.jsonl").is_file()
    assert (real / "notes.txt").read_text() == "mine\n"
    assert main(["countdown3", "--out", str(out), "--train", "2", "--eval", "1",
                 "--no-progress"]) == 0
