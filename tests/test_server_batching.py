"""Continuous batching: the step-at-a-time loop (``Denoiser``, ``step_together``) and the
server's engine (requests joining and leaving a running batch, cancellation, queue limits)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json

import pytest
import torch
from server_helpers import Mixer, Stepped, loaded, random_transformer, tiny_config, wait_until

from unmask import api
from unmask.config import SampleConfig
from unmask.sampling import generate
from unmask.sampling.loop import Denoiser, step_together
from unmask.server.batching import Cancelled, Engine, GenOutput, Job, QueueFull
from unmask.server.metrics import Metrics
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()

# Requests that differ in everything a row may differ in (prompt, gen length, steps,
# blocks, policy, temperature, seed, guidance).
MIXED = [
    ("In the beginning", SampleConfig(gen_length=8, steps=8)),
    ("x", SampleConfig(gen_length=6, steps=3)),
    (
        "And God said,",
        SampleConfig(gen_length=8, steps=4, block_length=4, policy="threshold", threshold=0.5),
    ),
    ("hello", SampleConfig(gen_length=5, steps=5, temperature=1.0, seed=11)),
    ("", SampleConfig(gen_length=4, steps=8, skip_empty_steps=True)),
    ("ab", SampleConfig(gen_length=6, steps=6, cfg_scale=1.0, remasking="random", seed=3)),
]


def alone(model, prompt: str, config: SampleConfig):
    cfg = model.config
    return generate(
        model, TOK.encode(prompt), config, mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=cfg.eos_id
    )


def denoiser(model, prompt: str | list[str], config: SampleConfig, **kw) -> Denoiser:
    cfg = model.config
    ids = TOK.encode(prompt) if isinstance(prompt, str) else [TOK.encode(p) for p in prompt]
    return Denoiser.for_prompts(
        model, ids, config, mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=cfg.eos_id, **kw
    )


def run_together(ds: list[Denoiser], late: list[tuple[int, Denoiser]] = ()) -> list[int]:
    """Step ``ds`` together until all are done; ``late`` = (after shared step k, a denoiser
    that joins).
    Returns the rows of every shared forward."""
    sizes, k, late = [], 0, list(late)
    while not all(d.done for d in ds) or late:
        while late and late[0][0] <= k:
            ds.append(late.pop(0)[1])
        sizes.append(step_together(ds))
        k += 1
    return sizes


# -- the loop --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [False, True])
def test_step_together_equals_each_row_alone_exactly(shift):
    """Six requests with different settings, two of them joining mid-way, stepped together:
    each row's tokens, NFE and steps are those of its own ``generate`` call, bit for bit."""
    model = Mixer(dataclasses.replace(tiny_config(), logit_shift=shift))
    ds = [denoiser(model, p, c) for p, c in MIXED[:4]]
    late = [(2, denoiser(model, *MIXED[4])), (5, denoiser(model, *MIXED[5]))]
    sizes = run_together(ds, late)
    assert max(sizes) == 5  # one row of each, the guided one twice; some shared forwards
    for d, (p, c) in zip(ds, MIXED, strict=True):
        ref = alone(model, p, c)
        assert torch.equal(d.result().tokens, ref.tokens), (p, c)
        assert (d.nfe, d.steps) == (ref.nfe, ref.steps)
    assert ds[4].nfe == 4 and ds[4].steps == 8  # empty steps skipped, not run


def test_step_together_on_a_transformer_matches_alone():
    """The real model: left padding to the longest canvas leaves every row's argmax path as
    alone."""
    model = random_transformer()
    greedy = [
        (p, dataclasses.replace(c, temperature=0.0, cfg_scale=0.0, remasking="low_confidence"))
        for p, c in MIXED[:5]
    ]
    ds = [denoiser(model, p, c) for p, c in greedy[:3]]
    sizes = run_together(ds, [(1, denoiser(model, *greedy[3])), (3, denoiser(model, *greedy[4]))])
    assert max(sizes) >= 3
    for d, (p, c) in zip(ds, greedy, strict=True):
        assert d.result().texts(TOK) == alone(model, p, c).texts(TOK), p


