"""An empty prompt takes a column of the canvas where its decoder gives it a start token
(a causal decoder always; the commit loop and bd3lm too, on every model since session 29:
an all-[MASK] canvas was an exact tie, ``tests/test_loopaudit_empty_start.py``):
every room check counts it through ``ModelFacts.prompt_columns``, so a length they pass is one
the decoder takes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unmask import api
from unmask.errors import UserError
from unmask.facts import ModelFacts
from unmask.model import Transformer


def _loaded(max_seq_len: int, **changes: object):
    """A tiny random checkpoint of the byte tokenizer, loaded, its config changed."""
    from server_helpers import loaded, tiny_config

    torch.manual_seed(0)
    return loaded(Transformer(dataclasses.replace(tiny_config(max_seq_len), **changes)).eval())


def _shifted_blocks(absolute: bool = True):
    """A Dream-style (``logit_shift``) block-diffusion checkpoint, blocks of 4 (``absolute``:
    LLaDA 2.x's layout, blocks counted from the first prompt token)."""
    return _loaded(64, attention="block-causal", block_size=4, objective="bd3lm",
                   block_align="absolute" if absolute else "pad", logit_shift=True)


@pytest.mark.parametrize(("decoder", "shift", "columns"), [
    ("llada", False, 1), ("llada", True, 1), ("bd3lm", True, 1), ("bd3lm", False, 1),
    ("ar", False, 1), ("speculative", False, 1), ("hybrid", True, 1), ("sedd", True, 0),
])  # fmt: skip
def test_an_empty_prompt_counts_where_its_decoder_starts_it(decoder, shift, columns) -> None:
    facts = ModelFacts.of(dataclasses.replace(_loaded(16).config, logit_shift=shift))
    assert facts.prompt_columns(0, decoder) == columns
    assert facts.prompt_columns(3, decoder) == 3  # a prompt of text is itself


@pytest.mark.parametrize("body", [
    {"prompt": ["", "abcd"], "max_tokens": 4, "steps": 1},  # lengths 1 and 4 modulo 4
    {"prompt": "", "max_tokens": 8, "steps": 2},  # 3 blocks after the start token, not 2
])  # fmt: skip
def test_a_streamed_request_the_start_token_breaks_is_a_400(body) -> None:
    """On a ``logit_shift`` LLaDA 2.x-layout checkpoint ``check_whole_blocks`` took an empty
    prompt as 0 tokens: the request passed it and bd3lm refused the start token's layout when
    it started, a 200 and an error event for a stream."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    client = TestClient(create_app(_shifted_blocks()))
    for stream in (False, True):
        r = client.post("/v1/completions", json={**body, "stream": stream})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_value"
    if isinstance(body["prompt"], str):  # the way out the 400 names runs
        assert "try 3" in r.json()["error"]["message"]
        ok = client.post("/v1/completions", json={**body, "steps": 3, "stream": True})
        assert ok.status_code == 200 and '"error"' not in ok.text, ok.text


@pytest.mark.parametrize("changes", [
    {"logit_shift": True},  # the commit loop's start token
    {"attention": "causal", "objective": "ar"},  # the ar decoder's
])  # fmt: skip
def test_unmask_eval_sizes_unprompted_samples_by_the_start_token(changes) -> None:
    """``unmask eval``'s unprompted samples (``--prompt-tokens 0``) in a context of 32: the
    length offered is 31, which the decoder takes; it offered 32, refused when sampling."""
    from unmask.commands.eval import _fit_gen_length

    m = _loaded(32, **changes)
    config = _fit_gen_length(m, api.facts_of(m), api.sample_config(m, {}), {}, 0)
    assert config.gen_length == 31
    api.start(m, [[]], config)  # starts (it refused 32: the start token takes a column)
    with pytest.raises(UserError, match="use --gen-length 31 or less"):
        _fit_gen_length(m, api.facts_of(m), api.sample_config(m, {"gen_length": 32}),
                        {"gen_length": 32}, 0)


def test_the_demo_and_chat_rooms_count_the_start_token() -> None:
    """The demo's and chat's room after an empty prompt is the decoder's: the context less
    the start token (they counted the whole context)."""
    from unmask.commands import demo
    from unmask.commands.chat import ChatSession

    m = _loaded(32, logit_shift=True)
    assert demo._room(m, 0, "m") == 31
    config = api.sample_config(m, {"gen_length": 31})
    session = ChatSession(m, api.chat_template(m, "plain"), config)
    assert session._fits(0, 31, 32) and not session._fits(0, 32, 32)
    plain = _loaded(32)  # no logit_shift: the commit loop starts it all the same
    assert demo._room(plain, 0, "m") == 31


def test_an_unshifted_absolute_model_counts_its_start_token_too() -> None:
    """Without ``logit_shift`` bd3lm starts an empty prompt with EOS as well (it took it as
    it was: an all-[MASK] first block, an exact tie): 8 new tokens after the start token span
    3 blocks of 4, so steps 2 are a 400 naming 3, and steps 3 stream."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    m = _loaded(64, attention="block-causal", block_size=4, objective="bd3lm",
                block_align="absolute")
    client = TestClient(create_app(m))
    body = {"prompt": "", "max_tokens": 8, "stream": True}
    r = client.post("/v1/completions", json={**body, "steps": 2})
    assert r.status_code == 400 and "try 3" in r.json()["error"]["message"], r.text
    r = client.post("/v1/completions", json={**body, "steps": 3})
    assert r.status_code == 200 and '"error"' not in r.text, r.text
