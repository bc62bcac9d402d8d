"""Every room check counts a prompt's columns by one rule, ``ModelFacts.prompt_columns``: an
empty prompt takes its start token's column under the causal decoders, and under the commit
loop and bd3lm on a ``logit_shift`` model. The server's context check counted it on causal
checkpoints only (a logit_shift one streamed a 200, then an error event), its dynamic-steps
cap not at all (a 400 naming steps the client never sent), and ``api._check_fits`` left out
the causal decoders (the decoder's own line offered "a shorter prompt" than an empty one)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from server_helpers import loaded, tiny_config

from unmask import api
from unmask.errors import UserError
from unmask.model import Transformer

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

SHIFT = {"logit_shift": True}
SHIFT_BLOCKS = {"attention": "block-causal", "block_size": 4, "objective": "bd3lm",
                "logit_shift": True, "block_align": "absolute"}


def client(context: int, max_steps: int = 64, **kw: object):  # noqa: ANN201 (a TestClient)
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(tiny_config(context), **kw)).eval()
    return TestClient(create_app(loaded(model), limits=ServerLimits(max_steps=max_steps)))


@pytest.mark.parametrize("kw", [SHIFT, SHIFT_BLOCKS], ids=["llada", "bd3lm-absolute"])
def test_an_empty_prompt_past_the_context_is_a_400_before_the_stream(kw):
    c = client(16, **kw)
    for stream in (False, True):
        r = c.post("/v1/completions", json={"prompt": "", "max_tokens": 16, "steps": 4,
                                            "stream": stream})
        assert r.status_code == 400, r.text  # was a 200 and an error event when streamed
        error = r.json()["error"]
        assert error["param"] == "max_tokens" and "gen_length" not in error["message"]
        assert "use max_tokens <= 15" in error["message"], error
        assert "an empty prompt counts 1 token" in error["message"], error
    r = c.post("/v1/completions", json={"prompt": "", "max_tokens": 15, "steps": 15 if
                                        kw is SHIFT else 4})  # the length offered runs
    assert r.status_code == 200, r.text


def test_the_dynamic_steps_cap_counts_the_start_token():
    """bd3lm in blocks counted from the first token (LLaDA 2.x) on a logit_shift model: an
    empty prompt and 8 tokens are 3 blocks (start token + 8), over --max-steps 2 for a
    threshold policy. It was counted as 2 blocks, steps capped to 2 and then refused as
    "steps (2) must be at least ...; try steps 3", a number the server does not take."""
    c = client(32, max_steps=2, **SHIFT_BLOCKS)
    body = {"prompt": "", "policy": "threshold"}
    for stream in (False, True):
        r = c.post("/v1/completions", json={**body, "max_tokens": 8, "stream": stream})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "max_tokens", error
        assert "send max_tokens <= 7" in error["message"], error
    assert c.post("/v1/completions", json={**body, "max_tokens": 7}).status_code == 200


def test_a_causal_decoder_is_refused_in_check_fits_words():
    lm = loaded(Transformer(dataclasses.replace(tiny_config(16), attention="causal")).eval())
    with pytest.raises(UserError) as e:
        api.start(lm, [[]], {"gen_length": 16})
    message = str(e.value)
    assert "gen_length <= 15" in message and "segment_length" in message, message
    assert "shorter prompt" not in message and "max_new_tokens" not in message, message
    assert "an empty prompt counts 1 token here" in message
    api.start(lm, [[]], {"gen_length": 15})  # the length offered starts
    with pytest.raises(UserError, match="a shorter prompt"):  # a prompt of text can shrink
        api.start(lm, [[5]], {"gen_length": 16})


def test_a_causal_checkpoint_on_the_server_counts_it_as_before():
    c = client(16, attention="causal")
    r = c.post("/v1/completions", json={"prompt": "", "max_tokens": 16})
    assert r.status_code == 400 and "use max_tokens <= 15" in r.json()["error"]["message"]
    assert c.post("/v1/completions", json={"prompt": "", "max_tokens": 15}).status_code == 200
