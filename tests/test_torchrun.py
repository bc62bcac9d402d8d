"""`unmask train` under torchrun (gloo, 2 CPU processes): what the user sees when a run is
refused, and the waiting a process other than rank 0 does so that the refusal is said once."""

import os
import signal
import subprocess
import sys

import pytest
from corpus_helpers import word_corpus

from unmask import parallel
from unmask.errors import UserError

WORDS = "in the beginning god created the heaven and the earth".split()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=200, seed=0)


def torchrun(args: list[str], port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(port), "-m", "unmask.cli", "train", *args],
        timeout=120, env=env, capture_output=True, text=True,
    )  # fmt: skip


def test_a_refused_run_says_why_once_not_once_per_process(dataset, tmp_path, free_port):
    """Every process meets the same mistake; each printed its line (two identical lines for
    2 processes, 8 for 8). Rank 0 says it; the others end quietly with it (exit 2)."""
    data, batch = str(tmp_path / "nowhere"), "8"  # (a batch split is said the same way)
    out = tmp_path / "run"
    done = torchrun(["--data", data, "--out", str(out), "--preset", "tiny", "--seq-len", "32",
                     "--batch-size", batch, "--steps", "2", "--no-progress", "--threads", "1"],
                    free_port)  # fmt: skip
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("unmask train:")]
    assert len(ours) == 1, done.stderr
    assert ours[0] == f"unmask train: error: {data}: no such folder; run `unmask prepare` first"
    assert "exitcode  : 2" in done.stderr  # rank 0's status, the root cause torchrun names
    assert not out.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="no flock")
def test_a_run_another_process_trains_is_refused_by_every_process_at_once(dataset, tmp_path,
                                                                         free_port):
    """Only rank 0 holds the run folder: refused, it exited, while rank 1 went on into the
    process group and waited there until torchrun killed it (30 s, then SIGKILL)."""
    import fcntl

    run = tmp_path / "run"
    args = ["--out", str(run), "--no-progress", "--threads", "1"]
    from unmask.cli import main

    assert main(["train", "--data", str(dataset), "--preset", "tiny", "--seq-len", "32",
                 "--batch-size", "4", "--steps", "1", "--eval-every", "0", *args]) == 0
    fd = os.open(run, os.O_RDONLY)  # another process training it
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        done = torchrun(["--resume", "--steps", "2", *args], free_port)
    finally:
        os.close(fd)
    ours = [line for line in done.stderr.splitlines() if line.startswith("unmask train:")]
    assert len(ours) == 1 and "another process is training this run now" in ours[0], ours
    assert "forcefully exiting" not in done.stderr  # rank 1 ended with rank 0, not killed
    assert "exitcode  : 2" in done.stderr and "exitcode  : -9" not in done.stderr


def test_rank_0_says_a_refusal_at_once(monkeypatch):
    monkeypatch.setattr(parallel, "FOLLOWER_ERROR_WAIT", 60.0)
    with pytest.raises(UserError, match="bad"), parallel.said_once(rank=0, world=2):
        raise UserError("bad")


def test_another_rank_says_it_when_rank_0_goes_on(monkeypatch):
    """A mistake only rank 1 meets (rank 0 is not there to say it) is said by rank 1 after the
    wait; a process of one says it at once."""
    waits = []
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")  # a worker of torchrun's
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(parallel, "FOLLOWER_ERROR_WAIT", 0.05)
    monkeypatch.setattr(parallel.time, "sleep", waits.append)
    with pytest.raises(UserError, match="only here"), parallel.said_once(rank=1, world=2):
        raise UserError("only here")
    assert waits == [0.05]
    assert signal.getsignal(signal.SIGTERM) is before  # the quiet exit was for the wait only
    with pytest.raises(UserError), parallel.said_once(rank=0, world=1):
        raise UserError("alone")
    assert waits == [0.05]


SKEWED = """
import os, runpy, sys, time
if os.environ["RANK"] == "1":  # this process's clock runs 1000x fast: its time limit comes first
    real = time.perf_counter
    time.perf_counter = lambda: 1000.0 * real()
sys.argv[0] = "unmask"
runpy.run_module("unmask.cli", run_name="__main__")
"""


@pytest.mark.parametrize("parallel_kind", ["ddp", "fsdp"])
def test_a_time_limit_ends_every_process_the_same_way(parallel_kind, dataset, tmp_path,
                                                      free_port):
    """Each process timed its own run: when the limit fell between two processes' clocks, all
    stopped (the stop is agreed) but only the one that had timed out validated and said why;
    rank 0 ended silently (exit 0, no line) without its final validation; under FSDP the
    validation of one met the other's checkpoint collectives: gloo aborted, no checkpoint."""
    script = tmp_path / "skewed.py"
    script.write_text(SKEWED)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(free_port), str(script), "train", "--data", str(dataset),
         "--out", str(run), "--preset", "tiny", "--seq-len", "32", "--batch-size", "4",
         "--steps", "50", "--time-limit", "1", "--eval-every", "0", "--eval-batches", "1",
         "--no-progress", "--threads", "1", "--parallel", parallel_kind],
        timeout=120, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "time limit of 1 min reached at step" in done.stderr
    import json

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    step = json.loads((run / "checkpoint" / "trainer.json").read_text())["step"]
    assert 0 < step < 50
    assert [r["step"] for r in records if "val_bpb" in r] == [step]  # the final validation


