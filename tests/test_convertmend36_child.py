"""The benchmarks' child processes (``_common.child_json``): a child that fails is one line
saying why, whatever else its stderr held; ``train_throughput.py --compare-memory`` runs its
torchrun children through it too."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest


def test_child_json_reports_a_real_child_killed_after_a_warning(benchmark) -> None:
    """A real child process that writes a warning to stderr, then is killed."""
    from unmask.errors import UserError

    common = benchmark("_common")
    code = ("import os, sys; sys.stderr.write('a warning\\n'); sys.stderr.flush(); "
            "os.kill(os.getpid(), 9)")
    with pytest.raises(UserError, match=r"^the x child process failed: killed by signal 9 \("):
        common.child_json([sys.executable, "-c", code], "x")
    assert common.child_json([sys.executable, "-c", "print('w'); print('{\"a\": 1}')"],
                             "x") == {"a": 1}


def test_train_throughput_memory_children_that_fail_are_one_line(benchmark, monkeypatch) -> None:
    """``--compare-memory``'s torchrun child that failed was a ``CalledProcessError``
    traceback (``check=True``), the child's own error captured and never shown."""
    from unmask.errors import UserError

    tt = benchmark("train_throughput")
    said = "Traceback ...\ntorch.OutOfMemoryError: CUDA out of memory\nW1207 a warning\n"
    monkeypatch.setattr(subprocess, "run",
                        lambda argv, **kw: subprocess.CompletedProcess(argv, 1, "", said))
    args = argparse.Namespace(preset="tiny", vocab=64, batch=2, seq_len=8, steps=1, d_model=0,
                              layers=0, threads=0)
    with pytest.raises(UserError) as e:
        tt.compare_memory(args)
    assert str(e.value) == \
        "the ddp child process failed: torch.OutOfMemoryError: CUDA out of memory"
