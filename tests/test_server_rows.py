"""The rows of one request: a request of more rows than ``--max-batch`` runs in runs of at
most that many, and with a seed every row has a generator of its own (choice k of a prompt:
``seed + k``), so a prompt writes the same text alone or in a list, as vLLM does."""

from __future__ import annotations

import functools
import json

import pytest
from server_helpers import Mixer, Recording, loaded, random_transformer, tiny_config

from unmask import api
from unmask.config import SampleConfig
from unmask.server.batching import Engine, Job
from unmask.server.metrics import Metrics
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
PROMPTS = ["In the", "x", "And God said,", "", "ab"]


def engine_rows(model, config: SampleConfig, *, max_batch: int, seeds=None) -> list[list[int]]:
    engine = Engine(functools.partial(api.start, loaded(model)), metrics=Metrics(),
                    max_batch=max_batch)
    try:
        given = {"seeds": seeds} if seeds is not None else {}
        out = engine.submit(Job(rows=[TOK.encode(p) for p in PROMPTS], config=config,
                                **given)).result(timeout=30)
    finally:
        engine.close()
    assert len(out.gen_ids) == len(PROMPTS)
    return out.gen_ids


@pytest.mark.parametrize("config", [
    SampleConfig(gen_length=6, steps=6),
    SampleConfig(gen_length=6, steps=3, temperature=1.0, seed=5),
    SampleConfig(gen_length=4, steps=4, cache="prefix"),  # runs alone: its parts in turn
])
def test_a_job_of_more_rows_than_max_batch_runs_in_slices(config):
    """A single request of 5 rows ran as one forward of 5 rows under ``max_batch`` 2 (16
    prompts x n 8: 128 rows, past any bound the operator set); now in runs of at most 2 rows,
    with the same tokens as unsliced (temperature 0; with a seed, rows seeded each)."""
    seeds = None
    if config.seed is not None:
        from unmask.api import row_seeds

        seeds = row_seeds(config.seed, len(PROMPTS), 1)

    def fresh():  # a model with a KV cache for the cache
        return random_transformer() if config.cache != "none" else Mixer(tiny_config())

    model = Recording(fresh())
    sliced = engine_rows(model, config, max_batch=2, seeds=seeds)
    assert model.sizes and max(model.sizes) <= 2, model.sizes
    assert sliced == engine_rows(fresh(), config, max_batch=8, seeds=seeds)


def test_row_seeds_follow_the_choice_index():
    from unmask.api import row_seeds

    assert row_seeds(None, 3, 2) is None
    assert row_seeds(7, 2, 3) == [7, 8, 9, 7, 8, 9]
    assert row_seeds(2**63 - 1, 1, 2) == [2**63 - 1, 0]


def _texts(client, body):
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return [c["text"] for c in sorted(r.json()["choices"], key=lambda c: c["index"])]


def _streamed(client, body):
    r = client.post("/v1/completions", json={**body, "stream": True})
    texts: dict[int, str] = {}
    for block in r.text.strip().split("\n\n"):
        data = block.split("data: ", 1)[1]
        if data != "[DONE]":
            for c in json.loads(data)["choices"]:
                texts[c["index"]] = texts.get(c["index"], "") + c["text"]
    return [texts[k] for k in sorted(texts)]