SIGNALLED = """
import os, runpy, signal, sys
import unmask.train as t
if os.environ["RANK"] == "1" and os.environ["SIGNAL_AT"] == "step":  # only this process is
    orig = t.lr_at  # sent SIGTERM, at its 4th step
    def lr_at(step, config):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return orig(step, config)
    t.lr_at = lr_at
if os.environ["RANK"] == "1" and os.environ["SIGNAL_AT"] == "final":  # or in the final
    orig_eval = t.evaluate_loss  # validation, every step done
    def evaluate_loss(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return orig_eval(*args, **kwargs)
    t.evaluate_loss = evaluate_loss
sys.argv[0] = "unmask"
runpy.run_module("unmask.cli", run_name="__main__")
"""


@pytest.mark.parametrize(("at", "steps"), [("step", 50), ("final", 4)])
def test_a_signal_to_one_process_is_said_by_rank_0(at, steps, dataset, tmp_path, free_port):
    """SIGTERM to one process (a scheduler, `kill PID`) stopped all of them at the same step,
    but rank 0, not signalled, ended as a finished run (exit 0, "checkpoint: ...") and the
    signalled one kept quiet: no line said the run stopped or how to resume it. In the final
    validation (every step done) likewise: rank 1 ended stopped (143), rank 0 finished."""
    script = tmp_path / "signalled.py"
    script.write_text(SIGNALLED)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SIGNAL_AT": at}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(free_port), str(script), "train", "--data", str(dataset),
         "--out", str(run), "--preset", "tiny", "--seq-len", "32", "--batch-size", "4",
         "--steps", str(steps), "--eval-every", "0", "--no-progress", "--threads", "1"],
        timeout=120, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0
    import json

    step = json.loads((run / "checkpoint" / "trainer.json").read_text())["step"]
    assert step == 4
    ours = [line for line in done.stderr.splitlines() if line.startswith("unmask train:")]
    assert len(ours) == 1 and ours[0].startswith("unmask train: stopped by SIGTERM"), ours
    if at == "step":
        assert f"resume with: unmask train --resume --out {run}" in ours[0]
    else:
        assert ours[0].endswith("all 4 steps were done, the run is complete")
    assert "checkpoint:" not in done.stdout


def test_fsdp_keeps_the_best_checkpoint_as_one_process_does(dataset, tmp_path, free_port):
    """--keep-best under --parallel fsdp was refused ("not supported yet"): the best weights
    are gathered from the shards like the checkpoint's, and equal one process's."""
    from safetensors.torch import load_file

    from unmask.cli import main

    args = ["--data", str(dataset), "--preset", "tiny", "--seq-len", "32", "--batch-size", "4",
            "--steps", "4", "--eval-every", "2", "--eval-batches", "2", "--keep-best",
            "--warmup", "0", "--lr", "3e-3", "--seed", "5", "--no-progress", "--threads", "1",
            "--precision", "fp32"]  # fmt: skip
    sharded, one = tmp_path / "fsdp", tmp_path / "one"
    done = torchrun(["--out", str(sharded), "--parallel", "fsdp", *args], free_port)
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["train", "--out", str(one), "--grad-accum", "2", *args]) == 0
    import json

    def bests(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["value"]) for r in map(json.loads, lines) if r.get("event") == "best"]

    assert [s for s, _ in bests(sharded)] == [s for s, _ in bests(one)] != []
    for (_, a), (_, b) in zip(bests(sharded), bests(one), strict=True):
        assert a == pytest.approx(b, rel=1e-4)
    wa = load_file(str(sharded / "best" / "checkpoint" / "model.safetensors"))
    wb = load_file(str(one / "best" / "checkpoint" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    import torch

    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)
    meta = json.loads((sharded / "checkpoint" / "trainer.json").read_text())
    assert meta["best"]["step"] == bests(one)[-1][0]


def test_auto_parallel_counts_the_memory_a_cpu_process_has(monkeypatch):
    """``--parallel auto`` picks FSDP once a replica's state passes a quarter of the memory a
    process has; on CPU the processes of a node share its RAM, but each was compared with all
    of it (2 processes: DDP kept up to twice the size it should)."""
    import torch

    from unmask import train as t
    from unmask.config import TrainConfig, model_preset

    cfg = model_preset("tiny", vocab_size=260, max_seq_len=64)
    state = 16 * cfg.num_params()  # as _parallel_kind counts it (the built model's count)
    monkeypatch.setattr(t, "available_memory", lambda device: 6 * state)  # 1/6 of it, 1/3 each
    monkeypatch.setattr(t.dist, "broadcast_object_list", lambda obj, src: None)
    auto = TrainConfig(parallel="auto")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert t._parallel_kind(auto, cfg, torch.device("cpu"), world=2) == "fsdp"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # one process a node (several machines)
    assert t._parallel_kind(auto, cfg, torch.device("cpu"), world=2) == "ddp"
