"""``.ci/run`` sets up "as the README says, then exactly the README's test command" (its
header): the two are checked against each other here, so a change to one is made to both."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_set_up_and_test_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"Run the tests:\n\n    (.+)\n", readme)
    assert m, "README.md has no 'Run the tests:' command"
    steps = [s.strip() for s in m.group(1).split("&&")]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith("#")]
    assert ci[-len(steps):] == steps, (ci, steps)
