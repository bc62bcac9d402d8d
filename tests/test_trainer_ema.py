"""``--ema`` changed on ``--resume``: dropping a run's EMA weights (``--ema 0``) or starting
one is said in the resume line; ``--ema 0`` on an EMA run dropped the EMA without a word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.corpus_helpers import word_corpus
from unmask.cli import main

WORDS = "and god said let there be light and there was light".split()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=300, seed=0)


def _args(dataset: Path, run: Path, *more: str) -> list[str]:
    return ["train", "--data", str(dataset), "--out", str(run), "--preset", "tiny",
            "--seq-len", "16", "--batch-size", "2", "--steps", "2", "--eval-every", "0",
            "--eval-batches", "1", "--save-every", "0", "--no-progress", *more]


def test_ema_0_on_resume_says_it_drops_the_ema_weights(dataset: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]):
    run = tmp_path / "run"
    assert main(_args(dataset, run, "--ema", "0.9")) == 0
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["has_raw_model"]
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--steps", "3", "--ema", "0",
                 "--no-progress"]) == 0
    line = capsys.readouterr().err.splitlines()[0]
    assert line.startswith("resuming at step 2 of 2; --steps 3, --ema 0.0 given")
    assert ("(--ema 0.0 drops the run's EMA weights: it trains on from its raw weights, which "
            "are validated and saved for inference from now on)") in line
    ckpt = run / "checkpoint"
    assert not json.loads((ckpt / "trainer.json").read_text())["has_raw_model"]
    assert not any(k.startswith("model.") for k in load_file(ckpt / "trainer.safetensors"))


def test_ema_on_resume_of_a_run_without_says_where_it_starts(
        dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run = tmp_path / "run"
    assert main(_args(dataset, run)) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--steps", "3", "--ema", "0.9",
                 "--no-progress"]) == 0
    line = capsys.readouterr().err.splitlines()[0]
    assert "(the EMA of --ema 0.9 starts from the weights at this step)" in line
    assert main(["train", "--resume", "--out", str(run), "--steps", "4", "--ema", "0.99",
                 "--no-progress"]) == 0
    line = capsys.readouterr().err.splitlines()[0]
    assert "(the EMA weights go on with decay 0.99)" in line
