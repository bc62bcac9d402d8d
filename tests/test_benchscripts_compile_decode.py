"""``benchmarks/compile_decode.py`` runs at its smallest settings and writes what it prints."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_eager_rows_run_and_compare_with_themselves(tmp_path):
    out = tmp_path / "r.json"
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "benchmarks/compile_decode.py", "--quick", "--modes",
                        "off", "--gen-length", "4", "--block-length", "4", "--json", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [(row["mode"], row["vs_eager"], row["same_ids"], row["compile_s"]) for row in rows] \
        == [("off", 1.0, True, None)] * 2  # the demo's llada row, then the random AR one
    assert rows[0]["model"].startswith("demo mdlm") and "random ar" in rows[1]["model"]
    assert [json.loads(line) for line in r.stdout.splitlines()] == rows
