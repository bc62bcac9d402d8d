"""Session 39's routes audit: the template tasks run the library's default steps (the server
writes what ``unmask infill`` / ``fill-form`` / ``api.infill`` write for the same seed) and
report the seed a sampled one drew; a form, schema or gap mapping sent as a JSON object with
a key given twice is refused as the same JSON sent as text is, and a form sent as an object
is held to ``--max-prompt-chars`` as its text."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import Mixer, loaded, tiny_config  # noqa: E402

from unmask import api  # noqa: E402
from unmask.config import SampleConfig  # noqa: E402
from unmask.server import ServerLimits, create_app  # noqa: E402

TEMPLATE = "ab[MASK:100]cd"
"""More masks than the library's default steps (``SampleConfig.steps``, 64)."""


@pytest.fixture(scope="module")
def served() -> tuple[object, TestClient]:
    model = loaded(Mixer(tiny_config(max_seq_len=128)))
    with TestClient(create_app(model, access_log=False)) as client:
        yield model, client


def test_template_tasks_without_steps_write_what_the_library_writes(served):
    """``/v1/infill``, ``/v1/forms`` and ``/v1/edit`` without ``steps`` ran one step per
    masked token (100 forwards for ``[MASK:100]``) where ``unmask infill`` and
    ``api.infill`` run the library's 64: another text for the same template and seed. Now
    the same steps, the same text."""
    model, c = served
    assert SampleConfig.steps < 100
    for seed in (0, 3):
        opts = {"seed": seed, "temperature": 0.8}
        r = c.post("/v1/infill", json={"template": TEMPLATE, **opts})
        assert r.status_code == 200, r.text
        want = api.infill(model, TEMPLATE, config=opts)
        assert (r.json()["nfe"], r.json()["text"]) == (want.nfe, want.text)
    form = '{"a": "<text:50>", "b": "<text:40>"}'
    r = c.post("/v1/forms", json={"form": form, "seed": 1})
    assert r.status_code == 200, r.text
    want = api.fill_form(model, form, config={"seed": 1})
    assert (r.json()["nfe"], r.json()["text"]) == (want.nfe, want.text)
    text = "abcdefghijklmnopqrstuvwxyz" * 4
    r = c.post("/v1/edit", json={"text": text, "lowest": 90, "seed": 2, "temperature": 0.8})
    assert r.status_code == 200, r.text
    want = api.edit(model, text, lowest=90, config={"seed": 2, "temperature": 0.8})
    assert (r.json()["nfe"], r.json()["text"]) == (want.nfe, want.text)


def test_blocks_past_the_default_steps_still_run(served):
    """A sent ``block_length`` of more blocks with a gap than the default steps (100 blocks of
    1), which the library refuses at 64 steps, runs as before (a step per masked token), not
    a 400 about steps the client never sent; a sent ``steps`` stays the client's."""
    _, c = served
    r = c.post("/v1/infill", json={"template": TEMPLATE, "block_length": 1})
    assert r.status_code == 200, r.text
    assert r.json()["nfe"] == 100
    r = c.post("/v1/infill", json={"template": TEMPLATE, "block_length": 1, "steps": 64})
    assert r.status_code == 400 and r.json()["error"]["param"] == "steps", r.text


def test_the_default_steps_stay_within_max_steps():
    """Below the library's default, ``--max-steps`` still bounds a request without
    ``steps``."""
    app = create_app(loaded(Mixer(tiny_config(max_seq_len=128))), access_log=False,
                     limits=ServerLimits(max_steps=8))
    with TestClient(app) as c:
        r = c.post("/v1/infill", json={"template": TEMPLATE})
        assert r.status_code == 200 and r.json()["nfe"] == 8, r.text


