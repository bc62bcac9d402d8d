"""``python -m unmask.tasks``: its counts and folder are checked as the CLI checks flags, and
``task.json`` holds what regenerates the files."""

import json

import pytest

from unmask.tasks.__main__ import main as tasks_main


def _refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        tasks_main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_an_empty_out_is_refused_not_the_working_folder(tmp_path, monkeypatch, capsys):
    """``--out ''`` was ``Path('')``, the working folder: train.txt, eval.jsonl, sft.jsonl and
    task.json were written wherever the command ran, over any files of those names."""
    monkeypatch.chdir(tmp_path)
    last = _refused(["reversal", "--out", "", "--train", "1", "--eval", "1"], capsys)
    assert last == "python -m unmask.tasks: error: argument --out: expected a folder, got an " \
        "empty name"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "flag, value, least", [("--train", "-1", 0), ("--eval", "0", 1), ("--eval", "-2", 1)]
)
def test_counts_are_checked_as_flags(tmp_path, capsys, flag, value, least):
    """They were checked by ``write_task`` and said as "need n_train >= 0 and n_eval >= 1",
    names the command line does not have."""
    last = _refused(["sudoku4", "--out", str(tmp_path / "t"), flag, value], capsys)
    assert last == (f"python -m unmask.tasks: error: argument {flag}: must be at least "
                    f"{least}, got {value}")  # fmt: skip
    assert not (tmp_path / "t").exists()


def test_task_json_holds_the_options_that_write_the_same_files(tmp_path, capsys):
    """task.json recorded the seed but not ``--train`` / ``--eval``: what a reader needs to
    regenerate a task folder was left to be worked back from the line counts."""
    first = tmp_path / "a"
    assert tasks_main(["countdown3", "--out", str(first), "--train", "7", "--eval", "3",
                       "--seed", "5"]) == 0  # fmt: skip
    record = json.loads((first / "task.json").read_text())
    assert (record["n_train"], record["n_eval"], record["seed"]) == (7, 3, 5)
    again = tmp_path / "b"
    argv = [record["task"], "--out", str(again), "--train", str(record["n_train"]),
            "--eval", str(record["n_eval"]), "--seed", str(record["seed"])]  # fmt: skip
    assert tasks_main(argv) == 0
    capsys.readouterr()
    for name in ("train.txt", "eval.jsonl", "sft.jsonl", "task.json"):
        assert (first / name).read_bytes() == (again / name).read_bytes(), name


def test_a_negative_seed_is_refused_not_its_opposite(tmp_path, capsys):
    """``random.Random(-3)`` is ``random.Random(3)``: ``--seed -3`` wrote the files of seed 3."""
    from unmask.errors import UserError
    from unmask.tasks import write_task

    last = _refused(["countdown3", "--out", str(tmp_path / "a"), "--seed=-3"], capsys)
    assert last.endswith("argument --seed: must be at least 0, got -3")
    with pytest.raises(UserError, match="need seed >= 0, got -3"):
        write_task("countdown3", tmp_path / "b", n_train=1, n_eval=1, seed=-3)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_help_names_every_file_written(capsys):
    with pytest.raises(SystemExit):
        tasks_main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in ("train.txt", "sft.jsonl", "eval.jsonl", "task.json"):
        assert f"DIR/{name}" in out
