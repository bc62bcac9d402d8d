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


TORCHRUN_TAIL = """\
W1207 12:16:31.988000 30793 torch/distributed/elastic/multiprocessing/api.py:1028] Sending \
process 30856 closing signal SIGTERM
E1207 12:16:32.023000 30793 torch/distributed/elastic/multiprocessing/api.py:1002] failed \
(exitcode: {code}) local_rank: 1 (pid: 30857) of binary: /v/bin/python
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/v/site-packages/torch/distributed/run.py", line 1019, in run
    elastic_launch(
  File "/v/site-packages/torch/distributed/launcher/api.py", line 383, in launch_agent
    raise ChildFailedError(
torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n\
============================================================
benchmarks/train_throughput.py FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-12-07_12:16:32
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : 2 (pid: 30856) \n\
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-07_12:16:31
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : {code} (pid: 30857) {signal}
  error_file: <N/A>
  traceback : {traceback}
============================================================
"""
"""The end of a real torchrun child's stderr (``--compare memory --preset nosuchpreset``, torch
2.x; paths shortened): torchrun's log, its own traceback and its report of the workers."""

UNKNOWN = ("train_throughput.py: error: unknown model preset 'nosuchpreset'; choose one of tiny, "
           "bench, demo, small, base")


@pytest.mark.parametrize(("worker", "code", "signal", "said"), [
    (f"{UNKNOWN}\n{UNKNOWN}\n", 2, "", UNKNOWN),
    ("Traceback ...\ntorch.OutOfMemoryError: CUDA out of memory\nW1207 a warning\n", 1, "",
     "torch.OutOfMemoryError: CUDA out of memory"),
    ("UserWarning: TypedStorage is deprecated\n", -9, " (SIGKILL)",
     "a worker was killed by signal 9 (out of memory?)"),
    ("", 3, "", "a worker's exit status 3"),
], ids=["its error", "its traceback", "killed", "silent"])
def test_train_throughput_memory_children_that_fail_are_one_line(
        benchmark, monkeypatch, worker: str, code: int, signal: str, said: str) -> None:
    """``--compare-memory``'s torchrun child that failed was a ``CalledProcessError``
    traceback (``check=True``), the child's own error captured and never shown; then its one
    line was torchrun's ``...ChildFailedError:`` (its last error line), with nothing after the
    colon, for a worker's own error and for a worker killed out of memory alike."""
    from unmask.errors import UserError

    tt = benchmark("train_throughput")
    tb = (f"Signal {-code} (SIGKILL) received by PID 30857" if code < 0 else
          "To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html")
    stderr = worker + TORCHRUN_TAIL.format(code=code, signal=signal, traceback=tb)
    monkeypatch.setattr(subprocess, "run",
                        lambda argv, **kw: subprocess.CompletedProcess(argv, 1, "", stderr))
    args = argparse.Namespace(preset="tiny", vocab=64, batch=2, seq_len=8, steps=1, d_model=0,
                              layers=0, threads=0)
    with pytest.raises(UserError) as e:
        tt.compare_memory(args)
    assert str(e.value) == f"the ddp child process failed: {said}"
