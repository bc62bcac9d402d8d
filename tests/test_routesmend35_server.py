"""Session 35 review of the routes fixes: the refusals they added let neutral values through,
as the rest of the server does (tiny test models)."""

from __future__ import annotations

import dataclasses

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


def _client(**fields):
    import torch

    from unmask.model import Transformer

    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(tiny_config(), **fields)).eval()
    return TestClient(create_app(loaded(model), chat_template="plain", access_log=False))


@pytest.fixture(scope="module")
def fim_client():
    with _client(attention="causal", objective="ar", vocab_size=263, fim_prefix_id=260,
                 fim_suffix_id=261, fim_middle_id=262) as c:
        yield c


@pytest.fixture(scope="module")
def causal_client():
    with _client(attention="causal", objective="ar") as c:
        yield c


DEFAULTS = {"length_mode": "auto", "length_score": "total", "max_candidates": 6,
            "elbo_samples": 16}


@pytest.mark.parametrize("option", [*({k: v} for k, v in DEFAULTS.items()), DEFAULTS])
def test_a_guided_infill_takes_the_length_options_at_their_defaults(client, option):
    """A guided infill refuses the length search's options, which would do nothing; at their
    defaults (a client that sends its infill options in full) they do nothing either, and
    pass, as on an AR-FIM or embed-diffusion checkpoint (every one sent was a 400)."""
    r = client.post("/v1/infill", json={"template": "x [MASK:4] y", "guided_regex": "[0-9]+",
                                         **option})
    assert r.status_code == 200, r.text
    r = client.post("/v1/infill", json={"template": "x [MASK:4] y", "guided_regex": "[0-9]+",
                                         **option, "max_candidates": 3})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "max_candidates" and "guided_regex" in err["message"], err


