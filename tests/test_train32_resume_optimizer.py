"""A resumed run's AdamW runs as this process builds it (``fused`` on a GPU, not on a CPU),
not as the process that saved the checkpoint did: ``Optimizer.load_state_dict`` restored the
saved ``fused=False`` of a run begun on a CPU, so resumed on a GPU it stayed unfused for good
(session 32)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from unmask import checkpoint as ckpt_module
from unmask.config import TrainConfig
from unmask.train import train

WORDS = "in the beginning god created the heaven and the earth and it was good".split()


@pytest.fixture(scope="module")
def run(word_corpus, tmp_path_factory) -> Path:
    data = word_corpus("opt32", WORDS)
    out = tmp_path_factory.mktemp("opt32") / "run"
    config = TrainConfig(data=str(data), out=str(out), preset="tiny", seq_len=32, batch_size=4,
                         steps=2, warmup=1, eval_every=0, save_every=0, threads=1)
    return train(config, progress=False)


def _build_fused(monkeypatch: pytest.MonkeyPatch) -> list[torch.optim.Optimizer]:
    """Make train build AdamW ``fused=True``, as on a GPU; returns the optimizers it builds."""
    import unmask.train as train_module

    built: list[torch.optim.Optimizer] = []

    def as_on_a_gpu(model: Any, config: TrainConfig, device: torch.device) -> Any:
        optimizer = torch.optim.AdamW(train_module._param_groups(model, config.weight_decay),
                                      lr=config.lr, fused=True)
        built.append(optimizer)
        return optimizer

    monkeypatch.setattr(train_module, "_adamw", as_on_a_gpu)
    return built


def test_a_resumed_optimizer_runs_as_this_process_builds_it(run, monkeypatch):
    """The process resuming builds AdamW ``fused=True`` (as on a GPU); the checkpoint, saved on
    a CPU, says ``fused=False``: the resumed optimizer is fused."""
    built = _build_fused(monkeypatch)
    train({"out": str(run), "steps": 3}, resume=True, progress=False)
    assert len(built) == 1
    assert [g["fused"] for g in built[0].param_groups] == [True, True]


def test_the_saved_groups_keep_their_hyper_parameters(run):
    """Only how the step runs is this process's; the saved learning rate and betas load."""
    from unmask.checkpoint import read_config
    from unmask.model import Transformer

    folder = run / "checkpoint"
    model = Transformer(read_config(folder))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.5, betas=(0.1, 0.2), foreach=True)
    import json

    saved = json.loads((folder / "trainer.json").read_text())["optimizer"]["param_groups"]
    grouped = ckpt_module._this_process_groups(saved, optimizer)  # (decayed, not decayed)
    assert [g["foreach"] for g in grouped] == [True, True]
    assert not any(g["fused"] for g in grouped)
    assert [g["betas"] for g in grouped] == [g["betas"] for g in saved]
    assert [g["lr"] for g in grouped] == [g["lr"] for g in saved]


def _as_sharded(run: Path, tmp_path: Path) -> tuple[Path, int]:
    """A copy of ``run`` whose checkpoint is an FSDP run's (``sharded/``, written by one process
    here: ``torch.distributed.checkpoint`` reshards on load), saved unfused, as on a CPU."""
    import json
    import shutil

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from unmask.checkpoint import SHARDED, load_train_state, read_config
    from unmask.model import Transformer
    from unmask.train import _param_groups

    out = tmp_path / "sharded"
    shutil.copytree(run, out)
    folder = out / "checkpoint"
    model = Transformer(read_config(folder))
    optimizer = torch.optim.AdamW(_param_groups(model, 0.1), lr=1e-3, fused=False)
    load_train_state(folder, model=model, optimizer=optimizer, ema_model=None)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    with pytest.warns(UserWarning):  # "torch.distributed is disabled": one process, as meant
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=folder / SHARDED)
    meta = json.loads((folder / "trainer.json").read_text())
    (folder / "trainer.json").write_text(json.dumps({**meta, "sharded": True}))
    return out, int(meta["step"])


def test_a_resumed_fsdp_checkpoint_runs_as_this_process_builds_it(run, tmp_path, monkeypatch):
    """The same for an FSDP run's sharded checkpoint (``torch.distributed.checkpoint`` loads
    the saved param_groups with the moments): a CPU run's stayed ``fused=False`` on a GPU
    (session 34; the native checkpoint's path was fixed in session 32)."""
    out, step = _as_sharded(run, tmp_path)
    built = _build_fused(monkeypatch)
    train({"out": str(out), "steps": step + 1}, resume=True, progress=False)
    assert len(built) == 1
    assert [g["fused"] for g in built[0].param_groups] == [True, True]
