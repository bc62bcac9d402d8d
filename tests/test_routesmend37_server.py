"""Session 37 mend of the routes' ``param`` for a 400: a refusal about a gap names its field
by the library's type (``GapError``), not by reading its message (tiny test models)."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import Echo, loaded, tiny_config  # noqa: E402

from unmask.server import create_app  # noqa: E402


def _client(**config):
    import torch

    from unmask.model import Transformer

    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(tiny_config(), **config)).eval()
    app = create_app(loaded(model), chat_template="plain", access_log=False)
    return TestClient(app)


@pytest.fixture(scope="module")
def embed_client():
    with _client(objective="embed-diffusion") as c:
        yield c


@pytest.fixture(scope="module")
def bd3lm_client():
    with _client(attention="block-causal", block_size=4, objective="bd3lm") as c:
        yield c


@pytest.fixture(scope="module")
def echo_client():
    app = create_app(loaded(Echo(tiny_config())), chat_template="plain", access_log=False)
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/completions", {"prompt": "ab", "max_tokens": 6}, "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                              "max_tokens": 6}, "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                              "max_completion_tokens": 6}, "max_completion_tokens"),
])
def test_whole_block_segments_of_a_length_that_is_not_name_the_length(bd3lm_client, path, body,
                                                                      param):
    """``segment_length`` 4 is whole blocks of a block model's 4; ``max_tokens`` 6 is not (4 +
    2): the 400 named ``segment_length``, which the client need not change; it names the
    length, as the client sent it."""
    r = bd3lm_client.post(path, json={**body, "segment_length": 4})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and "whole blocks of 4" in err["message"], err
    assert err["message"].startswith("max_tokens 6"), err


@pytest.mark.parametrize("constraint", [{}, {"choices": {"1": ["x"]}}, {"regex": {"a": "x"}},
                                        {"ban": ["x"]}])
def test_a_gap_name_used_twice_names_the_template_whatever_the_constraints(echo_client,
                                                                           constraint):
    """docs/serving.md: a gap name used twice names ``template``; with a per-gap constraint
    the refusal came from the constraint's lookup of its gap and named that entry
    (``choices.1``)."""
    r = echo_client.post("/v1/infill", json={"template": "[MASK:a:2] [MASK:a:2]",
                                              **constraint})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "template" and "is used twice" in err["message"], err
