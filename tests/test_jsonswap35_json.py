"""Session 35 (jsonswap): the readers of files unmask writes itself (a run's
``train_config.json`` and ``metrics.jsonl``, a checkpoint's ``config.json``/``trainer.json``, a
prepared corpus' ``index.json``) parse with ``unmask.files.parse_json``: a hand-edited or
damaged file nested too deep (a ``RecursionError``) or holding an integer of more than 4,300
digits (a plain ``ValueError`` from Python 3.11) was a traceback; now it is one line and
exit 2, or, where the reader only guesses (is this run distilled?), the guess."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pytest

from unmask import cli

LONG = "1" * 5000  # past sys.get_int_max_str_digits(): 4,300 by default
DEEP = "[" * 100_000 + "]" * 100_000
LONG_DIGITS = "an integer of more than 4,300 digits"
DAMAGE = {
    "deep": (DEEP, "nested too deep to read"),
    "long": ('{"steps": ' + LONG + "}", LONG_DIGITS),
}
needs_limit = pytest.mark.skipif(
    not getattr(sys, "get_int_max_str_digits", lambda: 0)(),
    reason="this Python converts integers of any length",
)
damages = pytest.mark.parametrize(
    "damage", [pytest.param("deep"), pytest.param("long", marks=needs_limit)])


@pytest.fixture(scope="module")
def run(word_corpus, tmp_path_factory) -> Path:
    """A one-step mdlm run (``train_config.json``, ``metrics.jsonl``, ``checkpoint/``)."""
    from unmask.train import train

    data = word_corpus("jsonswap", "the cat sat on a mat and ran far".split())
    out = tmp_path_factory.mktemp("jsonswap") / "run"
    train(dataclasses.replace(_plan(), data=str(data), out=str(out)))
    return out


def _plan(**kw):
    from unmask.config import TrainConfig

    return TrainConfig(**{"preset": "tiny", "seq_len": 24, "batch_size": 2, "steps": 1,
                          "warmup": 1, "eval_every": 0, "eval_batches": 1, "save_every": 0,
                          "device": "cpu", **kw})


def _copy(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def _one_line_error(capsys, argv: list[str], says: str) -> str:
    assert cli.main(argv) == 2
    full = capsys.readouterr().err
    err = full.strip().splitlines()[-1]
    assert err.startswith("unmask ") and "error:" in err and says in err, err
    assert "Traceback" not in full
    return err


# ---------------------------------------------------------------- a run folder


@damages
def test_a_resume_with_a_damaged_plan_is_one_line(run, tmp_path, capsys, damage):
    out = _copy(run, tmp_path)
    (out / "train_config.json").write_text(DAMAGE[damage][0])
    _one_line_error(capsys, ["train", "--resume", "--out", str(out), "--no-progress"],
                    f"train_config.json: not valid JSON ({DAMAGE[damage][1]}")


@damages
def test_a_resume_drops_a_damaged_metrics_line_as_a_torn_one(run, tmp_path, damage):
    """The resume trims metrics.jsonl to the checkpoint's step, dropping a line that does not
    parse (cut short by a kill); a deep line or a long integer was a traceback instead."""
    out = _copy(run, tmp_path)
    log = out / "metrics.jsonl"
    kept = log.read_text()
    log.write_text(kept + DAMAGE[damage][0] + "\n")
    assert cli.main(["train", "--resume", "--out", str(out), "--steps", "2",
                     "--no-progress"]) == 0
    assert log.read_text().startswith(kept) and DAMAGE[damage][0] not in log.read_text()


@damages
def test_the_time_limit_and_resume_hints_read_a_damaged_plan_as_unknown(run, tmp_path, damage):
    """After a run, ``time_limit_exit`` and ``resume_hint`` read the plan's steps; a damaged
    plan means no hint (exit 0 / the plain resume line), not a traceback over the result."""
    import signal

    from unmask.train_guards import TrainingStopped, resume_hint, time_limit_exit

    out = _copy(run, tmp_path)
    (out / "train_config.json").write_text(DAMAGE[damage][0])
    assert time_limit_exit(out, "train", say=True) == 0
    stopped = TrainingStopped(signal.SIGINT, 1, out)
    assert resume_hint(stopped, "train") == f"; resume with: unmask train --resume --out {out}"


@damages
def test_generate_reads_a_damaged_trainer_state_as_not_distilled(run, tmp_path, damage):
    """``unmask generate``'s low-parallelism note asks whether the model was distilled (its
    trainer.json); a damaged one is "no", as an unreadable one was, not a traceback."""
    from unmask.commands.generate import _distilled

    out = _copy(run, tmp_path)
    (out / "checkpoint" / "trainer.json").write_text(DAMAGE[damage][0])
    assert _distilled(str(out)) is False
    (out / "checkpoint" / "trainer.json").write_text('{"objective": "distill"}')
    assert _distilled(str(out)) is True


@damages
def test_an_init_checkpoint_with_a_damaged_config_is_one_line(run, tmp_path, capsys, damage):
    """``--init``'s objective check read config.json bare before loading said what is wrong."""
    init = _copy(run, tmp_path)
    (init / "checkpoint" / "config.json").write_text(DAMAGE[damage][0])
    data = json.loads((run / "train_config.json").read_text())["data"]
    _one_line_error(capsys, ["train", "--data", data, "--init", str(init), "--out",
                             str(tmp_path / "new"), "--steps", "1", "--no-progress"],
                    f"config.json: not valid JSON ({DAMAGE[damage][1]}")


