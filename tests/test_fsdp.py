"""FSDP2 through torchrun on CPU (gloo, 2 processes): equal to one process, sharded checkpoints
that stay native for inference, and resume on another number of processes.

One chain of runs checks all three (each torchrun start costs seconds on a small machine)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from corpus_helpers import word_corpus
from safetensors.torch import load_file

from unmask.checkpoint import load
from unmask.cli import main

WORDS = "in the beginning god created the heaven and the earth and darkness was upon it".split()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=600, seed=1)


def common(dataset: Path) -> list[str]:
    # constant learning rate (no warmup, floor = peak): a run extended by --resume follows
    # the same schedule as one planned that long
    return [
        "--data",
        str(dataset),
        "--preset",
        "tiny",
        "--seq-len",
        "32",
        "--batch-size",
        "4",
        "--eval-every",
        "0",
        "--seed",
        "5",
        "--no-progress",
        "--threads",
        "1",
        "--warmup",
        "0",
        "--min-lr-ratio",
        "1",
        "--lr",
        "3e-3",
        "--log-every",
        "1",
        "--precision",
        "fp32",
    ]


def torchrun(args: list[str], port: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(port),
            "-m",
            "unmask.cli",
            "train",
            *args,
        ],
        timeout=300,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def losses(run: Path) -> dict[int, float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoint" / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)


def test_fsdp_matches_one_process_and_resumes_across_process_counts(dataset, tmp_path, free_port):
    """1 process (native checkpoint) -> 2 FSDP2 processes (native state resharded, sharded
    checkpoint written) -> 1 process (shards gathered by DCP) gives the losses and weights of
    one uninterrupted single-process run: the micro-batch count (processes × grad_accum) stays
    2, so steps 3-4, trained by FSDP, must equal the single process's steps 3-4 too."""
    whole, hops = tmp_path / "whole", tmp_path / "hops"
    assert (
        main(["train", "--out", str(whole), "--grad-accum", "2", "--steps", "6", *common(dataset)])
        == 0
    )
    assert (
        main(["train", "--out", str(hops), "--grad-accum", "2", "--steps", "2", *common(dataset)])
        == 0
    )
    torchrun(
        [
            "--resume",
            "--out",
            str(hops),
            "--parallel",
            "fsdp",
            "--grad-accum",
            "1",
            "--steps",
            "4",
            "--no-progress",
        ],
        free_port,
    )
    ck = hops / "checkpoint"
    meta = json.loads((ck / "trainer.json").read_text())
    assert meta["sharded"] and meta["world_size"] == 2 and meta["step"] == 4
    assert (ck / "sharded" / ".metadata").is_file()
    loaded = load(hops)  # the FSDP run's checkpoint/ is a native one: gathered fp32 weights
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    assert not [p for p in hops.iterdir() if p.name.startswith(".checkpoint")]
    assert (
        main(
            [
                "train",
                "--resume",
                "--out",
                str(hops),
                "--grad-accum",
                "2",
                "--steps",
                "6",
                "--no-progress",
            ]
        )
        == 0
    )
    assert not (hops / "checkpoint" / "sharded").is_dir()  # one process: native state again
    la, lb = losses(whole), losses(hops)
    assert sorted(lb) == [1, 2, 3, 4, 5, 6]
    for s in la:
        assert lb[s] == pytest.approx(la[s], rel=1e-4), s
    assert_same_weights(whole, hops)
