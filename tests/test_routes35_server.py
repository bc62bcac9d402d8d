"""Session 35 audit of the HTTP routes as a demanding client uses them (tiny test models)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import Echo, loaded, tiny_config  # noqa: E402

from unmask.server import create_app  # noqa: E402


@pytest.fixture(scope="module")
def client():
    app = create_app(loaded(Echo(tiny_config())), chat_template="plain", access_log=False)
    with TestClient(app) as c:
        yield c


def events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.split("\n")
            if line.startswith("data: ") and line != "data: [DONE]"]


def test_a_streamed_completion_of_a_masked_prompt_gives_the_filled_prompt(client):
    """A [MASK] in a prompt is a blank the model fills; the plain answer says what the prompt
    became (``filled_prompt``), and a streamed one said it nowhere: now each choice's closing
    chunk carries it, the same text."""
    body = {"prompt": ["a[MASK]c", "xy"], "max_tokens": 4, "n": 2}
    plain = client.post("/v1/completions", json=body).json()["choices"]
    want = {c["index"]: c.get("filled_prompt") for c in plain}
    assert want == {0: "abc", 1: "abc", 2: None, 3: None}
    r = client.post("/v1/completions", json={**body, "stream": True})
    closing = {c["index"]: c.get("filled_prompt") for e in events(r.text)
               for c in e["choices"] if c["finish_reason"] is not None}
    assert closing == want
    streamed = [c for e in events(r.text) for c in e["choices"] if c["finish_reason"] is None]
    assert all("filled_prompt" not in c for c in streamed)


@pytest.mark.parametrize("stream", [False, True])
def test_a_masked_prompt_in_segments_is_refused_in_the_apis_words(client, stream):
    """A [MASK] in a prompt written in segments cannot be filled; the 400 told an HTTP client
    to fill it "first (unmask infill)", a command it does not run, and named no field."""
    r = client.post("/v1/completions", json={"prompt": "a[MASK]" + "x" * 80, "max_tokens": 32,
                                             "segment_length": 16, "stream": stream})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert "POST /v1/infill" in err["message"] and "unmask infill" not in err["message"], err
    assert err["param"] == "prompt", err


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"prompt": "ab", "guided_regex": "[a-z]+"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                              "response_format": {"type": "json_object"}}),
])
@pytest.mark.parametrize("option", [{"edit_threshold": 0.5}, {"max_post_steps": 4}])
@pytest.mark.parametrize("stream", [False, True])
def test_token_editing_options_are_refused_with_structured_output(client, path, body, option,
                                                                  stream):
    """A structured answer is filled as a form (no token editing), so ``edit_threshold`` and
    ``max_post_steps`` would do nothing: a 400 naming the field, as ``/v1/forms`` answers
    (they were accepted and silently ignored)."""
    r = client.post(path, json={**body, "max_tokens": 8, **option, "stream": stream})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    (name,) = option
    assert err["param"] == name and name in err["message"], err


@pytest.fixture(scope="module")
def causal_client():
    import dataclasses

    import torch

    from unmask.model import Transformer

    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(), attention="causal", objective="ar")
    app = create_app(loaded(Transformer(config).eval()), chat_template="plain",
                     access_log=False)
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"prompt": "ab", "max_tokens": 8, "guided_regex": "[a-z]+"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
                              "guided_choice": ["yes", "no"]}),
    ("/v1/forms", {"form": {"a": "<choice:x|y>"}}),
])
@pytest.mark.parametrize("option", [{"steps": 3}, {"block_length": 4}, {"cache": "prefix"},
                                    {"policy": "entropy"}])
def test_a_causal_fill_refuses_the_denoising_loops_options(causal_client, path, body, option):
    """A causal checkpoint fills a structured answer or a form left to right: ``steps``,
    ``block_length``, ``cache`` and ``policy`` would do nothing, a 400 naming the field as a
    plain completion answers it (they were accepted and silently ignored)."""
    ok = causal_client.post(path, json=body)
    assert ok.status_code == 200, ok.text
    r = causal_client.post(path, json={**body, **option})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    (name,) = option
    assert err["param"] == name and "does not apply to decoder 'ar'" in err["message"], err


@pytest.mark.parametrize("stream", [False, True])
def test_a_causal_structured_answer_to_a_masked_prompt_blames_the_prompt(causal_client, stream):
    """A causal model cannot fill a [MASK] in a prompt: with structured output the refusal
    came from the worker and named the constraint's field (``guided_regex``); now it names
    the prompt, as a plain completion's does."""
    r = causal_client.post("/v1/completions", json={
        "prompt": "a[MASK]b", "max_tokens": 8, "guided_regex": "[a-z]+", "stream": stream})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "prompt" and "cannot fill a [MASK]" in err["message"], err


