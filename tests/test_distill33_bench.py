"""benchmarks/distinct_ci.py: rows of different prompts are refused as its other mistakes
are, one ``distinct_ci.py: error:`` line and exit status 2 (it said a bare line, status 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _result(path: Path, prompts: list[str], texts: list[list[str]]) -> Path:
    rows = [{"model": f"m{i}", "policy": "p", "texts": t} for i, t in enumerate(texts)]
    path.write_text(json.dumps({"meta": {"prompts": prompts}, "sections": [{"rows": rows}]}))
    return path


@pytest.mark.parametrize("case", ["other prompts", "other prompt count"])
def test_rows_of_different_prompts_are_one_error_line(tmp_path, case):
    a = _result(tmp_path / "a.json", ["p", "q"], [["a b c", "d e f"], ["a b", "c d"]])
    if case == "other prompts":
        b = _result(tmp_path / "b.json", ["p", "r"], [["a b c", "d e f"]])
        argv, want = ["--other", str(b)], f"{a} and {b} continue different prompts"
    else:  # one file whose rows hold different numbers of texts
        a = _result(tmp_path / "a.json", ["p", "q"], [["a b c", "d e f"], ["a b"]])
        argv, want = [], "the rows continue different prompt sets (2 vs 1 texts)"
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "benchmarks/distinct_ci.py", str(a), *argv], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"distinct_ci.py: error: {want}\n"


def test_distinct_matched_takes_the_flag_its_refusal_names(tmp_path):
    """distinct_matched.py refused a missing --data with "or pass --prompt-source corpus-tail"
    (``defaults.validation``'s words), a flag it did not take."""
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "benchmarks/distinct_matched.py", *argv],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    json_out = str(tmp_path / "o.json")
    refused = run("--other", "x", "--data", str(tmp_path / "none"), "--json", json_out)
    assert refused.returncode == 2 and "or pass --prompt-source corpus-tail" in refused.stderr
    other = str(tmp_path / "no-model")
    taken = run("--other", other, "--prompt-source", "corpus-tail", "--json", json_out)
    assert taken.returncode == 2 and "unrecognized arguments" not in taken.stderr, taken.stderr
    assert f"{other}: no such folder" in taken.stderr  # past the prompts, at loading --other
