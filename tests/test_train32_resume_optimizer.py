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


def test_a_resumed_optimizer_runs_as_this_process_builds_it(run, monkeypatch):
    """The process resuming builds AdamW ``fused=True`` (as on a GPU); the checkpoint, saved on
    a CPU, says ``fused=False``: the resumed optimizer is fused."""
    import unmask.train as train_module

    built: list[torch.optim.Optimizer] = []

    def as_on_a_gpu(model: Any, config: TrainConfig, device: torch.device) -> Any:
        optimizer = torch.optim.AdamW(train_module._param_groups(model, config.weight_decay),
                                      lr=config.lr, fused=True)
        built.append(optimizer)
        return optimizer

    monkeypatch.setattr(train_module, "_adamw", as_on_a_gpu)
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
