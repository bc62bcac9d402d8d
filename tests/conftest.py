import os

import pytest
import torch

# Two cores, many small ops: one thread is fastest and keeps results deterministic.
torch.set_num_threads(1)
os.environ.setdefault("NO_COLOR", "1")


@pytest.fixture
def tiny_config():
    from unmask.config import model_preset

    return model_preset("tiny", vocab_size=48, max_seq_len=32)
