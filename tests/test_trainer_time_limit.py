"""``--time-limit`` from a scheduler's side: a run its limit stopped short of its steps exits
``TIME_LIMIT_EXIT`` (75, not 0 as a finished run), its checkpoint says why, and the same
plain ``--resume`` continues it for another limit's worth of training."""

from __future__ import annotations

import json
import time
import types
from pathlib import Path

import pytest

import unmask.train as train_mod
from tests.corpus_helpers import word_corpus
from unmask.cli import main

TIME_LIMIT_EXIT = 75  # unmask.train_guards.TIME_LIMIT_EXIT, as documented

WORDS = "in the beginning god created the heaven and the earth".split()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=300, seed=0)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reading of the training loop's clock is 7 s after the one before: a 1-min limit
    is reached after a few steps on any machine, the same steps every time."""
    now = [0.0]

    def perf_counter() -> float:
        now[0] += 7.0
        return now[0]

    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(perf_counter=perf_counter,
                                                                 time=time.time))


def _meta(run: Path) -> dict:
    return json.loads((run / "checkpoint" / "trainer.json").read_text())


def test_a_run_its_time_limit_stopped_exits_75_and_a_plain_resume_continues_it(
        dataset: Path, tmp_path: Path, clock: None, capsys: pytest.CaptureFixture[str]):
    run = tmp_path / "run"
    args = ["train", "--data", str(dataset), "--out", str(run), "--preset", "tiny",
            "--seq-len", "16", "--batch-size", "2", "--steps", "40", "--eval-every", "0",
            "--eval-batches", "1", "--save-every", "0", "--no-progress", "--time-limit", "1"]
    assert main(args) == TIME_LIMIT_EXIT
    out, err = capsys.readouterr()
    first = _meta(run)
    assert first["stopped"] == "time_limit" and 0 < first["step"] < 40
    assert out == f"checkpoint: {run}/checkpoint\n"  # the checkpoint is whole and usable
    assert (f"unmask train: stopped by its time limit of 1 min at step {first['step']} of 40, "
            f"checkpoint saved in {run}/checkpoint; continue it (another 1 min) with: unmask "
            f"train --resume --out {run}\n") in err
    # the same plain resume a requeued job runs: another minute (it was refused before)
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == TIME_LIMIT_EXIT
    err = capsys.readouterr().err
    assert "its time limit stopped it: this session trains up to 1 min more" in err
    second = _meta(run)
    assert second["stopped"] == "time_limit" and first["step"] < second["step"] < 40
    total = second["train_config"]["time_limit"]  # the renewed limit: in trainer.json only
    assert total == pytest.approx(first["train_seconds"] / 60 + 1, abs=1e-3)
    assert f"stopped by its time limit of {total:g} min" in err
    plan = json.loads((run / "train_config.json").read_text())
    assert plan["time_limit"] == 1  # the plan keeps the limit as given
    assert "continue it (another 1 min)" in err  # each session as long as the first
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == TIME_LIMIT_EXIT
    assert "this session trains up to 1 min more" in capsys.readouterr().err
    assert _meta(run)["train_config"]["time_limit"] == pytest.approx(
        second["train_seconds"] / 60 + 1, abs=1e-3)
    second = _meta(run)
    # a resume that reaches the steps ends as a finished run: exit 0, no marker
    end = second["step"] + 1
    assert main(["train", "--resume", "--out", str(run), "--no-progress", "--steps", str(end),
                 "--time-limit", "0"]) == 0
    assert "stopped" not in _meta(run) and _meta(run)["step"] == end


def test_under_torchrun_a_time_limit_stop_exits_0(dataset: Path, tmp_path: Path, clock: None,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]):
    """torchrun reports any non-zero exit of a process as a failed worker (and exits 1 with
    a report): there every process exits 0; the line and the marker still say why."""
    from unmask.train_guards import time_limit_exit

    run = tmp_path / "run"
    args = ["train", "--data", str(dataset), "--out", str(run), "--preset", "tiny",
            "--seq-len", "16", "--batch-size", "2", "--steps", "40", "--eval-every", "0",
            "--eval-batches", "1", "--save-every", "0", "--no-progress", "--time-limit", "1"]
    main(args)
    capsys.readouterr()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert time_limit_exit(run, "train", say=True) == 0
    assert "stopped by its time limit of 1 min" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "distill"])
def test_the_help_lists_the_exit_codes(command: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 the run finished its steps; 75 its --time-limit stopped it" in text
