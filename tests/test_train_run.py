"""A training run's plan on resume, sizes checked up front, and stopping on signals
(issue 16, items 1 and 2)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from corpus_helpers import word_corpus

import unmask.train as train_mod
from unmask.checkpoint import load
from unmask.cli import main
from unmask.config import TrainConfig, model_preset
from unmask.errors import UserError
from unmask.train import load_train_config, train
from unmask.train_guards import (
    MemoryEstimate,
    SavedProgress,
    StopFlag,
    TrainingStopped,
    check_memory,
    describe_resume,
    estimate_memory,
)

WORDS = "the lord said unto moses go down and speak to the people of israel".split()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=500, seed=0)


def cfg(dataset: Path, out: Path, **kw: object) -> TrainConfig:
    base = TrainConfig(
        data=str(dataset), out=str(out), preset="tiny", seq_len=32, batch_size=4, steps=6,
        warmup=2, lr=3e-3, eval_every=0, eval_batches=1, save_every=0, log_every=1, seed=3,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def step_of(run: Path) -> int:
    return int(json.loads((run / "checkpoint" / "trainer.json").read_text())["step"])


def interrupted(config: TrainConfig, at: int, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run ``config`` in this process and send it SIGINT while step ``at`` starts."""
    orig = train_mod.lr_at

    def lr(step: int, c: TrainConfig) -> float:
        if step == at:
            os.kill(os.getpid(), signal.SIGINT)
        return orig(step, c)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "lr_at", lr)
        with pytest.raises(TrainingStopped) as e:
            train(config, progress=False)
    assert e.value.exit_code == 130 and e.value.step == at + 1
    return Path(config.out)


# ----------------------------------------------------------------------------- resume


def test_cli_resume_continues_the_saved_plan(dataset, tmp_path, monkeypatch, capsys):
    """A 6-step run stopped at step 3 resumes to 6 (not to the CLI default of 1000 steps),
    with its own lr schedule, and repeats the uninterrupted run exactly."""
    full = train(cfg(dataset, tmp_path / "full"), progress=False)
    part = interrupted(cfg(dataset, tmp_path / "part"), 2, monkeypatch)
    assert step_of(part) == 3
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(part), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "resuming at step 3 of 6\n" in err
    assert step_of(part) == 6
    assert losses(part) == pytest.approx(losses(full), rel=1e-5)
    assert load_train_config(part / "train_config.json") == cfg(dataset, part)
    elapsed = [r["elapsed_s"] for r in map(json.loads, (part / "metrics.jsonl").read_text()
                                           .splitlines()) if "elapsed_s" in r]
    assert elapsed == sorted(elapsed)  # the run's time goes on across the resume


