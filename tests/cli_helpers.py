"""What the tests of the command line share: ``refusal``, ``unmask ARGV`` refused in a fresh
process before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
"""This checkout's sources: a fresh process imports them, whichever ``unmask`` the environment
installed (pytest's ``pythonpath`` setting reaches only its own process)."""


def fresh_env() -> dict[str, str]:
    """The environment of a fresh ``unmask`` process that imports this checkout (``SRC``)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}


def refusal(argv: list[str]) -> str:
    """The stderr of ``unmask ARGV`` in a fresh process (an argument error, argparse's
    ``SystemExit``, too), which must exit 2 without having imported torch."""
    code = ("import sys\nfrom unmask.cli import main\n"
            "try:\n    rc = main(sys.argv[1:])\n"
            "except SystemExit as e:\n    rc = e.code\n"
            "print(rc, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, env=fresh_env())
    assert done.stdout == "2 False\n", (done.stdout, done.stderr)
    return done.stderr
