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