def test_length_mode_empty_on_an_ar_fim_checkpoint_gives_advice_that_works(fim_client):
    """``length_mode`` does not apply on an AR-FIM checkpoint (the model ends its gap); for
    "empty" the 400 told the client to use 'elbo' or 'auto', and 'elbo' was a 400 too."""
    r = fim_client.post("/v1/infill", json={"template": "a [MASK:1-4] b",
                                             "length_mode": "empty"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "length_mode", err
    assert "AR-FIM" in err["message"] and "'elbo'" not in err["message"], err


def test_length_mode_empty_on_an_embed_diffusion_checkpoint_says_why_it_does_not_apply():
    """The same on an embed-diffusion checkpoint, which fills fixed-length gaps only."""
    with _client(objective="embed-diffusion") as c:
        r = c.post("/v1/infill", json={"template": "a [MASK:4] b", "length_mode": "empty"})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "length_mode", err
        assert "fixed-length" in err["message"] and "'elbo'" not in err["message"], err


@pytest.mark.parametrize("template,width", [("a [MASK:4] b", 4), ("a [MASK:1-3] b", 3)])
@pytest.mark.parametrize("name", ["steps", "block_length"])
def test_a_fill_in_the_middle_infill_takes_steps_at_its_gap_width(fim_client, template, width,
                                                                   name):
    """A fill-in-the-middle gap is written token by token: ``steps`` (or ``block_length``) at
    the gap's width, one step per token, changes nothing and passes, as ``steps`` equal to
    ``max_tokens`` does in a causal completion (every sent one was a 400); another is a
    400 naming it."""
    assert fim_client.post("/v1/infill", json={"template": template, name: width}
                           ).status_code == 200
    r = fim_client.post("/v1/infill", json={"template": template, name: width - 1})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == name, r.text


@pytest.mark.parametrize("body,param,words", [
    ({"template": "a [MASK:2] b [MASK:2]", "steps": 2}, None, "exactly one gap"),
    ({"template": "a [MASK:2] b", "regex": {"1": "[a"}, "steps": 2}, "regex.1", "regex '[a'"),
])
def test_a_fill_in_the_middle_infill_with_steps_is_refused_for_its_template(fim_client, body,
                                                                           param, words):
    """Working out the gap's width with ``steps`` sent, a template the fill cannot take is
    refused for what is wrong with it, naming the field as on the worker (several gaps: not
    'gen_length must be positive'; a bad gap regex: ``regex.1``, not ``template``)."""
    r = fim_client.post("/v1/infill", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and words in err["message"], err


def test_a_guided_fill_in_the_middle_infill_takes_steps_at_n(fim_client):
    """A guided gap ``[MASK:n]`` on a causal checkpoint: n plays ``max_tokens``, so ``steps``
    n passes, as in a causal structured completion."""
    body = {"template": "a [MASK:4] b", "guided_regex": "[a-z]+"}
    assert fim_client.post("/v1/infill", json={**body, "steps": 4}).status_code == 200
    r = fim_client.post("/v1/infill", json={**body, "steps": 3})
    assert r.status_code == 400 and r.json()["error"]["param"] == "steps", r.text


@pytest.mark.parametrize("body", [
    {"form": {"a": "<choice:x|yz>", "n": "<int:0..99>"}},
    {"schema": {"type": "object", "properties": {"a": {"enum": ["x", "y"]}},
                "required": ["a"]}},
])
@pytest.mark.parametrize("stream", [False, True])
def test_a_causal_form_takes_steps_at_its_holes_width(causal_client, body, stream):
    """A causal checkpoint fills a form's holes left to right: ``steps`` or ``block_length``
    equal to their width (what the holes take at their widest: one step per masked token,
    the default on a diffusion checkpoint) passes; another is a 400 before any stream."""
    r = causal_client.post("/v1/forms", json=body)
    assert r.status_code == 200, r.text
    width = sum(h["width"] for h in r.json()["holes"])
    for name in ("steps", "block_length"):
        r = causal_client.post("/v1/forms", json={**body, name: width, "stream": stream})
        assert r.status_code == 200, (name, r.text)
        r = causal_client.post("/v1/forms", json={**body, name: width + 1, "stream": stream})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == name, r.text


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"prompt": "ab", "max_tokens": 8, "guided_regex": "[a-z]+"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                              "response_format": {"type": "json_object"}}),
    ("/v1/forms", {"form": {"a": "<choice:x|y>"}}),
    ("/v1/infill", {"template": "x [MASK:4] y"}),
    ("/v1/infill", {"template": "x [MASK:4] y", "guided_regex": "[0-9]+"}),
    ("/v1/edit", {"text": "hello world", "lowest": 2}),
])
def test_max_post_steps_off_passes_where_no_token_is_edited(client, path, body):
    """``max_post_steps`` 0 is token editing's off value: a plain completion takes it; a
    form, a structured answer, a template's gaps or an edit (no token editing there) refused
    it as a generation-only option. It passes now; 4 is still a 400."""
    assert client.post("/v1/completions", json={"prompt": "ab", "max_post_steps": 0}
                       ).status_code == 200
    r = client.post(path, json={**body, "max_post_steps": 0})
    assert r.status_code == 200, r.text
    r = client.post(path, json={**body, "max_post_steps": 4})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_post_steps", r.text


def test_token_editing_is_refused_before_a_structured_answer_compiles(client, monkeypatch):
    """The cheap 400 for ``max_post_steps`` comes before the answer's automata compile (a
    heavy schema compiled for seconds, then was refused)."""
    from unmask.server.routes import guided

    def compiled(*args, **kwargs):
        raise AssertionError("compiled before the refusal")

    monkeypatch.setattr(guided, "build_form", compiled)
    r = client.post("/v1/completions", json={"prompt": "ab", "max_tokens": 8,
                                             "guided_regex": "[a-z]{3}x", "max_post_steps": 4})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_post_steps", r.text


@pytest.mark.parametrize("option", [{"edit_threshold": 0.5}, {"max_post_steps": 4}])
def test_a_guided_infill_refuses_token_editing(client, option):
    """A guided gap is filled as a form, without token editing: ``edit_threshold`` and
    ``max_post_steps`` did nothing (the same text, a 200), now a 400 naming the field, as
    in structured output."""
    r = client.post("/v1/infill", json={"template": "x [MASK:4] y", "guided_regex": "[0-9]+",
                                         **option})
    assert r.status_code == 400, r.text
    (name,) = option
    assert r.json()["error"]["param"] == name, r.text


