"""benchmarks/planning.py's ``check_run`` built each run's model on the meta device with
``build_meta``, skipping the size check ``unmask.checkpoint.load`` makes first
(``convert.load.checked_meta``): a config.json of ``n_layers`` 1000000000 spent minutes and
gigabytes there. It is refused in one line naming the run, as ``load`` refuses it."""

from __future__ import annotations

import pytest
import torch

import unmask.quantize
from unmask.errors import UserError


def test_check_run_refuses_a_model_too_large_in_one_line(tmp_path, monkeypatch, benchmark):
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tasks import read_items, write_task
    from unmask.tokenizer import byte_tokenizer

    write_task("reversal", tmp_path / "task", n_train=1, n_eval=1)
    items = read_items(tmp_path / "task")
    planning = benchmark("planning")
    torch.manual_seed(0)
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids())
    path = save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    planning.check_run("a", path, items, {})  # fits: no refusal
    # the tiny model stands for an absurd one: past the meta-module bound, more than is free
    monkeypatch.delenv(unmask.quantize.SKIP_ENV, raising=False)
    monkeypatch.setattr(unmask.quantize, "MAX_META_MODULES", 0)
    monkeypatch.setattr(unmask.quantize, "free_bytes", lambda device: 1)
    with pytest.raises(UserError) as e:
        planning.check_run("a", path, items, {})
    assert str(e.value).startswith("--run a: ") and "\n" not in str(e.value)
