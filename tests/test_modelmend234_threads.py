"""The hand-out of a shared forward's NaN flags (``step_together``,
``unmask.model.take_nonfinite_rows``) takes the flags of its own thread's forward.

The flags were the model's last forward's: a forward of another thread on the same model
that ran between ``step_together``'s forward and its hand-out gave this thread the other
forward's flags, and their NaN was taken off the count: the other thread's run returned
garbage without a word. Here a hook at the end of thread A's forward lets thread B's forward
run there (the GIL can switch there on its own)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from unmask import api
from unmask.config import SampleConfig, model_preset
from unmask.loaded import Loaded
from unmask.model import NonFiniteOutput, Transformer
from unmask.sampling.protocol import step_together
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
BAD = TOK.bos_id


def _model() -> Transformer:
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, **TOK.special_ids())
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.embed.weight[BAD] = float("nan")
    return model


def test_another_threads_forward_is_not_handed_out():
    model = _model()
    loaded = Loaded(model=model, tokenizer=TOK, config=model.config, path=Path("x"))
    b_ran, b_may_end, handed = threading.Event(), threading.Event(), threading.Event()
    first = [True]

    def between(mod, args, out):  # the end of A's first forward: B's forward runs now
        if threading.current_thread().name == "A" and first[0]:
            first[0] = False
            b_may_end.set()
            assert b_ran.wait(10)

    model.register_forward_hook(between)
    out: dict[str, object] = {}

    def a() -> None:
        run = api.start(loaded, [TOK.encode("ab")], SampleConfig(gen_length=2, steps=2))
        while not run.done:
            step_together([run])
            handed.set()
        out["A"] = run

    def b() -> None:
        assert b_may_end.wait(10)
        run = api.start(loaded, [[BAD, *TOK.encode("a")]], SampleConfig(gen_length=1, steps=1))
        run.advance()
        b_ran.set()
        assert handed.wait(10)  # A's hand-out came after B's forward
        try:
            out["B"] = run.result().gen_ids
        except NonFiniteOutput as e:
            out["B"] = e

    threads = [threading.Thread(target=a, name="A"), threading.Thread(target=b, name="B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert isinstance(out["B"], NonFiniteOutput)  # it was garbage without a word
    assert int(model.nonfinite_forwards) == 1  # B's pass stays counted: A took its own


@pytest.mark.filterwarnings("ignore")
def test_a_compiled_forward_is_still_handed_out():
    """A compiled forward cannot tell its thread: the model's last flags are handed out (no
    graph break: fullgraph)."""
    from unmask.model import nonfinite_rows_mark, take_nonfinite_rows

    model = _model()
    twin = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.tensor([[BAD, 5, 6], [7, 8, 9]])
    with torch.no_grad():
        model(x)  # an eager forward of this thread first
        mark = nonfinite_rows_mark(twin)
        twin(x)
        flags = take_nonfinite_rows(twin, mark, 2)
        assert flags is not None and flags.tolist() == [True, False]
        assert take_nonfinite_rows(twin, nonfinite_rows_mark(twin), 2) is None  # taken once
    assert int(model.nonfinite_forwards) == 1  # the eager forward, never handed out
