"""``/v1/edit`` takes ``rounds`` as ``unmask edit --rounds`` and ``api.edit`` do (same result
for the same seed), and ``/v1/infill`` / ``/v1/forms`` code a template too long for the
model's context ``context_length_exceeded`` (as a too-long edit text or prompt is)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import loaded, tiny_config  # noqa: E402

from unmask import api  # noqa: E402
from unmask.model import Transformer  # noqa: E402
from unmask.server import create_app  # noqa: E402

torch.manual_seed(3)
MODEL = Transformer(tiny_config(max_seq_len=128)).eval()
LOADED = loaded(MODEL)
TEXT = "The cat sat on the mat and the dog lay by the door."


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(LOADED)) as c:
        yield c


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_edit_rounds_match_the_api(client, temperature):
    """``rounds`` was an unknown field (a 400) though ``unmask edit --rounds`` and
    ``api.edit(rounds=...)`` take it; the body now reports each change's round and the rounds
    run, as ``unmask edit --json``."""
    body = {"text": TEXT, "lowest": 3, "rounds": 3, "seed": 5, "temperature": temperature}
    r = client.post("/v1/edit", json=body)
    assert r.status_code == 200, r.text
    res = r.json()
    lib = api.edit(LOADED, TEXT, lowest=3, rounds=3,
                   config={"seed": 5, "temperature": temperature}).detail
    want = dataclasses.asdict(lib)
    assert res["text"] == want["text"] and res["nfe"] == want["nfe"]
    assert res["rounds"] == want["rounds"] >= 1
    assert res["changes"] == want["changes"] and res["spans"] == [list(s) for s in lib.spans]
    assert all(c["round"] in range(1, res["rounds"] + 1) for c in res["changes"])


def test_one_round_edits_report_round_one(client):
    r = client.post("/v1/edit", json={"text": TEXT, "spans": [[4, 7]], "seed": 1})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["rounds"] == 1 and [c["round"] for c in res["changes"]] in ([], [1])


@pytest.mark.parametrize(("extra", "message"), [
    ({"spans": [[4, 7]], "rounds": 2}, "rounds needs lowest"),
    ({"regex": "cat", "rounds": 2}, "rounds needs lowest"),
    ({"lowest": 2, "rounds": 0}, "greater than or equal to 1"),
    ({"lowest": 2, "rounds": 65}, "less than or equal to 64"),
    ({"lowest": 2, "rounds": "2x"}, "valid integer"),
])
def test_bad_rounds_are_400s_naming_rounds(client, extra, message):
    r = client.post("/v1/edit", json={"text": TEXT, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "rounds" and message in err["message"], err


LONG = "word " * 150
WIDE = {"type": "object", "properties": {k: {"type": "string"} for k in "abcdef"},
        "required": list("abcdef")}  # 6 strings of up to 32 tokens: more than the context


@pytest.mark.parametrize(("body", "param"), [
    ({"template": LONG + "[MASK:2]"}, "template"),
    ({"template": "a [MASK:1-5] " + LONG}, "template"),
    ({"template": LONG + "[MASK:8]", "guided_choice": ["yes", "no"]}, "template"),
    ({"template": "a [MASK:100] b", "guided_json": WIDE},
     "guided_json"),
])
def test_an_infill_over_the_context_is_coded_context_length_exceeded(client, body, param):
    """A template too long for the context was ``invalid_value`` like a syntax error (and a
    guided one blamed its constraint and said "use fewer or shorter holes" when the text was
    too long); now it is ``context_length_exceeded``, naming the field to shorten, plain or
    streamed (the stream has not started)."""
    for stream in (False, True):
        r = client.post("/v1/infill", json={**body, "stream": stream})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "context_length_exceeded" and err["param"] == param, err
        assert "max_seq_len 128" in err["message"] and "\n" not in err["message"]
    if param == "template":
        assert "shorten the template" in err["message"]


@pytest.mark.parametrize("schema", [
    WIDE,
    # more values than the context has tokens: said as "the form would have over 128
    # values", which was coded invalid_value (docs/serving.md promises the context code)
    {"type": "array", "items": {"type": "boolean"}, "minItems": 200, "maxItems": 200},
    {"type": "object", "properties": {f"k{i}": {"type": "boolean"} for i in range(130)},
     "required": [f"k{i}" for i in range(130)]},
])  # fmt: skip
def test_a_form_over_the_context_is_coded_context_length_exceeded(client, schema):
    r = client.post("/v1/forms", json={"schema": schema})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == "schema", err


def test_offsets_count_code_points_as_docs_say(client):
    """docs/serving.md "Offsets": every offset counts code points (Python ``str`` indices),
    so an emoji before a gap or span (2 UTF-16 units) shifts it by 1."""
    head = "😀 é 𝄞 "  # 6 code points, 8 UTF-16 units
    r = client.post("/v1/infill", json={"template": head + "[MASK:3] end.", "seed": 1})
    assert r.status_code == 200, r.text
    res = r.json()
    (gap,) = res["gaps"]
    assert gap["start"] == len(head) and res["text"][gap["start"]:gap["end"]] == gap["text"]
    r = client.post("/v1/infill", json={"template": head + "[MASK:8] end.",
                                        "guided_choice": ["yes", "no"]})
    assert r.status_code == 200, r.text
    res = r.json()
    (gap,) = res["gaps"]
    assert gap["start"] == len(head) and res["text"][gap["start"]:gap["end"]] == gap["text"]
    text = head + "the cat sat."
    r = client.post("/v1/edit", json={"text": text, "spans": [[len(head) + 4, len(head) + 7]],
                                      "seed": 1})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["spans"] == [[10, 13]] and text[10:13] == "cat"
    for c in res["changes"]:
        assert c["start"] == 10 and res["text"][c["start"]:c["end"]] == c["new"]


@pytest.mark.parametrize("field", ["policy", "cache"])
@pytest.mark.parametrize(("path", "body"), [
    ("/v1/infill", {"template": "a [MASK:2] b"}),
    ("/v1/infill", {"template": "a [MASK:2] b", "stream": True}),
    ("/v1/infill", {"template": "a [MASK:4] b", "guided_choice": ["x"]}),
    ("/v1/forms", {"form": {"a": "<int:1..3>"}}),
    ("/v1/forms", {"schema": {"type": "integer"}}),
    ("/v1/edit", {"text": "The cat sat.", "lowest": 1}),
    ("/v1/edit", {"text": "The cat sat.", "spans": [[4, 7]]}),
])
def test_an_unknown_policy_or_cache_names_its_field(client, field, path, body):
    """An unknown ``policy`` / ``cache`` was found on the worker and blamed on another field
    (``lowest``, ``spans``, ``form``) or on none; completions name it, and so do these."""
    r = client.post(path, json={**body, field: "nope"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and f"unknown {field} 'nope'" in err["message"], err


def test_an_over_long_choice_is_a_short_400_naming_it(client):
    """A choice of thousands of characters was compiled into a pattern on the worker, and its
    400 quoted that pattern until the message was cut, reason and all; choices are bounded as
    ``guided_choice`` is (256 characters)."""
    r = client.post("/v1/infill", json={"template": "a [MASK:1-4] b",
                                        "choices": {"1": ["ok", "x" * 3000]}})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    # gap "1", its entry 1 (the gap's key was dropped: "choices.1" read as the second entry)
    assert err["param"] == "choices.1.1" and "at most 256 characters" in err["message"], err
    assert len(err["message"]) < 200
