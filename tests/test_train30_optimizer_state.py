"""A run folder whose optimizer state does not fit its model (a hand-edited trainer.json, a
trainer.safetensors copied from another run) is refused on --resume in one line, exit 2; it
was a traceback from ``Optimizer.load_state_dict`` or AdamW's first step (session 30)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from unmask.cli import main
from unmask.config import TrainConfig
from unmask.errors import UserError
from unmask.train import train

WORDS = "in the beginning god created the heaven and the earth and it was good".split()


@pytest.fixture(scope="module")
def run(word_corpus, tmp_path_factory) -> Path:
    data = word_corpus("opt30", WORDS)
    out = tmp_path_factory.mktemp("opt30") / "run"
    config = TrainConfig(data=str(data), out=str(out), preset="tiny", seq_len=32, batch_size=4,
                         steps=2, warmup=1, eval_every=0, save_every=0, threads=1)
    return train(config, progress=False)


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(run, out)
    return out


def _edit(path: Path, **changes: object) -> None:
    meta = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("change", [{"optimizer": None}, {"optimizer": {"param_groups": []}},
                                    {"optimizer": {"param_groups": "x"}}])
def test_a_trainer_json_without_a_fitting_optimizer_is_one_line(run, tmp_path, capsys, change):
    out = _copy(run, tmp_path)
    _edit(out / "checkpoint" / "trainer.json", **change)
    assert main(["train", "--resume", "--out", str(out), "--steps", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"unmask train: error: {out / 'checkpoint'}: its optimizer state "), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_moments_of_another_shape_are_refused_before_the_first_step(run, tmp_path):
    out = _copy(run, tmp_path)
    path = out / "checkpoint" / "trainer.safetensors"
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.endswith(".exp_avg"))
    tensors[key] = tensors[key].flatten()[:3].clone()
    save_file(tensors, str(path))
    with pytest.raises(UserError, match=r"its optimizer state .*exp_avg of parameter \d+ has "
                                        r"shape \(3,\)"):
        train({"out": str(out), "steps": 3}, resume=True, progress=False)
