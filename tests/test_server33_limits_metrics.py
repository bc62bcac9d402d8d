"""Session 33, the server: ``ServerLimits`` bounds ``max_slow_checks`` itself (only the
``unmask serve`` flag did: an app built in Python could ask for any number of threads), and
the ``nfe`` metric counts the forward passes of a job that runs alone (infill, forms) even
when it is cancelled part way (it counted its result's ``nfe``, which a cancelled job never
has: a client that left mid-way had its forwards run, uncounted)."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import Echo, Gated, loaded, tiny_config, wait_until  # noqa: E402

from unmask.errors import UserError  # noqa: E402
from unmask.server import ServerLimits, create_app  # noqa: E402


def test_server_limits_bound_the_slow_check_threads():
    assert ServerLimits(max_slow_checks=1024).max_slow_checks == 1024
    for many in (1025, 10**400):
        with pytest.raises(UserError, match="max_slow_checks=.* must be at most 1024 "
                                            r"\(threads of each kind\)"):
            ServerLimits(max_slow_checks=many)


def test_serve_help_says_the_slow_check_ceiling(capsys):
    """``unmask serve --help`` spells the ceiling out (the CLI imports no server module
    until it runs): the same number as ``ServerLimits``'."""
    from unmask.cli import main
    from unmask.server.state import MAX_SLOW_CHECKS

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert f"at most {MAX_SLOW_CHECKS})" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("path,body", [
    ("/v1/infill", {"template": "a[MASK:6]b", "steps": 6}),
    ("/v1/forms", {"form": {"x": "<text:6>"}, "steps": 6}),
])
def test_nfe_counts_the_forwards_of_a_cancelled_job(path, body):
    """The request is dropped (``plumbing.drop``, what a client gone or a timeout does)
    while its first forward waits at the gate; the gate opens once the server has counted
    the cancellation; the job stops at its next step (499), and the forward it ran is in
    ``unmask_nfe_total``."""
    from unmask.server.plumbing import drop

    gated = Gated(Echo(tiny_config()))
    app = create_app(loaded(gated), access_log=False)
    state, metrics, answers = app.state.server, app.state.metrics, []
    try:
        with TestClient(app) as c:
            engine = state.engine
            t = threading.Thread(target=lambda: answers.append(c.post(path, json=body)))
            t.start()
            wait_until(lambda: gated.calls == 1 and engine._whole, timeout=10)  # first forward
            drop(state, engine._whole[0])
            wait_until(lambda: metrics.get("cancelled") == 1, timeout=10)
            gated.gate.set()
            t.join(10)
            wait_until(lambda: engine.in_flight == 0, timeout=10)  # the job has stopped
    finally:
        gated.gate.set()
    assert answers[0].status_code == 499, answers[0].text
    assert gated.calls >= 1
    assert metrics.get("nfe") == gated.calls


def test_nfe_of_a_finished_infill_is_its_forwards():
    """Counted by the hook on the model, the metric still equals the answer's ``nfe``; a
    second app over the same model (a server run again) counts with the same hook, once."""
    model = Echo(tiny_config())
    for _ in range(2):
        app = create_app(loaded(model), access_log=False)
        with TestClient(app) as c:
            r = c.post("/v1/infill", json={"template": "a[MASK:6]b", "steps": 3})
        assert r.status_code == 200, r.text
        assert app.state.metrics.get("nfe") == r.json()["nfe"] == 3
    assert len(model._forward_hooks) == 1


def test_a_full_batch_does_not_wait_out_batch_wait():
    """``batch_wait_s`` waits for company, at most: once ``max_batch`` rows are queued the
    batch starts (it slept the whole wait, here a minute, with a full batch queued)."""
    import functools

    from unmask import api
    from unmask.config import SampleConfig
    from unmask.server.batching import Engine, Job
    from unmask.server.metrics import Metrics

    engine = Engine(functools.partial(api.start, loaded(Echo(tiny_config()))), max_batch=2,
                    batch_wait_s=60, metrics=Metrics())
    config = SampleConfig(gen_length=2, steps=2)
    jobs = [Job(rows=[[70 + i]], config=config) for i in range(2)]
    try:
        for j in jobs:
            engine.submit(j)
        for j in jobs:
            assert len(j.future.result(timeout=10).gen_ids[0]) == 2
    finally:
        engine.close(timeout=10)
    assert not engine._thread.is_alive()


def test_batch_wait_must_be_shorter_than_the_timeout():
    """A ``batch_wait_s`` of the request timeout or more made every lone request wait out
    its timeout (504); a huge one (``--batch-wait 1e10``) killed the worker at the first
    request (an OverflowError), and every request after it was a 503."""
    assert ServerLimits(batch_wait_s=0.5, request_timeout_s=1).batch_wait_s == 0.5
    for wait, timeout in ((1, 1), (1e10, 300)):
        with pytest.raises(UserError, match="batch_wait_s=.* must be less than "
                                            "request_timeout_s"):
            ServerLimits(batch_wait_s=wait, request_timeout_s=timeout)


def test_a_huge_batch_wait_leaves_the_worker_alive():
    """An ``Engine`` built directly with a wait past ``threading.TIMEOUT_MAX``: the worker
    waits (for the queue's condition, at most that long) instead of dying of an
    OverflowError; a second request fills the batch and both run."""
    import functools

    from unmask import api
    from unmask.config import SampleConfig
    from unmask.server.batching import Engine, Job
    from unmask.server.metrics import Metrics

    engine = Engine(functools.partial(api.start, loaded(Echo(tiny_config()))), max_batch=2,
                    batch_wait_s=1e300, metrics=Metrics())
    config = SampleConfig(gen_length=2, steps=2)
    jobs = [Job(rows=[[70 + i]], config=config) for i in range(2)]
    try:
        engine.submit(jobs[0])
        wait_until(lambda: len(engine._cond._waiters) == 1, timeout=10)  # waiting for company
        engine.submit(jobs[1])
        for j in jobs:
            assert len(j.future.result(timeout=10).gen_ids[0]) == 2
    finally:
        engine.close(timeout=10)
    assert not engine._thread.is_alive()


@pytest.mark.parametrize("host", ["", " "])
def test_serve_refuses_an_empty_host(monkeypatch, capsys, host):
    """``--host "$HOST"`` of an unset ``HOST`` bound every interface (0.0.0.0), with a
    warning that named no address, and loaded the model; now one line, exit 2, before any
    socket or model."""
    from unmask.cli import main
    from unmask.commands import serve

    monkeypatch.setattr(serve, "bind_socket", lambda *a: pytest.fail("bound a socket"))
    assert main(["serve", "--model", "/no/such/run", "--host", host]) == 2
    assert capsys.readouterr().err == (
        "unmask serve: error: --host is empty (an unset variable?): give an address, "
        "127.0.0.1 for this machine only or 0.0.0.0 for every interface\n")
