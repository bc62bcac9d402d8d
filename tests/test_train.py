import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from corpus_helpers import word_corpus
from safetensors.torch import load_file

from unmask.checkpoint import load
from unmask.cli import main
from unmask.config import TrainConfig
from unmask.errors import UserError
from unmask.train import lr_at, train

WORDS = (
    "the lord said unto moses go down and speak to the people of israel that they may hear"
).split()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=900, seed=0)


def cfg(dataset, out, **kw):
    base = TrainConfig(
        data=str(dataset), out=str(out), preset="tiny", seq_len=32, batch_size=8, steps=6, warmup=2,
        lr=3e-3, eval_every=3, eval_batches=2, save_every=0, log_every=1, seed=7,
        random_length_frac=0.2,
    )
    return replace(base, **kw)


def metrics(run):
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_loadable_checkpoint_and_metrics(dataset, tmp_path):
    run = train(cfg(dataset, tmp_path / "run"), progress=False)
    ck = run / "checkpoint"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "trainer.json",
                 "trainer.safetensors"):
        assert (ck / name).is_file()
    loaded = load(run)
    assert loaded.config.attention == "bidirectional"
    assert loaded.config.mask_id == loaded.tokenizer.mask_id
    x = torch.randint(4, loaded.config.vocab_size, (1, 10))
    assert loaded.model(x).shape == (1, 10, loaded.config.vocab_size)
    recs = metrics(run)
    losses = [r["loss"] for r in recs if "loss" in r]
    assert len(losses) == 6 and all(v > 0 for v in losses)
    vals = [r for r in recs if "val_bpb" in r]
    assert [r["step"] for r in vals] == [3, 6]
    # No temporary folders are left behind.
    assert not [p for p in run.iterdir() if p.name.startswith(".checkpoint")]


def test_training_reduces_loss(dataset, tmp_path):
    c = cfg(dataset, tmp_path / "run", steps=40, eval_every=40, random_length_frac=0.0)
    run = train(c, progress=False)
    vals = [r for r in metrics(run) if "val_bpb" in r]
    first = [r["loss"] for r in metrics(run) if "loss" in r][:3]
    assert vals[-1]["val_loss"] < sum(first) / 3 * 0.8