def test_seeded_rows_do_not_depend_on_their_company():
    """Same seed, same sample, whether the row runs alone or shares its forwards; another seed
    differs."""
    model = random_transformer()
    config = SampleConfig(gen_length=8, steps=8, temperature=1.0, seed=5)
    ref = alone(model, "seeded", config).tokens
    d = denoiser(model, "seeded", config)
    run_together(
        [
            denoiser(model, "other", dataclasses.replace(config, seed=None)),
            denoiser(model, "z", config),
        ],
        [(3, d)],
    )
    assert torch.equal(d.result().tokens, ref)
    assert not torch.equal(alone(model, "seeded", dataclasses.replace(config, seed=6)).tokens, ref)


def test_denoiser_step_by_step_equals_sample_and_refuses_caches():
    model = random_transformer()
    config = SampleConfig(gen_length=8, steps=16, block_length=4, skip_empty_steps=True)
    seen = []
    d = denoiser(
        model,
        ["ab", "hello"],
        config,
        return_history=True,
        step_callback=lambda s, x: seen.append(s),
    )
    while not d.done:
        step_together([d])
    cfg = model.config
    ref = generate(
        model,
        [TOK.encode("ab"), TOK.encode("hello")],
        config,
        mask_id=cfg.mask_id,
        pad_id=cfg.pad_id,
        eos_id=cfg.eos_id,
        return_history=True,
    )
    assert torch.equal(d.x, ref.tokens) and (d.nfe, d.steps) == (ref.nfe, ref.steps) == (8, 16)
    assert seen == list(range(1, 17)) and len(d.history) == len(ref.history) == 16
    from unmask.errors import UserError

    with pytest.raises(UserError, match="cache 'prefix' cannot share"):
        step_together([denoiser(model, "x", dataclasses.replace(config, cache="prefix"))])


# -- the engine ------------------------------------------------------------------------------------


def make_engine(model, **kw) -> Engine:
    """The server's engine over ``model``: one factory of decoder runs (``unmask.api.start``)."""
    return Engine(functools.partial(api.start, loaded(model)), metrics=Metrics(), **kw)


def job(prompt: str, config: SampleConfig, **kw) -> Job:
    return Job(rows=[TOK.encode(prompt)], config=config, **kw)


def text(out: GenOutput) -> list[int]:
    return out.gen_ids[0]


def test_a_request_joins_mid_batch_and_a_short_one_leaves_early():
    inner = Mixer(tiny_config())
    model = Stepped(inner)
    engine = make_engine(model, max_batch=8)
    long_, short = SampleConfig(gen_length=8, steps=8), SampleConfig(gen_length=4, steps=4)
    try:
        a = job("first", long_)
        engine.submit(a)
        wait_until(lambda: model.entered == 1)  # a's first forward is waiting
        b = job("second!", short)
        engine.submit(b)
        model.allow(1)  # a's step 1 alone; b joins at this step boundary
        wait_until(lambda: model.entered == 2)
        assert engine.in_flight == 2 and engine.active_rows == 2 and engine.queue_depth == 0
        model.allow(4)  # four shared steps: b is done after its 4th and leaves at once
        out_b = b.future.result(timeout=5)
        wait_until(lambda: model.entered == 6)
        assert not a.future.done() and engine.in_flight == 1
        model.allow(3)
        out_a = a.future.result(timeout=5)
    finally:
        model.allow(100)
        engine.close()
    assert model.sizes == [1, 2, 2, 2, 2, 1, 1, 1]
    assert text(out_a) == alone(inner, "first", long_).gen_ids[0]
    assert text(out_b) == alone(inner, "second!", short).gen_ids[0]
    assert (out_a.nfe, out_a.batch_rows, out_b.nfe, out_b.batch_rows) == (8, 2, 4, 2)
    assert engine.metrics.get("joined") == 1 and engine.metrics.get("nfe") == 8
    assert engine.metrics.get("forward_rows") == 12


