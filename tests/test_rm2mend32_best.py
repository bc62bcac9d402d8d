"""A resume puts back the best its checkpoint records whenever ``best/previous`` holds it:
that folder is made only by a best written after the checkpoint, whatever that best's step."""

from __future__ import annotations

import json
from pathlib import Path

from unmask.checkpoint import BEST, BEST_RECORD, CKPT, PREVIOUS_BEST
from unmask.train import _restore_best


def _best(run: Path, sub: str, step: int) -> None:
    folder = run / BEST / sub
    folder.mkdir(parents=True)
    (folder / BEST_RECORD).write_text(json.dumps({"step": step}))
    (folder / "model.safetensors").write_text(f"weights of step {step}")


def _held(run: Path) -> str:
    return (run / BEST / CKPT / "model.safetensors").read_text()


def test_a_best_of_the_checkpoints_own_step_written_after_it_is_put_back(tmp_path, capsys):
    """A checkpoint of step 4 saved with its validation cut records the best of step 2. The
    resume validates step 4 first, writes a best of step 4 (keeping step 2 as
    ``previous``) and is killed before it saves again. The next resume kept step 4's weights
    (not past the checkpoint) and deleted ``previous``: ``OUT/best`` then held weights the
    checkpoint and ``metrics.jsonl`` label step 2."""
    _best(tmp_path, CKPT, 4)
    _best(tmp_path, PREVIOUS_BEST, 2)
    _restore_best(tmp_path, {"step": 2, "metric": "val_bpb", "value": 1.0}, 4)
    assert _held(tmp_path) == "weights of step 2"
    assert not (tmp_path / BEST / PREVIOUS_BEST).exists()
    assert "put back the best of step 2 it records" in capsys.readouterr().err


def test_a_best_with_no_previous_stays(tmp_path, capsys):
    """No ``previous``: nothing says the best was written after the checkpoint, and none of
    the recorded best to put back; a best of the checkpoint's step or before stays."""
    _best(tmp_path, CKPT, 4)
    _restore_best(tmp_path, {"step": 2, "metric": "val_bpb", "value": 1.0}, 4)
    _restore_best(tmp_path, {}, 4)
    assert _held(tmp_path) == "weights of step 4"
    assert capsys.readouterr().err == ""
