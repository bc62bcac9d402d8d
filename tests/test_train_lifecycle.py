"""A training run's lifecycle as a user meets it (session 27 audit): what a kill leaves
behind, writes that fail, and what the run directory holds after a resume."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
from corpus_helpers import word_corpus

import unmask.train as train_mod
from unmask.cli import main
from unmask.config import TrainConfig
from unmask.train import train
from unmask.train_guards import TrainingStopped

WORDS = "the lord said unto moses go down and speak to the people of israel".split()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=300, seed=0)


def cfg(dataset: Path, out: Path, **kw: object) -> TrainConfig:
    base = TrainConfig(
        data=str(dataset), out=str(out), preset="tiny", seq_len=32, batch_size=4, steps=6,
        warmup=2, lr=3e-3, eval_every=0, eval_batches=1, save_every=0, log_every=1, seed=3,
        threads=1,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def interrupted(config: TrainConfig, at: int, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run ``config`` in this process and send it SIGINT while step ``at`` starts."""
    orig = train_mod.lr_at

    def lr(step: int, c: TrainConfig) -> float:
        if step == at:
            os.kill(os.getpid(), signal.SIGINT)
        return orig(step, c)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "lr_at", lr)
        with pytest.raises(TrainingStopped):
            train(config, progress=False)
    return Path(config.out)


def test_a_resume_removes_a_best_checkpoint_a_kill_left_half_staged(dataset, tmp_path,
                                                                     monkeypatch):
    """A kill while ``--keep-best`` wrote ``OUT/best`` left its staging folder (a partial copy
    of the weights) inside ``OUT/best`` for good: the resume removed the run's own staging
    folders only. Now both go, and ``OUT/best`` keeps its whole checkpoint."""
    run = interrupted(cfg(dataset, tmp_path / "run", eval_every=2, keep_best=True), 3,
                      monkeypatch)
    assert (run / "best" / "checkpoint" / "model.safetensors").is_file()
    dead = run / "best" / ".checkpoint.tmpdead"
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"half")
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0
    assert not dead.exists()
    assert (run / "best" / "checkpoint" / "model.safetensors").is_file()