def test_cancelling_a_running_request_frees_its_slot_at_the_next_step():
    inner = Mixer(tiny_config())
    model = Stepped(inner)
    engine = make_engine(model, max_batch=1)  # b cannot join while a holds the only row
    config = SampleConfig(gen_length=8, steps=8)
    try:
        a, b = job("aaa", config), job("bb", config)
        engine.submit(a)
        wait_until(lambda: model.entered == 1)
        engine.submit(b)
        model.allow(1)
        wait_until(lambda: model.entered == 2)
        assert engine.queue_depth == 1  # b waits: the batch is full
        engine.cancel(a)
        model.allow(1)  # a's second step finishes; at the boundary a leaves and b joins
        with pytest.raises(Cancelled):
            a.future.result(timeout=5)
        model.allow(8)
        out_b = b.future.result(timeout=5)
    finally:
        model.allow(100)
        engine.close()
    assert model.sizes == [1] * 10  # a ran 2 steps, then cost nothing; b ran 8
    assert text(out_b) == alone(inner, "bb", config).gen_ids[0]


def test_every_request_gets_its_own_steps_streamed_and_bad_settings_fail_alone():
    inner = Mixer(tiny_config())
    model = Stepped(inner)
    engine = make_engine(model, max_batch=8)
    streamed: dict[str, list[int]] = {"a": [], "b": []}
    masked_left: list[int] = []

    def sink_b(step, rows):
        streamed["b"].append(step)
        masked_left.append(rows[0].count(inner.config.mask_id))

    try:
        a = job(
            "aaa", SampleConfig(gen_length=6, steps=6), sink=lambda s, r: streamed["a"].append(s)
        )
        engine.submit(a)
        wait_until(lambda: model.entered == 1)
        bad = job(
            "x", SampleConfig(gen_length=6, steps=4, block_length=3)
        )  # 4 steps over 2 blocks: fine
        worse = job(
            "x", SampleConfig(gen_length=6, steps=5, block_length=3)
        )  # 5 over 2 blocks: UserError
        b = job("bb", SampleConfig(gen_length=4, steps=2), sink=sink_b)
        for j in (bad, worse, b):
            engine.submit(j)
        model.allow(100)
        a.future.result(timeout=5), b.future.result(timeout=5), bad.future.result(timeout=5)
        from unmask.errors import UserError

        with pytest.raises(UserError, match="multiple of the number of blocks"):
            worse.future.result(timeout=5)
    finally:
        model.allow(100)
        engine.close()
    assert streamed == {"a": [1, 2, 3, 4, 5, 6], "b": [1, 2]}
    assert masked_left == [2, 0]


def test_a_model_error_fails_the_running_batch_and_the_worker_lives_on():
    class Flaky(Mixer):
        fail = True

        def forward(self, tokens, attention_mask=None):
            if self.fail:
                raise RuntimeError("boom")
            return super().forward(tokens, attention_mask)

    model = Flaky(tiny_config())
    engine = make_engine(model)
    try:
        a = job("a", SampleConfig(gen_length=4, steps=4))
        engine.submit(a)
        with pytest.raises(RuntimeError, match="boom"):
            a.future.result(timeout=5)
        model.fail = False
        b = job("b", SampleConfig(gen_length=4, steps=4))
        engine.submit(b)
        assert (
            text(b.future.result(timeout=5))
            == alone(model, "b", SampleConfig(gen_length=4, steps=4)).gen_ids[0]
        )
    finally:
        engine.close()


def test_a_failing_policy_fails_its_own_request_only(monkeypatch):
    """A request whose own step raises (here a policy that refuses to select, as the SEDD
    names do in the commit loop) gets the error; the request sharing its forwards goes on."""
    from unmask.errors import UserError
    from unmask.sampling.policies import POLICIES, LLaDAPolicy

    class Refuses(LLaDAPolicy):
        def select(self, state):
            if state.step == 2:
                raise UserError("policy 'refuses' cannot run here")
            return super().select(state)

    monkeypatch.setitem(POLICIES, "refuses", lambda config: Refuses())
    inner = Mixer(tiny_config())
    model = Stepped(inner)
    engine = make_engine(model)
    good_config = SampleConfig(gen_length=6, steps=6)
    try:
        good = job("good", good_config)
        engine.submit(good)
        wait_until(lambda: model.entered == 1)
        bad = job("bad", SampleConfig(gen_length=6, steps=6, policy="refuses"))
        engine.submit(bad)
        model.allow(100)
        with pytest.raises(UserError, match="cannot run here"):
            bad.future.result(timeout=5)
        assert text(good.future.result(timeout=5)) == alone(inner, "good", good_config).gen_ids[0]
    finally:
        model.allow(100)
        engine.close()
    assert model.sizes == [
        1,
        2,
        2,
        2,
        1,
        1,
    ]  # bad shared three forwards and failed in its third step


