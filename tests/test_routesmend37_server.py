"""Session 37 mend of the routes' ``param`` for a 400: a refusal about a gap names its field
by the library's type (``GapError``), not by reading its message (tiny test models)."""

from __future__ import annotations

import copy
import dataclasses
import pickle

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


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("body", "param"), [
    ({"template": "a [MASK:x:3] b", "choices": {"x": ["yes"]}}, "choices.x"),
    ({"template": "a [MASK:3] b [MASK:2]", "regex": {"2": "[0-9]+"}}, "regex.2"),
    ({"template": "a [MASK:3] b [MASK:2]", "charset": {"2": "digits"}}, "charset.2"),
    ({"template": "a [MASK:3] b", "ban": ["a"]}, "ban"),
])
def test_a_gap_constraint_on_an_embed_diffusion_checkpoint_names_the_constraint(
        embed_client, stream, body, param):
    """An embed-diffusion checkpoint fills plain gaps only: the refusal of a constrained gap
    named ``template``, which was fine; the field to drop is the constraint (docs/serving.md:
    a constraint's 400 names its field)."""
    r = embed_client.post("/v1/infill", json={**body, "stream": stream})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and "need the masked commit loop" in err["message"], err


@pytest.mark.parametrize("template", ["a [MASK:1-3] b", "a [MASK:c:1-3] b"])
def test_a_length_range_on_an_embed_diffusion_checkpoint_names_the_template(embed_client,
                                                                             template):
    """A gap of a length range is refused by an embed-diffusion checkpoint: the 400 named
    ``template`` for an unnamed gap, nothing for a named one (its message, matched as text,
    starts with a quote)."""
    r = embed_client.post("/v1/infill", json={"template": template})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "template" and "has a variable length" in err["message"], err


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


def test_a_refusal_about_a_gap_is_typed_with_its_number():
    """The server names a gap's field from the refusal's type and gap number, not from its
    words: an infeasible constraint is a ``GapError`` for its gap (2 here), a gap past the
    context one about the template (``gap`` None); a copy keeps the number."""
    from unmask.errors import UserError
    from unmask.infill import Gap
    from unmask.infill.template import GapError, GapRoomError, plan_template
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()

    with pytest.raises(GapError) as e:
        plan_template(["a ", Gap(length=2), " b ", Gap(length=3, regex="[0-9]{5}")], tok)
    assert e.value.gap == 2 and isinstance(e.value, UserError), e.value
    for twin in (copy.copy(e.value), pickle.loads(pickle.dumps(e.value))):
        assert (type(twin), str(twin), twin.gap) == (GapError, str(e.value), 2)
    with pytest.raises(GapRoomError) as room:
        plan_template("a [MASK:1-999] b", tok, max_seq_len=64)
    assert isinstance(room.value, GapError) and room.value.gap is None


@pytest.fixture(scope="module")
def mdlm_client():
    with _client() as c:
        yield c


@pytest.mark.parametrize(("body", "param"), [
    ({"template": "a [MASK:x] b", "choices": {"x": [""]}}, "choices.x"),
    ({"template": "a [MASK:x] b", "regex": {"x": "x{0}"}}, "regex.x"),
    ({"template": "a [MASK:3] b [MASK:x]", "regex": {"x": "()"}}, "regex.x"),
])
def test_a_constraint_that_allows_only_empty_text_names_the_constraint(mdlm_client, body,
                                                                       param):
    """A gap whose constraint allows only empty text (and no length given) is refused about
    the constraint: its 400 names the entry the request sent, as every other constraint's."""
    r = mdlm_client.post("/v1/infill", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and "allows only empty text" in err["message"], err
