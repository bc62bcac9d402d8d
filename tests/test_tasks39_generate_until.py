"""lm-eval's ``generate_until`` ends the decoding at the request's ``until`` strings, through
the library's stop sequences (``unmask.api.start``'s ``stop``): before, every forward of the
task's budget ran and the text was cut afterwards. The text is the same as the run to the end
gives, cut at the earliest-starting ``until`` string."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from server_helpers import Echo, loaded, tiny_config

from unmask.chat import cut_text
from unmask.model import Transformer
from unmask.sampling.stops import StopRows

pytest.importorskip("lm_eval")

CONTEXTS = ["ab", "hello", "xyz"]


class _Request:
    def __init__(self, *args):
        self.args = args


def _model(objective: str) -> object:
    """A tiny random causal model (``ar``), or a masked-diffusion predictor sure of a text
    (``Echo``: a random one writes the same invalid byte everywhere)."""
    torch.manual_seed(0)
    if objective == "ar":
        cfg = dataclasses.replace(tiny_config(), attention="causal", objective="ar")
        return loaded(Transformer(cfg).eval())
    return loaded(Echo(tiny_config()))


def _decode(lm, kwargs: dict, monkeypatch, *, early: bool = True) -> tuple[list[str], int]:
    """Each context's answer and the forwards run (``early`` False: the stop check off, as
    before 2026-12-07)."""
    calls = []
    model = type(lm.loaded.model)
    forward = model.forward

    def counted(self, *args, **kw):
        calls.append(1)
        return forward(self, *args, **kw)

    with monkeypatch.context() as m:
        m.setattr(model, "forward", counted)
        if not early:
            m.setattr(StopRows, "__bool__", lambda self: False)
        texts = lm.generate_until([_Request(c, kwargs) for c in CONTEXTS])
    return texts, len(calls)


@pytest.mark.parametrize(("objective", "args", "sampled"), [
    ("ar", {}, False),
    ("ar", {}, True),
    ("mdlm", {"block_length": 4}, False),
    ("mdlm", {"block_length": 4}, True),
])
def test_until_ends_the_decoding_with_the_same_text(objective, args, sampled, monkeypatch):
    from unmask.lm_eval import UnmaskLM

    lm = UnmaskLM(loaded=_model(objective), greedy_check=False, batch_size=2, **args)
    budget = {"max_gen_toks": 32} | ({"do_sample": True, "temperature": 1.0} if sampled else {})
    full, _ = _decode(lm, budget | {"until": []}, monkeypatch)
    # a stop each answer meets early: a printable piece of its own text
    until = sorted({next(t[k:k + 2] for k in range(3, len(t) - 1) if t[k:k + 2].isprintable())
                    for t in full})
    kwargs = budget | {"until": until}
    old, old_forwards = _decode(lm, kwargs, monkeypatch, early=False)
    new, new_forwards = _decode(lm, kwargs, monkeypatch)
    assert new == old == [cut_text(t, until) for t in full]
    assert new_forwards < old_forwards
