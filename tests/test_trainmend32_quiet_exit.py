"""A torchrun follower that rank 0's refusal stops (``parallel._quiet_exit``, SIGTERM) exits
with status 2 whatever its standard streams are: a closed or missing stdout raised in the
signal handler (None) or skipped stderr's flush (closed)."""

from __future__ import annotations

import io
import sys

import pytest

import unmask.parallel as parallel


class Exited(BaseException):
    pass


class Recorder(io.StringIO):
    flushed = False

    def flush(self) -> None:
        self.flushed = True


class Closed(io.StringIO):
    def flush(self) -> None:  # as a closed pipe's or file's stream says (StringIO does not)
        raise ValueError("I/O operation on closed file.")


@pytest.mark.parametrize("stdout", ["none", "closed"])
def test_the_quiet_exit_flushes_stderr_and_exits_2(monkeypatch, stdout):
    codes: list[int] = []

    def exit_(code: int) -> None:
        codes.append(code)
        raise Exited

    out = Closed() if stdout == "closed" else None
    err = Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(parallel.os, "_exit", exit_)
    with pytest.raises(Exited):
        parallel._quiet_exit(15, None)
    assert codes == [2]
    assert err.flushed