# ---------------------------------------------------------------- a prepared corpus


@damages
def test_a_corpus_with_a_damaged_index_is_one_line(run, tmp_path, capsys, damage):
    data = Path(json.loads((run / "train_config.json").read_text())["data"])
    corpus = tmp_path / "data"
    shutil.copytree(data, corpus)
    (corpus / "index.json").write_text(DAMAGE[damage][0])
    _one_line_error(capsys, ["train", "--data", str(corpus), "--out", str(tmp_path / "new"),
                             "--preset", "tiny", "--steps", "1", "--no-progress"],
                    f"index.json: not valid JSON ({DAMAGE[damage][1]}")
    # prepare --overwrite will not delete a folder whose index it cannot read as its own
    (tmp_path / "a.txt").write_text("the cat sat\n")
    _one_line_error(capsys, ["prepare", str(tmp_path / "a.txt"), "--out", str(corpus),
                             "--tokenizer", "byte", "--overwrite"],
                    "its index.json is not one unmask wrote")
    assert (corpus / "index.json").read_text() == DAMAGE[damage][0]


@damages
def test_a_hybrid_from_a_checkpoint_with_a_damaged_config_is_one_line(run, tmp_path, capsys,
                                                                     damage):
    """A hybrid run's ``--init`` (an ``ar --fim-rate`` run) is asked for its FIM ids before it
    is loaded: a deep config.json was a RecursionError traceback there."""
    from unmask.train import train

    data = json.loads((run / "train_config.json").read_text())["data"]
    init = tmp_path / "ar"
    train(_plan(data=data, objective="ar", out=str(init)))
    (init / "checkpoint" / "config.json").write_text(DAMAGE[damage][0])
    _one_line_error(capsys, ["train", "--data", data, "--objective", "hybrid", "--draft-block",
                             "4", "--init", str(init), "--out", str(tmp_path / "h"), "--steps",
                             "1", "--seq-len", "24", "--no-progress"],
                    f"config.json: not valid JSON ({DAMAGE[damage][1]}")


@damages
def test_a_resume_reads_a_damaged_best_record_as_unknown(run, tmp_path, damage):
    """``--keep-best``'s resume asks which step ``OUT/best`` holds (its best.json); a damaged
    record is "not known", as an unreadable one was, and the run goes on."""
    from unmask.train import train

    data = json.loads((run / "train_config.json").read_text())["data"]
    out = tmp_path / "best_run"
    train(_plan(data=data, out=str(out), keep_best=True, eval_every=1))
    record = out / "best" / "checkpoint" / "best.json"
    assert record.is_file()
    record.write_text(DAMAGE[damage][0])
    assert cli.main(["train", "--resume", "--out", str(out), "--steps", "2",
                     "--no-progress"]) == 0
