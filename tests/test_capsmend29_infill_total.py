"""/v1/infill's gap regexes are bounded together, as a schema's patterns are: they were
compiled one by one on the worker, each within the per-pattern limit, their sum unbounded
(review rf29 #5)."""

from __future__ import annotations

import pytest
import torch
from server_helpers import loaded, tiny_config

from unmask.model import Transformer


def test_infill_gap_regexes_are_summed_before_any_compiles(monkeypatch):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.infill import automaton
    from unmask.server import create_app

    monkeypatch.setattr(automaton, "MAX_REQUEST_DFA_STATES", 10)  # the default of check_total
    monkeypatch.setattr(automaton.check_total, "__defaults__", (10,))
    built = []
    real = automaton._index
    monkeypatch.setattr(automaton, "_index", lambda *a, **k: built.append(a) or real(*a, **k))
    torch.manual_seed(0)
    c = TestClient(create_app(loaded(Transformer(tiny_config(256)).eval()),
                              chat_template="plain"))
    r = c.post("/v1/infill", json={"template": "[MASK:a] [MASK:b]",
                                   "regex": {"a": "[a-c]{3}", "b": "[d-f]{3}x"}})
    assert r.status_code == 400, r.text
    body = r.json()["error"]
    assert "too large in all" in body["message"] and body["param"] == "regex"
    assert "the patterns before gap b fit in it" in body["message"]
    assert not built
    r = c.post("/v1/infill", json={"template": "[MASK:a]", "regex": {"a": "[a-c]"}})
    assert r.status_code == 200, r.text