def test_a_seeded_prompt_writes_the_same_text_alone_or_in_a_list():
    """With a seed, prompt k of ``"prompt": [p0, p1, ...]`` got other text than the same prompt
    sent alone (one generator over the rows: a row's noise depended on its place in the
    batch). Now choice j of each prompt is seeded ``seed + j``: the same alone, in a list and
    streamed; choice 0 is the ``n`` = 1 answer."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    with TestClient(create_app(loaded(random_transformer()),
                               limits=ServerLimits(max_batch=16))) as c:
        listed = _texts(c, {**SEEDED, "prompt": PROMPTS})
        assert len(listed) == 2 * len(PROMPTS)
        for k, p in enumerate(PROMPTS):
            assert _texts(c, {**SEEDED, "prompt": p}) == listed[2 * k : 2 * k + 2], p
        assert _texts(c, {**SEEDED, "prompt": PROMPTS[2], "n": 1}) == listed[4:5]
        assert _streamed(c, {**SEEDED, "prompt": PROMPTS}) == listed
        assert len(set(listed[2:4])) == 2  # the choices differ (seeds 3 and 4)


def test_a_request_of_more_rows_than_max_batch_runs_in_slices_over_http():
    """10 rows under ``--max-batch 3``: forwards of at most 3 rows, the same texts as with
    room for all (seeded sampling), plain and streamed."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    with TestClient(create_app(loaded(random_transformer()),
                               limits=ServerLimits(max_batch=16))) as c:
        whole = _texts(c, {**SEEDED, "prompt": PROMPTS})
    model = Recording(random_transformer())
    with TestClient(create_app(loaded(model), limits=ServerLimits(max_batch=3))) as c:
        assert _texts(c, {**SEEDED, "prompt": PROMPTS}) == whole
        assert max(model.sizes) <= 3, model.sizes
        assert _streamed(c, {**SEEDED, "prompt": PROMPTS}) == whole
        greedy = {"prompt": PROMPTS, "max_tokens": 5, "n": 2}  # temperature 0, no seed
        sliced = _texts(c, greedy)
        assert max(model.sizes) <= 3, model.sizes
    with TestClient(create_app(loaded(random_transformer()))) as c:
        assert _texts(c, greedy) == sliced


SEEDED = {"max_tokens": 6, "temperature": 1.0, "seed": 3, "n": 2}


def test_a_sliced_job_cancelled_mid_way_frees_the_batch_and_bad_slices_fail_it():
    """A job whose first slice runs and whose rest waits at the head of the queue: cancelled,
    it leaves both (the next job runs at once); a slice whose run is refused fails the job
    once, and the worker lives on."""
    from server_helpers import Stepped, wait_until

    from unmask.server.batching import Cancelled

    model = Stepped(Mixer(tiny_config()))
    engine = Engine(functools.partial(api.start, loaded(model)), metrics=Metrics(),
                    max_batch=2)
    config = SampleConfig(gen_length=4, steps=4)
    try:
        big = Job(rows=[TOK.encode(p) for p in PROMPTS], config=config)
        engine.submit(big)
        wait_until(lambda: model.entered == 1)
        assert engine.active_rows == 2 and engine.queue_depth == 1
        engine.cancel(big)
        model.allow(1)
        with pytest.raises(Cancelled):
            big.future.result(timeout=5)
        after = Job(rows=[TOK.encode("ok")], config=config)
        engine.submit(after)
        model.allow(100)
        assert len(after.future.result(timeout=5).gen_ids) == 1
        wait_until(lambda: engine.active_rows == 0 and engine.in_flight == 0)
        calls = {"n": 0}
        start = engine.start_run

        def refuse_the_second(rows, config, **kw):
            calls["n"] += 1
            if calls["n"] == 2:
                raise ValueError("no")
            return start(rows, config, **kw)

        engine.start_run = refuse_the_second
        bad = Job(rows=[TOK.encode(p) for p in PROMPTS], config=config)
        engine.submit(bad)
        with pytest.raises(ValueError):
            bad.future.result(timeout=5)
        engine.start_run = start
        again = Job(rows=[TOK.encode(p) for p in PROMPTS], config=config)
        engine.submit(again)
        assert len(again.future.result(timeout=5).gen_ids) == len(PROMPTS)
        wait_until(lambda: engine.active_rows == 0 and engine.queue_depth == 0)
    finally:
        model.allow(1000)
        engine.close()