def test_cache_requests_run_whole_after_the_batch_drains():
    """A prefix-cache request cannot share steps: it waits for the running batch to finish,
    runs alone, and requests behind it wait for it (first come, first served)."""
    inner = random_transformer()
    model = Stepped(inner)
    engine = make_engine(model, max_batch=8)
    plain = SampleConfig(gen_length=4, steps=4)
    cached = SampleConfig(gen_length=8, steps=4, block_length=4, cache="prefix")
    try:
        a = job("aaa", plain)
        engine.submit(a)
        wait_until(lambda: model.entered == 1)
        c = job("ccc", cached)
        d = job("dd", plain)
        engine.submit(c), engine.submit(d)
        model.allow(100)
        out_a, out_c, out_d = (j.future.result(timeout=5) for j in (a, c, d))
    finally:
        model.allow(100)
        engine.close()
    assert out_a.batch_rows == out_c.batch_rows == out_d.batch_rows == 1  # nobody shared a forward
    assert text(out_c) == alone(inner, "ccc", cached).gen_ids[0]
    assert text(out_d) == alone(inner, "dd", plain).gen_ids[0]


def test_queue_full_while_the_batch_is_full():
    model = Stepped(Mixer(tiny_config()))
    engine = make_engine(model, max_batch=2, max_queue=1)
    config = SampleConfig(gen_length=4, steps=4)
    try:
        a, b, c = (job(p, config) for p in ("a", "b", "c"))
        engine.submit(a)
        wait_until(lambda: model.entered == 1)
        engine.submit(b)
        model.allow(1)
        wait_until(lambda: engine.in_flight == 2)  # b joined
        engine.submit(c)  # the batch holds max_batch rows: c waits in the queue
        with pytest.raises(QueueFull):
            engine.submit(job("d", config))
        model.allow(100)
        assert all(isinstance(j.future.result(timeout=5), GenOutput) for j in (a, b, c))
    finally:
        model.allow(100)
        engine.close()


# -- over HTTP -------------------------------------------------------------------------------------


def test_http_join_mid_batch_streams_429_and_seeded_equality():
    """Over HTTP: a seeded, streamed request joins a running one at a step boundary, streams
    its own steps 1..n and gets the text it gets alone; with the batch and the queue full, 429."""
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    inner = random_transformer()
    model = Stepped(inner)
    app = create_app(loaded(model), limits=ServerLimits(max_batch=2, max_queue=1))
    engine = app.state.engine
    seeded = {"prompt": "seed me", "max_tokens": 6, "temperature": 1.0, "seed": 9}

    async def until(cond):
        await asyncio.to_thread(wait_until, cond)

    async def main():
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            first = asyncio.create_task(
                c.post("/v1/completions", json={"prompt": "long", "max_tokens": 12})
            )
            await until(lambda: model.entered == 1)
            second = asyncio.create_task(
                c.post("/v1/completions", json={**seeded, "stream": True, "stream_denoising": True})
            )
            await until(lambda: engine.queue_depth == 1)
            model.allow(1)  # first's step 1; the seeded stream joins at this boundary
            await until(lambda: model.entered == 2)
            assert engine.in_flight == 2
            third = asyncio.create_task(
                c.post("/v1/completions", json={"prompt": "q", "max_tokens": 2})
            )
            await until(lambda: engine.queue_depth == 1)  # the batch holds max_batch rows
            rejected = await c.post("/v1/completions", json={"prompt": "r", "max_tokens": 2})
            model.allow(100)
            return rejected, *(await asyncio.gather(first, second, third))

    try:
        rejected, first, second, third = asyncio.run(main())
    finally:
        model.allow(100)
        engine.close()
    with TestClient(create_app(loaded(inner))) as c:
        alone_seeded = c.post("/v1/completions", json=seeded).json()
        other_seed = c.post("/v1/completions", json={**seeded, "seed": 10}).json()
    assert rejected.status_code == 429 and rejected.json()["error"]["code"] == "queue_full"
    assert first.status_code == third.status_code == 200 and first.json()["batch_rows"] == 2
    events = second.text.strip().split("\n\n")
    steps = [
        json.loads(e.split("data: ", 1)[1])["step"]
        for e in events
        if e.startswith("event: denoising.step")
    ]
    assert steps == [1, 2, 3, 4, 5, 6]  # its own steps, though it joined mid-way
    chunks = [json.loads(e[len("data: ") :]) for e in events if e.startswith("data: {")]
    streamed = "".join(
        ch["choices"][0]["text"] for ch in chunks if ch.get("object") == "text_completion"
    )
    assert alone_seeded["batch_rows"] == 1
    assert streamed == alone_seeded["choices"][0]["text"] != other_seed["choices"][0]["text"]
    assert (
        app.state.metrics.get("joined") == 2
        and "unmask_active_rows 0" in app.state.metrics.render()
    )


