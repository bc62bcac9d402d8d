"""What the tests of the command line share: ``refusal``, ``unmask ARGV`` refused in a fresh
process before torch loads."""

from __future__ import annotations

import subprocess
import sys


def refusal(argv: list[str]) -> str:
    """The stderr of ``unmask ARGV`` in a fresh process (an argument error, argparse's
    ``SystemExit``, too), which must exit 2 without having imported torch."""
    code = ("import sys\nfrom unmask.cli import main\n"
            "try:\n    rc = main(sys.argv[1:])\n"
            "except SystemExit as e:\n    rc = e.code\n"
            "print(rc, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.stdout == "2 False\n", (done.stdout, done.stderr)
    return done.stderr
