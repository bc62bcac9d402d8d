"""The last line of ``bash install.sh`` names the program as the user can type it where they
are: run from another folder (``bash unmask/install.sh`` right after a clone), the
``.venv/bin/unmask demo`` it printed was "No such file or directory" there."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from test_front_install import ROOT

FAKE_PYTHON = """#!/bin/sh
case "$*" in
  "-m venv .venv") mkdir -p .venv/bin && cp "$0" .venv/bin/python && touch .venv/bin/unmask ;;
  *print*) echo "unmask ready" ;;
esac
exit 0
"""
"""A python3 that makes a ``.venv`` (with a ``bin/unmask``) and says yes to the rest."""


def _install(repo, cwd):
    """``bash REPO/install.sh`` from ``cwd``, with no environment active and the fake
    python3 first on PATH; its output's last line."""
    repo.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "install.sh", repo / "install.sh")
    bin_dir = repo.parent / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3").write_text(FAKE_PYTHON)
    (bin_dir / "python3").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    done = subprocess.run(["bash", str(repo / "install.sh")], capture_output=True, text=True,
                          env=env, timeout=60, cwd=cwd)
    assert done.returncode == 0, done
    return done.stdout.splitlines()[-1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_run_from_another_folder_the_next_command_runs_there(tmp_path):
    repo = tmp_path / "my clone" / "unmask"  # a space: the path is quoted for the shell
    last = _install(repo, tmp_path)
    assert last.startswith("next: ") and last.endswith(" demo"), last
    typed = last.removeprefix("next: ").removesuffix(" demo")
    # the shell, where the user is, finds the program the line names
    found = subprocess.run(["bash", "-c", f"test -e {typed} && echo {typed}"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert found.stdout.strip() == str(repo / ".venv" / "bin" / "unmask"), (last, found)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_run_in_the_checkout_the_next_command_stays_short(tmp_path):
    repo = tmp_path / "unmask"
    assert _install(repo, repo) == "next: .venv/bin/unmask demo"
