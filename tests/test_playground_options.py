"""``GET /playground/options``: what the playground's blank fields run, computed by the server
with the library's rule (``api.sample_config``), so the page keeps no copy of it (it had its own
block_length fitting and a fixed threshold of 0.9). The page itself: tests/test_playground.py."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from server_helpers import bpe_tokenizer, loaded, random_transformer

from unmask import api
from unmask.server import ServerLimits, create_app

TOK = bpe_tokenizer()
LLADA2_LIKE = {"policy": "threshold", "threshold": 0.95, "block_length": 4, "temperature": 0.3}


@pytest.fixture(scope="module")
def served():
    model = random_transformer(tokenizer=TOK)
    model.config.sample_defaults = dict(LLADA2_LIKE)
    out = loaded(model, TOK)
    with TestClient(create_app(out, api_key="k")) as client:
        client.headers["Authorization"] = "Bearer k"
        yield out, client


@pytest.mark.parametrize("query, given", [
    ("", {"gen_length": 16}),
    ("max_tokens=6", {"gen_length": 6}),
    ("max_tokens=6&steps=3&policy=llada", {"gen_length": 6, "steps": 3, "policy": "llada"}),
    ("max_tokens=5&policy=factor", {"gen_length": 5, "policy": "factor"}),
])  # fmt: skip
def test_blank_fields_are_what_the_library_runs(served, query, given):
    model, client = served
    r = client.get("/playground/options?" + query)
    assert r.status_code == 200, r.text
    runs = api.sample_config(model, given)
    body = r.json()
    assert body["complete"] == {k: getattr(runs, k) for k in
                                ("steps", "block_length", "temperature", "policy", "threshold")}
    assert body["recommended"] == LLADA2_LIKE
    assert body["template"] == {"temperature": 0.0, "policy": "llada", "threshold": 0.9}


def test_the_recommended_threshold_runs_by_default(served):
    complete = served[1].get("/playground/options").json()["complete"]
    assert complete["policy"] == "threshold" and complete["threshold"] == 0.95


def test_the_options_need_the_key_and_a_known_policy(served):
    _, client = served
    r = client.get("/playground/options", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = client.get("/playground/options?policy=bogus")
    assert r.status_code == 400 and "bogus" in r.json()["error"]["message"]
    assert "\n" not in r.json()["error"]["message"]
    assert client.get("/playground/options?max_tokens=0").status_code == 400


def _limited(limit: int, **defaults) -> TestClient:
    """A server at ``--max-steps limit`` of a checkpoint that recommends ``defaults``."""
    model = random_transformer(tokenizer=TOK)
    model.config.sample_defaults = defaults
    return TestClient(create_app(loaded(model, TOK), limits=ServerLimits(max_steps=limit)))


@pytest.mark.parametrize("defaults, query", [
    ({}, ""),  # completions' 16 not sent: cut to the limit, steps one per token
    ({}, "max_tokens=8"),
    ({}, "max_tokens=16&steps=4"),
    ({}, "max_tokens=16&policy=threshold"),  # as many steps as it takes
    ({"steps": 32, "gen_length": 32}, "max_tokens=32"),  # the recommendation capped
])  # fmt: skip
def test_the_options_show_max_steps_and_the_steps_that_run_within_it(defaults, query):
    """The page offered any step count and showed the uncapped steps as what a blank field
    runs (``--max-steps`` was nowhere in the answer): now ``max_steps`` is the server's
    limit and ``complete.steps`` what ``/v1/completions`` runs for the same fields."""
    with _limited(8, **defaults) as client:
        body = client.get("/playground/options?" + query).json()
        assert body["max_steps"] == 8 and body["refused"] is None
        sent = {k: (v if k == "policy" else int(v))
                for k, v in (kv.split("=") for kv in query.split("&") if kv)}
        r = client.post("/v1/completions", json={"prompt": "the", **sent})
        assert r.status_code == 200, r.text
        if body["complete"]["policy"] != "threshold":
            assert r.json()["steps"] == body["complete"]["steps"] <= 8


def test_the_options_say_the_refusal_of_steps_over_max_steps():
    """A ``max_tokens`` over the limit with blank steps (one step per token) is the server's
    400: the answer says it in the server's words, before the page sends the request."""
    with _limited(8) as client:
        body = client.get("/playground/options?max_tokens=16").json()
        r = client.post("/v1/completions", json={"prompt": "the", "max_tokens": 16})
        assert r.status_code == 400
        assert body["refused"] == r.json()["error"]["message"]
        assert "--max-steps" in body["refused"] and body["max_steps"] == 8
        assert client.get("/playground/options?max_tokens=16&steps=8").json()["refused"] is None


