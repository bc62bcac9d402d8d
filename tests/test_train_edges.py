"""Training at its edges: hyper-parameters changed on resume, non-finite losses, a save
interrupted after a hard kill, the learning-rate schedule when warmup outlasts the run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from corpus_helpers import word_corpus
from safetensors.torch import load_file

from unmask.config import TrainConfig
from unmask.train import train

WORDS = "in the beginning god created the heaven and the earth and it was good".split()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=400, seed=1)


def cfg(dataset: Path, out: Path, **kw: object) -> TrainConfig:
    base = TrainConfig(
        data=str(dataset), out=str(out), preset="tiny", seq_len=32, batch_size=4, steps=4,
        warmup=1, lr=3e-3, eval_every=0, eval_batches=1, save_every=0, log_every=1, seed=5,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_weight_decay_and_betas_given_on_resume_are_used(dataset, tmp_path):
    runs = {}
    for name, kw in (("same", {}), ("changed", {"weight_decay": 0.5, "beta1": 0.8,
                                                "beta2": 0.9})):
        run = tmp_path / name
        train(cfg(dataset, run, steps=2), progress=False)
        train(cfg(dataset, run, steps=4, **kw), resume=True, progress=False)
        runs[name] = run
    meta = json.loads((runs["changed"] / "checkpoint" / "trainer.json").read_text())
    groups = meta["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.5, 0.0]
    assert all(tuple(g["betas"]) == (0.8, 0.9) for g in groups)
    a = load_file(str(runs["same"] / "checkpoint" / "model.safetensors"))
    b = load_file(str(runs["changed"] / "checkpoint" / "model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the new plan trained differently
