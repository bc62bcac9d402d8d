"""A run validates the windows it always did (``eval_batches`` batches of min(``batch_size``,
32) rows) in batches no larger than a training micro-batch (``batch_size`` over processes ×
``grad_accum``): at min(``batch_size``, 32) rows a run given ``--grad-accum`` to fit its memory
validated several times the rows it trained on, which the memory check never counted, and
could run out of memory at its first validation (session 32)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import unmask.train as train_module
from unmask.cli import main
from unmask.config import TrainConfig

WORDS = "in the beginning god created the heaven and the earth and it was good".split()


@pytest.fixture(scope="module")
def data(word_corpus) -> Path:
    return word_corpus("val32", WORDS)


def test_the_validation_batch_is_a_micro_batch(data, tmp_path, monkeypatch):
    sizes: list[tuple[int, int]] = []
    plain = train_module.evaluate_loss

    def recording(*args: Any, **kwargs: Any) -> Any:
        sizes.append((kwargs["batch_size"], kwargs["max_batches"]))
        return plain(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_loss", recording)
    config = TrainConfig(data=str(data), out=str(tmp_path / "run"), preset="tiny", seq_len=16,
                         batch_size=8, grad_accum=4, steps=2, warmup=1, eval_every=1,
                         eval_batches=1, save_every=0, threads=1)
    train_module.train(config, progress=False)
    # steps 1 and 2 (the final one): 8 rows / 4 micro-batches, the 8 windows of one batch
    assert sizes == [(2, 4), (2, 4)]


@pytest.mark.parametrize(("batch_size", "grad_accum", "world", "rows", "batches"), [
    (8, 1, 1, 8, 3), (64, 1, 1, 32, 3), (64, 8, 1, 8, 12), (64, 4, 2, 8, 12), (8, 2, 4, 1, 24),
    (96, 4, 1, 16, 6), (6, 2, 1, 3, 6)])
def test_validation_batches(batch_size, grad_accum, world, rows, batches):
    from unmask.train_guards import validation_batches

    config = TrainConfig(batch_size=batch_size, grad_accum=grad_accum, eval_batches=3)
    assert validation_batches(config, world) == (rows, batches)
    assert validation_batches(config, world, batches=0) == (rows, None)  # the whole split


def test_an_ar_run_validates_the_same_windows_whatever_its_grad_accum(data, tmp_path):
    """``ar``'s likelihood is exact and its training matches one whole batch to float
    precision: its validation, read in smaller batches, gives the same numbers."""
    logged = {}
    for accum in (1, 4):
        config = TrainConfig(data=str(data), out=str(tmp_path / f"ga{accum}"), preset="tiny",
                             objective="ar", seq_len=16, batch_size=8, grad_accum=accum,
                             steps=2, warmup=1, eval_every=1, eval_batches=2, save_every=0,
                             threads=1, precision="fp32")
        run = train_module.train(config, progress=False)
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        logged[accum] = [r["val_bpb"] for r in lines if "val_bpb" in r]
    assert len(logged[1]) == 2
    assert logged[4] == pytest.approx(logged[1], rel=1e-4)


def test_the_run_and_unmask_eval_give_the_same_number(data, tmp_path):
    """``unmask.report.heldout_bound`` (``unmask eval``'s held-out bound) validates as the run
    did, so for its final weights it gives the number the run logged last."""
    from unmask.checkpoint import load
    from unmask.report import heldout_bound
    from unmask.train import load_train_config

    config = TrainConfig(data=str(data), out=str(tmp_path / "run"), preset="tiny", seq_len=16,
                         batch_size=8, grad_accum=2, steps=2, warmup=1, eval_every=0,
                         eval_batches=2, save_every=0, threads=1, precision="fp32")
    run = train_module.train(config, progress=False)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in logged if "val_bpb" in r][-1]
    got = heldout_bound(load(run).model, load_train_config(run / "train_config.json"))
    assert got.bpb == pytest.approx(last["val_bpb"], rel=1e-6)


def test_a_resume_with_another_grad_accum_scores_the_best_again(data, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(run), "--preset", "tiny",
            "--objective", "ar", "--seq-len", "16", "--batch-size", "8", "--steps", "2",
            "--eval-every", "1", "--eval-batches", "1", "--save-every", "0", "--no-progress",
            "--keep-best"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--steps", "3", "--grad-accum", "4",
                 "--no-progress"]) == 0
    note = [line for line in capsys.readouterr().err.splitlines()
            if line.startswith("--keep-best:")]
    assert len(note) == 1
    assert ("validation now measures otherwise (the validation batch size 2 (min(--batch-size, "
            "32), or a divisor of it as small as a micro-batch: --batch-size / (processes × "
            "--grad-accum)), was 8)") in note[0]
