"""The NaN watch of the server's whole-batch runs (several requests' rows in one run: ``ar``,
``sedd``, ``bd3lm``, the KV caches), row by row (``DecoderRun.watch_rows``).

One request whose rows went NaN failed the whole run; the engine then ran every job of it
again alone, one after another (1 bad + 7 healthy requests: 113 one-row forwards after the
shared one), and a healthy request whose stream had been sent steps of the shared run could
not start over: it failed with the bad one. Now only the bad request fails, the others go on
in the same run and get what they get alone.

The bad rows here hold ``MARK`` in their prompt and go NaN from their ``late``-th decoding
step on (an overflow mid-run), through a hook on the last layer.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import torch

from unmask import api
from unmask.config import SampleConfig, model_preset
from unmask.loaded import Loaded
from unmask.model import NonFiniteOutput, Transformer
from unmask.server.batching import Engine, Job
from unmask.server.metrics import Metrics
from unmask.tokenizer import byte_tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from server_helpers import Stepped, wait_until  # noqa: E402

TOK = byte_tokenizer()
MARK = TOK.encode("Z")[0]
GEN = 6


def _model(late: int) -> Transformer:
    """A tiny causal model whose rows holding ``MARK`` in the prompt go NaN from their
    ``late``-th forward on (the prompt's forward is the first)."""
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, objective="ar",
                       attention="causal", **TOK.special_ids())
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    state: dict = {"bad": None, "n": 0}

    def pre(mod, args, kwargs):
        tokens = args[0] if args else kwargs["tokens"]
        if tokens.shape[1] > 1:  # the prompt
            state["bad"], state["n"] = (tokens == MARK).any(dim=1), 0
        state["n"] += 1

    def post(mod, args, out):
        bad = state["bad"]
        if bad is not None and state["n"] >= late and bad.shape[0] == out.shape[0]:
            out = out.clone()
            out[bad] = float("nan")
            return out
        return None

    model.register_forward_pre_hook(pre, with_kwargs=True)
    model.layers[-1].register_forward_hook(post)
    return model


def _alone(model: Transformer, prompt: str, config: SampleConfig) -> list[list[int]]:
    loaded = Loaded(model=model, tokenizer=TOK, config=model.config, path=Path("x"))
    return api.start(loaded, [TOK.encode(prompt)], config).run().gen_ids


@pytest.mark.parametrize(("late", "streamed"), [(1, True), (3, True), (3, False)])
def test_one_nan_request_fails_alone_and_the_batch_goes_on(late, streamed):
    """A bad streamed request, a healthy streamed one and a healthy plain one in one ar whole
    batch: the bad one fails (its stream shown no step from its NaN on), the healthy ones get
    their alone text (the streamed one every step), in the batch's forwards only. Without any
    stream (no step check takes the flags) the engine takes them after every step itself: the
    healthy requests are not run again one row at a time."""
    model = _model(late)
    stepped = Stepped(model)
    stepped.__wrapped__ = model  # the NaN watch reads the model it wraps
    metrics = Metrics()
    engine = Engine(functools.partial(api.start, Loaded(model=stepped, tokenizer=TOK,
                                                        config=model.config, path=Path("x"))),
                    metrics=metrics, max_batch=8)
    config = SampleConfig(decoder="ar", gen_length=GEN, forbid_eos=True)
    hold = SampleConfig(decoder="ar", gen_length=1)  # other settings: a run of its own
    shown: dict[str, list] = {"bad": [], "good": []}
    try:
        first = engine.submit(Job(rows=[TOK.encode("h")], config=hold))
        wait_until(lambda: stepped.entered == 1)  # the worker holds: the others queue
        bad = engine.submit(Job(rows=[TOK.encode("aZ")], config=config,
                                sink=(lambda step, ids: shown["bad"].append(step))
                                if streamed else None))
        good = engine.submit(Job(rows=[TOK.encode("bb")], config=config,
                                 sink=(lambda step, ids: shown["good"].append((step, ids)))
                                 if streamed else None))
        plain = engine.submit(Job(rows=[TOK.encode("yy"), TOK.encode("cd")], config=config))
        stepped.allow(1000)
        assert first.result(timeout=30).gen_ids
        with pytest.raises(NonFiniteOutput, match="NaN or infinite outputs in"):
            bad.result(timeout=30)
        good_out, plain_out = good.result(timeout=30), plain.result(timeout=30)
    finally:
        stepped.allow(1000)
        engine.close()
    assert stepped.sizes[1:] == [4] * GEN  # one run of the batch's 4 rows, nothing run again
    assert metrics.get("nfe") == 1 + GEN and metrics.get("forward_rows") == 1 + 4 * GEN
    assert good_out.gen_ids == _alone(model, "bb", config)
    assert plain_out.gen_ids == _alone(model, "yy", config) + _alone(model, "cd", config)
    if not streamed:
        return
    assert [s for s, _ in shown["good"]] == list(range(1, GEN + 1))
    assert shown["good"][-1][1] == good_out.gen_ids
    assert shown["bad"] == list(range(1, late))  # the steps before its NaN only


