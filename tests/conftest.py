import os
import tempfile

import pytest
import torch

# Two cores, many small ops: one thread is fastest and keeps results deterministic.
torch.set_num_threads(1)
os.environ.setdefault("NO_COLOR", "1")
# Compiled token automata are cached on disk (unmask.infill.automaton.cache_dir): tests keep
# theirs in a fresh temporary folder, never the user's ~/.cache.
os.environ["UNMASK_CACHE_DIR"] = tempfile.mkdtemp(prefix="unmask-test-cache-")


@pytest.fixture
def tiny_config():
    from unmask.config import model_preset

    return model_preset("tiny", vocab_size=48, max_seq_len=32)


@pytest.fixture
def free_port() -> int:
    """A TCP port free on the loopback now (torchrun's rendezvous): a fixed port collides
    with another test run, or anything else, already listening there."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
