"""``unmask.files`` on Windows: atomic writes where ``os.fchmod`` is missing (before Python
3.13; every write of a config or checkpoint JSON failed with an AttributeError), and the
leftover check, which sends no signal there (``os.kill(pid, 0)`` is no probe on Windows)."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from unmask.files import (
    atomic_write_bytes,
    atomic_write_text,
    file_mode,
    staging_prefix,
    stale_staging,
)


def test_atomic_writes_without_fchmod_give_an_ordinary_file(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "fchmod", raising=False)
    atomic_write_text(tmp_path / "a.json", "{}\n")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "a.json").read_text() == "{}\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    if os.name == "posix":
        for name in ("a.json", "b.bin"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == file_mode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin"]


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="the usual path needs os.fchmod")
def test_atomic_writes_with_fchmod_give_an_ordinary_file(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}\n")
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == file_mode()


def test_no_process_is_signalled_to_tell_a_leftover_on_windows(tmp_path, monkeypatch):
    """On Windows ``os.kill(pid, 0)`` is no probe: signal 0 is ``CTRL_C_EVENT``, a Ctrl-C to
    the console process group ``pid`` (``GenerateConsoleCtrlEvent``), which said "running"
    for a dead process too. No signal is sent there, and the folders stay."""
    out = tmp_path / "data"
    left = out.with_name(staging_prefix(out, 4242) + "0badcafe")
    left.mkdir()
    signalled = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signalled.append(pid))
    monkeypatch.setattr(sys, "platform", "win32")
    assert stale_staging(out) == []
    assert signalled == []

    def gone(pid: int, sig: int) -> None:  # POSIX: signal 0 probes, and this one is gone
        raise ProcessLookupError

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "kill", gone)
    assert stale_staging(out) == [left]