def test_resume_after_a_hard_kill_reads_as_an_uninterrupted_run(dataset, tmp_path,
                                                                  monkeypatch):
    """A kill -9 leaves log lines past the last checkpoint (those steps run again) and a
    half-staged checkpoint folder; resuming drops both, so the log equals the uninterrupted
    run's step for step."""
    full = train(cfg(dataset, tmp_path / "full"), progress=False)
    part = interrupted(cfg(dataset, tmp_path / "part"), 2, monkeypatch)  # saved at step 3
    lines = (full / "metrics.jsonl").read_text().splitlines()
    killed = [ln for ln in lines if json.loads(ln).get("step", 0) in (4, 5)]
    with open(part / "metrics.jsonl", "a") as f:  # what the killed session had logged
        f.write("\n".join(killed) + '\n{"step": 6, "lo')  # and a line cut short
    (part / ".checkpoint.tmpdead").mkdir()
    (part / ".checkpoint.tmpdead" / "model.safetensors").write_bytes(b"half")
    assert main(["train", "--resume", "--out", str(part), "--no-progress"]) == 0
    steps = [json.loads(ln).get("step")
             for ln in (part / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(ln).get("step") for ln in lines]
    assert losses(part) == pytest.approx(losses(full), rel=1e-5)
    assert not list(part.glob(".checkpoint.tmp*"))


def test_cli_resume_flags_change_the_plan(dataset, tmp_path, monkeypatch, capsys):
    run = interrupted(cfg(dataset, tmp_path / "run", steps=8), 2, monkeypatch)
    capsys.readouterr()
    args = ["train", "--resume", "--out", str(run), "--no-progress"]
    assert main([*args, "--steps", "5"]) == 0  # shortened
    err = capsys.readouterr().err
    assert "resuming at step 3 of 8; --steps 5 given: the run now ends at 5; the learning " in err
    assert step_of(run) == 5
    assert load_train_config(run / "train_config.json").steps == 5  # the plan is saved

    assert main(args) == 2  # nothing left to do
    assert "already finished its 5 steps" in capsys.readouterr().err
    assert main([*args, "--steps", "4"]) == 2
    assert "--steps 4 is behind the run, which is already at step 5" in capsys.readouterr().err
    assert main([*args, "--steps", "7", "--lr", "0.001", "--time-limit", "30"]) == 0  # extended
    err = capsys.readouterr().err
    assert ("resuming at step 5 of 5; --steps 7, --lr 0.001, --time-limit 30.0 given: the run "
            "now ends at 7 or after 30 min of training; the learning rate at step 5 becomes "
            "0.000411 (1.4× the saved plan's 0.0003)\n") in err
    assert step_of(run) == 7
    lrs = [r["lr"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
           if "lr" in r]
    plan = replace(cfg(dataset, run), steps=7, lr=1e-3)
    assert lrs[-1] == pytest.approx(train_mod.lr_at(6, plan))


def test_resume_keeps_the_model(dataset, tmp_path, monkeypatch, capsys):
    run = interrupted(cfg(dataset, tmp_path / "run"), 1, monkeypatch)
    capsys.readouterr()
    args = ["train", "--resume", "--out", str(run), "--no-progress"]
    assert main([*args, "--objective", "ar"]) == 2
    err = capsys.readouterr().err
    assert "objective='ar' differs from the run's 'mdlm'" in err and err.count("\n") == 1
    assert main([*args, "--model-set", "d_model=32"]) == 2
    assert main([*args, "--config", str(run / "train_config.json")]) == 2
    assert main(["train", "--resume", "--out", str(tmp_path / "nothing")]) == 2
    with pytest.raises(UserError, match="keeps its model"):
        train(cfg(dataset, run, preset="demo"), resume=True, progress=False)
    assert step_of(run) == 2  # nothing ran


def test_resume_line_and_time_limit():
    saved = TrainConfig(steps=200, time_limit=10.0)

    def flag(name: str, value: object) -> str:
        return f"--{name.replace('_', '-')} {value}"

    plan = replace(saved, steps=400)
    assert describe_resume(SavedProgress(150, 0.0), saved, plan, {"steps": 400}, name=flag) == (
        "resuming at step 150 of 200 (0 of 10 min used); --steps 400 given: the run now ends "
        "at 400 or after 10 min of training"
    )
    assert describe_resume(SavedProgress(150, 0.0), replace(saved, time_limit=0.0),
                           replace(saved, time_limit=0.0), {}) == "resuming at step 150 of 200"
    with pytest.raises(UserError, match="used its time limit of 10 min"):
        describe_resume(SavedProgress(150, 600.0), saved, saved, {})
    short = replace(saved, time_limit=0.02)  # 4 s trained: not "(0.0 min trained)"
    with pytest.raises(UserError, match=r"time limit of 0.02 min \(0.067 min trained\)"):
        describe_resume(SavedProgress(150, 4.0), short, short, {})
    assert "time_limit=20.0 given" in describe_resume(
        SavedProgress(150, 600.0), saved, replace(saved, time_limit=20.0), {"time_limit": 20.0}
    )


def test_time_limit_counts_earlier_sessions(dataset, tmp_path, monkeypatch):
    """Training time is saved with the checkpoint, so a resumed run's limit covers both."""
    steps = 5000  # far more than 0.1 s of training on any machine
    run = interrupted(cfg(dataset, tmp_path / "run", steps=steps), 1, monkeypatch)
    meta = json.loads((run / "checkpoint" / "trainer.json").read_text())
    assert meta["train_seconds"] > 0
    meta["train_seconds"] = 59.9  # as if the first session had trained for 59.9 s
    (run / "checkpoint" / "trainer.json").write_text(json.dumps(meta))
    saved = load_train_config(run / "train_config.json")
    train(replace(saved, time_limit=1.0), resume=True, progress=False)
    assert 2 <= step_of(run) < steps  # stopped by the limit (1 min in all), not by steps


def test_a_time_limit_right_after_validation_does_not_validate_twice(dataset, tmp_path,
                                                                       monkeypatch):
    """The limit found just after a validation step stops there with one val record for
    that step (it was validated twice, and an extra point could make a best/)."""
    import types

    clock = {"now": 0.0}
    real_eval = train_mod.evaluate_loss

    def evaluate_then_late(*args, **kwargs):  # the validation at step 2 outlasts the limit
        clock["now"] = 600.0
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(train_mod, "evaluate_loss", evaluate_then_late)
    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(
        perf_counter=lambda: clock["now"], time=time.time))
    run = tmp_path / "run"
    train(cfg(dataset, run, steps=6, eval_every=2, time_limit=1.0), progress=False)
    assert step_of(run) == 2
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_loss" in r] == [2]


# ----------------------------------------------------------------------------- sizes


def test_impossible_sizes_refused_up_front(dataset, tmp_path, capsys):
    base = ["train", "--data", str(dataset), "--out", str(tmp_path / "r"), "--no-progress",
            "--seq-len", "32", "--steps", "1"]
    cases = {
        ("--seq-len", "100000000"): "--seq-len=100000000 is longer than the train split",
        ("--batch-size", "10000000"): "--batch-size=10000000 exceeds the",
        # the weights alone (88 GB at 2 bytes) or with the optimizer state: by the free memory
        ("--model-set", "d_model=4096", "--model-set", "n_layers=256"): (
            "its weights alone need", "this run needs about"),
    }
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for extra, message in cases.items():
        t = time.perf_counter()
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        alternatives = (message,) if isinstance(message, str) else message
        assert any(m in err for m in alternatives) and err.count("\n") == 1, err
        assert time.perf_counter() - t < 30
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grown_mb < 300  # nothing big was allocated before the refusal
    assert not (tmp_path / "r" / "checkpoint").exists()


def test_memory_estimate_and_refusal(dataset, tmp_path, monkeypatch):
    m = model_preset("tiny", vocab_size=260, max_seq_len=64)
    n_params = sum(p.numel() for p in train_mod.Transformer(m).parameters())
    c = TrainConfig(seq_len=64, batch_size=8, ema=0.99)
    est = estimate_memory(m, c, rows=8, cuda=False)
    assert est.state == 20 * n_params  # weights, grads, two AdamW moments, EMA: fp32
    per_token = m.n_layers * 16 * m.d_model + 3 * m.vocab_size
    assert est.activations == 4 * 8 * 64 * per_token + 16 * 8 * 64
    half = estimate_memory(m, c, rows=4, cuda=True).activations
    assert half == 2 * 4 * 64 * per_token + 16 * 8 * 64  # bf16, half the rows
    check_memory(est, est.total, config=c, rows=8)  # fits exactly
    check_memory(est, None, config=c, rows=8)  # unknown: no check
    with pytest.raises(UserError, match="× 2 processes"):
        check_memory(est, est.total, config=c, rows=8, processes=2)
    est2 = MemoryEstimate(state=3 * 2**30, activations=2**30)
    with pytest.raises(UserError, match=r"about 4\.0 GB .* more than the 1\.0 GB available"):
        check_memory(est2, 2**30, config=c, rows=8)
    # The training entry point asks before building the model.
    monkeypatch.setattr(train_mod, "available_memory", lambda device: 1024)
    with pytest.raises(UserError, match="more than the 1 KB available"):
        train(cfg(dataset, tmp_path / "r"), progress=False)


def test_empty_validation_split_trains_without_validation(tmp_path):
    from unmask.data import prepare

    (tmp_path / "a.txt").write_text("the people of israel said unto moses.\n" * 200)
    data = tmp_path / "d"
    prepare([tmp_path / "a.txt"], data, tokenizer="byte", val_fraction=0, progress=False)
    run = train(cfg(data, tmp_path / "run", steps=2), progress=False)  # (--eval-every N > 0:
    # refused, tests/test_trainmend30_validation_cut.py)
    assert step_of(run) == 2
    assert not [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                if "val_loss" in r]
    with pytest.raises(UserError, match="--keep-best keeps .* has no validation split"):
        train(cfg(data, tmp_path / "best", keep_best=True), progress=False)  # wrote no best/
    assert not (tmp_path / "best").exists()


# ----------------------------------------------------------------------------- signals


def test_stop_flag_phases():
    with StopFlag(Path("run")) as flag:
        with pytest.raises(TrainingStopped, match="SIGINT before training started"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at the next bytecode
        with flag.deferring():
            flag.signum = None
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            assert flag.signum == signal.SIGTERM  # first signal: noted, the loop stops itself
            with pytest.raises(TrainingStopped, match="second signal") as e:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            assert e.value.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_cli_sigint_mid_run_saves_and_returns_130(dataset, tmp_path, monkeypatch, capsys):
    """SIGINT mid-run through main, in this process: the checkpoint of the step it stopped
    at, the lines that say so and how to resume, status 130. The real process, signalled
    from outside, is the SIGTERM case below (a second one cost ~9 s of torch start)."""
    orig = train_mod.lr_at

    def lr(step: int, c: TrainConfig) -> float:
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return orig(step, c)

    monkeypatch.setattr(train_mod, "lr_at", lr)
    run = tmp_path / "run"
    rc = main(["train", "--data", str(dataset), "--out", str(run), "--seq-len", "32",
               "--batch-size", "4", "--steps", "100000", "--eval-every", "0", "--save-every",
               "2", "--log-every", "1", "--threads", "1", "--no-progress"])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 130, err
    assert step_of(run) == 4
    assert "stopped by SIGINT at step 4; checkpoint saved in" in err
    assert f"resume with: unmask train --resume --out {run}" in err
    assert "Traceback" not in err and "checkpoint:" not in out
    assert not [p for p in run.iterdir() if p.name.startswith(".checkpoint")]
    assert load(run).model is not None
    assert load_train_config(run / "train_config.json").steps == 100000


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143)])
def test_cli_signal_mid_run_saves_and_exits(dataset, tmp_path, sig, code):
    """A real signal from outside, mid-run: prompt stop, atomic checkpoint, exit 128 + signal."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "unmask.cli", "train", "--data", str(dataset), "--out", str(run),
           "--seq-len", "32", "--batch-size", "4", "--steps", "100000", "--eval-every", "0",
           "--save-every", "2", "--log-every", "1", "--threads", "1", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        metrics = run / "metrics.jsonl"
        while time.monotonic() < deadline and proc.poll() is None:
            if metrics.is_file() and metrics.read_text().count('"loss"') >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(sig)
        t = time.monotonic()
        out, err = proc.communicate(timeout=60)
        stop_s = time.monotonic() - t
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert stop_s < 30
    step = step_of(run)
    assert step >= 3
    name = signal.Signals(sig).name
    assert f"stopped by {name} at step {step}; checkpoint saved in" in err
    assert f"resume with: unmask train --resume --out {run}" in err
    assert "Traceback" not in err and "checkpoint:" not in out
    assert not [p for p in run.iterdir() if p.name.startswith(".checkpoint")]
    assert load(run).model is not None
    assert load_train_config(run / "train_config.json").steps == 100000


def test_a_signal_after_the_last_step_does_not_ask_for_a_resume(tmp_path):
    """SIGTERM in the final validation or save: the run is complete, and a resume would be
    refused ("already finished"), so the message says so instead of suggesting one."""
    from unmask.train_guards import resume_hint

    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "train_config.json").write_text(json.dumps({"steps": 6}))
    done = TrainingStopped(signal.SIGTERM, 6, tmp_path)
    assert resume_hint(done, "train") == "; all 6 steps were done, the run is complete"
    early = TrainingStopped(signal.SIGTERM, 3, tmp_path)
    want = f"; resume with: unmask distill --resume --out {tmp_path}"
    assert resume_hint(early, "distill") == want


def test_unmask_train_stays_callable_after_its_module_is_imported(dataset, tmp_path):
    """``import unmask.train`` (as any ``from unmask.train import ...`` does) sets the
    package's ``train`` to the module; the README's ``unmask.train(config)`` still trains."""
    import importlib

    import unmask

    importlib.import_module("unmask.train")
    run = unmask.train(cfg(dataset, tmp_path / "run", steps=1), progress=False)
    assert (run / "checkpoint" / "model.safetensors").is_file()


def test_log_every_0_logs_only_the_last_step(dataset, tmp_path):
    run = train(cfg(dataset, tmp_path / "run", steps=3, log_every=0), progress=False)
    steps = [json.loads(ln).get("step") for ln in (run / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(ln)]
    assert steps == [3]


def test_resume_refuses_data_of_another_tokenizer(dataset, tmp_path, capsys):
    """--resume --data OTHER: data of another tokenizer (BPE ids for a byte model) is refused
    in one line before the plan is saved, so a plain resume still works."""
    from unmask.data import prepare

    bpe = tmp_path / "bpe"
    prepare([dataset.parent / "a.txt"], bpe, tokenizer="bpe", vocab_size=300, val_fraction=0,
            progress=False)
    run = train(cfg(dataset, tmp_path / "run", steps=2), progress=False)
    plan = (run / "train_config.json").read_bytes()
    capsys.readouterr()
    args = ["train", "--resume", "--out", str(run), "--no-progress", "--steps", "3"]
    assert main([*args, "--data", str(bpe)]) == 2
    err = capsys.readouterr().err
    assert f"--data {bpe}: its tokenizer differs from the run's" in err
    assert "Traceback" not in err and err.count("\n") == 1  # the refusal alone
    assert (run / "train_config.json").read_bytes() == plan
    assert main(args) == 0 and step_of(run) == 3


def test_eval_batches_0_validates_on_the_whole_split(dataset, tmp_path):
    """--eval-batches 0 is the whole validation split, as unmask eval reads it: the logged
    number is the one heldout_bound gives for the same weights (it was one batch's)."""
    from unmask.report import heldout_bound

    run = train(cfg(dataset, tmp_path / "run", steps=2, eval_batches=0), progress=False)
    logged = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if "val_loss" in r][-1]["val_loss"]
    plan = load_train_config(run / "train_config.json")
    whole = heldout_bound(load(run).model, plan, max_batches=0).loss
    one = heldout_bound(load(run).model, plan, max_batches=1).loss
    assert logged == pytest.approx(whole, rel=1e-6) and whole != pytest.approx(one, rel=1e-6)


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_checkpoint(dataset, tmp_path):
    """A checkpoint write that fails (here a file-size limit, as a full disk would) is one line
    and exit 2; the checkpoint of the step before stays whole and resumable."""
    run = train(cfg(dataset, tmp_path / "run", steps=2), progress=False)
    before = {p.name: p.read_bytes() for p in (run / "checkpoint").iterdir()}

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    env = {**os.environ, "PYTHONPATH": str(Path(train_mod.__file__).parents[1])}
    r = subprocess.run(
        [sys.executable, "-m", "unmask.cli", "train", "--resume", "--out", str(run), "--steps", "3",
         "--no-progress"], capture_output=True, text=True, env=env, preexec_fn=small_files,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"unmask train: error: File too large: {run / 'checkpoint'}"
    assert "Traceback" not in r.stderr
    assert {p.name: p.read_bytes() for p in (run / "checkpoint").iterdir()} == before
    assert not list(run.glob(".checkpoint.*"))
    assert main(["train", "--resume", "--out", str(run), "--steps", "3", "--no-progress"]) == 0


def test_model_set_of_what_the_run_writes_is_refused(dataset, tmp_path, capsys):
    """objective, schedule, schedule_eps and sample_defaults are written by the run itself
    (ObjectiveSpec.configure): a --model-set of them, silently overwritten before, is refused
    in one line naming the flag that sets them."""
    args = ["train", "--data", str(dataset), "--out", str(tmp_path / "r"), "--steps", "1",
            "--seq-len", "32", "--batch-size", "4", "--no-progress"]
    for setting, flag in [("objective=ar", "--objective"), ("schedule=cosine", "--schedule"),
                          ("schedule_eps=0.5", "--eps"), ("sample_defaults=1", "measured")]:
        assert main([*args, "--model-set", setting]) == 2
        err = capsys.readouterr().err
        assert flag in err and err.count("\n") == 1, err
    with pytest.raises(UserError, match="use --schedule"):  # the Python API and --config too
        train(cfg(dataset, tmp_path / "r", model_overrides={"schedule": "cosine"}),
              progress=False)
    assert not (tmp_path / "r").exists()


def test_bad_model_overrides_are_one_line(dataset, tmp_path, capsys):
    """model_overrides from --config (or a hand-edited train_config.json on --resume) get the
    --model-set checks: a value of the wrong type, a list, an unknown field."""
    args = ["train", "--data", str(dataset), "--out", str(tmp_path / "r"), "--steps", "1",
            "--seq-len", "32", "--batch-size", "4", "--no-progress"]
    for overrides, says in [({"d_model": "x"}, "d_model='x' should be int"),
                            ([1], "model_overrides=[1] should be"),
                            ({"nope": 1}, "'nope' is not a ModelConfig field"),
                            ({"sample_defaults": 1}, "sample_defaults=1 should be dict")]:
        (tmp_path / "c.json").write_text(json.dumps({"model_overrides": overrides}))
        assert main([*args, "--config", str(tmp_path / "c.json")]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
    assert main([*args, "--model-set", "nope=1"]) == 2
    assert "'nope' is not a ModelConfig field" in capsys.readouterr().err
    run = train(cfg(dataset, tmp_path / "run", steps=1), progress=False)
    plan = json.loads((run / "train_config.json").read_text())
    plan["model_overrides"] = {"d_model": "x"}
    (run / "train_config.json").write_text(json.dumps(plan))
    assert main(["train", "--resume", "--out", str(run), "--steps", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "train_config.json: model_overrides: d_model='x' should be int" in err
    assert err.count("\n") == 1 and step_of(run) == 1


def test_init_refuses_preset_and_model_set_that_change_its_model(dataset, tmp_path, capsys):
    """--init continues its checkpoint's model: a --preset or --model-set that would build
    another is refused in one line (they were ignored, yet saved in the plan); ones that
    describe it pass, and max_seq_len, which no weight depends on, sets the context."""
    base = train(cfg(dataset, tmp_path / "base", steps=1), progress=False)  # tiny: d_model 32
    args = ["train", "--data", str(dataset), "--init", str(base), "--steps", "1",
            "--seq-len", "32", "--batch-size", "4", "--eval-batches", "1", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a"), "--preset", "bench"]) == 2
    err = capsys.readouterr().err
    assert "--preset bench is another model (d_model 64, the --init model's 32)" in err
    assert err.count("\n") == 1
    assert main([*args, "--out", str(tmp_path / "b"), "--model-set", "d_model=64"]) == 2
    err = capsys.readouterr().err
    assert "--model-set d_model=64 cannot change the --init model (its d_model is 32)" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    out = tmp_path / "c"
    longer = [a if a != "32" else "96" for a in args]  # --seq-len 96: past the tiny 64
    assert main([*longer, "--out", str(out), "--model-set", "d_model=32", "--model-set",
                 "max_seq_len=96"]) == 0
    assert load(out).config.max_seq_len == 96 and load(out).config.d_model == 32


@pytest.mark.parametrize("rank, says", [("0", True), ("1", False)])
def test_only_rank_0_says_where_a_stopped_run_is(dataset, tmp_path, monkeypatch, capsys,
                                                  rank, says):
    """Under torchrun every process stops (and exits 130); the stop line is rank 0's alone."""
    def stopped(config: TrainConfig, **kw: object) -> Path:
        raise TrainingStopped(signal.SIGINT, 3, Path(config.out))

    monkeypatch.setattr(train_mod, "train", stopped)
    monkeypatch.setenv("RANK", rank)
    assert main(["train", "--data", str(dataset), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 130
    assert ("stopped by SIGINT at step 3" in capsys.readouterr().err) == says


def test_plain_progress_lines_when_stderr_is_not_a_terminal(dataset, tmp_path, capsys,
                                                            monkeypatch):
    """No bar in a log (stderr not a terminal): a start line, then a plain line at a log_every
    step at most every 30 s (the first and the last always) and at each evaluation;
    progress=False (--no-progress) prints nothing."""
    import unmask.progress as progress_mod

    run = train(cfg(dataset, tmp_path / "run", steps=6, log_every=2, eval_every=4), progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (f"train: steps 0 to 6, 4×32 tokens each; metrics in "
                        f"{run / 'metrics.jsonl'}")
    assert [ln.split(" loss ")[0] for ln in lines[1:4]] == ["step 2/6", "step 4/6", "step 6/6"]
    assert len(lines) == 5 and lines[4].startswith("step 6: val bpb")
    assert "tok/s ETA" in lines[1] and " val_bpb " in lines[2] and "ETA 0.0 min" in lines[3]
    monkeypatch.setattr(progress_mod, "PLAIN_EVERY_S", 0.0)  # every log_every step now
    train(cfg(dataset, tmp_path / "often", steps=3, log_every=1), progress=True)
    steps = [ln.split(" loss ")[0] for ln in capsys.readouterr().err.splitlines()[1:4]]
    assert steps == ["step 1/3", "step 2/3", "step 3/3"]
    train(cfg(dataset, tmp_path / "quiet", steps=2), progress=False)
    assert capsys.readouterr().err == ""


def test_a_run_killed_before_its_first_checkpoint_starts_anew(dataset, tmp_path, capsys):
    """SIGKILL (or the OOM killer) before the first save leaves the plan, the log and maybe a
    staged checkpoint: --resume has nothing to resume and says to start again, and a new run
    there starts anew (both refused before, each pointing at the other)."""
    run = tmp_path / "run"
    config = cfg(dataset, run, steps=2)
    train(config, progress=False)
    want = (run / "checkpoint" / "model.safetensors").read_bytes()
    shutil.rmtree(run / "checkpoint")  # as killed at its first save: staged, never renamed
    (run / ".checkpoint.tmp-1234").mkdir()
    (run / ".checkpoint.tmp-1234" / "model.safetensors").write_bytes(b"partial")
    with pytest.raises(UserError, match="stopped before its first checkpoint: start it again"):
        train(config, resume=True, progress=False)
    capsys.readouterr()
    train(config, progress=False)
    assert "starting it anew" in capsys.readouterr().err
    assert (run / "checkpoint" / "model.safetensors").read_bytes() == want  # as a fresh run
    assert len(losses(run)) == 2  # the killed run's log lines are gone
    (run / "mine.txt").write_text("a user's file")  # anything else: still refused
    shutil.rmtree(run / "checkpoint")
    with pytest.raises(UserError, match="already exists and is not empty"):
        train(config, progress=False)


def test_a_run_saved_with_options_its_objective_ignored_still_resumes(dataset, tmp_path,
                                                                      monkeypatch, capsys):
    """An ``ar`` run saved before ``--eps`` and ``--random-length-frac`` were refused for it
    holds them in its plan; they never acted, so its resume (CLI and Python, the plan as a
    dict) continues it as it trained, rather than refusing the saved plan."""
    part = interrupted(cfg(dataset, tmp_path / "part", objective="ar"), 2, monkeypatch)
    plan = part / "train_config.json"
    saved = json.loads(plan.read_text())
    plan.write_text(json.dumps({**saved, "eps": 0.01, "random_length_frac": 0.3}))
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(part), "--steps", "4", "--no-progress"]) == 0
    assert step_of(part) == 4
    train({"out": str(part), "steps": 5}, resume=True, progress=False)
    assert step_of(part) == 5
