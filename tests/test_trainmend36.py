"""Review of session 36's training fixes. The memory refusal's advice matches how the run is
split (FSDP: fewer processes on one node hold the same state in all; DDP on several
processes: FSDP would split it) and names dropping ``--ema`` where that is enough; a resume on
another device than the run trained on says so in its line."""

from __future__ import annotations

import pytest

from unmask.config import TrainConfig
from unmask.errors import UserError
from unmask.train_guards import MemoryEstimate, check_memory

GB = 2**30


def _advice(state: float, available: float, config: TrainConfig | None = None,
            **kw: int) -> str:
    with pytest.raises(UserError) as e:
        check_memory(MemoryEstimate(state=int(state), activations=1), int(available),
                     config=config or TrainConfig(), rows=1, **kw)
    return str(e.value).split("; ", 1)[1]


def test_fsdp_on_one_node_is_not_told_to_run_fewer_processes():
    # 4 processes each holding a quarter of a 4 GB state on a 3 GB node: 1 process would
    # hold all 4 GB, so fewer processes cannot help
    said = _advice(1 * GB, 3 * GB, TrainConfig(parallel="fsdp"), processes=4, world=4, shards=4)
    assert "fewer processes" not in said and "choose a smaller model" in said
    # DDP there: each holds all of it, and one process's 1 GB would fit
    said = _advice(1 * GB, 3 * GB, processes=4, world=4)
    assert "run fewer processes" in said


def test_ddp_on_several_gpus_is_told_fsdp_would_fit():
    # 2 GPUs, 3 GB of state each under DDP, 2 GB free per GPU: FSDP holds 1.5 GB on each
    said = _advice(3 * GB, 2 * GB, TrainConfig(parallel="ddp"), world=2)
    assert "use parallel='fsdp'" in said and "fewer processes" not in said
    assert "use --parallel fsdp" in _advice(3 * GB, 2 * GB, world=2,
                                            name=lambda k, v: f"--{k} {v}")
    assert "fsdp" not in _advice(5 * GB, 2 * GB, world=2)  # half of it does not fit either
    assert "fsdp" not in _advice(3 * GB, 2 * GB, world=2, shards=2)  # FSDP already
    # --ema (DDP only): FSDP only without it
    said = _advice(3 * GB, 1 * GB, TrainConfig(ema=0.999), world=4)
    assert "use parallel='fsdp' without ema" in said


def test_ema_is_named_where_dropping_it_is_enough():
    said = _advice(20 * GB, 17 * GB, TrainConfig(ema=0.999))  # 16 GB without the EMA copy
    assert said.startswith("its weights and optimizer state alone do not fit; drop ema, or ")
    assert "ema" not in _advice(20 * GB, 15 * GB, TrainConfig(ema=0.999))
    assert "ema" not in _advice(20 * GB, 17 * GB)  # no EMA to drop


def test_a_resume_on_another_device_says_so_and_the_precision_it_implies():
    from unmask.commands.train import _flag
    from unmask.train_guards import device_change

    saved = TrainConfig(device="cpu")
    said = device_change(saved, TrainConfig(), "cuda", "bf16", _flag)
    assert said == ("; the run trained on --device cpu, this session runs on cuda "
                    "(--precision auto: bf16 here, fp32 on cpu); give --device cpu to keep it")
    # a precision given (or changed: the resume line names it) is no precision change here
    assert "precision" not in device_change(saved, TrainConfig(precision="bf16"), "cuda", "bf16")
    assert device_change(saved, TrainConfig(), "cpu", "fp32") == ""
    assert device_change(TrainConfig(device="cuda:1"), TrainConfig(), "cuda", "bf16") == ""
    assert device_change(TrainConfig(), TrainConfig(), "cuda", "bf16") == ""  # auto: unknown


