"""Seeded requests of a decoder with a generator per row (``ar``, ``hybrid``) share one run.

A seeded sampled request of a whole-batch decoder ran alone: two clients sending seeded
requests to a causal checkpoint got a run each, one after the other, though the ``ar`` run
takes a generator per row (``api.seeds_in_one_run``), so rows of other requests could ride
along and each draw what it draws alone. Now queued seeded requests of the same settings
(their seeds aside) share one run, every row seeded as alone."""

from __future__ import annotations

import dataclasses

import pytest
from server_helpers import Stepped, loaded, tiny_config, wait_until

from unmask import api
from unmask.config import SampleConfig
from unmask.server.batching import Job
from unmask.server.engine import make_engine
from unmask.server.metrics import Metrics
from unmask.server.state import ServerLimits
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
SAMPLED = SampleConfig(gen_length=8, steps=8, temperature=0.9, top_k=20)


def _causal():
    import torch

    from unmask.model import Transformer

    torch.manual_seed(0)
    return Transformer(dataclasses.replace(tiny_config(), attention="causal",
                                           init_std=0.3)).eval()


def _job(prompts: list[str], n: int, seed: int, config: SampleConfig = SAMPLED) -> Job:
    """A job as ``routes.completions.prepare`` builds a seeded sampled request."""
    rows = [TOK.encode(p) for p in prompts for _ in range(n)]
    config = dataclasses.replace(config, seed=seed)
    seeds = api.row_seeds(seed, len(prompts), n) if len(rows) > 1 else None
    return Job(rows=rows, config=config, batchable=False, seeds=seeds)


def _alone(model, job: Job) -> list[list[int]]:
    """What ``job`` writes on an engine of its own."""
    engine = make_engine(loaded(model), ServerLimits(), Metrics())
    try:
        solo = Job(rows=job.rows, config=job.config, batchable=False, seeds=job.seeds)
        return engine.submit(solo).result(timeout=30).gen_ids
    finally:
        engine.close()


REQUESTS = [(["In the"], 1, 3), (["x", "And God said,"], 1, 11), (["ab"], 2, 3), ([""], 1, 40)]


def test_queued_seeded_requests_share_one_run_and_write_what_they_write_alone():
    inner = _causal()
    model = Stepped(inner)
    engine = make_engine(loaded(model), ServerLimits(max_batch=8), Metrics())
    try:
        first = engine.submit(_job(["hold"], 1, 1))  # runs while the others queue
        wait_until(lambda: model.entered == 1)
        jobs = [_job(*r) for r in REQUESTS]
        for job in jobs:
            engine.submit(job)
        model.allow(1000)
        first.result(timeout=30)
        outs = [job.future.result(timeout=30) for job in jobs]
    finally:
        model.allow(1000)
        engine.close()
    rows = sum(len(j.rows) for j in jobs)
    assert all(o.batch_rows == rows for o in outs), [o.batch_rows for o in outs]
    assert max(model.sizes) == rows  # every queued row in one forward: one run, not four
    for job, out in zip(jobs, outs, strict=True):
        assert out.gen_ids == _alone(inner, job), job.rows
    texts = [r for o in outs for r in o.gen_ids]  # seeds 3, 11, 11, 3, 4, 40
    assert texts[3] != texts[4]  # "ab" under seeds 3 and 4 (n 2's choices): other draws


def test_seeded_and_unseeded_or_other_settings_do_not_share_a_run():
    """Only seeded jobs of the same settings ride together: an unseeded sampled job draws
    from the process's generator, another temperature is another run."""
    inner = _causal()
    model = Stepped(inner)
    engine = make_engine(loaded(model), ServerLimits(max_batch=8), Metrics())
    try:
        first = engine.submit(_job(["hold"], 1, 1))
        wait_until(lambda: model.entered == 1)
        a = _job(["In the"], 1, 3)
        hotter = _job(["ab"], 1, 5, dataclasses.replace(SAMPLED, temperature=1.3))
        free = Job(rows=[TOK.encode("x")], config=SAMPLED)  # no seed: batchable
        for job in (a, hotter, free):
            engine.submit(job)
        model.allow(1000)
        outs = [f.result(timeout=30) for f in (first, *(j.future for j in (a, hotter, free)))]
    finally:
        model.allow(1000)
        engine.close()
    assert [o.batch_rows for o in outs] == [1, 1, 1, 1]
    assert outs[1].gen_ids == _alone(inner, a)
    assert outs[2].gen_ids == _alone(inner, hotter)


@pytest.mark.parametrize("dtype", ["bf16"])
def test_seeded_requests_in_half_precision_still_run_alone(dtype):
    """In bf16 a left-padded row rounds otherwise than alone (``api.seeds_in_one_run``):
    seeded jobs keep a run each there."""
    import torch

    inner = _causal().to(getattr(torch, {"bf16": "bfloat16"}[dtype]))
    model = Stepped(inner)
    engine = make_engine(loaded(model), ServerLimits(max_batch=8), Metrics())
    try:
        first = engine.submit(_job(["hold"], 1, 1))
        wait_until(lambda: model.entered == 1)
        jobs = [_job(["In the"], 1, 3), _job(["ab"], 1, 4)]
        for job in jobs:
            engine.submit(job)
        model.allow(1000)
        outs = [f.result(timeout=30) for f in (first, *(j.future for j in jobs))]
    finally:
        model.allow(1000)
        engine.close()
    assert [o.batch_rows for o in outs] == [1, 1, 1]


def test_an_unseeded_sampled_request_of_a_causal_checkpoint_reports_a_seed_that_repeats_it():
    """Where seeded rows share runs (a generator each), a seed costs nothing, so a sampled
    request that sends none gets one drawn and reported, as in the continuous batch; its
    ``seed`` was null (the text could not be repeated)."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    body = {"prompt": ["In the", "x"], "max_tokens": 6, "temperature": 0.9, "n": 2}
    with TestClient(create_app(loaded(_causal()), access_log=False)) as c:
        first = c.post("/v1/completions", json=body).json()
        seed = first["seed"]
        assert isinstance(seed, int) and 0 <= seed < 2**31, first
        again = c.post("/v1/completions", json={**body, "seed": seed}).json()
        assert again["seed"] == seed
        assert [x["text"] for x in again["choices"]] == [x["text"] for x in first["choices"]]
        greedy = c.post("/v1/completions", json={**body, "temperature": 0}).json()
        assert greedy["seed"] is None  # a run that draws nothing needs none
