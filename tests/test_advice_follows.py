"""A refusal's advice names only values the server then accepts, and never blames the client
for a value it did not send: for a grid of (max_tokens, steps sent or not, block_length sent
or not, policy, --max-steps) on tiny llada and block-diffusion models, each 400's advice is
followed once and the follow-up must run."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from typing import Any

import pytest
import torch
from server_helpers import loaded, tiny_config

from unmask.model import Transformer

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

BLOCKS = {"attention": "block-causal", "block_size": 4, "objective": "bd3lm"}
MODELS = {
    "llada": {},
    "llada-recommends-blocks": {"sample_defaults": {"block_length": 2}},
    "llada-recommends-steps": {"sample_defaults": {"steps": 40, "block_length": 4}},
    "bd3lm": BLOCKS,
    "bd3lm-absolute": {**BLOCKS, "block_align": "absolute", "logit_shift": True},
}


def _model(name: str, ctx: int = 64) -> Transformer:
    cfg = dataclasses.replace(tiny_config(max_seq_len=ctx), **MODELS[name])
    torch.manual_seed(0)
    return Transformer(cfg).eval()


def _client(model: Transformer, most: int) -> Any:
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    return TestClient(create_app(loaded(model), limits=ServerLimits(max_steps=most),
                                 access_log=False))


def _advice(message: str) -> list[tuple[str, int]]:
    """The (option, value) pairs a refusal advises, read as a client would: each alternative
    ("try 12 or 16", "try max_tokens 4 or 8", "send steps <= 6, or max_tokens <= 6", "try 8
    or 9 steps") with the option named in it, else the one before it, else steps."""
    m = re.search(r"[;:,]\s+(?:try|send|use)\b.*$", message)
    out: list[tuple[str, int]] = []
    field = "steps"
    for part in re.split(r",|\bor\b", "" if m is None else m.group()):
        name = re.search(r"\b(steps|block_length|max_tokens|[a-z]+_[a-z_]+)\b", part)
        field = name.group(1) if name else field
        number = re.search(r"\b(\d+)\b", part)
        if number is not None and field in ("steps", "block_length", "max_tokens"):
            out.append((field, int(number.group(1))))
    return out


def _blames_unsent(body: dict[str, Any], error: dict[str, Any]) -> bool:
    """Whether a 400 names an option the client did not send as its fault."""
    if error["param"] in ("steps", "block_length", "max_tokens") and error["param"] not in body:
        return True
    steps = re.match(r"steps \((\d+)\)", error["message"])
    return steps is not None and "steps" not in body


def _grid(name: str) -> list[dict[str, Any]]:
    blocks = [None, 4] if name.startswith("bd3lm") else [None, 2, 4]
    out = []
    for G, steps, bl, policy in itertools.product([6, 8, 12, 32, 40], [None, 3, 6], blocks,
                                                  ["llada", "threshold"]):
        body: dict[str, Any] = {"prompt": "ab", "max_tokens": G, "policy": policy}
        body.update({k: v for k, v in (("steps", steps), ("block_length", bl)) if v is not None})
        if policy == "threshold":
            body["threshold"] = 1.0
        out.append(body)
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_following_a_refusals_advice_is_accepted(name):
    model = _model(name)
    refused = followed = 0
    with _client(model, 6) as c:
        for body in _grid(name):
            r = c.post("/v1/completions", json=body)
            if r.status_code == 200:
                assert r.json()["nfe"] <= 6, body
                continue
            assert r.status_code == 400, (body, r.text)
            error = r.json()["error"]
            refused += 1
            assert not _blames_unsent(body, error), (body, error)
            for option, value in _advice(error["message"]):
                again = c.post("/v1/completions", json={**body, option: value})
                assert again.status_code == 200, (body, option, value, error["message"],
                                                  again.text)
                assert again.json()["nfe"] <= 6
                followed += 1
    assert refused and followed  # the grid reaches refusals with advice


def test_steps_a_multiple_of_more_blocks_than_max_steps_advises_what_fits():
    """Case 1: steps 8 in blocks of 2 over 40 tokens (20 blocks) under --max-steps 8 was told
    "try 20" (over the limit); now block_length or max_tokens that fit, in /v1/completions,
    chat and the playground's ``refused``."""
    body = {"max_tokens": 40, "block_length": 2, "steps": 8}
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    app = create_app(loaded(_model("llada")), limits=ServerLimits(max_steps=8),
                     chat_template="plain", access_log=False)
    with TestClient(app) as c:
        for path, extra in (("/v1/completions", {"prompt": "Hi"}),
                            ("/v1/chat/completions",
                             {"messages": [{"role": "user", "content": "Hi"}]})):
            r = c.post(path, json={**extra, **body})
            assert r.status_code == 400
            message = r.json()["error"]["message"]
            assert "try 20" not in message
            advice = _advice(message)
            assert advice and ("steps", 20) not in advice
            for option, value in advice:
                assert c.post(path, json={**extra, **body, option: value}).status_code == 200


def test_playground_refused_repeats_only_advice_that_works():
    with _client(_model("llada-recommends-blocks"), 8) as c:
        for policy in ("llada", "threshold"):
            got = c.get("/playground/options",
                        params={"max_tokens": 40, "steps": 6, "policy": policy}).json()
            for option, value in _advice(got["refused"] or ""):
                body = {"prompt": "", "max_tokens": 40, "steps": 6, "policy": policy,
                        option: value}
                assert c.post("/v1/completions", json=body).status_code == 200, got


def test_a_recommended_block_length_fits_sent_steps_under_a_dynamic_policy():
    """Case 2: blocks of 2 recommended, steps 8 sent, threshold: the recommendation is fitted
    (as under llada), not a 400 about a block_length the client never sent."""
    from unmask import api

    with _client(_model("llada-recommends-blocks"), 8) as c:
        for body in ({"prompt": "Hi", "max_tokens": 40, "steps": 8, "policy": "threshold"},
                     {"prompt": "Hi", "max_tokens": 40, "policy": "threshold"}):
            r = c.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
            assert r.json()["nfe"] <= 8
    lo = loaded(_model("llada-recommends-blocks"))
    config = api.sample_config(lo, {"gen_length": 40, "steps": 8, "policy": "threshold"})
    assert config.block_length is None or 40 // config.block_length <= 8  # None: one block


def test_bd3lm_advice_chain_ends_in_a_run():
    """Case 3: each suggestion on a bd3lm checkpoint at --max-steps 6 is accepted at once
    (no "max_tokens <= 6" then "4 or 8" then "8 steps")."""
    for name in ("bd3lm", "bd3lm-absolute"):
        with _client(_model(name), 6) as c:
            for body in ({"max_tokens": 32}, {"max_tokens": 6, "steps": 6},
                         {"max_tokens": 32, "steps": 6},
                         {"max_tokens": 32, "steps": 6, "policy": "threshold"}):
                body = {"prompt": "ab", **body}
                r = c.post("/v1/completions", json=body)
                if r.status_code == 200:
                    continue
                advice = _advice(r.json()["error"]["message"])
                assert advice, r.text
                for option, value in advice:
                    again = c.post("/v1/completions", json={**body, option: value})
                    assert again.status_code == 200, (body, option, value, again.text)


@pytest.mark.parametrize("prompt,length", [("a", 15), ("", 15), ("", 11), ("abcd", 12)])
def test_absolute_blocks_round_default_steps_the_same_in_cli_api_and_server(
        tmp_path, capsys, prompt, length):
    """Case 4: without steps, an absolute-block checkpoint's one step per token is rounded
    down to a multiple of the blocks the run spans, not refused as steps the user never sent;
    ``unmask generate``, ``api.generate`` and the server run the same steps."""
    import unmask
    from unmask import api
    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main
    from unmask.tokenizer import byte_tokenizer

    model = _model("bd3lm-absolute", ctx=16)
    path = save_checkpoint(tmp_path / "run", model=model, tokenizer=byte_tokenizer())
    with _client(model, 1024) as c:
        r = c.post("/v1/completions", json={"prompt": prompt, "max_tokens": length})
    assert r.status_code == 200, r.text
    server = r.json()["steps"]
    lo = unmask.load(path)
    assert api.generate(lo, prompt, config={"gen_length": length}).steps == server
    capsys.readouterr()
    assert main(["generate", "--model", str(path), prompt, "--gen-length", str(length),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == server
    assert server <= length


@pytest.mark.parametrize("advice,values", [
    ("; try 12 or 16", [("steps", 12), ("steps", 16)]),
    ("; try max_tokens 4 or 8", [("max_tokens", 4), ("max_tokens", 8)]),
    (": send steps <= 6, or max_tokens <= 6", [("steps", 6), ("max_tokens", 6)]),
    ("; try 8 or 9 steps", [("steps", 8), ("steps", 9)]),
    ("; try block_length 3 or gen_length 8", [("block_length", 3), ("max_tokens", 8)]),
    (": use /v1/completions, or serve it", []),  # a path's digits are no advice
    (", or use segment_length (e.g. 32) to write it", []),  # another option
])
def test_advice_values_reads_each_alternative(advice, values):
    from unmask.server.routes.completions import advice_values

    assert advice_values(advice) == values


def test_one_step_per_token_over_max_steps_names_what_was_sent():
    """Steps not sent, one per token over --max-steps: ``param`` is the max_tokens the
    client sent (it was ``steps``), and the rounded steps of absolute blocks say so."""
    with _client(_model("bd3lm-absolute"), 6) as c:
        r = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 32})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "max_tokens"
    assert "runs 27 (one per token of max_tokens, rounded to its blocks)" in error["message"]


@pytest.mark.parametrize("length", [7, 11])
def test_absolute_blocks_round_default_steps_in_api_chat_as_the_server(length):
    """``api.chat`` with options as a mapping fits its steps to the blocks its rendered
    messages leave, as ``/v1/chat/completions`` (it refused the steps nobody sent)."""
    from fastapi.testclient import TestClient

    from unmask import api
    from unmask.server import ServerLimits, create_app

    model = _model("bd3lm-absolute", ctx=64)
    messages = [{"role": "user", "content": "a"}]
    app = create_app(loaded(model), limits=ServerLimits(max_steps=1024),
                     chat_template="plain", access_log=False)
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", json={"messages": messages, "max_tokens": length})
    assert r.status_code == 200, r.text
    reply = api.chat(loaded(model), messages, config={"gen_length": length}, template="plain")
    assert reply.steps == r.json()["steps"] <= length


def test_advice_that_holds_is_kept_where_another_alternative_fails():
    """max_tokens 200 in blocks of 1 under --max-steps 32 (one step per token): "send steps
    <= 32, or max_tokens <= 32" names steps 32, refused (200 blocks), and max_tokens 32,
    which runs; the advice keeps max_tokens 32 (it was dropped with the steps: no advice)."""
    body = {"prompt": "Hi", "max_tokens": 200, "block_length": 1}
    with _client(_model("llada", ctx=256), 32) as c:
        r = c.post("/v1/completions", json=body)
        assert r.status_code == 400
        advice = _advice(r.json()["error"]["message"])
        assert ("max_tokens", 32) in advice, r.text
        for option, value in advice:
            again = c.post("/v1/completions", json={**body, option: value})
            assert again.status_code == 200, (option, value, again.text)