def test_resume_equals_uninterrupted(dataset, tmp_path):
    full = train(cfg(dataset, tmp_path / "full", ema=0.9), progress=False)
    part = train(cfg(dataset, tmp_path / "part", ema=0.9, steps=3), progress=False)
    resumed = train(cfg(dataset, tmp_path / "part", ema=0.9, steps=6), resume=True, progress=False)
    a = [r["loss"] for r in metrics(full) if "loss" in r]
    b = [r["loss"] for r in metrics(resumed) if "loss" in r]
    assert a == pytest.approx(b, rel=1e-5)
    wa = load_file(str(full / "checkpoint" / "model.safetensors"))
    wb = load_file(str(part / "checkpoint" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_ar_objective_trains_causal_model(dataset, tmp_path):
    c = cfg(dataset, tmp_path / "ar", objective="ar", random_length_frac=0.0)  # mdlm's cut: off
    run = train(c, progress=False)
    assert load(run).config.attention == "causal"


def test_run_dir_never_overwritten(dataset, tmp_path):
    train(cfg(dataset, tmp_path / "run", steps=1), progress=False)
    with pytest.raises(UserError, match="already exists"):
        train(cfg(dataset, tmp_path / "run", steps=1), progress=False)
    with pytest.raises(UserError, match="nothing to resume"):
        train(cfg(dataset, tmp_path / "empty", steps=1), resume=True, progress=False)


def test_lr_schedule():
    c = TrainConfig(lr=1.0, warmup=10, steps=110, min_lr_ratio=0.1)
    assert lr_at(0, c) == pytest.approx(0.1)
    assert lr_at(9, c) == pytest.approx(1.0)
    assert lr_at(60, c) == pytest.approx(0.55)
    assert lr_at(110, c) == pytest.approx(0.1)


def test_cli_train_and_errors(dataset, tmp_path, capsys):
    rc = main(["train", "--data", str(dataset), "--out", str(tmp_path / "cli"), "--preset", "tiny",
               "--seq-len", "32", "--batch-size", "4", "--steps", "2", "--eval-every", "0",
               "--no-progress", "--model-set", "d_model=48"])
    assert rc == 0
    assert load(tmp_path / "cli").config.d_model == 48
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["train", "--data", str(dataset), "--out", str(tmp_path / "y"), "--batch-size", "3",
                 "--grad-accum", "2"]) == 2
    assert main(["train", "--data", str(dataset), "--out", str(tmp_path / "z"),
                 "--model-set", "nope=1"]) == 2


def test_interrupted_save_keeps_last_checkpoint(dataset, tmp_path, monkeypatch):
    import unmask.checkpoint as ckpt
    import unmask.files as files

    run = train(cfg(dataset, tmp_path / "run", steps=2), progress=False)
    before = load_file(str(run / "checkpoint" / "model.safetensors"))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(files, "write_safetensors", boom)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(run, model=load(run).model, tokenizer=load(run).tokenizer)
    after = load_file(str(run / "checkpoint" / "model.safetensors"))
    assert before.keys() == after.keys()
    assert not [p for p in run.iterdir() if p.name.startswith(".checkpoint")]


def test_sigterm_saves_checkpoint(dataset, tmp_path, monkeypatch):
    """SIGTERM at the start of step 3 of `unmask train`: the checkpoint of step 4 is saved and
    main returns 143. In this process (a subprocess paid ~8 s for torch and its optimizer's
    imports); the same signal from outside a real process, exit status and all, is
    test_train_run.py::test_cli_signal_mid_run_saves_and_exits[15-143]."""
    import signal

    import unmask.train as t

    run = tmp_path / "sig"
    orig = t.lr_at

    def lr(step, c):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return orig(step, c)

    monkeypatch.setattr(t, "lr_at", lr)
    before = signal.getsignal(signal.SIGTERM)
    rc = main(["train", "--data", str(dataset), "--out", str(run), "--preset", "tiny",
               "--seq-len", "32", "--batch-size", "4", "--steps", "50", "--eval-every", "0",
               "--save-every", "0", "--no-progress"])  # fmt: skip
    assert rc == 128 + 15  # killed-by-SIGTERM convention, not 0
    assert signal.getsignal(signal.SIGTERM) is before
    meta = json.loads((run / "checkpoint" / "trainer.json").read_text())
    assert meta["step"] == 4
    assert load(run).model is not None


def test_ddp_two_processes_match_one(dataset, tmp_path, free_port):
    """torchrun with 2 CPU processes (gloo) = 1 process with the same micro-batches."""
    args = ["--data", str(dataset), "--preset", "tiny", "--seq-len", "32", "--batch-size", "8",
            "--steps", "3", "--eval-every", "0", "--seed", "3", "--no-progress", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(free_port),
         "-m", "unmask.cli", "train", "--out", str(tmp_path / "ddp"), *args],
        check=True, timeout=300, env=env, capture_output=True,
    )
    assert main(["train", "--out", str(tmp_path / "one"), "--grad-accum", "2", *args]) == 0
    wa = load_file(str(tmp_path / "ddp" / "checkpoint" / "model.safetensors"))
    wb = load_file(str(tmp_path / "one" / "checkpoint" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


def test_checkpoint_folder_has_ordinary_permissions(dataset, tmp_path):
    import stat

    run = train(cfg(dataset, tmp_path / "run", steps=1, eval_every=0), progress=False)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((run / "checkpoint").stat().st_mode) == 0o777 & ~umask


def test_a_model_too_large_for_memory_is_refused_before_it_is_built(monkeypatch):
    """``--model-set n_layers=100000`` spent minutes building a meta-device copy before the
    memory check; the formula refuses it at once, in one line."""
    from unmask import train_guards
    from unmask.config import model_preset
    from unmask.errors import UserError

    cfg = model_preset("demo", vocab_size=4096, max_seq_len=256)
    monkeypatch.setattr(train_guards, "available_memory", lambda device: 2 * cfg.num_params())
    train_guards.check_model_size(cfg, "cpu")  # its weights fit
    monkeypatch.setattr(train_guards, "available_memory", lambda device: cfg.num_params())
    with pytest.raises(UserError, match=r"about 5\.\dM parameters: its weights alone need"):
        train_guards.check_model_size(cfg, "cpu")
    train_guards.check_model_size(cfg, "cpu", world=2)  # split over two processes, they fit
    huge = model_preset("tiny", vocab_size=4096, max_seq_len=256, n_layers=100_000)
    monkeypatch.setattr(train_guards, "available_memory", lambda device: 2**30)
    with pytest.raises(UserError, match="choose a smaller model"):
        train_guards.check_model_size(huge, "cpu")


def test_training_goes_on_when_the_reader_of_its_progress_leaves(dataset, tmp_path, monkeypatch):
    """``unmask train ... 2>&1 | head -1``: progress on a closed pipe is dropped; the run
    trains to its end and saves (a closed pipe had stopped it, and removed a new run)."""
    import io
    import sys

    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def isatty(self):
            return False

    monkeypatch.setattr(sys, "stderr", Closed())
    run = train(cfg(dataset, tmp_path / "run", steps=3), progress=True)
    assert load(run).config is not None and (run / "checkpoint").is_dir()
    assert isinstance(sys.stderr, Closed)  # put back as it was
