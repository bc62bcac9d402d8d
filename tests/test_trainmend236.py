"""Session 36 review fixes (trainmend2): ``run_above`` on relative paths and non-run folders,
the FSDP advice, the resume line's device clause, and train's memory-check wiring."""

from __future__ import annotations

from pathlib import Path

import pytest

from unmask.config import TrainConfig, save_json
from unmask.errors import UserError
from unmask.train_guards import run_above


def _run(root: Path) -> Path:
    (root / "best" / "checkpoint").mkdir(parents=True)
    (root / "checkpoint").mkdir()
    save_json(TrainConfig(), root / "train_config.json")
    return root


def test_run_above_a_relative_path_names_the_run_from_the_working_directory(
        tmp_path, monkeypatch):
    """From inside the run, ``checkpoint`` (cwd RUN/best) or ``.`` (cwd RUN/checkpoint) was
    said to be inside the run ``.``: following the hint failed again, a loop."""
    run = _run(tmp_path / "run")
    monkeypatch.chdir(run / "best")
    assert run_above(Path("checkpoint")) == Path("..")
    monkeypatch.chdir(run / "checkpoint")
    assert run_above(Path(".")) == Path("..")
    monkeypatch.chdir(tmp_path)
    assert run_above(Path("run/best/checkpoint")) == Path("run")
    assert run_above(Path("run/best")) == Path("run")
    assert run_above(run / "checkpoint") == run


def test_load_train_config_inside_the_run_names_the_run_typed_from_here(tmp_path, monkeypatch):
    from unmask.train import load_train_config

    run = _run(tmp_path / "run")
    monkeypatch.chdir(run / "checkpoint")
    with pytest.raises(UserError) as e:
        load_train_config(".")
    assert "it is inside the run ..; pass ../train_config.json" in str(e.value)
    assert "--resume --out ..`" in str(e.value)


def test_run_above_only_for_a_runs_checkpoint_and_best_folders(tmp_path):
    """A folder of any name one or two levels below any train_config.json (a settings folder
    kept for --config, no checkpoint/) was called a run: following the hint failed again."""
    proj = tmp_path / "proj"
    (proj / "runs" / "x" / "checkpoint").mkdir(parents=True)
    (proj / "exports" / "best").mkdir(parents=True)
    save_json(TrainConfig(), proj / "train_config.json")
    assert run_above(proj / "runs" / "x") is None
    assert run_above(proj / "exports" / "best") is None
    assert run_above(proj / "runs") is None
    run = _run(tmp_path / "run")
    (run / "logs" / "a").mkdir(parents=True)
    assert run_above(run / "logs") is None  # not a folder --model takes
    assert run_above(run / "logs" / "a") is None
    (run / "checkpoint").rmdir()  # a settings folder: no checkpoint
    assert run_above(run / "best") is None
