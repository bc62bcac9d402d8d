"""``OUT/best`` is the user's weights: a new run into its folder never deletes them, and a
resume removes only a best of a step past its checkpoint (a hard-killed session's), never
one the checkpoint merely does not record (session 32's fixes did both)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from unmask.cli import main

WORDS = "in the beginning god created the heaven and the earth and it was good".split()


@pytest.fixture(scope="module")
def data(word_corpus) -> Path:
    return word_corpus("best32", WORDS)


def _args(data: Path, run: Path, *more: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(run), "--preset", "tiny", "--seq-len",
            "16", "--batch-size", "4", "--eval-every", "2", "--eval-batches", "1",
            "--warmup", "0", "--no-progress", "--threads", "1", *more]


def _weights(run: Path) -> dict:
    return load_file(str(run / "best" / "checkpoint" / "model.safetensors"))


def test_a_new_run_into_a_finished_runs_best_keeps_it(data, tmp_path, capsys):
    """A finished ``--keep-best`` run whose ``checkpoint/`` the user removed (to keep the best
    weights alone) is no run stopped before its first checkpoint: another command with that
    ``--out`` is refused, saying how to start anew, and ``best/`` stays."""
    run = tmp_path / "run"
    assert main(_args(data, run, "--steps", "4", "--keep-best")) == 0
    kept = _weights(run)
    shutil.rmtree(run / "checkpoint")
    capsys.readouterr()
    assert main(_args(data, run, "--steps", "1")) == 2
    err = capsys.readouterr().err
    assert f"{run} holds the best weights of a run with no checkpoint to resume" in err
    assert err.count("\n") == 1
    got = _weights(run)
    assert got.keys() == kept.keys() and all(got[k].equal(kept[k]) for k in kept)


def test_a_folder_with_no_whole_best_still_starts_anew(data, tmp_path, capsys):
    """Nothing of value (no whole weights in ``best/``, a best being staged at the kill): the
    run stopped before its first checkpoint starts anew, as before."""
    from unmask.checkpoint import TMP_PREFIX

    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text("{}")
    (run / "metrics.jsonl").write_text("")
    (run / "best" / f"{TMP_PREFIX}-1").mkdir(parents=True)
    (run / "best" / f"{TMP_PREFIX}-1" / "model.safetensors").write_bytes(b"half")
    assert main(_args(data, run, "--steps", "1")) == 0
    assert "starting it anew" in capsys.readouterr().err
    assert not (run / "best").exists()


def _forget_the_best(run: Path) -> None:
    """The checkpoint a forgotten best leaves (``_score_best_again`` under FSDP, or a rescore
    that is not finite): it records no best while ``OUT/best`` holds good weights."""
    path = run / "checkpoint" / "trainer.json"
    state = json.loads(path.read_text())
    state.pop("best")
    state.pop("best_measured", None)
    path.write_text(json.dumps(state))


@pytest.mark.parametrize("keep", [False, True])
def test_a_best_the_checkpoint_forgot_is_kept(data, tmp_path, capsys, keep):
    """A best of the checkpoint's step or before, which the checkpoint does not record, was
    not written after it: the resume keeps it (it removed it, saying it was written after)."""
    run = tmp_path / "run"
    assert main(_args(data, run, "--steps", "4", "--keep-best", "--save-every", "4")) == 0
    step = json.loads((run / "best" / "checkpoint" / "best.json").read_text())["step"]
    assert step <= 4
    kept = _weights(run)
    _forget_the_best(run)
    capsys.readouterr()
    flag = "--keep-best" if keep else "--no-keep-best"
    # --eval-every 100: no validation of the resumed steps but the final one, whose
    # number may beat the old best; compare before it where it could
    assert main(["train", "--resume", "--out", str(run), "--steps", "5", flag,
                 "--eval-every", "100", "--no-progress"]) == 0
    assert "written after the checkpoint" not in capsys.readouterr().err
    assert (run / "best" / "checkpoint" / "model.safetensors").is_file()
    if not keep:  # nothing wrote a new best: the old one stays as it was
        got = _weights(run)
        assert all(got[k].equal(kept[k]) for k in kept)
