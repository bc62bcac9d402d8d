"""Session 37 audit of the HTTP routes as an OpenAI-compatible client sees them (tiny test
models)."""

from __future__ import annotations

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


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("body", "param", "message"), [
    # no text of the gap's length satisfies the constraint the request sent for it
    ({"template": "[MASK:city:3] x", "choices": {"city": ["Copenhagen"]}}, "choices.city",
     "'city' [MASK:city:3]: no sequence of 3 tokens satisfies its constraint"),
    ({"template": "a [MASK:2] b [MASK:3]", "regex": {"2": "[0-9]{5}"}}, "regex.2",
     "gap 2 [MASK:3]: no sequence of 3 tokens"),
    ({"template": "[MASK:3]", "choices": {"1": ["x"]}, "regex": {"1": "x"}}, "choices.1",
     "gap 1 [MASK:3]: no sequence of 3 tokens"),
    # a gap of the template itself
    ({"template": "[MASK:1-999]"}, "template", "gap 1 [MASK:1-999]: up to 999 tokens"),
    ({"template": "[MASK:a:2] [MASK:a:2]"}, "template",
     "template column 12: gap name 'a' is used twice"),
])
def test_an_infill_refusal_about_a_gap_names_its_field(client, stream, body, param, message):
    """docs/serving.md: a constraint no token sequence satisfies is a 400 naming the field
    (``choices.town``); such refusals are found on the worker, in the library's words about
    the gap, and came with ``param`` null (so did a gap's own length past the context, or a
    gap name used twice: the template's)."""
    r = client.post("/v1/infill", json={**body, "stream": stream})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["message"].startswith(message) and err["param"] == param, err


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": ["ab", "cd"]}, "prompt"),
    ({"prompt": [[5, 6], [7, 8]]}, "prompt"),  # two prompts of token ids
    ({"prompt": "ab", "n": 2}, "n"),
])
def test_structured_output_of_several_prompts_names_the_prompt(client, body, param):
    """Structured output takes one prompt and n = 1: the 400 named ``n`` for a list of
    prompts too, a field the client had not sent."""
    r = client.post("/v1/completions", json={**body, "max_tokens": 4,
                                             "guided_choice": ["yes", "no"]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.text


def test_max_tokens_and_max_completion_tokens_that_differ_name_the_field(client):
    """Chat takes either name (equal if both): two different values were a 400 with no
    ``param``; it names ``max_completion_tokens`` and both values."""
    r = client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
        "max_completion_tokens": 4})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "max_completion_tokens", err
    assert "max_tokens (3) and max_completion_tokens (4) differ" in err["message"], err
    r = client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": None,
        "max_completion_tokens": 4})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4, r.text


@pytest.mark.parametrize("other", [{"spans": [[0, 2]]}, {"regex": "l+"}])
def test_an_edit_of_spans_and_lowest_names_lowest(client, other):
    """``lowest`` with ``spans`` or ``regex`` is refused ("choose spans/regex or lowest, not
    both") with no ``param``: it names ``lowest``."""
    r = client.post("/v1/edit", json={"text": "hello", "lowest": 1, **other})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "lowest" and "not both" in err["message"], err


@pytest.mark.parametrize("extra", [{}, {"stream": True}, {"guided_choice": ["yes", "no"]},
                                   {"prompt": ["ab", "a [MASK:3] b"]}])
def test_a_gap_of_the_infill_syntax_in_a_prompt_names_the_prompt(client, extra):
    """``[MASK:3]`` in a completions prompt is refused (a prompt fills bare ``[MASK]``s):
    the 400 had ``param`` null, where ``/v1/tokenize`` names its ``text``."""
    r = client.post("/v1/completions", json={"prompt": "a [MASK:3] b", "max_tokens": 4,
                                             **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "prompt" and "POST /v1/infill" in err["message"], err


@pytest.fixture(scope="module")
def fim_client():
    import dataclasses

    import torch

    from unmask.model import Transformer

    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(), attention="causal", objective="ar",
                                 vocab_size=263, fim_prefix_id=260, fim_suffix_id=261,
                                 fim_middle_id=262)
    app = create_app(loaded(Transformer(config).eval()), access_log=False)
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize("sized", [{}, {"steps": 4}])
def test_a_fill_in_the_middle_template_past_the_context_names_the_template(fim_client, sized):
    """An AR-FIM checkpoint's refusal of a gap whose declared length does not fit ("prefix
    (2 tokens) + suffix (2 tokens) + 3 sentinels + up to 999 middle tokens exceed the model's
    max_seq_len") had ``param`` null, found on the worker or, with ``steps``, before it."""
    r = fim_client.post("/v1/infill", json={"template": "a [MASK:1-999] b", **sized})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "template" and "max_seq_len" in err["message"], err
    r = fim_client.post("/v1/infill", json={"template": "a [MASK:3] b",
                                            "regex": {"1": "[0-9]{5}"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "regex.1", r.text


@pytest.fixture(scope="module")
def bd3lm_client():
    import dataclasses

    import torch

    from unmask.model import Transformer

    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(), attention="block-causal", block_size=4,
                                 objective="bd3lm")
    app = create_app(loaded(Transformer(config).eval()), chat_template="plain",
                     access_log=False)
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize("path,body", [
    ("/v1/forms", {"form": {"a": "<choice:x|y>"}}),
    ("/v1/infill", {"template": "a [MASK:2] b"}),
])
@pytest.mark.parametrize("option", [{"policy": "nope"}, {"cache": "nope"}])
def test_an_unknown_name_on_a_causal_fill_names_its_field(fim_client, path, body, option):
    """A causal checkpoint fills a form or an AR-FIM gap left to right; an unknown ``policy``
    or ``cache`` there was refused by the decoder's check in words that named no field."""
    r = fim_client.post(path, json={**body, **option})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    (name,) = option
    assert err["param"] == name and "unknown" in err["message"], err


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"prompt": "ab"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "ab"}]}),
])
def test_segments_that_are_not_whole_blocks_name_segment_length(bd3lm_client, path, body):
    """On a block model, segments must be whole blocks; the refusal ("segments of 1 tokens
    split max_tokens 4 into 4 x 1: ...") named no field."""
    r = bd3lm_client.post(path, json={**body, "max_tokens": 4, "segment_length": 1})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "segment_length" and "whole blocks" in err["message"], err


def test_a_length_range_a_block_model_cannot_size_names_the_template(bd3lm_client):
    """A block model sizes no gap of a length range (no bidirectional ELBO): the 400 said to
    give a fixed length, with ``param`` null."""
    r = bd3lm_client.post("/v1/infill", json={"template": "a [MASK:1-3] b"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "template" and "[MASK:n]" in err["message"], err