def test_close_stops_a_job_running_alone_at_its_next_step():
    """An infill or form (a job run alone, whose steps check for cancellation) ran on to its
    end after ``close``: the worker outlived ``close``'s wait, and a process that exits with
    it inside a torch call aborts. Now it stops at its next step, failing with ``Cancelled``."""
    import threading
    import time

    from unmask.server.plumbing import alone as alone_job

    started, steps = threading.Event(), []

    def work(on_step):  # a long run of sampler steps, as api.infill makes
        for step in range(1, 10_000):
            started.set()
            on_step(step, torch.zeros(1, 2, dtype=torch.long))
            steps.append(step)
            time.sleep(0.01)
        return "finished"

    engine = make_engine(Mixer(tiny_config()))
    job = alone_job(work)
    engine.submit(job)
    assert started.wait(timeout=10)
    engine.close()
    assert not engine._thread.is_alive()  # stopped within close's wait
    with pytest.raises(Cancelled):
        job.future.result(timeout=1)
    assert len(steps) < 1000


def test_a_run_whose_result_fails_fails_its_own_request_only():
    """A continuous-batch run that fails when its result is taken (after its last step) fails
    its own request; the worker lives on (it died, and every later request hung)."""
    inner = Mixer(tiny_config())
    start = functools.partial(api.start, loaded(inner))

    def start_run(rows, config, **kw):
        run = start(rows, config, **kw)
        if config.gen_length == 5:

            def result():
                raise RuntimeError("result failed")

            run.result = result  # this run only
        return run

    engine = Engine(start_run, metrics=Metrics())
    config = SampleConfig(gen_length=6, steps=6)
    try:
        bad = job("bad", SampleConfig(gen_length=5, steps=5))
        good = job("good", config)
        engine.submit(bad)
        engine.submit(good)
        with pytest.raises(RuntimeError, match="result failed"):
            bad.future.result(timeout=10)
        assert text(good.future.result(timeout=10)) == alone(inner, "good", config).gen_ids[0]
        later = job("later", config)
        engine.submit(later)
        assert text(later.future.result(timeout=10)) == alone(inner, "later", config).gen_ids[0]
    finally:
        engine.close()


def test_batch_wait_holds_a_sampled_request_without_a_seed_too(monkeypatch):
    """``--batch-wait`` lets requests that arrive together start together. A sampled request
    with no seed is run with a drawn one, which marked it not batchable (whole-batch runs),
    so the wait was skipped for every such request although its rows join the continuous
    batch as any other's do. Now the wait is decided by whether the head job joins the
    continuous batch (or may share a whole run): greedy, sampled and seeded alike, a KV
    cache with a seed too (its seeded rows share whole runs, a generator per row)."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import unmask.server.batching as batching
    from unmask.server import ServerLimits, create_app

    waits: list[float] = []  # the waits for company recorded, not waited
    monkeypatch.setattr(batching.Engine, "_gather", lambda self: waits.append(self.batch_wait_s))
    app = create_app(loaded(random_transformer()), limits=ServerLimits(batch_wait_s=0.125))
    body = {"prompt": "In the", "max_tokens": 4, "steps": 4}
    with TestClient(app) as c:
        for extra in ({"temperature": 0}, {"temperature": 1.0}, {"temperature": 1.0, "seed": 3},
                      {"temperature": 1.0, "seed": 3, "n": 2},
                      {"temperature": 1.0, "seed": 3, "cache": "prefix"}):
            waits.clear()
            r = c.post("/v1/completions", json={**body, **extra})
            assert r.status_code == 200, r.text
            assert [w for w in waits if w == 0.125] == [0.125], extra
