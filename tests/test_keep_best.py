"""``--keep-best``: OUT/best holds the weights of the best validation so far (an AR model
on a small corpus overfits while OUT/checkpoint keeps the last step)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.corpus_helpers import word_corpus
from unmask.checkpoint import load
from unmask.config import TrainConfig
from unmask.evaluate import evaluate_loss
from unmask.train import BEST, train

WORDS = ["the", "lord", "said", "unto", "moses", "and", "israel", "went", "up", "land"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("best"), WORDS, lines=400, seed=0)


def _cfg(data: Path, out: Path, **kw: object) -> TrainConfig:
    base = TrainConfig(
        data=str(data), out=str(out), preset="tiny", objective="ar", seq_len=16,
        batch_size=4, steps=8, lr=3e-2, warmup=1, eval_every=1, eval_batches=2,
        save_every=0, log_every=1, seed=0, keep_best=True,
    )  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_best_follows_the_running_minimum_and_holds_those_weights(data: Path, tmp_path: Path):
    # lr 3e-2 on a tiny model: validation goes down, then bounces, so best != last
    run = train(_cfg(data, tmp_path / "run"), progress=False)
    recs = _records(run)
    vals = [(r["step"], r["val_bpb"]) for r in recs if "val_bpb" in r]
    events = [(r["step"], r["value"]) for r in recs if r.get("event") == "best"]
    want, low = [], float("inf")
    for step, v in vals:
        if v < low:
            want.append((step, v))
            low = v
    assert events == want and len(events) >= 2
    best_step, best_value = events[-1]
    loaded = load(run / BEST)
    res = evaluate_loss(
        loaded.model, _val(data), objective="ar", seq_len=16, batch_size=4, max_batches=2,
        eps=1e-3, device="cpu", autocast_dtype=None,
    )  # fmt: skip
    assert res.as_dict()["val_bpb"] == pytest.approx(best_value, rel=1e-5)
    meta = json.loads((run / "checkpoint" / "trainer.json").read_text())
    assert meta["best"] == {"step": best_step, "metric": "val_bpb", "value": best_value}


def _val(data: Path):
    from unmask.data import TokenDataset

    return TokenDataset(str(data), "val")


def test_without_the_flag_there_is_no_best_folder(data: Path, tmp_path: Path):
    run = train(_cfg(data, tmp_path / "run", keep_best=False, steps=2), progress=False)
    assert not (run / BEST).exists()
    assert not any(r.get("event") == "best" for r in _records(run))


@pytest.mark.parametrize("older", [False, True])
def test_a_resume_that_validates_otherwise_scores_the_kept_best_again(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], older: bool):
    """`--resume --eval-batches 3` on a `--keep-best` run that validated on 1 batch: the kept
    best's score was measured on 1 batch, so comparing later validations with it was wrong
    (a worse checkpoint could replace it, or a better one be kept out). The resume scores
    OUT/best again as the run now validates, says so in one line and logs it; later best
    events improve on that number. ``older``: a checkpoint written before it recorded how
    its best was measured (its saved plan says)."""
    import shutil

    run = train(_cfg(data, tmp_path / "run", steps=4, eval_batches=1), progress=False)
    meta_path = run / "checkpoint" / "trainer.json"
    meta = json.loads(meta_path.read_text())
    if older:
        meta.pop("best_measured", None)
        meta_path.write_text(json.dumps(meta))
    else:
        assert meta["best_measured"]["eval_batches"] == 1
    kept = tmp_path / "kept"
    shutil.copytree(run / BEST, kept)
    again = evaluate_loss(
        load(kept).model, _val(data), objective="ar", seq_len=16, batch_size=4, max_batches=3,
        eps=1e-3, device="cpu", autocast_dtype=None,
    ).as_dict()["val_bpb"]  # fmt: skip
    assert again != pytest.approx(meta["best"]["value"], rel=1e-6)  # the two measures differ
    capsys.readouterr()
    train({"out": str(run), "steps": 6, "eval_batches": 3}, resume=True, progress=False)
    err = capsys.readouterr().err
    note = [line for line in err.splitlines() if line.startswith("--keep-best:")]
    assert len(note) == 1 and "validation now measures otherwise (eval_batches=3, was 1)" in note[0]
    assert note[0].endswith(f"scored again: val_bpb {again:.4f}")
    recs = _records(run)
    rescored = [r for r in recs if r.get("rescored")]
    assert len(rescored) == 1 and rescored[0]["value"] == pytest.approx(again, rel=1e-5)
    later = [r["value"] for r in recs[recs.index(rescored[0]) + 1:] if r.get("event") == "best"]
    assert all(v < again for v in later)
    after = json.loads(meta_path.read_text())
    assert after["best_measured"]["eval_batches"] == 3
    low = min([again, *later])
    assert after["best"]["value"] == pytest.approx(low, rel=1e-5)


def test_a_resume_that_only_validates_more_often_keeps_the_best_score(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """`--eval-every` changes how often a run validates, not what a validation measures: the
    kept score stands, no note."""
    run = train(_cfg(data, tmp_path / "run", steps=4, eval_every=2), progress=False)
    before = json.loads((run / "checkpoint" / "trainer.json").read_text())["best"]
    n = len(_records(run))
    capsys.readouterr()
    train({"out": str(run), "steps": 6, "eval_every": 1}, resume=True, progress=False)
    assert "--keep-best:" not in capsys.readouterr().err
    recs = _records(run)[n:]
    assert not any(r.get("rescored") for r in recs)
    vals = [r["val_bpb"] for r in recs if "val_bpb" in r]
    events = [r["value"] for r in recs if r.get("event") == "best"]
    assert events == [v for i, v in enumerate(vals) if v < min([before["value"], *vals[:i]])]


def test_a_best_record_that_is_not_one_is_a_one_line_refusal(data: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]):
    """A hand-edited trainer.json whose best value is text: the resume failed with a
    TypeError traceback at its first validation; now one line naming the file, exit 2."""
    from unmask.cli import main

    run = train(_cfg(data, tmp_path / "run", steps=2), progress=False)
    path = run / "checkpoint" / "trainer.json"
    meta = json.loads(path.read_text())
    meta["best"]["value"] = "x"
    path.write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--steps", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: its best record" in err
    assert "remove it to start a new best" in err


@pytest.mark.parametrize("sharded", [True, False])
def test_a_best_that_cannot_be_scored_again_is_dropped_with_a_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], sharded: bool):
    """Under FSDP (no full copy of the model to score OUT/best with) or with OUT/best gone,
    a resume that validates otherwise drops the old score, and says so: the next validation
    starts a new best."""
    import torch

    from unmask.train import _score_best_again

    run = tmp_path / "run"
    if sharded:  # OUT/best is there, but a sharded run does not score it again
        (run / BEST / "checkpoint").mkdir(parents=True)
        (run / BEST / "checkpoint" / "model.safetensors").write_bytes(b"")
    best = {"step": 4, "metric": "val_bpb", "value": 4.25}
    logged: list[dict] = []

    def measure(model):  # never called: nothing to score
        raise AssertionError("scored")

    _score_best_again(run, best, "eval_batches=3, was 1", measure, lambda: torch.nn.Linear(1, 1),
                      log=logged.append, is_main=True, sharded=sharded)
    assert best == {} and logged == []
    err = capsys.readouterr().err
    assert err == ("--keep-best: validation now measures otherwise (eval_batches=3, was 1); "
                   "the best so far (val_bpb 4.2500 at step 4) compares with nothing, so the "
                   "next validation starts a new best\n")


def test_keep_best_given_on_a_resume_without_a_validation_split_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """`--resume --keep-best` on a run whose data has no validation split (prepared with
    --val-fraction 0): refused in one line as on a new run; it was taken and did nothing."""
    from unmask.cli import main
    from unmask.data import prepare

    (tmp_path / "a.txt").write_text(" ".join(WORDS * 40) + "\n")
    data = tmp_path / "prepared"
    prepare([tmp_path / "a.txt"], data, tokenizer="byte", val_fraction=0.0, progress=False)
    run = train(_cfg(data, tmp_path / "run", steps=2, keep_best=False, eval_every=0),
                progress=False)
    capsys.readouterr()
    args = ["train", "--resume", "--out", str(run), "--steps", "3", "--no-progress"]
    assert main([*args, "--keep-best"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no validation split" in err
    assert main(args) == 0  # without it the run goes on


def test_a_resume_without_keep_best_keeps_how_the_best_was_scored(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A session resumed without --keep-best (and validating otherwise) neither scores the
    best again nor records it as measured its way: when --keep-best comes back, the best is
    scored again as validations then measure."""
    run = train(_cfg(data, tmp_path / "run", steps=2, eval_batches=1), progress=False)
    train({"out": str(run), "steps": 3, "keep_best": False, "eval_batches": 3}, resume=True,
          progress=False)
    meta = json.loads((run / "checkpoint" / "trainer.json").read_text())
    assert meta["best_measured"]["eval_batches"] == 1
    capsys.readouterr()
    train({"out": str(run), "steps": 4, "keep_best": True}, resume=True, progress=False)
    assert "--keep-best: validation now measures otherwise (eval_batches=3, was 1)" in (
        capsys.readouterr().err)