def test_the_resume_line_names_the_device_the_run_trained_on(tmp_path, capsys):
    import json

    from corpus_helpers import word_corpus

    from unmask.cli import main

    data = word_corpus(tmp_path, "the lord said unto moses go down".split(),
                       lines=300, seed=0)
    out = tmp_path / "run"
    base = ["train", "--data", str(data), "--out", str(out), "--preset", "tiny", "--seq-len",
            "16", "--batch-size", "2", "--eval-every", "0", "--eval-batches", "1", "--warmup",
            "0", "--no-progress", "--threads", "1"]
    assert main([*base, "--steps", "1", "--device", "cpu"]) == 0
    meta = out / "checkpoint" / "trainer.json"  # as a run trained on a GPU saved it
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "device": "cuda"}))
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--steps", "2", "--no-progress",
                 "--threads", "1"]) == 0
    err = capsys.readouterr().err  # (between the two: the learning rate's clause, lr_change)
    assert "resuming at step 1 of 1; --steps 2 given: the run now ends at 2; " in err
    assert ("; the run trained on --device cuda, this session runs on cpu (--precision auto: "
            "fp32 here, bf16 or fp16 on cuda); give --device cuda to keep it\n") in err


def test_a_mapping_resume_takes_device_and_threads_as_the_cli_does(tmp_path):
    """``train({"out": RUN, ...}, resume=True)`` goes through ``resumed_config``, the CLI's
    helper: the saved plan, ``device``/``threads`` at their defaults, then the fields named."""
    from unmask.config import save_json
    from unmask.train import _train_config

    save_json(TrainConfig(out=str(tmp_path), steps=5, seed=3, threads=1, device="cpu"),
              tmp_path / "train_config.json")
    got = _train_config({"out": str(tmp_path), "steps": 9}, True)
    assert (got.steps, got.seed, got.threads, got.device) == (9, 3, 0, "auto")
    got = _train_config({"out": str(tmp_path), "threads": 2, "device": "cpu"}, True)
    assert (got.steps, got.threads, got.device) == (5, 2, "cpu")


def test_distill_resume_runs_on_this_commands_threads_and_device(tmp_path, monkeypatch):
    """``unmask distill --resume``: ``--threads``/``--device`` are the resuming command's, as
    for ``unmask train --resume`` (``resumed_config``), not the saved run's."""
    from pathlib import Path
    from typing import Any

    import unmask.train as train_mod
    from unmask.cli import main
    from unmask.config import save_json

    save_json(TrainConfig(objective="distill", data=str(tmp_path / "traj.jsonl"), out=str(tmp_path),
                          preset="tiny", steps=5, seed=3, threads=1, device="cpu"),
              tmp_path / "train_config.json")
    seen: list[Any] = []

    def fake(config: Any, **kw: Any) -> Path:
        seen.append(config)
        return Path(config.out)

    monkeypatch.setattr(train_mod, "train", fake)
    argv = ["distill", "--resume", "--out", str(tmp_path), "--steps", "9", "--no-progress"]
    main(argv)
    main([*argv, "--threads", "2", "--device", "cpu"])
    assert [(c.threads, c.device, c.steps, c.seed) for c in seen] == [
        (0, "auto", 9, 3), (2, "cpu", 9, 3)]


def test_config_given_a_folder_inside_a_run_points_at_the_runs_train_config(tmp_path):
    """``--config RUN/checkpoint`` (what ``--model`` takes) named no train_config.json, while
    ``--config RUN`` and ``--resume --out RUN/checkpoint`` pointed at the run (``run_above``)."""
    from unmask.config import save_json
    from unmask.train import load_train_config

    run = tmp_path / "run"
    (run / "best" / "checkpoint").mkdir(parents=True)
    (run / "checkpoint").mkdir()
    save_json(TrainConfig(), run / "train_config.json")
    plan = run / "train_config.json"
    for inside in (run / "best", run / "best" / "checkpoint"):
        with pytest.raises(UserError) as e:
            load_train_config(inside)
        assert str(e.value) == (
            f"{inside}: a folder, not a train_config.json file; it is inside the run {run}; "
            f"pass {plan} to start a new run with its settings (`unmask train --resume --out "
            f"{run}` continues that run)")
    with pytest.raises(UserError, match=f"; pass {plan} to start"):
        load_train_config(run)
    with pytest.raises(UserError, match=r"a train_config.json file$"):
        load_train_config(tmp_path)


def test_the_memory_line_counts_one_row_as_one_row():
    with pytest.raises(UserError, match=r"activations of 1 row × seq_len"):
        check_memory(MemoryEstimate(state=1, activations=2 * GB), GB, config=TrainConfig(),
                     rows=1)
