"""A resume after Ctrl-C cut a periodic validation short (``validation_cut``), in every order
a user meets it: stopped again before it saves, stopped by its time limit at once, resumed
with another plan, printed without a terminal; and ``--eval-every`` refused, from Python as
from the CLI, for data with no validation split."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from corpus_helpers import word_corpus
from safetensors.torch import load_file
from test_sft import PAIRS, write_jsonl
from test_train_run import cfg as run_cfg

import unmask.train as train_mod
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import TrainConfig, model_preset
from unmask.data import TokenDataset, prepare
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer
from unmask.train import load_train_config, train
from unmask.train_guards import TIME_LIMIT_EXIT, TrainingStopped

WORDS = "the lord said unto moses go down and speak to the people of israel".split()
PLAN = dict(steps=4, eval_every=2, eval_batches=0, save_every=0, keep_best=True, ema=0.9,
            grad_accum=2, threads=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=300, seed=0)


@pytest.fixture(scope="module")
def full(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every stopped and resumed one must equal."""
    return train(cfg(dataset, tmp_path_factory.mktemp("full") / "run"), progress=False)


def cfg(dataset: Path, out: Path, **kw: object) -> TrainConfig:
    return run_cfg(dataset, out, **{**PLAN, **kw})


def lines(run: Path) -> list[dict]:
    drop = ("tokens_per_s", "elapsed_s", "peak_mem_gib")
    return [{k: v for k, v in json.loads(x).items() if k not in drop}
            for x in (run / "metrics.jsonl").read_text().splitlines()]


def trainer(run: Path) -> dict:
    return json.loads((run / "checkpoint" / "trainer.json").read_text())


def same_weights(a: Path, b: Path, name: str) -> bool:
    x, y = load_file(str(a / name)), load_file(str(b / name))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def interrupted(config: TrainConfig, monkeypatch: pytest.MonkeyPatch, validation: int) -> Path:
    """Run ``config`` and send SIGINT while its ``validation``-th validation (1: the first)
    reads its second batch; the run must stop."""
    orig = TokenDataset.windows
    passes = []

    def windows(self, seq_len, **k):
        if self.split == "val":
            passes.append(True)
        for i, w in enumerate(orig(self, seq_len, **k)):
            if self.split == "val" and len(passes) == validation and i == 1:
                os.kill(os.getpid(), signal.SIGINT)
            yield w

    with monkeypatch.context() as m:
        m.setattr(TokenDataset, "windows", windows)
        with pytest.raises(TrainingStopped):
            train(config, progress=False)
    return Path(config.out)


