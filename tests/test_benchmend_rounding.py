"""benchmarks/rounding.py checks each ``--model``'s objective from its config.json, then loads
the models one at a time as it measures them (every model was loaded in full up front just
to read its objective: all of them in memory at once)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_objective_is_read_without_loading_the_model(tmp_path):
    """A continuous checkpoint whose model cannot load (no weights, no tokenizer) first, the demo
    (mdlm) second: the demo is refused for its objective, the first model not loaded yet
    (it was, and its load error was the answer)."""
    cont = tmp_path / "cont"
    cont.mkdir()
    config = json.loads((ROOT / "src/unmask/assets/demo/config.json").read_text())
    (cont / "config.json").write_text(json.dumps({**config, "objective": "embed-diffusion"}))
    (cont / "model.safetensors").write_bytes(b"not weights")
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "benchmarks/rounding.py", "--model", str(cont),
                        "--model", "src/unmask/assets/demo", "--data", str(tmp_path),
                        "--no-score", "--json", str(tmp_path / "out" / "r.json")],
                       cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "rounding.py: error: --model src/unmask/assets/demo: objective 'mdlm' rounds nothing; "
        "give an embed-diffusion or latent-diffusion checkpoint")
    assert not (tmp_path / "out").exists()
