"""benchmarks/hybrid_scale.sh called again on its run (the resume its header documents)
ships the new weights: ``unmask convert`` refuses a folder that is not empty, so the second
call exited 2 and the old float16 copy stayed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.corpus_helpers import word_corpus
from unmask.config import TrainConfig
from unmask.train import train

REPO = Path(__file__).resolve().parent.parent
WORDS = "in the beginning god created the heaven and the earth".split()


def test_a_resumed_call_ships_the_new_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    data = word_corpus(tmp_path, WORDS, lines=200, seed=0)
    init = train(TrainConfig(data=str(data), out=str(tmp_path / "ar"), preset="tiny",
                             objective="ar", seq_len=16, batch_size=2, steps=1, eval_every=0,
                             eval_batches=1, save_every=0, seed=0), progress=False)
    ship = tmp_path / "ship"
    env = {**os.environ, "PY": sys.executable, "PYTHONPATH": str(REPO / "src"),
           "OMP_NUM_THREADS": "1", "INIT": str(init / "checkpoint"), "DATA": str(data),
           "OUT": str(tmp_path / "hybrid"), "SHIP": str(ship), "BATCH": "2", "SEQ": "16",
           "WARMUP": "1", "DRAFT": "4", "DEVICE": "cpu", "THREADS": "1", "MEASURE": "0"}
    shipped = []
    for steps in ("2", "3"):  # the first call trains and ships; the second resumes, ships
        r = subprocess.run(["bash", str(REPO / "benchmarks" / "hybrid_scale.sh")], cwd=REPO,
                           env={**env, "STEPS": steps}, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        shipped.append(load_file(str(ship / "model.safetensors")))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ship")) == ["ship"]
    first, second = shipped
    assert first.keys() == second.keys()
    assert any(not (first[k] == second[k]).all() for k in first)  # step 3's weights now
