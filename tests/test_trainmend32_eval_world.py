"""A run's validation reads batches no larger than a training micro-batch, ``batch_size`` /
(processes × ``grad_accum``), and a diffusion bound's noise is drawn per batch read, so its
number depends on that count. ``unmask eval`` validated as one process: for a run on several
processes its held-out bound was not the number the run logged. The checkpoint now records
its session's process count (trainer.json, and ``best.json`` for ``RUN/best``), and ``unmask
eval`` reads as the run did.

Two processes with ``--grad-accum 1`` validate (and train) as one process with ``--grad-accum
2`` does, so a one-process run with ``--grad-accum 2`` whose files then say "2 processes,
``--grad-accum 1``" is what a two-process run leaves, with its logged numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unmask.cli import main

WORDS = "in the beginning god created the heaven and the earth and it was good".split()


@pytest.fixture(scope="module")
def data(word_corpus) -> Path:
    return word_corpus("evalworld32", WORDS)


def _as_two_processes(run: Path, folder: Path, record: str) -> None:
    plan = json.loads((run / "train_config.json").read_text())
    plan["grad_accum"] = 1
    (run / "train_config.json").write_text(json.dumps(plan))
    path = folder / record
    state = json.loads(path.read_text())
    assert state["world_size"] == 1  # what the run wrote: one process
    state["world_size"] = 2
    path.write_text(json.dumps(state))


@pytest.mark.parametrize("which", ["checkpoint", "best"])
def test_unmask_eval_reads_as_the_processes_of_the_run(data, tmp_path, capsys, which):
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--preset", "tiny",
                 "--seq-len", "16", "--batch-size", "8", "--grad-accum", "2", "--steps", "2",
                 "--warmup", "0", "--eval-every", "2", "--eval-batches", "2", "--keep-best",
                 "--precision", "fp32", "--no-progress", "--threads", "1"]) == 0
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in logged if "val_bpb" in r][-1]
    if which == "checkpoint":
        _as_two_processes(run, run / "checkpoint", "trainer.json")
    else:
        _as_two_processes(run, run / "best" / "checkpoint", "best.json")
    capsys.readouterr()
    target = run if which == "checkpoint" else run / "best"
    assert main(["eval", str(target), "--no-score", "--no-plot", "--json", "--device",
                 "cpu"]) == 0
    got = json.loads(capsys.readouterr().out)["heldout"]["bpb"]
    assert got == pytest.approx(last["val_bpb"], rel=1e-6)