def cut(config: TrainConfig, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run ``config`` and send SIGINT while its first validation (step 2) reads its batches."""
    run = interrupted(config, monkeypatch, 1)
    assert trainer(run)["step"] == 2 and trainer(run)["validation_cut"] == 2
    return run


class Killed(BaseException):
    """A hard kill (SIGKILL, out of memory) of the process: nothing runs after it."""


def stopped_at(config: TrainConfig, at: int, monkeypatch: pytest.MonkeyPatch,
               stop: BaseException) -> None:
    """Resume ``config``; ``stop`` (raised, or SIGINT sent) as step ``at`` starts."""
    orig = train_mod.lr_at

    def lr(step: int, c: TrainConfig) -> float:
        if step == at:
            if isinstance(stop, Killed):
                raise stop
            os.kill(os.getpid(), signal.SIGINT)
        return orig(step, c)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "lr_at", lr)
        with pytest.raises((TrainingStopped, Killed)):
            train(config, resume=True, progress=False)


@pytest.mark.parametrize("how", ["ctrl-c in the first step", "hard kill"])
def test_a_resume_stopped_before_it_saves_again_logs_the_cut_validation_once(
        dataset, full, tmp_path, monkeypatch, how):
    """The resume validated the cut step (its val and ``best`` lines logged) but the
    checkpoint kept saying ``validation_cut`` until the next save: a resume stopped before
    it (Ctrl-C in a first step dropped between micro-batches, a hard kill later) left the
    next resume to validate that step again, and metrics.jsonl held both lines twice."""
    config = cfg(dataset, tmp_path / "run")
    run = cut(config, monkeypatch)
    if how == "hard kill":
        stopped_at(config, 3, monkeypatch, Killed())
    else:
        stopped_at(config, 2, monkeypatch, KeyboardInterrupt())
        assert trainer(run)["step"] == 2 and "validation_cut" not in trainer(run)
    train(config, resume=True, progress=False)
    assert lines(run) == lines(full)
    for name in ("checkpoint/model.safetensors", "best/checkpoint/model.safetensors"):
        assert same_weights(full, run, name), name


def test_a_time_limit_right_after_the_cut_validation_stops_the_run_as_a_time_limit(
        dataset, full, tmp_path, monkeypatch, capsys):
    """A time limit reached once the resume had validated the cut step ended the run as
    finished: exit 0, nothing saved (no ``stopped`` record, ``validation_cut`` kept). It
    stops as any resume stopped by its time limit does: exit 75, ``stopped`` saved."""
    run = cut(cfg(dataset, tmp_path / "run"), monkeypatch)
    limit = (trainer(run)["train_seconds"] + 0.001) / 60  # reached during the validation:
    orig = train_mod.evaluate_loss

    def slow(*a, **k):  # (which takes longer than that)
        time.sleep(0.01)
        return orig(*a, **k)

    monkeypatch.setattr(train_mod, "evaluate_loss", slow)
    assert main(["train", "--resume", "--out", str(run), "--time-limit", repr(limit),
                 "--no-progress"]) == TIME_LIMIT_EXIT
    monkeypatch.setattr(train_mod, "evaluate_loss", orig)
    assert "stopped by its time limit" in capsys.readouterr().err
    meta = trainer(run)
    assert meta["step"] == 2 and meta["stopped"] == "time_limit"
    assert "validation_cut" not in meta
    assert main(["train", "--resume", "--out", str(run), "--time-limit", "0",
                 "--no-progress"]) == 0
    assert lines(run) == lines(full)


@pytest.mark.parametrize("every, validated", [(0, [4]), (3, [3, 4])])
def test_the_resume_validates_the_cut_step_only_where_its_plan_does(
        dataset, tmp_path, monkeypatch, every, validated):
    """``--resume --eval-every 0`` (say, after Ctrl-C because a validation took too long) or
    another cadence still paid for the cut step's whole validation first."""
    config = cfg(dataset, tmp_path / "run")
    run = cut(config, monkeypatch)
    train(replace(config, eval_every=every), resume=True, progress=False)
    assert [r["step"] for r in lines(run) if "val_loss" in r] == validated
    assert "validation_cut" not in trainer(run)


def test_the_resume_prints_the_cut_validation_as_the_uninterrupted_run_did(
        dataset, tmp_path, monkeypatch, capsys):
    """Without a terminal (plain progress lines), the uninterrupted run prints step 2's
    validation; the stopped run and its resume printed none (the log had it)."""
    config = cfg(dataset, tmp_path / "run")
    cut(config, monkeypatch)
    capsys.readouterr()
    train(config, resume=True)
    err = capsys.readouterr().err
    assert re.search(r"^step 2/4 val_bpb \d", err, re.M), err


def test_eval_every_without_a_validation_split_is_refused_from_python_too(tmp_path):
    """``--eval-every N`` was refused by the CLI only, and only for SFT pairs and trajectories:
    a corpus prepared with ``--val-fraction 0`` took it (new run and resume) and validated
    nothing, and ``train()`` took it for any data. One line now, as ``--keep-best``; the
    default cadence (every run's) and 0 stay accepted."""
    (tmp_path / "a.txt").write_text("the people of israel said unto moses.\n" * 200)
    data = tmp_path / "d"
    prepare([tmp_path / "a.txt"], data, tokenizer="byte", val_fraction=0, progress=False)
    why = f"{data} has no validation split (prepared with --val-fraction 0)"
    with pytest.raises(UserError) as e:
        train(run_cfg(data, tmp_path / "new", steps=2, eval_every=1), progress=False)
    assert str(e.value) == f"--eval-every 1 validates a run; {why}; give --eval-every 0"
    assert not (tmp_path / "new").exists()
    run = train(run_cfg(data, tmp_path / "run", steps=2, eval_every=TrainConfig.eval_every),
                progress=False)
    plan = (run / "train_config.json").read_text()
    with pytest.raises(UserError, match="^--eval-every 2 validates a run; .*val-fraction 0"):
        train(replace(load_train_config(run / "train_config.json"), steps=3, eval_every=2),
              resume=True, progress=False)
    assert (run / "train_config.json").read_text() == plan

    tok = byte_tokenizer()
    torch.manual_seed(0)
    base = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids()))
    save_checkpoint(tmp_path / "base", model=base, tokenizer=tok)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    sft = TrainConfig(objective="sft", data=str(pairs), out=str(tmp_path / "sft"),
                      init=str(tmp_path / "base"), seq_len=64, batch_size=2, steps=1,
                      eval_every=0, threads=1)
    with pytest.raises(UserError, match="^--eval-every 5 validates a run; objective 'sft'"):
        train(replace(sft, eval_every=5), progress=False)
    train(sft, progress=False)
    plan = (tmp_path / "sft" / "train_config.json").read_text()
    with pytest.raises(UserError, match="^--eval-every 5 validates a run; objective 'sft'"):
        train(replace(sft, steps=2, eval_every=5), resume=True, progress=False)
    assert (tmp_path / "sft" / "train_config.json").read_text() == plan


