"""Session 36 review fixes (trainmend2): ``run_above`` on relative paths and non-run folders,
the FSDP advice, the resume line's device clause, and train's memory-check wiring."""

from __future__ import annotations

from pathlib import Path

import pytest

from unmask.config import TrainConfig, save_json
from unmask.errors import UserError
from unmask.train_guards import run_above


def _run(root: Path) -> Path:
    (root / "best" / "checkpoint").mkdir(parents=True)
    (root / "checkpoint").mkdir()
    save_json(TrainConfig(), root / "train_config.json")
    return root


def test_run_above_a_relative_path_names_the_run_from_the_working_directory(
        tmp_path, monkeypatch):
    """From inside the run, ``checkpoint`` (cwd RUN/best) or ``.`` (cwd RUN/checkpoint) was
    said to be inside the run ``.``: following the hint failed again, a loop."""
    run = _run(tmp_path / "run")
    monkeypatch.chdir(run / "best")
    assert run_above(Path("checkpoint")) == Path("..")
    monkeypatch.chdir(run / "checkpoint")
    assert run_above(Path(".")) == Path("..")
    monkeypatch.chdir(tmp_path)
    assert run_above(Path("run/best/checkpoint")) == Path("run")
    assert run_above(Path("run/best")) == Path("run")
    assert run_above(run / "checkpoint") == run


def test_load_train_config_inside_the_run_names_the_run_typed_from_here(tmp_path, monkeypatch):
    from unmask.train import load_train_config

    run = _run(tmp_path / "run")
    monkeypatch.chdir(run / "checkpoint")
    with pytest.raises(UserError) as e:
        load_train_config(".")
    assert "it is inside the run ..; pass ../train_config.json" in str(e.value)
    assert "--resume --out ..`" in str(e.value)


def test_run_above_only_for_a_runs_checkpoint_and_best_folders(tmp_path):
    """A folder of any name one or two levels below any train_config.json (a settings folder
    kept for --config, no checkpoint/) was called a run: following the hint failed again."""
    proj = tmp_path / "proj"
    (proj / "runs" / "x" / "checkpoint").mkdir(parents=True)
    (proj / "exports" / "best").mkdir(parents=True)
    save_json(TrainConfig(), proj / "train_config.json")
    assert run_above(proj / "runs" / "x") is None
    assert run_above(proj / "exports" / "best") is None
    assert run_above(proj / "runs") is None
    run = _run(tmp_path / "run")
    (run / "logs" / "a").mkdir(parents=True)
    assert run_above(run / "logs") is None  # not a folder --model takes
    assert run_above(run / "logs" / "a") is None
    (run / "checkpoint").rmdir()  # a settings folder: no checkpoint
    assert run_above(run / "best") is None


GB = 2**30


def _advice(state: float, available: float, **kw: object) -> str:
    from unmask.train_guards import MemoryEstimate, check_memory

    with pytest.raises(UserError) as e:
        check_memory(MemoryEstimate(state=int(state), activations=1), int(available),
                     config=TrainConfig(), rows=1, **kw)  # type: ignore[arg-type]
    return str(e.value).split("; ", 1)[1]


def test_fsdp_is_named_only_where_each_process_holds_a_full_fp32_copy_first():
    """Every process builds the whole model (4 bytes a parameter of the state's 16) before
    FSDP shards it: on 8 GPUs a 16 GB state was told FSDP (2 GB each) with 3 GB free, where
    the full copy alone needs 4 GB."""
    assert "fsdp" not in _advice(16 * GB, 3 * GB, world=8)
    assert "use parallel='fsdp'" in _advice(16 * GB, 4 * GB, world=8)


def test_a_resume_is_not_told_fsdp():
    """A resume loads the full weights and AdamW moments on each process before sharding:
    measured, an FSDP resume of a DDP run peaks above DDP."""
    assert "use parallel='fsdp'" in _advice(3 * GB, 2 * GB, world=2)
    said = _advice(3 * GB, 2 * GB, world=2, resume=True)
    assert "fsdp" not in said and "choose a smaller model" in said


def test_train_passes_world_shards_and_resume_to_the_memory_check(monkeypatch):
    """``_check_sizes`` (train's path): DDP on 2 processes is told FSDP; under FSDP the state
    is split in 2 and the same memory is enough; a resume is not told FSDP."""
    import torch

    import unmask.train as T
    from unmask.config import ModelConfig
    from unmask.train_guards import estimate_memory

    m = ModelConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=2, max_seq_len=16)
    c = TrainConfig(seq_len=16, batch_size=4)
    state = estimate_memory(m, c, rows=2, cuda=False).state
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setattr(T, "available_memory", lambda d: int(state * 0.8))
    cpu = torch.device("cpu")
    with pytest.raises(UserError, match="alone do not fit; use parallel='fsdp'"):
        T._check_sizes(c, m, None, None, cpu, 2, "ddp")
    T._check_sizes(c, m, None, None, cpu, 2, "fsdp")  # half the state each: fits
    with pytest.raises(UserError) as e:
        T._check_sizes(c, m, None, None, cpu, 2, "ddp", resume=True)
    assert "fsdp" not in str(e.value)


def test_the_resume_line_names_the_device_the_last_session_trained_on(tmp_path, capsys):
    """The clause compared with the plan's --device, which a plain resume never rewrites:
    each later resume said again 'the run trained on --device cuda' though the sessions
    since ran on the CPU. trainer.json now records the device each session trained on."""
    import json

    from corpus_helpers import word_corpus

    from unmask.cli import main

    data = word_corpus(tmp_path, "the lord said unto moses go down".split(),
                       lines=300, seed=0)
    out = tmp_path / "run"
    base = ["--eval-every", "0", "--eval-batches", "1", "--no-progress", "--threads", "1"]
    assert main(["train", "--data", str(data), "--out", str(out), "--preset", "tiny",
                 "--seq-len", "16", "--batch-size", "2", "--warmup", "0", "--steps", "1",
                 *base]) == 0
    meta = out / "checkpoint" / "trainer.json"
    assert json.loads(meta.read_text())["device"] == "cpu"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "device": "cuda"}))
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--steps", "2", *base]) == 0
    assert "the run trained on --device cuda, this session runs on cpu" in (
        capsys.readouterr().err)
    assert main(["train", "--resume", "--out", str(out), "--steps", "3", *base]) == 0
    assert "trained on" not in capsys.readouterr().err  # step 2 ran on the CPU


def test_the_device_recorded_is_compared_even_where_the_plan_says_auto():
    from unmask.train_guards import device_change

    said = device_change(TrainConfig(), TrainConfig(), "cuda", "bf16", trained_on="cpu")
    assert said.startswith("; the run trained on device='cpu', this session runs on cuda")
    assert device_change(TrainConfig(device="cuda"), TrainConfig(), "cpu", "fp32",
                         trained_on="cpu") == ""
