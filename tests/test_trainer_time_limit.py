"""``--time-limit`` from a scheduler's side: a run its limit stopped short of its steps exits
``TIME_LIMIT_EXIT`` (75, not 0 as a finished run), its checkpoint says why, and the same
plain ``--resume`` continues it for another limit's worth of training; a requeued command
repeating its ``--time-limit`` goes on until done; under torchrun, even of one process, the
stop exits 0; and a stopped and resumed run trains exactly the uninterrupted run's weights."""

from __future__ import annotations

import json
import time
import types
from pathlib import Path

import pytest
import torch

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


@pytest.mark.parametrize("command", ["train", "distill"])
def test_the_help_lists_the_exit_codes(command: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 the run finished its steps; 75 its --time-limit stopped it" in text


# -- a scheduler's requeues, torchrun, resume = uninterrupted (review rb28) --------------


def _args(dataset: Path, run: Path, steps: int) -> list[str]:
    return ["train", "--data", str(dataset), "--out", str(run), "--preset", "tiny",
            "--seq-len", "16", "--batch-size", "2", "--steps", str(steps), "--eval-every", "0",
            "--eval-batches", "1", "--save-every", "0", "--no-progress"]


def test_a_requeued_command_repeating_its_time_limit_goes_on_until_done(
        dataset: Path, tmp_path: Path, clock: None, capsys: pytest.CaptureFixture[str]):
    """The scheduler's job repeats `--time-limit 1` on each `--resume`: each session renews the
    limit (it was refused from the second resume on: the first renewal saved the total in the
    plan, so the repeated flag read as a change, a total already used)."""
    run = tmp_path / "run"
    assert main([*_args(dataset, run, 40), "--time-limit", "1"]) == TIME_LIMIT_EXIT
    steps = [_meta(run)["step"]]
    again = ["train", "--resume", "--out", str(run), "--no-progress", "--time-limit", "1"]
    for _ in range(3):
        capsys.readouterr()
        assert main(again) == TIME_LIMIT_EXIT
        err = capsys.readouterr().err
        assert "its time limit stopped it: this session trains up to 1 min more" in err
        assert "continue it (another 1 min)" in err
        steps.append(_meta(run)["step"])
    assert steps == sorted(set(steps)) and steps[-1] < 40  # each session trained on
    assert json.loads((run / "train_config.json").read_text())["time_limit"] == 1
    # a longer --time-limit is still the total: all the steps, exit 0
    assert main([*again[:-1], "100"]) == 0
    assert _meta(run)["step"] == 40 and "stopped" not in _meta(run)


def test_a_signal_in_a_renewed_session_resumes_to_the_renewed_limit(
        dataset: Path, tmp_path: Path, clock: None, capsys: pytest.CaptureFixture[str]):
    """The renewed total is not in the plan: a plain resume after a stop by a signal (no time
    limit reached) goes on to the limit the interrupted session had, not the plan's."""
    from unmask.train_guards import saved_progress

    run = tmp_path / "run"
    assert main([*_args(dataset, run, 40), "--time-limit", "1"]) == TIME_LIMIT_EXIT
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == TIME_LIMIT_EXIT
    renewed = _meta(run)["train_config"]["time_limit"]
    meta = _meta(run)  # as a SIGTERM a few steps before the limit would have left it
    meta.pop("stopped")
    meta["train_seconds"] = renewed * 60 - 30.0
    (run / "checkpoint" / "trainer.json").write_text(json.dumps(meta))
    assert saved_progress(run / "checkpoint").time_limit == renewed
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == TIME_LIMIT_EXIT
    err = capsys.readouterr().err
    assert f"of {renewed:g} min used)" in err and "this session trains up to" not in err
    assert f"stopped by its time limit of {renewed:g} min" in err


@pytest.mark.parametrize("env", [{"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "1"},
                                 {"WORLD_SIZE": "2"}])
def test_under_torchrun_even_of_one_process_a_time_limit_stop_exits_0(
        dataset: Path, tmp_path: Path, clock: None, env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`torchrun --nproc-per-node 1` sets WORLD_SIZE=1 and TORCHELASTIC_RUN_ID: exit 75 there
    made torchrun report a failed worker (ChildFailedError) and exit 1."""
    from unmask.train_guards import time_limit_exit

    run = tmp_path / "run"
    assert main([*_args(dataset, run, 40), "--time-limit", "1"]) == TIME_LIMIT_EXIT
    capsys.readouterr()
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert time_limit_exit(run, "train", say=True) == 0
    assert "stopped by its time limit of 1 min" in capsys.readouterr().err


def test_a_run_its_time_limit_stopped_and_resumed_equals_the_uninterrupted_one(
        dataset: Path, tmp_path: Path, clock: None, capsys: pytest.CaptureFixture[str]):
    """Like a signal's stop (test_resume_equals_uninterrupted), a time limit's stop and a
    resume change no weight, no optimizer moment, no EMA: the same state dicts, exactly."""
    from safetensors.torch import load_file

    steps = 12
    full, part = tmp_path / "full", tmp_path / "part"
    assert main([*_args(dataset, full, steps), "--ema", "0.9"]) == 0
    assert main([*_args(dataset, part, steps), "--ema", "0.9", "--time-limit", "1"]) == 75
    stopped_at = _meta(part)["step"]
    assert 0 < stopped_at < steps
    assert main(["train", "--resume", "--out", str(part), "--no-progress",
                 "--time-limit", "0"]) == 0
    assert _meta(part)["step"] == steps
    for name in ("model.safetensors", "trainer.safetensors"):  # EMA; raw weights, moments
        a = load_file(str(full / "checkpoint" / name))
        b = load_file(str(part / "checkpoint" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert any(k.startswith("model.") for k in a) and any(k.startswith("optim.") for k in a)
