"""benchmarks/device_session.sh with a python that cannot import torch says so, as
gpu_check.sh does, where it blamed CUDA ("sees no CUDA device")."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_python_without_torch_is_named_not_cuda(tmp_path) -> None:
    py = tmp_path / "python3"  # a python of another environment: every import of torch fails
    py.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n")
    py.chmod(0o755)
    for device in ("cuda", "cpu"):  # on the CPU every stage failed on its own
        env = {"PATH": "/usr/bin:/bin", "PY": str(py), "OUT": str(tmp_path / "out"),
               "DEVICE": device, "STAGES": "spec", "TOTAL": "30"}  # fmt: skip
        r = subprocess.run(["/bin/bash", "benchmarks/device_session.sh"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 2, (device, r.stdout, r.stderr)
        assert r.stderr.strip().splitlines() == [
            f"device_session.sh: error: {py} cannot import torch (set PY to the environment's "
            "python)"], (device, r.stderr)  # fmt: skip
        assert "== done" not in r.stdout
