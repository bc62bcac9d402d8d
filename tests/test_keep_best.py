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
