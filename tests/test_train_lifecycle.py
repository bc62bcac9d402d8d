"""A training run's lifecycle as a user meets it (session 27 audit): what a kill leaves
behind, writes that fail, and what the run directory holds after a resume."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from corpus_helpers import word_corpus
from test_train_run import cfg as run_cfg

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
    """``test_train_run.cfg`` on one thread."""
    return run_cfg(dataset, out, **{"threads": 1, **kw})


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


def test_a_full_disk_while_logging_names_the_log(dataset, tmp_path):
    """A metrics line that cannot be written (here a file-size limit, as a full disk would)
    is one line naming ``metrics.jsonl``: it said only "File too large" (a write to an open
    file names none), not which of the run's files. The checkpoint before stays resumable."""
    import resource
    import subprocess
    import sys

    run = train(cfg(dataset, tmp_path / "run", steps=2), progress=False)
    limit = max(p.stat().st_size for p in (run / "checkpoint").iterdir()) + 50_000
    log = run / "metrics.jsonl"
    pad = limit - 40 - log.stat().st_size - len('{"note": ""}\n')
    with open(log, "a") as f:  # near the limit: the next line does not fit
        f.write('{"note": "' + "x" * pad + '"}\n')

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(Path(train_mod.__file__).parents[1])}
    r = subprocess.run(
        [sys.executable, "-m", "unmask.cli", "train", "--resume", "--out", str(run), "--steps",
         "3", "--no-progress"], capture_output=True, text=True, env=env,
        preexec_fn=small_files, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"unmask train: error: File too large: {log}"
    assert "Traceback" not in r.stderr
    assert main(["train", "--resume", "--out", str(run), "--steps", "3", "--no-progress"]) == 0


def test_an_atomic_write_that_fails_names_its_file(tmp_path, monkeypatch):
    """``atomic_write_text`` / ``atomic_write_bytes`` (train_config.json, trajectory files, the
    log rewritten on resume): a write that fails names the file and leaves it as it was, with
    no temporary file beside it."""
    import errno

    from unmask import files

    path = tmp_path / "train_config.json"
    path.write_text("old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    for write, data in ((files.atomic_write_text, "new"), (files.atomic_write_bytes, b"new")):
        with pytest.raises(OSError) as e:
            write(path, data)  # type: ignore[operator]
        assert e.value.filename == str(path) and e.value.errno == errno.ENOSPC
        assert path.read_text() == "old" and sorted(tmp_path.iterdir()) == [path]


def test_a_resume_whose_data_is_not_there_says_to_pass_data(dataset, tmp_path, monkeypatch,
                                                            capsys):
    """A run trained on ``--data prepared`` (relative) resumed from another folder, or after
    the dataset moved: one line saying the run's data is not there and to pass ``--data``
    (it said "not a prepared dataset; run `unmask prepare` first"); ``--data`` resumes it."""
    import shutil

    shutil.copytree(dataset, tmp_path / "prepared")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    train(cfg(dataset, run, data="prepared", steps=2), progress=False)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    args = ["train", "--resume", "--out", str(run), "--steps", "3", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{run}: the data it trains on, prepared, is not there (a path relative" in err
    assert f"resume with `unmask train --resume --out {run} --data PATH`" in err
    assert err.count("\n") == 1
    assert main([*args, "--data", str(tmp_path / "prepared")]) == 0


def test_an_init_of_another_objective_says_the_flags_that_continue_it(dataset, tmp_path,
                                                                      capsys):
    """``--init BD3LM_RUN`` without ``--objective bd3lm --block-size 4`` (the default mdlm, or
    another block size) is refused naming the flags that continue the model as it was
    trained; it said only that the attention or block size differs."""
    bd = train(cfg(dataset, tmp_path / "bd", objective="bd3lm", block_size=4, steps=1),
               progress=False)
    base = ["train", "--data", str(dataset), "--init", str(bd), "--seq-len", "32",
            "--batch-size", "4", "--steps", "1", "--no-progress", "--out", str(tmp_path / "o")]
    capsys.readouterr()
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "; it was trained as bd3lm: continue it with --objective bd3lm --block-size 4\n" in err
    assert main([*base, "--objective", "bd3lm", "--block-size", "8"]) == 2
    assert "it was trained as bd3lm: continue it with --block-size 4\n" in capsys.readouterr().err
    assert main([*base, "--objective", "bd3lm", "--block-size", "4"]) == 0


def test_tokens_per_s_leaves_out_validation_time(dataset, tmp_path, monkeypatch):
    """``tokens_per_s`` (and MFU, from it) is the training throughput: a validation of the
    whole held-out split (minutes on a large one) counted as training time made every line
    after it report a fraction of the real rate. A fake clock: each reading advances 0.5 s,
    each validation 1000 s."""
    import types

    clock = [0.0]

    def perf_counter() -> float:
        clock[0] += 0.5
        return clock[0]

    real = train_mod.evaluate_loss

    def slow_validation(*args: object, **kw: object) -> object:
        clock[0] += 1000.0
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(perf_counter=perf_counter))
    monkeypatch.setattr(train_mod, "evaluate_loss", slow_validation)
    run = train(cfg(dataset, tmp_path / "run", steps=4, eval_every=1), progress=False)
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    rates = {r["step"]: r["tokens_per_s"] for r in lines if "tokens_per_s" in r}
    assert sorted(rates) == [1, 2, 3, 4]
    for step, rate in rates.items():  # a few 0.5 s readings per step, not 1000 s each
        assert rate > step * 4 * 32 / 100, (step, rate)


def test_a_second_signal_between_the_renames_of_a_save_says_the_checkpoint_is_kept(tmp_path):
    """A second Ctrl-C that lands between the two renames of a save (``checkpoint/`` moved
    to ``.checkpoint.old``, the new one not yet in) said "no checkpoint had been saved yet",
    though the resume takes ``.checkpoint.old``."""
    import time

    from unmask.train_guards import StopFlag

    (tmp_path / ".checkpoint.old").mkdir()
    with StopFlag(tmp_path) as flag, flag.deferring():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        with pytest.raises(TrainingStopped, match="the last saved checkpoint is kept"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at the next bytecode


def test_an_out_that_cannot_be_made_names_the_flag(dataset, tmp_path, capsys):
    """``--out`` under a file (or where this process may not write): one line naming
    ``--out`` (it was the system's words alone: "Not a directory: FILE/run")."""
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "run"
    capsys.readouterr()
    assert main(["train", "--data", str(dataset), "--out", str(out), "--preset", "tiny",
                 "--seq-len", "32", "--batch-size", "4", "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert (f"--out {out}: cannot make the run directory ({tmp_path / 'file'} is not a "
            "folder)") in err
    assert err.count("\n") == 1


def test_train_and_distill_check_out_with_one_helper_and_one_message(tmp_path):
    """Whether ``--out`` can be made was checked twice, in two wordings: ``unmask train`` said
    "--out RUN: cannot make the run directory (Not a directory)", ``unmask distill`` "RUN:
    cannot be written (FILE is not a writable folder)". Both now ask ``check_out``."""
    import unmask.distill as distill_mod
    from unmask.run_checks import check_out

    (tmp_path / "file").write_text("x")
    under_file = tmp_path / "file" / "run"
    want = (f"--out {under_file}: cannot make the run directory ({tmp_path / 'file'} is not "
            "a folder)")
    for call in (lambda: check_out(under_file),
                 lambda: train_mod._prepare_run_dir(TrainConfig(out=str(under_file)), False, True),
                 lambda: distill_mod.distill("t", "d", str(under_file), progress=False)):
        with pytest.raises(train_mod.UserError) as e:
            call()
        assert str(e.value) == want
    with pytest.raises(train_mod.UserError, match="a file is there"):
        check_out(tmp_path / "file")
    check_out(tmp_path / "a" / "b", make=True)
    assert (tmp_path / "a" / "b").is_dir()


def test_the_old_checkpoint_folder_is_named_by_checkpoint_old(tmp_path, monkeypatch):
    """``train`` (resume) and the second-signal message spelled ``.checkpoint.old`` instead of
    using ``checkpoint.OLD`` (and the stop line and resume hint ``checkpoint`` for ``CKPT``):
    renaming them there would have made a run stopped between the renames of a save "nothing
    to resume", its checkpoint "not saved yet", and a stopped run no resume hint."""
    import unmask.checkpoint as ckpt
    from unmask.train_guards import StopFlag, resume_hint

    monkeypatch.setattr(ckpt, "OLD", ".ckpt.previous")
    monkeypatch.setattr(ckpt, "CKPT", "ckpt")
    (tmp_path / "ckpt").mkdir()
    stopped = TrainingStopped(signal.SIGINT, 3, tmp_path)
    assert str(tmp_path / "ckpt") in str(stopped)
    assert "--resume" in resume_hint(stopped, "train")
    (tmp_path / "ckpt").rmdir()
    monkeypatch.setattr(train_mod, "OLD", ".ckpt.previous", raising=False)
    (tmp_path / ".ckpt.previous").mkdir()
    assert train_mod._prepare_run_dir(TrainConfig(out=str(tmp_path)), True, True) == tmp_path
    flag = StopFlag(tmp_path)
    flag._defer, flag.signum = True, signal.SIGINT
    with pytest.raises(TrainingStopped, match="the last saved checkpoint is kept"):
        flag._handle(signal.SIGINT, None)


def test_ctrl_c_during_a_validation_stops_it_and_the_resume_validates_that_step_first(
        dataset, tmp_path, monkeypatch):
    """Ctrl-C while a periodic validation read the held-out split (``--eval-batches 0``: all
    of it) waited for the whole validation before the run stopped. It stops between the
    validation's batches now; the checkpoint records the step (``validation_cut``) and the
    resume validates it first, so the log and weights are the uninterrupted run's."""
    from safetensors.torch import load_file

    from unmask.data import TokenDataset

    kw = dict(steps=4, eval_every=2, eval_batches=0, save_every=0)
    full = train(cfg(dataset, tmp_path / "full", **kw), progress=False)
    orig = TokenDataset.windows
    after = []  # windows read after the signal

    def windows(self, seq_len, **k):
        for i, w in enumerate(orig(self, seq_len, **k)):
            if self.split == "val" and not after and i == 1:
                os.kill(os.getpid(), signal.SIGINT)
                after.append(0)
            if after:
                after[0] += 1
            yield w

    with monkeypatch.context() as m:
        m.setattr(TokenDataset, "windows", windows)
        with pytest.raises(TrainingStopped):
            train(cfg(dataset, tmp_path / "part", **kw), progress=False)
    run = tmp_path / "part"
    assert after and after[0] <= 1, after  # was every window of the split
    meta = json.loads((run / "checkpoint" / "trainer.json").read_text())
    assert meta["step"] == 2 and meta["validation_cut"] == 2
    train(cfg(dataset, run, **kw), resume=True, progress=False)

    def lines(r: Path) -> list[dict]:
        drop = ("tokens_per_s", "elapsed_s", "peak_mem_gib")
        return [{k: v for k, v in json.loads(x).items() if k not in drop}
                for x in (r / "metrics.jsonl").read_text().splitlines()]

    assert lines(run) == lines(full)
    assert any(x.get("step") == 2 and "val_loss" in x for x in lines(run))
    a = load_file(str(full / "checkpoint" / "model.safetensors"))
    b = load_file(str(run / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
