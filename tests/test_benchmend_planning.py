"""benchmarks/planning.py makes the folder of ``--json`` when it writes the results, not
before its other checks (``output_file`` checked the path, making nothing): a command
refused by a later check left the folder behind."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "benchmarks/planning.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_planning_makes_the_results_folder_only_when_it_writes(tmp_path):
    from unmask.tasks import write_task

    write_task("reversal", tmp_path / "task", n_train=1, n_eval=1)
    base = ["--task-file", str(tmp_path / "task"), "--run", "a=src/unmask/assets/demo",
            "--limit", "1"]  # fmt: skip
    r = _run(*base, "--json", str(tmp_path / "refused" / "p.json"), "--sample-set", "bogus=1")
    assert r.returncode == 2 and "--sample-set" in r.stderr and "bogus" in r.stderr, r.stderr
    assert not (tmp_path / "refused").exists()  # was made before the option check
    out = tmp_path / "a" / "b" / "p.json"
    r = _run(*base, "--json", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["rows"]
    assert rows and {row["model"] for row in rows} == {"a"}
