"""A refusal whose advice does not hold costs a bounded few checks: ``advised`` runs
``prepare`` at most ``TRIES`` times, and capping a recommended steps to ``--max-steps`` checks
only the steps that split over the blocks (it checked every value from the limit down, in
each of those runs: a client's request held the event loop for seconds)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from server_helpers import loaded, tiny_config

from unmask.model import Transformer

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


def _client(extra: dict[str, Any], ctx: int, most: int) -> Any:
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    cfg = dataclasses.replace(tiny_config(max_seq_len=ctx), **extra)
    torch.manual_seed(0)
    return TestClient(create_app(loaded(Transformer(cfg).eval()),
                                 limits=ServerLimits(max_steps=most), access_log=False))


def _counted(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    from unmask.server.routes import completions

    calls = [0]
    real = getattr(completions, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(completions, name, counted)
    return calls


@pytest.mark.parametrize("body", [
    {"prompt": "ab", "max_tokens": 400, "block_length": 1},
    {"prompt": ["ab " * 20] * 4, "max_tokens": 400, "block_length": 1},
    {"prompt": "ab", "max_tokens": 400, "block_length": 3},  # not whole blocks
    {"prompt": "ab", "max_tokens": 400, "steps": 7, "block_length": 1},
])
def test_a_refusal_checks_a_bounded_few_requests(monkeypatch, body):
    defaults = {"sample_defaults": {"steps": 2000, "block_length": 4}}
    with _client(defaults, 512, 256) as c:
        prepares = _counted(monkeypatch, "_prepare")
        validates = _counted(monkeypatch, "validate")
        r = c.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    assert prepares[0] <= 25  # the request, then advised's TRIES (24)
    assert validates[0] <= 2500  # each check was hundreds more (every steps value)


def test_capped_recommended_steps_are_the_most_that_split_over_the_blocks(monkeypatch):
    """Steps recommended over the limit, blocks of 4 over 40 tokens (10 blocks) under
    --max-steps 64: the run takes 60 steps, found at the first check."""
    defaults = {"sample_defaults": {"steps": 400, "block_length": 4}}
    with _client(defaults, 64, 64) as c:
        validates = _counted(monkeypatch, "validate")
        r = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 40})
    assert r.status_code == 200, r.text
    assert r.json()["steps"] == 60
    assert validates[0] <= 3
