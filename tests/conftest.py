import os
import signal
import tempfile

import pytest
import torch

# Two cores, many small ops: one thread is fastest and keeps results deterministic.
torch.set_num_threads(1)
os.environ.setdefault("NO_COLOR", "1")
# Compiled token automata are cached on disk (unmask.infill.automaton.cache_dir): tests keep
# theirs in a fresh temporary folder, never the user's ~/.cache.
os.environ["UNMASK_CACHE_DIR"] = tempfile.mkdtemp(prefix="unmask-test-cache-")
# A command a test starts in a fresh process (`unmask ...`, torchrun) imports this checkout,
# as the tests do (pytest's `pythonpath` reaches only its own process): from a clone whose
# environment installed another checkout, those tests tested that one.
_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_SRC, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)])
# A suite started in the background of a shell without job control (`pytest &` in a script)
# inherits Ctrl-C ignored (POSIX), and so would every command it starts: the tests of Ctrl-C
# need its usual disposition, here and (a handled signal is reset at exec) in their children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _signal_mask_restored():
    """A test that runs an exit path in process (``unmask.cli.hold_signals``: SIGINT, SIGTERM,
    SIGHUP blocked for "the rest of the process") left them blocked for every later test and,
    the mask being inherited across exec, for every command those tests start: their Ctrl-C
    tests ran to the end (benchmarks/planning.py's interrupted run did, session 33)."""
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: no mask to leak
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, before)


@pytest.fixture
def tiny_config():
    from unmask.config import model_preset

    return model_preset("tiny", vocab_size=48, max_seq_len=32)


@pytest.fixture(scope="session")
def benchmark():
    """``load(name)``: the script ``benchmarks/<name>.py`` as a module (registered in
    ``sys.modules`` as ``bench_<name>``: dataclasses look their module up there)."""
    import importlib.util
    import sys
    from pathlib import Path

    def load(name: str):
        folder = Path(__file__).resolve().parents[1] / "benchmarks"
        if str(folder) not in sys.path:  # as `python benchmarks/NAME.py` has it: _common.py
            sys.path.insert(0, str(folder))
        path = folder / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"bench_{name}"] = module
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def free_port() -> int:
    """A TCP port free on the loopback now (torchrun's rendezvous): a fixed port collides
    with another test run, or anything else, already listening there."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def word_corpus(tmp_path_factory):
    """``make(name, words)``: a prepared byte-level corpus (``unmask prepare``, 10% held out) of
    300 lines of 8 words drawn from ``words`` with seed 0 (no full stops:
    ``corpus_helpers.word_corpus``), in a fresh folder; returns its path."""
    from corpus_helpers import word_corpus as prepared

    def make(name: str, words: list[str], lines: int = 300):
        return prepared(tmp_path_factory.mktemp(name), words, lines, 0, end="")

    return make
