"""``TokenDataset.sample`` with a negative batch size: a one-line ``UserError`` as a bad
``seq_len`` or ``windows``' ``batch_size`` get, not torch's RuntimeError."""

from __future__ import annotations

import pytest
import torch

from unmask.data import TokenDataset, prepare
from unmask.errors import UserError


def test_a_negative_batch_size_is_a_user_error(tmp_path):
    (tmp_path / "a.txt").write_text("some text to sample windows from " * 20)
    out = prepare([tmp_path / "a.txt"], tmp_path / "d", tokenizer="byte", val_fraction=0,
                  progress=False).out
    ds = TokenDataset(out, "train")
    with pytest.raises(UserError, match="batch_size=-1"):
        ds.sample(-1, 16, torch.Generator())
    assert ds.sample(0, 16, torch.Generator()).shape == (0, 16)