def test_a_forward_that_raises_is_counted_in_the_metrics():
    """A whole-batch run of only bad rows: its first step raises in its check, and the
    forward it made is still counted (``nfe``, ``forward_rows``)."""
    model = _model(1)
    metrics = Metrics()
    engine = Engine(functools.partial(api.start, Loaded(model=model, tokenizer=TOK,
                                                        config=model.config, path=Path("x"))),
                    metrics=metrics)
    config = SampleConfig(decoder="ar", gen_length=GEN, forbid_eos=True)
    try:
        out = engine.submit(Job(rows=[TOK.encode("aZ")] * 2, config=config,
                                sink=lambda step, ids: None))
        with pytest.raises(NonFiniteOutput):
            out.result(timeout=30)
    finally:
        engine.close()
    assert metrics.get("nfe") == 1 and metrics.get("forward_rows") == 2  # one forward of 2 rows


def test_a_nan_the_run_cannot_hand_out_runs_the_others_again_alone():
    """A guided bd3lm whole batch (``cfg_scale``: one forward of 2B rows, which the run cannot
    split by request): the bad request fails, the healthy one is run again alone and gets its
    alone text."""
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, objective="bd3lm",
                       attention="block-causal", block_size=4, **TOK.special_ids())
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.embed.weight[TOK.bos_id] = float("nan")
    stepped = Stepped(model)
    stepped.__wrapped__ = model
    loaded = Loaded(model=stepped, tokenizer=TOK, config=cfg, path=Path("x"))
    engine = Engine(functools.partial(api.start, loaded), metrics=Metrics(), max_batch=8)
    config = SampleConfig(gen_length=4, steps=4, cfg_scale=1.0, forbid_eos=True)
    hold = SampleConfig(gen_length=4, steps=1)
    try:
        first = engine.submit(Job(rows=[TOK.encode("h")], config=hold))
        wait_until(lambda: stepped.entered == 1)
        bad = engine.submit(Job(rows=[[TOK.bos_id, *TOK.encode("abc")]], config=config))
        good = engine.submit(Job(rows=[TOK.encode("wxyz")], config=config))
        stepped.allow(1000)
        assert first.result(timeout=30).gen_ids
        with pytest.raises(NonFiniteOutput):
            bad.result(timeout=30)
        out = good.result(timeout=30)
    finally:
        stepped.allow(1000)
        engine.close()
    assert 4 in stepped.sizes  # they did share a (guided) forward
    alone = api.start(Loaded(model=model, tokenizer=TOK, config=cfg, path=Path("x")),
                      [TOK.encode("wxyz")], config).run()
    assert out.gen_ids == alone.gen_ids


def test_a_request_streamed_before_such_a_nan_is_not_run_again():
    """As above, the NaN from the bad request's 3rd forward on: the healthy streamed request
    had steps of the shared run sent, cannot start over, and fails with it (its stream never
    told a step twice); the healthy plain one is run again alone."""
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, objective="bd3lm",
                       attention="block-causal", block_size=4, **TOK.special_ids())
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    state: dict = {"bad": None, "n": 0}

    def pre(mod, args, kwargs):
        tokens = args[0] if args else kwargs["tokens"]
        state["bad"] = (tokens == MARK).any(dim=1)
        state["n"] += bool(state["bad"].any())

    def late(mod, args, out):  # rows holding MARK go NaN from their 3rd forward on
        if state["n"] < 3 or not bool(state["bad"].any()):
            return None
        out = out.clone()
        out[state["bad"]] = float("nan")
        return out

    model.register_forward_pre_hook(pre, with_kwargs=True)
    model.layers[-1].register_forward_hook(late)
    loaded = Loaded(model=model, tokenizer=TOK, config=cfg, path=Path("x"))
    stepped = Stepped(model)
    stepped.__wrapped__ = model
    engine = Engine(functools.partial(api.start, Loaded(model=stepped, tokenizer=TOK, config=cfg,
                                                        path=Path("x"))),
                    metrics=Metrics(), max_batch=8)
    config = SampleConfig(gen_length=8, steps=8, cfg_scale=1.0, forbid_eos=True)
    steps: list[int] = []
    try:
        first = engine.submit(Job(rows=[TOK.encode("h")], config=SampleConfig(gen_length=4,
                                                                               steps=1)))
        wait_until(lambda: stepped.entered == 1)
        bad = engine.submit(Job(rows=[TOK.encode("abcZ")], config=config))
        streamed = engine.submit(Job(rows=[TOK.encode("wxyz")], config=config,
                                     sink=lambda step, ids: steps.append(step)))
        plain = engine.submit(Job(rows=[TOK.encode("pqrs")], config=config))
        stepped.allow(1000)
        assert first.result(timeout=30).gen_ids
        for job in (bad, streamed):
            with pytest.raises(NonFiniteOutput):
                job.result(timeout=30)
        out = plain.result(timeout=30)
    finally:
        stepped.allow(1000)
        engine.close()
    assert steps == [1, 2]  # the steps before the NaN, once
    assert out.gen_ids == api.start(loaded, [TOK.encode("pqrs")], config).run().gen_ids