@pytest.mark.parametrize("defaults,body,alone", [
    ({}, {"seed": 3}, False),  # argmax, low-confidence order: no generator read
    ({}, {"seed": 3, "temperature": 0.7}, True),
    ({"remasking": "random"}, {"seed": 3}, True),  # the checkpoint's random order
    # no seed, a whole-batch run: one drawn (free: seeded rows share a whole-batch run, a
    # generator per row, ``seeds_in_one_run``); its job shares a run once the engine splits it
    ({"remasking": "random"}, {"cache": "prefix"}, True),
    # no seed, the continuous batch: one drawn (free there) and reported, so it is seeded
    ({"remasking": "random"}, {}, True),
])
def test_a_seeded_job_that_draws_noise_at_temperature_0_runs_alone(defaults, body, alone):
    """A seeded single-row job at temperature 0 could share a whole-batch run (KV caches,
    causal) with other jobs: fine for argmax, but a run that draws random numbers all the
    same (random remasking recommended by the checkpoint, SEDD, continuous decoders) then
    wrote text that depended on the batch. Such a job now runs alone, as seeded sampling."""
    import dataclasses

    from unmask.server import create_app
    from unmask.server.routes.completions import prepare
    from unmask.server.schemas import CompletionRequest

    cfg = dataclasses.replace(tiny_config(), sample_defaults=defaults)
    model = random_transformer()
    model.config = cfg
    app = create_app(loaded(model))
    try:
        req = CompletionRequest(prompt="Hi", max_tokens=4, **body)
        job, _ = prepare(app.state.server, req, ["Hi"], app.state.server.tok.encode)
        assert (job.batch_key()[0] == "alone") is alone, job.batch_key()
    finally:
        app.state.engine.close()


def _causal():
    import dataclasses

    import torch

    from unmask.model import Transformer

    torch.manual_seed(0)
    return Transformer(dataclasses.replace(tiny_config(), attention="causal")).eval()


@pytest.mark.parametrize("fresh,extra", [
    (_causal, {}),  # AR: greedy at temperature 0
    (random_transformer, {"cache": "prefix"}),  # a KV-cache run at temperature 0
])
def test_a_seed_that_draws_nothing_keeps_the_rows_in_one_run(fresh, extra):
    """A seed made every row of a request a run of its own even where the run draws no
    random number (greedy AR, KV-cache diffusion at temperature 0): the same text at about
    one forward per row and step (8-10x the forwards). Now the rows share one run, as
    without the seed: the same forwards and the same text."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    body = {"prompt": PROMPTS, "max_tokens": 5, "n": 2, "temperature": 0, **extra}
    runs = {}
    for seed in (None, 3):
        model = Recording(fresh())
        with TestClient(create_app(loaded(model), limits=ServerLimits(max_batch=16))) as c:
            texts = _texts(c, body if seed is None else {**body, "seed": seed})
        runs[seed] = (texts, len(model.sizes), max(model.sizes))
    assert runs[3] == runs[None], runs
    assert runs[3][2] == 2 * len(PROMPTS)  # all rows in one forward


def _denoising_steps(client, body):
    r = client.post("/v1/completions", json={**body, "stream": True, "stream_denoising": True})
    assert r.status_code == 200, r.text
    steps = []
    for block in r.text.strip().split("\n\n"):
        if "event: denoising" in block:
            data = block.split("data: ", 1)[1]
            steps.append(json.loads(data)["step"])
    return steps


@pytest.mark.parametrize("max_batch,extra", [
    (16, {"seed": 3, "temperature": 1.0}),  # a run per row, stepped together
    (3, {}),  # slices of 3 rows, one after another
    (3, {"seed": 3, "temperature": 1.0}),
])
def test_denoising_steps_of_a_job_of_several_runs_rise_one_per_forward(max_batch, extra):
    """A job of several runs (seeded rows, or more rows than ``--max-batch``) streamed every
    run's own steps: the same step once per run (10 events numbered 1 for seeded rows
    stepped together) or 1..n again for each slice. Now one ``denoising.step`` event per
    forward the job took part in, numbered 1, 2, 3, ..."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    model = Recording(random_transformer())
    body = {"prompt": PROMPTS, "max_tokens": 4, "n": 2, **extra}
    with TestClient(create_app(loaded(model), limits=ServerLimits(max_batch=max_batch))) as c:
        steps = _denoising_steps(c, body)
        forwards = len(model.sizes)
    assert steps == list(range(1, len(steps) + 1)), steps
    assert len(steps) == forwards, (steps, model.sizes)