def test_the_options_say_a_max_tokens_past_the_context_first():
    """A ``max_tokens`` past the context is refused for that before its steps: the note said
    "send steps <= 8", and with steps the request was refused again, for the context."""
    with _limited(8) as client:
        body = client.get("/playground/options?max_tokens=100&steps=8").json()
        r = client.post("/v1/completions", json={"prompt": "the", "max_tokens": 100, "steps": 8})
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        assert body["refused"] == ("max_tokens (100) exceeds the model's context of 64 tokens; "
                                   "use max_tokens <= 63, what an empty prompt leaves")
        assert client.get("/playground/options?max_tokens=100").json()["refused"] == (
            body["refused"])


@pytest.mark.parametrize("query", ["steps=9", "max_tokens=3&steps=9", "steps=100000000000"])
def test_the_options_say_a_sent_steps_over_max_steps(query):
    """A typed ``steps`` over the limit was answered as if it would run (``refused`` null);
    it is the server's first refusal of the request."""
    with _limited(8) as client:
        body = client.get("/playground/options?" + query).json()
        sent = {k: int(v) for k, v in (kv.split("=") for kv in query.split("&"))}
        r = client.post("/v1/completions", json={"prompt": "the", **sent})
        assert r.status_code == 400 and body["refused"] == r.json()["error"]["message"]
        assert body["refused"] == "steps must be <= 8"


def test_an_autoregressive_models_room_counts_its_one_token_prompt():
    """A causal model runs on at least one prompt token (an empty prompt is its BOS): a
    ``max_tokens`` of the whole context passes no request, and the answer says so."""
    import dataclasses

    import torch
    from server_helpers import tiny_config

    from unmask.model import Transformer

    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(), attention="causal", objective="ar")
    with TestClient(create_app(loaded(Transformer(config).eval()))) as client:
        ctx = config.max_seq_len
        body = client.get(f"/playground/options?max_tokens={ctx}").json()
        r = client.post("/v1/completions", json={"prompt": "", "max_tokens": ctx})
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        assert body["refused"] == (f"max_tokens ({ctx}) exceeds the model's context of {ctx} "
                                   f"tokens; use max_tokens <= {ctx - 1}, what an empty "
                                   "prompt leaves")
        fits = client.get(f"/playground/options?max_tokens={ctx - 1}").json()
        assert fits["refused"] is None


@pytest.mark.parametrize("kind, query", [
    ("causal", "steps=8"),
    ("causal", "policy=threshold"),
    ("causal", "max_tokens=16&steps=4&policy=threshold"),
    ("bd3lm", "max_tokens=5"),
    ("bd3lm", "max_tokens=16&steps=3"),
    ("bd3lm", "steps=3"),
])
def test_the_options_say_the_decoders_refusals_whatever_the_prompt(kind, query):
    """What the decoder refuses whatever the prompt (a loop option sent to a causal model; a
    bd3lm length that is not whole blocks, steps that do not split over the blocks) was
    answered as if it would run (``refused`` null, ``except UserError: pass``) while
    /v1/completions refused the request, empty prompt or not: it is that 400's message."""
    import dataclasses

    import torch
    from server_helpers import tiny_config

    from unmask.model import Transformer

    torch.manual_seed(0)
    config = (dataclasses.replace(tiny_config(), attention="causal", objective="ar")
              if kind == "causal" else
              dataclasses.replace(tiny_config(max_seq_len=64), attention="block-causal",
                                  block_size=8, objective="bd3lm"))  # fmt: skip
    app = create_app(loaded(Transformer(config).eval()), limits=ServerLimits(max_steps=8))
    with TestClient(app) as client:
        refused = client.get("/playground/options?" + query).json()["refused"]
        sent = {k: (int(v) if v.isdigit() else v)
                for k, v in (kv.split("=") for kv in query.split("&"))}  # fmt: skip
        for prompt in ("", "ab"):
            r = client.post("/v1/completions", json={"prompt": prompt, **sent})
            assert r.status_code == 400, r.text
            assert refused == r.json()["error"]["message"]


def test_a_block_diffusion_models_blank_block_length_is_its_block_size():
    """A bd3lm checkpoint writes blocks of its ``block_size`` where no ``block_length`` is sent
    (nor recommended): the page's placeholder said "none" (one block, the whole text)."""
    import dataclasses

    import torch
    from server_helpers import tiny_config

    from unmask.model import Transformer

    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(max_seq_len=64), attention="block-causal",
                                 block_size=8, objective="bd3lm")
    with TestClient(create_app(loaded(Transformer(config).eval()))) as client:
        body = client.get("/playground/options?max_tokens=16").json()
        assert body["refused"] is None and body["complete"]["block_length"] == 8
        # the block length shown runs: sent, it is the one the server takes
        r = client.post("/v1/completions", json={"prompt": "ab", "max_tokens": 16,
                                                 "block_length": 8})
        assert r.status_code == 200, r.text
