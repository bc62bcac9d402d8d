"""Checkpoint files get the user's umask, like every other file (issue 16, item 9).

The temp-file + rename path used to leave weights (safetensors writes 0600) and
train_config.json (``mkstemp``, 0600) unreadable by the group whatever the umask said.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from unmask.checkpoint import load, save_checkpoint
from unmask.config import TrainConfig, model_preset, save_json
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}


def test_run_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=16, **tok.special_ids())
    model = Transformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(4, 200, (1, 8))).sum().backward()
    opt.step()  # optimizer moments exist, so trainer.safetensors holds tensors
    ema = Transformer(cfg).requires_grad_(False)
    run = tmp_path / "run"
    save_checkpoint(run, model=model, tokenizer=tok, inference_model=ema, optimizer=opt,
                    trainer_state={"step": 1})
    save_json(TrainConfig(), run / "train_config.json")
    save_checkpoint(run, model=model, tokenizer=tok, optimizer=opt, trainer_state={"step": 2})

    got = modes(run)
    files = {name for name in got if (run / name).is_file()}
    assert files == {
        "train_config.json", "checkpoint/config.json", "checkpoint/model.safetensors",
        "checkpoint/tokenizer.json", "checkpoint/trainer.json", "checkpoint/trainer.safetensors",
    }
    for name, mode in got.items():
        want = (0o777 if (run / name).is_dir() else 0o666) & ~umask
        assert mode == want, f"{name}: {oct(mode)}, umask {oct(umask)} wants {oct(want)}"
    assert load(run).config == cfg
