"""Session 33, the server's ``nfe`` count of the jobs that run alone (``ForwardCount``): it
belongs to the engine, not the model. It hung on the model, so two apps over one model (or
a closed app's worker still finishing beside its successor's) counted each other's forwards
into their ``unmask_nfe_total``, and its ``n += 1`` ran on every thread at once."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import Echo, loaded, random_transformer, tiny_config, wait_until  # noqa: E402

from unmask.server import create_app  # noqa: E402
from unmask.server.batching import ForwardCount  # noqa: E402


class FirstWaits(nn.Module):
    """Wraps a model; its first forward waits for ``go`` (bounded), the others run at once."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.started, self.go = threading.Event(), threading.Event()
        self._lock = threading.Lock()

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        with self._lock:
            first = not self.started.is_set()
            self.started.set()
        if first:
            self.go.wait(timeout=10)
        return self.inner(tokens, attention_mask=attention_mask)


def test_two_apps_over_one_model_count_their_own_forwards():
    """App A's infill waits in its first forward while app B answers a completion over the
    same model; each app's ``nfe`` metric is its own answer's (A's read A's and B's)."""
    model = FirstWaits(Echo(tiny_config()))
    ld = loaded(model)
    a, b = create_app(ld, access_log=False), create_app(ld, access_log=False)
    out = {}
    try:
        with TestClient(a) as ca, TestClient(b) as cb:
            t = threading.Thread(target=lambda: out.__setitem__("a", ca.post(
                "/v1/infill", json={"template": "a[MASK:6]b", "steps": 3})))
            t.start()
            wait_until(model.started.is_set, timeout=10)  # A's job is in its first forward
            out["b"] = cb.post("/v1/completions",
                               json={"prompt": "x", "max_tokens": 4, "steps": 4})
            model.go.set()
            t.join(10)
    finally:
        model.go.set()
    for name, app in (("a", a), ("b", b)):
        assert out[name].status_code == 200, out[name].text
        assert app.state.metrics.get("nfe") == out[name].json()["nfe"] > 0, name
    assert len(model._forward_hooks) == 1


def test_the_count_is_the_counting_threads_and_compiles_without_a_graph_break():
    """A count takes the forwards of the thread ``counting`` into it, not another thread's
    nor those outside the block, eager or compiled (``aot_eager``: the hook adds no graph
    break)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from unmask.parallel import compile_for_decoding

    model = random_transformer()
    mine, theirs = ForwardCount.on(model), ForwardCount.on(model)
    torch._dynamo.reset()
    counters.clear()
    twin = compile_for_decoding(model, "aot_eager")
    x = torch.randint(0, 200, (1, 8))

    def other() -> None:
        with torch.no_grad():
            with theirs.counting():
                twin(x)
            model(x)  # a thread that counts nothing: no count's

    with torch.no_grad():
        with mine.counting():
            model(x)
            twin(x)
            thread = threading.Thread(target=other)
            thread.start()
            thread.join(60)
            twin(x)
        model(x)
    assert (mine.n, theirs.n) == (3, 1)
    assert not counters["graph_break"]
    assert len(model._forward_hooks) == 1


def test_a_served_model_inside_another_served_model_counts_once():
    """App A serves a wrapper whose forward calls a model app B serves (both hooked): A's
    ``nfe`` metric is its answer's, not twice it (every hooked module fed the thread's
    count)."""
    inner = Echo(tiny_config())
    wrapper = FirstWaits(inner)
    wrapper.started.set()
    create_app(loaded(inner), access_log=False)  # hooks ``inner``
    a = create_app(loaded(wrapper), access_log=False)
    with TestClient(a) as ca:
        r = ca.post("/v1/infill", json={"template": "a[MASK:6]b", "steps": 3})
    assert r.status_code == 200, r.text
    assert a.state.metrics.get("nfe") == r.json()["nfe"] > 0