class Clock:
    """``time`` for ``unmask.train`` whose ``perf_counter`` runs ``extra`` seconds ahead
    (``tick`` more at each call): a time limit reached where a test says, not by chance."""

    def __init__(self, tick: float = 0.0) -> None:
        self.extra, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.extra += self.tick
        return time.perf_counter() + self.extra


def test_a_time_limit_reached_during_the_validation_of_a_saved_step_exits_75(
        dataset, tmp_path, monkeypatch, capsys):
    """``--eval-every 250 --save-every 250`` (as the docs show) with a time limit reached
    while step 250 validated: the checkpoint of that step was saved before, without
    ``stopped``, and not again, so the run exited 0 as if finished (a requeue loop stopped)."""
    clock = Clock()
    orig = train_mod.evaluate_loss

    def long(*a, **k):  # each validation takes 100 s
        clock.extra += 100
        return orig(*a, **k)

    monkeypatch.setattr(train_mod, "time", clock)
    monkeypatch.setattr(train_mod, "evaluate_loss", long)
    run = tmp_path / "run"
    assert main(["train", "--data", str(dataset), "--out", str(run), "--preset", "tiny",
                 "--seq-len", "32", "--batch-size", "4", "--steps", "6", "--eval-every", "2",
                 "--save-every", "2", "--eval-batches", "1", "--time-limit", "1",
                 "--threads", "1", "--no-progress"]) == TIME_LIMIT_EXIT
    assert trainer(run)["step"] == 2 and trainer(run)["stopped"] == "time_limit"
    assert "stopped by its time limit of 1 min at step 2 of 6" in capsys.readouterr().err


def test_a_time_limit_at_once_does_not_validate_a_validated_step_again(
        dataset, tmp_path, monkeypatch):
    """A resume of a checkpoint whose step was validated (a periodic save, then a hard kill)
    stopped by its time limit before its first step validated that step again: the log held
    its val line twice. It stops as before (exit 75, ``stopped`` saved), validating nothing."""
    plan = dict(save_every=2, grad_accum=1, ema=0.0)
    full = train(cfg(dataset, tmp_path / "full", **plan), progress=False)
    config = cfg(dataset, tmp_path / "run", **plan)
    orig = train_mod.lr_at

    def lr(step: int, c: TrainConfig) -> float:
        if step == 3:
            raise Killed
        return orig(step, c)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "lr_at", lr)
        with pytest.raises(Killed):
            train(config, progress=False)
    run = Path(config.out)
    assert trainer(run)["step"] == 2
    with monkeypatch.context() as m:
        m.setattr(train_mod, "time", Clock(tick=100))
        limit = (trainer(run)["train_seconds"] + 50) / 60
        train(replace(config, time_limit=limit), resume=True, progress=False)
    assert trainer(run)["step"] == 2 and trainer(run)["stopped"] == "time_limit"
    train(replace(config, time_limit=0), resume=True, progress=False)
    assert lines(run) == lines(full)


