"""A resume that changes the plan says what the change does to the learning rate at the
resumed step (``unmask.train.lr_change``): more ``--steps`` stretch the cosine decay, so a
finished run extended trained on at several times its last rate without a word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus_helpers import word_corpus

from unmask.cli import main
from unmask.config import TrainConfig
from unmask.train import lr_at, lr_change

WORDS = "the lord said unto moses go down and speak to the people".split()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=300, seed=0)


def test_an_extended_finished_run_is_told_its_learning_rate_goes_back_up(dataset, tmp_path,
                                                                         capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(dataset), "--out", str(run), "--preset", "tiny",
                 "--seq-len", "16", "--batch-size", "2", "--steps", "4", "--warmup", "2",
                 "--eval-every", "0", "--eval-batches", "1", "--log-every", "1",
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--steps", "8", "--no-progress"]) == 0
    line = capsys.readouterr().err.strip()
    assert line.endswith("the run now ends at 8; the learning rate at step 4 becomes 0.000775 "
                         "(7.8× the saved plan's 0.0001)")
    lrs = [r["lr"] for r in map(json.loads, (run / "metrics.jsonl").open()) if "lr" in r]
    assert lrs[4] == pytest.approx(0.000775)  # what it said is what it trained at


def test_a_plan_whose_rate_at_the_step_is_unchanged_says_nothing():
    plan = TrainConfig(steps=100, warmup=10)
    assert lr_change(50, plan, TrainConfig(steps=100, warmup=10, seed=3)) == ""
    assert lr_change(5, plan, TrainConfig(steps=400, warmup=10)) == ""  # still warming up
    longer = TrainConfig(steps=400, warmup=10)
    assert lr_change(50, plan, longer) == (
        f"; the learning rate at step 50 becomes {lr_at(50, longer):.3g} "
        f"({lr_at(50, longer) / lr_at(50, plan):.2g}× the saved plan's {lr_at(50, plan):.3g})")


def test_an_init_given_to_a_resume_of_a_run_without_one_names_none(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(dataset), "--out", str(run), "--preset", "tiny",
                 "--seq-len", "16", "--batch-size", "2", "--steps", "1", "--eval-every", "0",
                 "--eval-batches", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--init", str(run)]) == 2
    err = capsys.readouterr().err  # was: "differs from the run's ''"
    assert "differs from the run's none (its default): a resumed run keeps its model" in err


def test_a_rate_from_or_to_zero_is_said_without_a_ratio():
    """--min-lr-ratio 0: a finished run's last rate is 0, and the line said "(the saved
    plan's 0)" with no ratio, as if something were missing."""
    saved = TrainConfig(steps=4, warmup=0, lr=1e-3, min_lr_ratio=0.0)
    assert lr_change(4, saved, TrainConfig(steps=8, warmup=0, lr=1e-3, min_lr_ratio=0.0)) == (
        "; the learning rate at step 4 becomes 0.0005 (up from 0 in the saved plan)")
    assert lr_change(4, TrainConfig(steps=8, warmup=0, lr=1e-3, min_lr_ratio=0.0), saved) == (
        "; the learning rate at step 4 becomes 0 (down from 0.0005 in the saved plan)")
