"""``bash install.sh`` with a ``.venv`` an older Python made (before Python 3.10 was needed,
or by an old ``python3``): the existing ``.venv`` was used as it was, and pip refused unmask
deep in its output. Its Python is checked too, naming the fix (remove ``.venv``). The real
``.venv`` is never touched: the script runs from a copy in a temporary folder, with stand-in
Pythons."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.test_front_install import run_fresh


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_a_venv_of_an_old_python_is_named_with_the_fix(tmp_path: Path) -> None:
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    log = tmp_path / "venv-called"
    old = ('#!/bin/sh\necho "$@" >> ' + str(log) + '\ncase "$1" in -V) echo "Python 3.8.10";; '
           '-m) exit 0;; esac; exit 1\n')  # has pip (-m pip --version), is 3.8 (-c: exit 1)
    (venv / "python").write_text(old)
    (venv / "python").chmod(0o755)
    done, called = run_fresh(tmp_path, "exit 0")
    assert done.returncode == 1, done
    assert done.stderr == ("install.sh: unmask needs Python 3.10 or newer; .venv/bin/python is "
                           "Python 3.8.10 (.venv was made by an older Python: remove .venv and "
                           "run again)\n")
    assert "install" not in log.read_text()  # nothing was installed into it
    assert (venv / "python").exists()  # named, not removed
