"""``/v1/completions``' context refusal says that an empty prompt counts its start token only
where the decoder it runs gives one (``ModelFacts.starts_empty_prompts``): a SEDD checkpoint's
decoder gives none, and its refusal said "prompt (0 tokens) ... (an empty prompt counts 1
token: its start token)"."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from server_helpers import loaded, tiny_config

from unmask.messages import plural
from unmask.model import Transformer

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

CONTEXT = 16
NOTE = "an empty prompt counts 1 token"


def client(**kw: object):  # noqa: ANN201 (a TestClient)
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(tiny_config(CONTEXT), **kw)).eval()
    return TestClient(create_app(loaded(model), access_log=False,
                                 limits=ServerLimits(max_steps=64)))


@pytest.mark.parametrize("kw, columns", [
    ({"objective": "sedd", "sedd_graph": "absorbing"}, 0),  # no start token
    ({}, 1),  # mdlm: the commit loop starts an empty prompt
    ({"attention": "causal", "objective": "ar"}, 1),
])
def test_the_start_token_note_only_where_the_decoder_gives_one(kw, columns):
    with client(**kw) as c:
        r = c.post("/v1/completions", json={"prompt": "", "max_tokens": CONTEXT + 1})
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert f"prompt ({plural(columns, 'token')})" in message, message  # not "(1 tokens)"
        assert (NOTE in message) == (columns == 1), message
        assert f"use max_tokens <= {CONTEXT - columns}" in message, message
        r = c.post("/v1/completions", json={"prompt": "", "max_tokens": CONTEXT - columns})
        assert r.status_code == 200, r.text
        r = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": CONTEXT})
        assert NOTE not in r.json()["error"]["message"], r.text