def raw_post(c: TestClient, path: str, body: str) -> object:
    return c.post(path, content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize(("path", "body", "param", "key"), [
    ("/v1/forms", '{"form": {"a": "<text:3>", "a": "<digits:2>"}}', "form", "a"),
    ("/v1/forms", '{"form": [{"b": "<bool>", "b": "<bool>"}]}', "form", "b"),
    ("/v1/forms", '{"schema": {"type": "object", "properties": {"a": {"type": "integer"}, '
                  '"a": {"type": "string"}}, "required": ["a"]}}', "schema", "a"),
    ("/v1/infill", '{"template": "x [MASK:g] y", "choices": {"g": ["p"], "g": ["q"]}}',
     "choices", "g"),
    ("/v1/completions", '{"prompt": "x", "max_tokens": 8, "guided_json": {"type": "object", '
                        '"type": "array"}}', "guided_json", "type"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "x"}], "max_tokens": 8,'
                             ' "response_format": {"type": "json_schema", "json_schema": {"name":'
                             ' "n", "schema": {"type": "object", "properties": {"a": {"type": '
                             '"integer"}, "a": {"type": "string"}}}}}}', "response_format", "a"),
])
def test_a_key_given_twice_in_an_object_sent_as_json_is_refused(path, body, param, key):
    """A form, schema or gap mapping sent as a JSON object with a key given twice in one
    object was read as the request's parser keeps it, the last value only (a form lost a
    field, a schema a property's type, a gap its first choices: a 200 in silence), where the
    same JSON sent as text is a 400 (as ``unmask fill-form`` refuses the file). Now a 400
    naming the field, the key and where the body repeats it."""
    app = create_app(loaded(Mixer(tiny_config(max_seq_len=128))), access_log=False,
                     chat_template="plain")
    with TestClient(app) as c:
        r = raw_post(c, path, body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == param, error
        assert f"the key '{key}' is given twice" in error["message"], error
        first = body.index(f'"{key}":')
        column = body.index(f'"{key}":', first + 1) + 1  # its second time, counted from 1
        assert f"line 1 column {column} of the request body" in error["message"], error


def test_keys_repeated_where_nothing_reads_them_still_pass():
    """Not refused: a key repeated in a schema annotation (``default``, ``examples``: the
    library lets those through too), a request field given twice (the parser's last wins,
    as for every client of a JSON API), and forms and gap mappings without repeats."""
    app = create_app(loaded(Mixer(tiny_config(max_seq_len=128))), access_log=False)
    with TestClient(app) as c:
        schema = ('{"type": "object", "properties": {"a": {"type": "integer", "default": '
                  '{"x": 1, "x": 2}}}, "required": ["a"]}')
        assert raw_post(c, "/v1/forms", '{"schema": ' + schema + '}').status_code == 200
        r = raw_post(c, "/v1/forms", '{"form": {"a": "<bool>"}, "form": {"b": "<bool>"}}')
        assert r.status_code == 200 and list(r.json()["value"]) == ["b"], r.text
        r = raw_post(c, "/v1/infill", '{"template": "x [MASK:g] y", "choices": {"g": ["p"]}}')
        assert r.status_code == 200 and r.json()["text"] == "x p y", r.text


def test_a_form_sent_as_an_object_counts_its_characters_as_text():
    """``--max-prompt-chars`` held a form sent as a JSON object to ``json.dumps``'s ASCII
    text, each non-ASCII character an escape of 6: a form within the limit as text was a 400
    ``too_long`` as an object (a schema is counted as compact JSON keeping its characters;
    now a form too). One over the limit either way stays a 400."""
    form = {"saison": "<choice:été|hiver>", "note": "é" * 40}
    app = create_app(loaded(Mixer(tiny_config(max_seq_len=128))), access_log=False,
                     limits=ServerLimits(max_prompt_chars=100))
    with TestClient(app) as c:
        for sent in (form, json.dumps(form, ensure_ascii=False)):
            r = c.post("/v1/forms", json={"form": sent})
            assert r.status_code == 200, r.text
            assert r.json()["value"]["note"] == "é" * 40
        over = {**form, "note": "é" * 90}
        for sent in (over, json.dumps(over, ensure_ascii=False)):
            r = c.post("/v1/forms", json={"form": sent})
            assert r.status_code == 400 and r.json()["error"]["code"] == "too_long", r.text


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/infill", {"template": "ab[MASK:6]cd"}),
    ("/v1/infill", {"template": "ab[MASK:6]cd", "guided_regex": "[a-z]+"}),
    ("/v1/forms", {"form": {"a": "<text:4>", "b": "<bool>"}}),
    ("/v1/edit", {"text": "abcdefghijkl", "spans": [[2, 8]]}),
])
def test_a_sampled_template_task_reports_the_seed_that_repeats_it(served, path, body):
    """A sampled infill, form or edit without ``seed`` ran with fresh noise and said nothing
    about it (its answer had no ``seed``), where ``unmask infill`` / ``fill-form`` / ``edit``
    ``--json`` and a completion report the seed they drew: it could not be repeated. Now the
    answer reports it, sending it back writes the same text, and one that draws nothing
    reports null."""
    _, c = served
    r = c.post(path, json={**body, "temperature": 1.0})
    assert r.status_code == 200, r.text
    seed = r.json()["seed"]
    assert isinstance(seed, int), r.json()
    again = c.post(path, json={**body, "temperature": 1.0, "seed": seed})
    assert again.json()["seed"] == seed and again.json()["text"] == r.json()["text"]
    assert c.post(path, json=body).json()["seed"] is None  # greedy: nothing drawn
