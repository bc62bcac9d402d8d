"""``benchmarks/rounding.py``: only continuous families are swept, temperatures are checked as
flags."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "benchmarks/rounding.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_a_discrete_model_is_refused_before_anything_is_measured(tmp_path):
    """An mdlm checkpoint was swept at every temperature and given a "recommended" rounding,
    though its decoder rounds no continuous state (the table read as a finding)."""
    r = _run("--model", "src/unmask/assets/demo", "--data", str(tmp_path), "--no-score")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "rounding.py: error: --model src/unmask/assets/demo: objective 'mdlm' rounds nothing; "
        "give an embed-diffusion or latent-diffusion checkpoint")
    assert r.stdout == ""


@pytest.mark.parametrize(
    "value, message",
    [("0,x", "expected comma-separated numbers, got '0,x'"),  # was a ValueError traceback
     ("-1", "a temperature is a finite number >= 0, got -1"),
     ("nan", "a temperature is a finite number >= 0, got nan"),
     ("inf", "a temperature is a finite number >= 0, got inf")],
)  # fmt: skip
def test_temperatures_are_checked_as_a_flag(benchmark, value, message):
    import argparse

    rounding = benchmark("rounding")
    assert rounding.temperatures("0, 0.5,1") == [0.0, 0.5, 1.0]
    with pytest.raises(argparse.ArgumentTypeError, match=f"^{message}$"):
        rounding.temperatures(value)