def test_a_causal_form_too_wide_with_steps_is_coded_as_without(causal_client):
    """Working out a form's width with ``steps`` sent, a form too wide for the context is the
    same 400 as without ``steps``: ``context_length_exceeded``, naming the form."""
    body = {"form": {"a": "<text:200>"}}
    want = causal_client.post("/v1/forms", json=body).json()["error"]
    r = causal_client.post("/v1/forms", json={**body, "steps": 5})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == want and want["code"] == "context_length_exceeded", r.text


@pytest.mark.parametrize("body,width,narrow", [
    ({"template": "a [MASK:1-8] b", "choices": {"1": ["yes", "no"]}}, 8, 3),
    ({"template": "a [MASK:1-20] b", "regex": {"1": "[0-9]{2,5}"}}, 20, 5),
    ({"template": "a [MASK] b", "regex": {"1": "[0-9]{2,5}"}}, 16, 5),
])
def test_a_constrained_fill_in_the_middle_gap_takes_steps_at_its_declared_width(
        fim_client, body, width, narrow):
    """A constrained fill-in-the-middle gap takes ``steps`` at the length the template
    declares (a range's maximum, 16 for a bare ``[MASK]`` with a regex or choices), as
    docs/serving.md says and a client can read off its template; it took the longest length
    the constraint allows instead (``[MASK:1-8]`` with choices yes/no: 3, and 8 was a 400)."""
    r = fim_client.post("/v1/infill", json={**body, "steps": width, "temperature": 0})
    assert r.status_code == 200, r.text
    r = fim_client.post("/v1/infill", json={**body, "steps": narrow})
    assert r.status_code == 400 and r.json()["error"]["param"] == "steps", r.text


def test_a_fill_in_the_middle_infill_with_steps_uses_no_slow_check(fim_client, monkeypatch):
    """The gap's declared width compiles nothing: a request with ``steps`` is checked on the
    request path, as without (it waited in the slow-check pool, behind other clients'
    compiles, or got their 429)."""
    from unmask.server import plumbing

    calls = []
    slow_check = plumbing.slow_check

    async def counted(*args, **kwargs):
        calls.append(1)
        return await slow_check(*args, **kwargs)

    monkeypatch.setattr(plumbing, "slow_check", counted)
    for body in ({"template": "a [MASK:4] b", "steps": 4},
                 {"template": "a [MASK:1-8] b", "choices": {"1": ["yes", "no"]}, "steps": 8}):
        r = fim_client.post("/v1/infill", json=body)
        assert r.status_code == 200, r.text
    assert calls == []


@pytest.mark.parametrize("template", ["a [MASK:1-60] b", "a [MASK:60] b"])
@pytest.mark.parametrize("name", ["steps", "block_length"])
def test_a_fill_in_the_middle_gap_too_long_with_steps_is_refused_as_without(fim_client,
                                                                             template, name):
    """A gap too long for the context (64 tokens here) with ``steps`` sent gets the same 400
    as without (the template does not fit), not 'steps does not apply', which sent a
    client to change the one field that was not wrong."""
    want = fim_client.post("/v1/infill", json={"template": template}).json()["error"]
    assert "max_seq_len" in want["message"], want
    r = fim_client.post("/v1/infill", json={"template": template, name: 3})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == want, r.text


def test_a_causal_form_sized_before_uses_no_slow_check(causal_client, monkeypatch):
    """A form's width is worked out once (its automata compile on a slow-check thread), then
    kept: the same form with ``steps`` again is checked on the request path, as without
    ``steps`` (every sized request waited in the slow-check pool)."""
    from unmask.server import plumbing

    body = {"form": {"a": "<choice:x|yz>", "n": "<int:0..9>"}}
    r = causal_client.post("/v1/forms", json=body)
    width = sum(h["width"] for h in r.json()["holes"])
    calls = []
    slow_check = plumbing.slow_check

    async def counted(*args, **kwargs):
        calls.append(1)
        return await slow_check(*args, **kwargs)

    monkeypatch.setattr(plumbing, "slow_check", counted)
    for _ in range(2):
        r = causal_client.post("/v1/forms", json={**body, "steps": width})
        assert r.status_code == 200, r.text
    assert calls == [1]
    r = causal_client.post("/v1/forms", json={**body, "steps": width + 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "steps", r.text
