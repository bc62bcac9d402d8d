"""A regex search's child process stops itself after its CPU seconds, whether or not its
parent still waits: ``unmask serve`` exiting at once (a second Ctrl-C, os._exit) or a
killed server left the child of ``(a+)+$`` searching for days, orphaned."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from unmask.errors import UserError

edit_module = importlib.import_module("unmask.infill.edit")  # the package's edit is a function


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_CPU is POSIX")
def test_a_search_nobody_stops_stops_itself(monkeypatch):
    run = subprocess.run
    codes = []

    def unwatched(args, **kwargs):  # as once its server exited: no one stops it in time
        kwargs["timeout"] = 60
        done = run(args, **kwargs)
        codes.append(done.returncode)
        return done

    monkeypatch.setattr(edit_module.subprocess, "run", unwatched)
    with pytest.raises(UserError, match=r"its process was killed \(SIGXCPU\)$"):
        edit_module.regex_spans("(a+)+$", "a" * 40 + "!", seconds=0.5)  # 2 CPU seconds
    assert codes == [-edit_module.signal.SIGXCPU]


def test_a_search_still_finds_its_matches():
    assert edit_module.regex_spans("an", "banana") == [(1, 3), (3, 5)]
