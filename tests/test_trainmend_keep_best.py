"""The ``--keep-best`` line of a resume whose validation batch size changed names the
validation's batch size, not a ``--batch-size`` the user
never typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.corpus_helpers import word_corpus
from unmask.cli import main

WORDS = "in the beginning god created the heaven and the earth".split()


def test_the_rescore_line_names_the_validation_batch_size(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data = word_corpus(tmp_path, WORDS, lines=400, seed=0)
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(run), "--preset", "tiny",
            "--objective", "ar", "--seq-len", "16", "--batch-size", "4", "--steps", "2",
            "--eval-every", "1", "--eval-batches", "1", "--save-every", "0", "--no-progress",
            "--keep-best"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--steps", "3", "--batch-size", "40",
                 "--no-progress"]) == 0
    note = [line for line in capsys.readouterr().err.splitlines()
            if line.startswith("--keep-best:")]
    assert len(note) == 1
    assert ("validation now measures otherwise (the validation batch size 32 (min(--batch-size, "
            "32), or a divisor of it as small as a micro-batch: --batch-size / (processes × "
            "--grad-accum)), was 4)") in note[0]
    assert "--batch-size 32" not in note[0]


def test_the_python_api_names_the_field():
    from unmask.train_guards import validation_changes

    then = {"seq_len": 16, "batch_size": 4}
    assert validation_changes(then, {"seq_len": 32, "batch_size": 32}) == (
        "seq_len=32, was 16, the validation batch size 32 (min(batch_size, 32), or a divisor "
        "of it as small as a micro-batch: batch_size / (processes × grad_accum)), was 4")
