"""``--keep-best`` after a hard kill: ``OUT/best`` is the best the checkpoint resumed from
records. A best written after that checkpoint by a session killed before it saved again
stayed, the weights of steps the resume trains again; under a changed plan it may never reach
them, and ``OUT/best`` held weights that no record of the run describes (session 32)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

import unmask.train as train_module
from unmask.cli import main

WORDS = "in the beginning god created the heaven and the earth and it was good".split()


class Killed(BaseException):
    """A kill -9 at the moment the run's checkpoint is about to be written."""


@pytest.fixture(scope="module")
def data(word_corpus) -> Path:
    return word_corpus("kill32", WORDS)


def _args(data: Path, run: Path, *more: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(run), "--preset", "tiny", "--seq-len",
            "16", "--batch-size", "4", "--eval-every", "1", "--eval-batches", "1",
            "--save-every", "0", "--warmup", "0", "--lr", "3e-3", "--no-progress",
            "--threads", "1", *more]


def _kill_at_the_checkpoint(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = train_module.save_checkpoint

    def save(run_dir, **kwargs):
        if Path(run_dir) == run:
            raise Killed
        return plain(run_dir, **kwargs)

    monkeypatch.setattr(train_module, "save_checkpoint", save)


def _weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def _best_record(run: Path) -> dict:
    return json.loads((run / "checkpoint" / "trainer.json").read_text())["best"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_the_recorded_best_is_put_back(data, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(_args(data, run, "--steps", "2", "--keep-best")) == 0
    recorded = _best_record(run)
    kept = _weights(run / "best" / "checkpoint")
    with monkeypatch.context() as m:
        _kill_at_the_checkpoint(run, m)
        with pytest.raises(Killed):
            main(["train", "--resume", "--out", str(run), "--steps", "4", "--no-progress"])
    assert not _same(_weights(run / "best" / "checkpoint"), kept)  # a later best was written
    capsys.readouterr()
    # resumed under another plan: its one validation (the final one, at step 3) is not asked
    # to keep a best
    assert main(["train", "--resume", "--out", str(run), "--steps", "3", "--no-keep-best",
                 "--no-progress"]) == 0
    assert _same(_weights(run / "best" / "checkpoint"), kept)
    err = capsys.readouterr().err
    assert f"put back the best of step {recorded['step']} it records" in err
    assert _best_record(run) == recorded
    assert not (run / "best" / "previous").exists()
    assert sorted(p.name for p in (run / "best").iterdir()) == ["checkpoint"]


def test_a_best_the_checkpoint_does_not_record_is_removed(data, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(_args(data, run, "--steps", "2")) == 0  # no --keep-best: no best recorded
    with monkeypatch.context() as m:
        _kill_at_the_checkpoint(run, m)
        with pytest.raises(Killed):
            main(["train", "--resume", "--out", str(run), "--steps", "4", "--keep-best",
                  "--no-progress"])
    assert (run / "best" / "checkpoint" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--steps", "3", "--no-keep-best",
                 "--no-progress"]) == 0
    assert "removed it (the checkpoint records no best)" in capsys.readouterr().err
    assert not (run / "best" / "checkpoint").exists()


def test_an_uninterrupted_run_keeps_one_best_and_no_previous(data, tmp_path):
    run = tmp_path / "run"
    assert main(_args(data, run, "--steps", "4", "--save-every", "1", "--keep-best")) == 0
    assert sorted(p.name for p in (run / "best").iterdir()) == ["checkpoint"]
    record = json.loads((run / "best" / "checkpoint" / "best.json").read_text())
    assert record == {**_best_record(run), "world_size": 1}  # (unmask eval reads as it did)


def test_a_new_run_killed_before_its_first_checkpoint_keeps_its_best(data, tmp_path,
                                                                    monkeypatch, capsys):
    """A ``--keep-best`` run validates (every 100 steps by default) before its first checkpoint
    (every 500): killed between, its folder holds ``best/``, the only weights of those hours.
    Neither ``--resume`` nor the same command again deletes them: both say where they are and
    how to start anew (session 32's first fix started anew and deleted them)."""
    run = tmp_path / "run"
    args = _args(data, run, "--steps", "3", "--keep-best")
    with monkeypatch.context() as m:
        _kill_at_the_checkpoint(run, m)
        with pytest.raises(Killed):
            main(args)
    assert sorted(p.name for p in run.iterdir()) == ["best", "metrics.jsonl",
                                                     "train_config.json"]  # as kill -9 leaves it
    kept = _weights(run / "best" / "checkpoint")
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"its best weights are in {run / 'best'}" in err
    assert "without --resume" not in err
    assert main(args) == 2
    assert f"move {run / 'best'} elsewhere or remove {run}" in capsys.readouterr().err
    assert _same(_weights(run / "best" / "checkpoint"), kept)
    (run / "best").rename(tmp_path / "kept")  # as the refusal advises: the same command now
    assert main(args) == 0                    # starts anew
    assert "starting it anew" in capsys.readouterr().err
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["step"] == 3
