"""One process trains a run at a time (``unmask.train_guards.RunLock``). A second ``unmask
train`` on a run that another process was training took it, before its first checkpoint, for
one killed and deleted its plan and log (the first then failed at its next log line); with
``--resume`` the two trained into one folder. The run folder is held with ``flock`` while a
run trains: the second command is refused in one line, and nothing of the run is touched."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from corpus_helpers import word_corpus

from unmask.cli import main
from unmask.train_guards import RunLock

fcntl = pytest.importorskip("fcntl")  # (Windows: no flock, nothing is held)

WORDS = "the lord said unto moses go down and speak to the people".split()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=300, seed=0)


def _argv(dataset: Path, out: Path, steps: int = 1) -> list[str]:
    return ["train", "--data", str(dataset), "--out", str(out), "--preset", "tiny",
            "--seq-len", "16", "--batch-size", "2", "--steps", str(steps), "--eval-every", "0",
            "--eval-batches", "1", "--warmup", "0", "--no-progress"]


@contextmanager
def _training_elsewhere(run: Path) -> Iterator[None]:
    """``run`` held as another process training it holds it (flock conflicts between two
    opens of the folder, in one process too)."""
    fd = os.open(run, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        yield
    finally:
        os.close(fd)


def test_a_second_start_of_a_run_being_trained_leaves_its_plan_and_log(dataset, tmp_path,
                                                                       capsys):
    run = tmp_path / "run"
    run.mkdir()  # a live run before its first checkpoint: what unfinished_run sees
    (run / "train_config.json").write_text(json.dumps({"steps": 1000}))
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    with _training_elsewhere(run):
        assert main(_argv(dataset, run)) == 2
    err = capsys.readouterr().err
    assert "another process is training this run now" in err
    assert len(err.strip().splitlines()) == 1 and "starting it anew" not in err
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl", "train_config.json"]
    assert (run / "metrics.jsonl").read_text() == '{"step": 1, "loss": 5.0}\n'


def test_a_resume_of_a_run_being_trained_is_refused_and_a_later_one_runs(dataset, tmp_path,
                                                                          capsys):
    run = tmp_path / "run"
    assert main(_argv(dataset, run)) == 0
    log = (run / "metrics.jsonl").read_text()
    with _training_elsewhere(run):
        assert main(["train", "--resume", "--out", str(run), "--steps", "2",
                     "--no-progress"]) == 2
    assert "another process is training this run now" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text() == log
    assert json.loads((run / "train_config.json").read_text())["steps"] == 1  # plan as it was
    # the lock is the training process's alone: released when it ends, a refusal included
    assert main(["train", "--resume", "--out", str(run), "--steps", "2", "--no-progress"]) == 0
    with RunLock() as lock:
        lock.hold(run)  # nothing holds it any more


def test_a_lock_is_held_once_by_the_process_that_holds_it(tmp_path):
    with RunLock() as outer:  # unmask distill holding its run, then training it (train())
        outer.hold(tmp_path)
        with RunLock() as inner:
            inner.hold(tmp_path)
    with RunLock() as again:
        again.hold(tmp_path)


def test_a_second_distill_into_a_run_being_trained_touches_nothing(dataset, tmp_path, capsys):
    """unmask distill cleared the live run (as one killed) and would have decoded its
    trajectories before the train inside it took the lock."""
    from unmask.distill import default_cache

    assert main(_argv(dataset, tmp_path / "teacher")) == 0
    run = tmp_path / "drun"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps({"steps": 1000}))
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    capsys.readouterr()
    with _training_elsewhere(run):
        assert main(["distill", "--teacher", str(tmp_path / "teacher" / "checkpoint"),
                     "--data", str(dataset), "--out", str(run), "--steps", "1",
                     "--gen-length", "8", "--prompt-length", "8", "--trajectories", "4",
                     "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "another process is training this run now" in err
    assert len(err.strip().splitlines()) == 1 and "starting it anew" not in err
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl", "train_config.json"]
    assert not default_cache(run).exists()  # nothing decoded


def test_two_starts_at_once_on_a_new_folder_leave_the_winners_run(dataset, tmp_path,
                                                                   monkeypatch, capsys):
    """Both saw no folder; the other made it, held it and wrote its plan and log as this one
    made it: this one, refused, removed them with the folder (it had seen none)."""
    run, other = tmp_path / "new" / "run", []
    make = Path.mkdir

    def the_other_first(self, *args, **kwargs):
        if self == run and not run.exists():  # the other start, a moment ahead
            make(self, parents=True)
            other.append(os.open(run, os.O_RDONLY))
            fcntl.flock(other[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
            (run / "train_config.json").write_text("{}")
            (run / "metrics.jsonl").write_text("{}\n")
        return make(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", the_other_first)
    try:
        assert main(_argv(dataset, run)) == 2
    finally:
        for fd in other:
            os.close(fd)
    assert "another process is training this run now" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl", "train_config.json"]


@pytest.mark.parametrize("code", ["ENOLCK", "EBADF", "ENOSYS"])
def test_a_file_system_without_locks_trains_as_before(dataset, tmp_path, monkeypatch, code):
    """flock fails there (NFS gives EBADF for a folder, Lustre ENOSYS): nothing is held and
    nothing refused; a refusal there would stop every run on it."""
    def no_locks(fd, op):
        raise OSError(getattr(errno, code), "no locks here")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    run = tmp_path / "run"
    assert main(_argv(dataset, run)) == 0
    assert main(["train", "--resume", "--out", str(run), "--steps", "2", "--no-progress"]) == 0
    assert (run / "checkpoint").is_dir()


def test_a_new_runs_folder_removed_before_it_is_locked_is_made_again_and_held(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that just ended before its first checkpoint removes its folder; a new start
    that made the folder a moment before and had not opened it yet took the missing folder
    for a file system without locks and trained holding nothing (a third start too)."""
    from unmask.train_guards import RunLock

    run = tmp_path / "run"
    real = os.open

    def ended_here(path: object, flags: int, *args: object, **kw: object) -> int:
        if Path(str(path)) == run and not removed:
            removed.append(True)
            run.rmdir()  # the other run's clean-up, at this moment
        return real(path, flags, *args, **kw)

    removed: list[bool] = []
    monkeypatch.setattr(os, "open", ended_here)
    with RunLock() as lock:
        lock.hold(run, make=True)
        monkeypatch.setattr(os, "open", real)
        assert removed and run.is_dir() and lock._fd is not None
        fd = os.open(run, os.O_RDONLY)  # what another start's lock meets
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
