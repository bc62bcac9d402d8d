"""``Transformer.forward`` refuses misshapen inputs in one line (session 34): they were
Python's or torch's errors from deep inside."""

from __future__ import annotations

import pytest
import torch

from unmask.config import model_preset
from unmask.model import KVCache, Transformer


@pytest.fixture(scope="module")
def model() -> Transformer:
    return Transformer(model_preset("tiny", vocab_size=64, max_seq_len=32)).eval()


def test_one_row_of_ids_without_a_batch_dimension(model):
    with pytest.raises(ValueError, match=r"tokens must be \(B, L\) ids, got shape \(2,\)"):
        model(torch.tensor([1, 2]))  # was "not enough values to unpack"


def test_a_cache_of_another_batch(model):
    kv = KVCache()
    with torch.no_grad():
        model(torch.zeros(1, 4, dtype=torch.long), cache=kv)
        with pytest.raises(ValueError, match="the KV cache holds 1 rows; this call has 2"):
            model(torch.zeros(2, 1, dtype=torch.long), cache=kv, start=4)


def test_fractional_positions(model):
    with pytest.raises(ValueError, match="positions must be whole numbers, got torch.float32"):
        model(torch.zeros(1, 2, dtype=torch.long), positions=torch.tensor([0.0, 1.0]))
