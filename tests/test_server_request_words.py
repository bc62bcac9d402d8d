"""Refusals of completions and chat requests in the API's words: a library refusal about
``gen_length`` names ``max_tokens`` (the request's field), and a block-diffusion checkpoint's
canvas that is not whole blocks is a 400 before a stream starts."""

from __future__ import annotations

import dataclasses
import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import loaded, random_transformer, tiny_config  # noqa: E402

from unmask.model import Transformer  # noqa: E402
from unmask.server import create_app  # noqa: E402


@pytest.fixture(scope="module")
def bd3lm_client():
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(), attention="block-causal", block_size=4,
                                 objective="bd3lm")
    return TestClient(create_app(loaded(Transformer(config).eval()), chat_template="plain"))


@pytest.fixture(scope="module")
def mdlm_client():
    return TestClient(create_app(loaded(random_transformer()), chat_template="plain"))


BLOCKS = ("max_tokens (10) must be a multiple of the model's block_size (4); try max_tokens "
          "8 or 12")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": "abc"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "abc"}]}),
])
def test_block_size_refusal_names_max_tokens_and_is_a_400_when_streamed(bd3lm_client, path,
                                                                        body, stream):
    r = bd3lm_client.post(path, json={**body, "max_tokens": 10, "stream": stream})
    assert r.status_code == 400, r.text  # streamed: it was a 200 with an error event
    assert r.json()["error"] == {"message": BLOCKS, "type": "invalid_request_error",
                                 "param": "max_tokens", "code": "invalid_value"}
    ok = bd3lm_client.post(path, json={**body, "max_tokens": 8, "stream": stream})
    assert ok.status_code == 200 and "error" not in ok.text


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("option, param, message", [
    ({"steps": 3}, "steps", "steps (3) must be a multiple of the number of blocks (2 = "
                            "max_tokens 8 / block_length 4)"),
])
def test_what_bd3lm_refuses_at_its_start_is_a_400_before_a_stream(bd3lm_client, option, param,
                                                                   message, stream):
    r = bd3lm_client.post("/v1/completions", json={"prompt": "ab", "max_tokens": 8,
                                                   "stream": stream, **option})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["message"].startswith(message), error


def test_block_length_refusal_names_max_tokens(mdlm_client):
    r = mdlm_client.post("/v1/completions", json={"prompt": "abc", "max_tokens": 12,
                                                  "block_length": 5})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["message"].startswith("max_tokens (12) must be a multiple of block_length (5)")
    assert "gen_length" not in error["message"] and "or max_tokens 10 or 15" in error["message"]
    assert error["param"] == "max_tokens"


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", {"prompt": "x" * 70}, "prompt"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 70}]},
     "messages"),
])
def test_a_prompt_that_fills_the_context_alone_is_blamed(mdlm_client, path, body, param):
    """Over the context: ``param`` is ``max_tokens`` while a smaller one would fit, else the
    prompt's field (it named ``max_tokens`` though no value of it could fit)."""
    r = mdlm_client.post(path, json={**body, "max_tokens": 4})
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "context_length_exceeded"
    assert error["param"] == param and "shorten the prompt" in error["message"]
    fits = {"prompt": "x"} if param == "prompt" else {
        "messages": [{"role": "user", "content": "x"}]}
    r = mdlm_client.post(path, json={**fits, "max_tokens": 80})
    assert r.json()["error"]["param"] == "max_tokens"


def test_structured_output_blames_a_prompt_that_fills_the_context(mdlm_client):
    body = {"messages": [{"role": "user", "content": "x" * 70}], "max_tokens": 4,
            "guided_choice": ["yes", "no"]}
    error = mdlm_client.post("/v1/chat/completions", json=body).json()["error"]
    assert (error["param"], error["code"]) == ("messages", "context_length_exceeded")


def test_token_id_prompts_as_at_openai(mdlm_client):
    """A completions prompt may be token ids, one list or a list of them (OpenAI's shapes):
    the same text as the prompt they encode; an id outside the vocabulary, or another shape,
    is a 400 saying so (token ids were refused with "prompt.0: Input should be a valid
    string")."""
    ids = mdlm_client.post("/v1/tokenize", json={"text": "hello"}).json()["tokens"]
    body = {"max_tokens": 6, "seed": 1, "temperature": 1.0}
    text = mdlm_client.post("/v1/completions", json={**body, "prompt": "hello"}).json()
    one = mdlm_client.post("/v1/completions", json={**body, "prompt": ids}).json()
    assert one["choices"][0]["text"] == text["choices"][0]["text"]
    assert one["usage"] == text["usage"]
    greedy = {"max_tokens": 6, "prompt": "hello"}
    want = mdlm_client.post("/v1/completions", json=greedy).json()["choices"][0]["text"]
    two = mdlm_client.post("/v1/completions", json={**greedy, "prompt": [ids, ids[:2]]}).json()
    assert want and two["choices"][0]["text"] == want
    assert two["usage"]["prompt_tokens"] == len(ids) + 2
    streamed = mdlm_client.post("/v1/completions", json={**body, "prompt": ids, "stream": True})
    chunks = [json.loads(x[6:]) for x in streamed.text.split("\n\n") if x.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == text["choices"][0]["text"]
    for prompt, message in [
        ([10**6], "prompt: token id 1000000 is not in the vocabulary (0 to "),
        ([ids, [-1]], "prompt.1: token id -1 is not in the vocabulary"),
        ([1.5], "a prompt is a string, a list of strings, a list of token ids"),
        ([True], "a prompt is a string"),
        (["a", 1], "a prompt is a string"),
    ]:
        r = mdlm_client.post("/v1/completions", json={**body, "prompt": prompt})
        error = r.json()["error"]
        assert r.status_code == 400 and error["param"] == "prompt", r.text
        assert message in error["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_blank_in_an_autoregressive_prompt_is_a_400_before_a_stream(stream):
    """An autoregressive model cannot fill a [MASK] in the prompt: a 400 naming the prompt,
    streamed too (the decoder's refusal came as a 200 and an error event, ``param`` null)."""
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(), attention="causal", objective="ar")
    client = TestClient(create_app(loaded(Transformer(config).eval())))
    mask_id = config.mask_id
    for prompt in ("a[MASK]b", [100, mask_id, 101]):
        r = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 4,
                                                 "stream": stream})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "prompt" and "cannot fill a [MASK]" in error["message"]
    ok = client.post("/v1/completions", json={"prompt": "ab", "max_tokens": 4, "stream": stream})
    assert ok.status_code == 200 and "error" not in ok.text