def test_a_time_limit_at_once_on_extending_a_finished_run_does_not_validate_its_end_again(
        dataset, tmp_path):
    """``--resume --steps MORE`` of a finished run (its last step validated by the final
    validation) stopped by its time limit at once validated that step a second time."""
    config = cfg(dataset, tmp_path / "run", grad_accum=1, ema=0.0, keep_best=False)
    run = train(config, progress=False)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(train_mod, "time", Clock(tick=100))
        limit = (trainer(run)["train_seconds"] + 50) / 60
        train(replace(config, steps=6, time_limit=limit), resume=True, progress=False)
    assert trainer(run)["step"] == 4 and trainer(run)["stopped"] == "time_limit"
    assert [r["step"] for r in lines(run) if "val_loss" in r] == [2, 4]


@pytest.mark.parametrize(("first", "then", "validated"), [
    (2, 3, [2]),  # step 2 validated under the saved plan: not again under the new one
    (3, 3, [2, 3]),  # step 3 saved, not validated: a time-limit stop validates it
])
def test_a_time_limit_at_once_after_a_changed_plan_died_judges_by_the_saved_plan(
        dataset, tmp_path, monkeypatch, first, then, validated):
    """A resume with another --eval-every rewrites train_config.json at its start; killed
    before it saved, the next resume read that plan, not the checkpoint's, to tell whether
    the checkpoint's step had been validated: stopped by its time limit at once, it validated
    step 2 twice, or skipped the stop's own validation of step 3 (review rl30)."""
    config = cfg(dataset, tmp_path / "run", save_every=first, grad_accum=1, ema=0.0)
    orig = train_mod.lr_at

    def killed_at(at: int):
        def lr(step: int, c: TrainConfig) -> float:
            if step == at:
                raise Killed
            return orig(step, c)
        return lr

    with monkeypatch.context() as m:  # checkpoint at step `first`, then a hard kill
        m.setattr(train_mod, "lr_at", killed_at(first))
        with pytest.raises(Killed):
            train(config, progress=False)
    run = Path(config.out)
    assert trainer(run)["step"] == first
    changed = replace(config, eval_every=then)
    with monkeypatch.context() as m:  # a resume under another plan, killed before it saves
        m.setattr(train_mod, "lr_at", killed_at(first))
        with pytest.raises(Killed):
            train(changed, resume=True, progress=False)
    assert json.loads((run / "train_config.json").read_text())["eval_every"] == then
    with monkeypatch.context() as m:  # its time limit reached at once
        m.setattr(train_mod, "time", Clock(tick=100))
        limit = (trainer(run)["train_seconds"] + 50) / 60
        train(replace(changed, time_limit=limit), resume=True, progress=False)
    assert trainer(run)["step"] == first and trainer(run)["stopped"] == "time_limit"
    assert [r["step"] for r in lines(run) if "val_loss" in r] == validated


def test_ctrl_c_during_the_final_validation_stops_it_and_the_resume_runs_it(
        dataset, full, tmp_path, monkeypatch):
    """The final validation (after the last step) ignored Ctrl-C and ran to its end, however
    many batches it had. It stops between batches as a periodic one does: the checkpoint of
    the last step says ``validation_cut``, and the resume runs that validation only, so the
    log, the weights and the best checkpoint equal the uninterrupted run's."""
    config = cfg(dataset, tmp_path / "run")
    run = interrupted(config, monkeypatch, 2)  # step 4's: the final one
    assert trainer(run)["step"] == 4 and trainer(run)["validation_cut"] == 4
    assert [r["step"] for r in lines(run) if "val_loss" in r] == [2]
    train(config, resume=True, progress=False)
    assert lines(run) == lines(full)
    assert "validation_cut" not in trainer(run)
    for name in ("checkpoint/model.safetensors", "best/checkpoint/model.safetensors"):
        assert same_weights(full, run, name), name
