"""What the tests of the command line share: ``refusal``, ``unmask ARGV`` in a fresh process
(is torch imported when it refuses?)."""

from __future__ import annotations

import subprocess
import sys


def refusal(argv: list[str]) -> tuple[str, str]:
    """(``"<exit status> <torch imported>"``, stderr) of ``unmask ARGV`` in a fresh process
    (an argument error, argparse's ``SystemExit``, too)."""
    code = ("import sys\nfrom unmask.cli import main\n"
            "try:\n    rc = main(sys.argv[1:])\n"
            "except SystemExit as e:\n    rc = e.code\n"
            "print(rc, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    return done.stdout, done.stderr
