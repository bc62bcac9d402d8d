"""``unmask train --resume``: the saved run's ``--threads`` and ``--device`` are not this
command's. Both are how a process runs (``RUNTIME_FIELDS``), documented as always the
resuming command's; the CLI resumed with the saved run's (a run begun with ``--threads 1``
trained on one thread after a plain ``--resume`` on a machine whose default is all cores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from corpus_helpers import word_corpus

import unmask.train as train_mod
from unmask.cli import main

WORDS = "the lord said unto moses go down and speak to the people".split()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=300, seed=0)


def _base(dataset: Path, out: Path) -> list[str]:
    return ["train", "--data", str(dataset), "--out", str(out), "--preset", "tiny",
            "--seq-len", "16", "--batch-size", "2", "--steps", "1", "--eval-every", "0",
            "--eval-batches", "1", "--warmup", "0", "--no-progress"]


def _resumed_config(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> Any:
    seen: list[Any] = []

    def fake(config: Any, **kw: Any) -> Path:
        seen.append(config)
        return Path(config.out)

    monkeypatch.setattr(train_mod, "train", fake)
    assert main(argv) == 0
    return seen[0]


def test_a_plain_resume_runs_on_this_commands_threads_and_device(dataset, tmp_path,
                                                                 monkeypatch):
    run = tmp_path / "run"
    assert main([*_base(dataset, run), "--threads", "1", "--device", "cpu"]) == 0
    config = _resumed_config(monkeypatch, ["train", "--resume", "--out", str(run), "--steps",
                                           "2", "--no-progress"])
    assert (config.threads, config.device) == (0, "auto")  # this command's defaults
    assert config.steps == 2 and config.seq_len == 16  # the rest is the saved plan


def test_threads_and_device_given_on_resume_are_used(dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert main([*_base(dataset, run), "--threads", "1"]) == 0
    config = _resumed_config(monkeypatch, ["train", "--resume", "--out", str(run), "--steps",
                                           "2", "--threads", "2", "--device", "cpu",
                                           "--no-progress"])
    assert (config.threads, config.device) == (2, "cpu")
