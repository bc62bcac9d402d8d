"""Benchmark scripts audited in session 31: a bad comma list is refused as the flag is parsed
(not after minutes of training), and device_session.sh starts each stage's run afresh."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, f"benchmarks/{script}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize(
    "scales, message",
    [("0,abc", "expected comma-separated numbers, got '0,abc'"),
     ("0,-0.1", "a guide scale is a finite number >= 0, got -0.1")],
)  # fmt: skip
def test_guidance_scales_are_checked_before_training(tmp_path, scales, message):
    """``--scales 0,abc`` trained the tiny model for 300 steps (minutes), then ended in a
    ValueError traceback; a negative scale, in SampleConfig's error after the training."""
    r = _run("guidance.py", "--data", str(tmp_path / "none"), "--scales", scales)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"guidance.py: error: argument --scales: {message}")
