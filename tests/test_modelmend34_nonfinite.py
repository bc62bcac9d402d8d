"""The NaN watch per run, not per model (``unmask.model.NonFiniteOutput``).

A forward shared by several runs (``step_together``: the server's continuous batch) counted
against every run in it, so one request whose prompt went NaN failed every request batched
with it; a whole-batch run of several requests failed them all; the server answered 400
``invalid_request_error`` (the client's fault) for the model's failure; and step callbacks,
live views and streams were shown the garbage canvas before the error.

The model here is healthy but for one token's embedding (``BAD``, the start token, which no
decoder generates): a row holding it goes NaN, the rows beside it do not.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
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

sys.path.insert(0, str(Path(__file__).parent))
from server_helpers import Stepped, wait_until  # noqa: E402

TOK = byte_tokenizer()
BAD = TOK.bos_id
NONFINITE = "NaN or infinite outputs"


def _model(objective: str = "mdlm", attention: str = "bidirectional") -> Transformer:
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, objective=objective,
                       attention=attention, **TOK.special_ids())
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.embed.weight[BAD] = float("nan")
    return model


def _loaded(model: torch.nn.Module) -> Loaded:
    return Loaded(model=model, tokenizer=TOK, config=model.config, path=Path("x"))


def test_runs_stepped_together_answer_for_their_own_rows_only():
    """Two runs share each forward; only the one whose row went NaN fails, its message counts
    its own passes, and a run made before them but not stepped with them is not blamed."""
    loaded = _loaded(_model())
    config = SampleConfig(gen_length=4, steps=4)
    waiting = api.start(loaded, [TOK.encode("cd")], config)  # made, then stepped later
    bad = api.start(loaded, [[BAD, *TOK.encode("a")]], config)
    good = api.start(loaded, [TOK.encode("ab"), TOK.encode("xy")], config)
    while not (bad.done and good.done):
        step_together([bad, good])
    with pytest.raises(NonFiniteOutput, match=f"{NONFINITE} in 4 forward passes of this run"):
        bad.result()
    alone = api.start(loaded, [TOK.encode("ab"), TOK.encode("xy")], config).run()
    assert torch.equal(good.result().tokens, alone.tokens)  # as if it had run alone
    assert waiting.run().gen_ids
    assert int(loaded.model.nonfinite_forwards) == 0  # the shared forwards were handed out


def test_a_shared_forward_of_one_run_still_counts():
    loaded = _loaded(_model())
    run = api.start(loaded, [[BAD, *TOK.encode("a")]], SampleConfig(gen_length=4, steps=4))
    while not run.done:
        step_together([run])
    with pytest.raises(NonFiniteOutput, match="in 4 forward passes"):
        run.result()


@pytest.mark.parametrize("objective", ["mdlm", "ar"])
def test_the_engine_fails_only_the_request_that_went_nan(objective):
    """mdlm: the continuous batch (one forward, rows of both requests); ar: one whole-batch
    run of both requests' rows, handed out row by row (``DecoderRun.watch_rows``)."""
    from unmask.server.batching import Engine, Job
    from unmask.server.metrics import Metrics

    ar = objective == "ar"
    model = _model(objective, "causal" if ar else "bidirectional")
    stepped = Stepped(model)
    stepped.__wrapped__ = model  # the NaN watch reads the model it wraps
    engine = Engine(functools.partial(api.start, _loaded(stepped)), metrics=Metrics(),
                    max_batch=4)
    config = SampleConfig(gen_length=4, steps=4, **({"decoder": "ar"} if ar else {}))
    hold = dataclasses.replace(config, gen_length=1, steps=1)  # other settings: its own run
    try:
        first = engine.submit(Job(rows=[TOK.encode("h")], config=hold))  # the others queue
        wait_until(lambda: stepped.entered == 1)
        bad = engine.submit(Job(rows=[[BAD, *TOK.encode("a")]], config=config))
        good = engine.submit(Job(rows=[TOK.encode("ab")], config=config))
        stepped.allow(1000)
        assert first.result(timeout=30).gen_ids
        with pytest.raises(NonFiniteOutput):
            bad.result(timeout=30)
        assert good.result(timeout=30).gen_ids
        assert max(stepped.sizes) >= 2  # they did share a forward
    finally:
        stepped.allow(1000)
        engine.close()


@pytest.mark.parametrize("objective", ["mdlm", "ar"])
def test_step_callbacks_see_no_garbage(objective):
    """The views are checked where they are read: the first NaN step raises before its
    canvas (the first allowed id everywhere) reaches the callback or a stream."""
    ar = objective == "ar"
    loaded = _loaded(_model(objective, "causal" if ar else "bidirectional"))
    seen = []
    config = SampleConfig(gen_length=6, forbid_eos=True, **({"decoder": "ar"} if ar else {}))
    run = api.start(loaded, [[BAD, *TOK.encode("a")]], config,
                    step_callback=lambda step, view: seen.append(view.tolist()))
    with pytest.raises(NonFiniteOutput, match="in 1 forward pass"):
        run.run()
    assert seen == []


def test_a_sampler_step_callback_sees_no_garbage():
    """The decoders' own canvas callback (``sample(step_callback=...)``, infill's path)."""
    from unmask.canvas import Canvas
    from unmask.sampling.loop import sample

    model = _model()
    canvas = Canvas.from_prompts([[BAD, *TOK.encode("a")]], 4, mask_id=TOK.mask_id,
                                 pad_id=TOK.pad_id)
    seen = []
    with pytest.raises(NonFiniteOutput):
        sample(model, canvas, SampleConfig(gen_length=4, steps=4),
               step_callback=lambda step, x: seen.append(x.tolist()))
    assert seen == []


def _together(client, *bodies: dict) -> list:
    """POST ``bodies`` to /v1/completions at once (threads), the answers in order."""
    answers: list = [None] * len(bodies)

    def post(i: int) -> None:
        answers[i] = client.post("/v1/completions", json=bodies[i])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return answers


@pytest.mark.parametrize("objective", ["mdlm", "ar"])
def test_the_server_answers_500_and_serves_the_request_beside_it(objective):
    """Over HTTP: the request whose prompt goes NaN gets 500 ``server_error`` (the model's
    failure, not a 400 blaming the client), the request batched with it gets its text, and
    the server serves on."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    ar = objective == "ar"
    model = _model(objective, "causal" if ar else "bidirectional")
    # the two requests of each call start together: the engine waits for both
    limits = ServerLimits(max_batch=2, batch_wait_s=30.0)
    body = {"max_tokens": 4, "temperature": 0, "steps": 4}
    bad_prompt = [BAD, *TOK.encode("a")]
    with TestClient(create_app(_loaded(model), limits=limits)) as c:
        bad, good = _together(c, {**body, "prompt": bad_prompt}, {**body, "prompt": "ab"})
        assert bad.status_code == 500, bad.text
        error = bad.json()["error"]
        assert error["type"] == "server_error" and NONFINITE in error["message"]
        assert good.status_code == 200, good.text
        if not ar:  # the continuous batch: one forward held both
            assert good.json()["batch_rows"] == 2
        stream, good = _together(c, {**body, "prompt": bad_prompt, "stream": True},
                                 {**body, "prompt": "ab"})
        assert '"server_error"' in stream.text and NONFINITE in stream.text
        assert good.status_code == 200, good.text