@pytest.mark.parametrize("option", [{"length_mode": "elbo"}, {"length_score": "context"},
                                    {"max_candidates": 3}, {"elbo_samples": 4}])
def test_a_guided_infill_refuses_the_length_search_options(client, option):
    """With a structured-output constraint the gap is ``[MASK:n]`` and the constraint sets
    its length: the length search's options would do nothing, a 400 naming the field as the
    gap constraints are (they were accepted and silently ignored); at their defaults they
    pass (``InfillOptions``'s, as on an AR-FIM checkpoint)."""
    body = {"template": "x [MASK:4] y", "guided_regex": "[0-9]+"}
    r = client.post("/v1/infill", json={**body, **option})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    (name,) = option
    assert err["param"] == name and "guided_regex" in err["message"], err
    default = {"length_mode": "auto", "length_score": "total", "max_candidates": 6,
               "elbo_samples": 16}[name]
    r = client.post("/v1/infill", json={**body, name: default})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("option", [{"repetition_penalty": 3.0}, {"presence_penalty": 1.0},
                                    {"frequency_penalty": 1.0}, {"no_repeat_ngram_size": 2}])
@pytest.mark.parametrize("how", [{"spans": [[0, 5]]}, {"lowest": 2}])
def test_edit_refuses_the_repetition_penalties_it_does_not_apply(client, option, how):
    """An edit's refill applies no repetition penalty (the same text with or without one):
    a 400 naming the field, not a penalty accepted and silently ignored; neutral values
    pass."""
    body = {"text": "hello world", **how}
    r = client.post("/v1/edit", json={**body, **option})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    (name,) = option
    assert err["param"] == name and "/v1/edit" in err["message"], err
    neutral = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
               "no_repeat_ngram_size": 0}[name]
    assert client.post("/v1/edit", json={**body, name: neutral}).status_code == 200


def test_a_fill_in_the_middle_infill_refuses_steps():
    """A causal checkpoint trained for fill-in-the-middle fills a ``/v1/infill`` gap left to
    right: ``steps`` did nothing (the same text), now a 400 naming it."""
    import dataclasses

    import torch

    from unmask.model import Transformer

    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(), attention="causal", objective="ar",
                                 vocab_size=263, fim_prefix_id=260, fim_suffix_id=261,
                                 fim_middle_id=262)
    app = create_app(loaded(Transformer(config).eval()), access_log=False)
    with TestClient(app) as c:
        assert c.post("/v1/infill", json={"template": "a [MASK:4] b"}).status_code == 200
        r = c.post("/v1/infill", json={"template": "a [MASK:4] b", "steps": 2})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "steps", r.text


@pytest.mark.parametrize("stream", [False, True])
def test_a_structured_answer_past_the_context_is_refused_in_the_requests_words(client, stream):
    """A JSON Schema whose answer at its widest does not fit after the chat prompt: the 400
    spoke of "the form ... holes at their widest ... use fewer or shorter holes" (words of
    ``/v1/forms``), found on the worker; now, before it, the answer's and the prompt's
    tokens and what to change (``max_tokens``, the prompt, the schema)."""
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"]}
    r = client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 30, "stream": stream,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "p", "schema": schema}}})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == "response_format", err
    assert "max_tokens" in err["message"] and "holes" not in err["message"], err
    ok = client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "p", "schema": schema}}})
    assert ok.status_code == 200, ok.text
