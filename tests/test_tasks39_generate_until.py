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


FACTS = {
    "ar": {"attention": "causal"},
    # decodes whole blocks; init_std: at the tiny preset's it writes one invalid byte throughout
    "bd3lm": {"attention": "block-causal", "block_size": 4, "init_std": 0.4},
    "hybrid": {"attention": "causal", "draft_block": 4},  # its own stop check (sampling/hybrid)
}


def _model(objective: str) -> object:
    """A tiny random model of ``objective`` (``FACTS``), or a masked-diffusion predictor sure
    of a text (``Echo``: a random one writes the same invalid byte everywhere)."""
    torch.manual_seed(0)
    if objective in FACTS:
        cfg = dataclasses.replace(tiny_config(), objective=objective, **FACTS[objective])
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


@pytest.mark.parametrize(("objective", "args", "sampled", "tokens"), [
    ("ar", {}, False, 32),
    ("ar", {}, True, 32),
    ("mdlm", {"block_length": 4}, False, 32),
    ("mdlm", {"block_length": 4}, True, 32),
    # 13 of blocks of 4: 16 decoded and the answer cut to 13 (lm_eval's _wanted_tokens)
    ("bd3lm", {}, False, 13),
    ("bd3lm", {}, True, 13),
    ("hybrid", {}, False, 32),
    ("hybrid", {}, True, 32),
])
def test_until_ends_the_decoding_with_the_same_text(objective, args, sampled, tokens,
                                                    monkeypatch):
    from unmask.lm_eval import UnmaskLM

    lm = UnmaskLM(loaded=_model(objective), greedy_check=False, batch_size=2, **args)
    sampling = {"do_sample": True, "temperature": 1.0} if sampled else {}
    budget = {"max_gen_toks": tokens} | sampling
    full, _ = _decode(lm, budget | {"until": []}, monkeypatch)
    # a stop each answer meets early: a printable piece of its own text
    until = sorted({next(t[k:k + 2] for k in range(3, len(t) - 1) if t[k:k + 2].isprintable())
                    for t in full})
    kwargs = budget | {"until": until}
    old, old_forwards = _decode(lm, kwargs, monkeypatch, early=False)
    new, new_forwards = _decode(lm, kwargs, monkeypatch)
    assert new == old == [cut_text(t, until) for t in full]
    assert new_forwards < old_forwards
