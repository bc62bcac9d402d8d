"""``unmask train`` runs as a user types it. ``--resume``: the saved run's ``--threads`` and
``--device`` are not this command's (both are how a process runs, ``RUNTIME_FIELDS``, documented
as always the resuming command's; the CLI resumed with the saved run's). ``--config``: a path
that is not a JSON file is one line naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from corpus_helpers import word_corpus

import unmask.train as train_mod
from unmask.cli import main

WORDS = "the lord said unto moses go down and speak to the people".split()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=300, seed=0)


def _base(dataset: Path, out: Path) -> list[str]:
    return ["train", "--data", str(dataset), "--out", str(out), "--preset", "tiny",
            "--seq-len", "16", "--batch-size", "2", "--steps", "1", "--eval-every", "0",
            "--eval-batches", "1", "--warmup", "0", "--no-progress"]


def _resumed_config(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> Any:
    seen: list[Any] = []

    def fake(config: Any, **kw: Any) -> Path:
        seen.append(config)
        return Path(config.out)

    monkeypatch.setattr(train_mod, "train", fake)
    assert main(argv) == 0
    return seen[0]


def test_a_plain_resume_runs_on_this_commands_threads_and_device(dataset, tmp_path,
                                                                 monkeypatch):
    run = tmp_path / "run"
    assert main([*_base(dataset, run), "--threads", "1", "--device", "cpu"]) == 0
    config = _resumed_config(monkeypatch, ["train", "--resume", "--out", str(run), "--steps",
                                           "2", "--no-progress"])
    assert (config.threads, config.device) == (0, "auto")  # this command's defaults
    assert config.steps == 2 and config.seq_len == 16  # the rest is the saved plan


def test_threads_and_device_given_on_resume_are_used(dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert main([*_base(dataset, run), "--threads", "1"]) == 0
    config = _resumed_config(monkeypatch, ["train", "--resume", "--out", str(run), "--steps",
                                           "2", "--threads", "2", "--device", "cpu",
                                           "--no-progress"])
    assert (config.threads, config.device) == (2, "cpu")


def test_a_config_that_is_not_a_json_file_is_one_line_naming_it(dataset, tmp_path, capsys):
    """``--config`` given a checkpoint's weights said "input is not UTF-8 text" (no file
    named), given a run folder "Is a directory: RUN"; both now name the path, and a run folder
    points at its train_config.json."""
    run = tmp_path / "run"
    assert main(_base(dataset, run)) == 0
    capsys.readouterr()
    weights = run / "checkpoint" / "model.safetensors"
    assert main(["train", "--config", str(weights), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"unmask train: error: {weights}: not UTF-8 text (a train_config.json is JSON)"
    assert main(["train", "--config", str(run), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"pass {run / 'train_config.json'}" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_model_whose_optimizer_state_alone_does_not_fit_is_not_told_to_lower_the_batch():
    """``--model-set n_layers=100000`` on a 20 GB machine: weights fit (check_model_size), but
    weights + gradients + AdamW moments (23 GB) do not; the refusal said "lower --seq-len or
    --batch-size, or raise --grad-accum", which cannot make it fit."""
    from unmask.config import TrainConfig
    from unmask.errors import UserError
    from unmask.train_guards import MemoryEstimate, check_memory

    c = TrainConfig()
    with pytest.raises(UserError) as e:
        check_memory(MemoryEstimate(state=3 * 2**30, activations=2**30), 2**30, config=c, rows=8)
    assert "choose a smaller model" in str(e.value) and "grad_accum" not in str(e.value)
    with pytest.raises(UserError) as e:  # two processes on one machine: each needs its state
        check_memory(MemoryEstimate(state=2**29 + 1, activations=1), 2**30, config=c, rows=8,
                     processes=2)
    assert "run fewer processes" in str(e.value)
    with pytest.raises(UserError) as e:  # the state fits: the batch is what to lower
        check_memory(MemoryEstimate(state=2**29, activations=2**30), 2**30, config=c, rows=8)
    assert "raise grad_accum" in str(e.value) and "smaller model" not in str(e.value)


def test_resume_given_a_folder_inside_the_run_names_the_run(dataset, tmp_path, capsys):
    """``--resume --out RUN/checkpoint`` (the folder ``--model`` takes) said only "nothing to
    resume (no train_config.json in it)"; it now names the run to resume."""
    run = tmp_path / "run"
    assert main(_base(dataset, run)) == 0
    capsys.readouterr()
    for inside in (run / "checkpoint", run / "best" / "checkpoint"):
        assert main(["train", "--resume", "--out", str(inside), "--steps", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"; it is inside the run {run}: resume it with --out {run}"), err
    assert main(["train", "--resume", "--out", str(tmp_path / "none"), "--steps", "2"]) == 2
    assert capsys.readouterr().err.strip().endswith("(no train_config.json in it)")
