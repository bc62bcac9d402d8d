"""Structured output over HTTP: OpenAI ``response_format`` and vLLM ``guided_*`` on
completions, chat and ``/v1/infill``, ``/v1/forms`` with a schema, the official ``openai``
client, streamed denoising, and 400s in OpenAI's error shape for what cannot be enforced."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
jsonschema = pytest.importorskip("jsonschema")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import Echo, loaded, tiny_config  # noqa: E402
from test_server import sse_events  # noqa: E402
from test_speculative import Counting  # noqa: E402

from unmask.model import Transformer  # noqa: E402
from unmask.server import ServerLimits, create_app  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "book": {"enum": ["Genesis", "Exodus"]},
        "chapter": {"type": "integer", "minimum": 1, "maximum": 50},
        "ok": {"type": "boolean"},
    },
    "required": ["book", "chapter", "ok"],
    "additionalProperties": False,
}
torch.manual_seed(0)
MODEL = Transformer(tiny_config(max_seq_len=160)).eval()
APP = create_app(loaded(MODEL), chat_template="plain")


@pytest.fixture(scope="module")
def client():
    with TestClient(APP) as c:
        yield c


def test_chat_response_format_json_schema_validates(client):
    rf = {"type": "json_schema", "json_schema": {"name": "ref", "schema": SCHEMA, "strict": True}}
    for seed in range(1):
        r = client.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "A verse?"}],
                "response_format": rf,
                "max_tokens": 24,
                "seed": seed,
                "temperature": 1.0,
                "steps": 6,
            },
        )
        assert r.status_code == 200, r.text
        content = r.json()["choices"][0]["message"]["content"]
        jsonschema.validate(json.loads(content), SCHEMA)


def test_completions_guided_regex_choice_and_json_object(client):
    base = {"prompt": "Answer: ", "max_tokens": 8, "steps": 4, "seed": 1, "temperature": 1.0}
    r = client.post("/v1/completions", json={**base, "guided_regex": "[0-9]{2}-[a-c]+"})
    assert r.status_code == 200, r.text
    assert re.fullmatch("[0-9]{2}-[a-c]+", r.json()["choices"][0]["text"])
    r = client.post("/v1/completions", json={**base, "guided_choice": ["yes", "no"]})
    assert r.json()["choices"][0]["text"] in ("yes", "no")
    r = client.post(
        "/v1/completions",
        json={**base, "max_tokens": 20, "response_format": {"type": "json_object"}},
    )
    assert isinstance(json.loads(r.json()["choices"][0]["text"]), dict)


def test_infill_and_forms_take_the_same_constraints(client):
    r = client.post(
        "/v1/infill",
        json={
            "template": "Ref: [MASK:24] end",
            "guided_json": SCHEMA,
            "steps": 4,
            "seed": 2,
            "temperature": 1.0,
        },
    )
    assert r.status_code == 200, r.text
    gap = r.json()["gaps"][0]
    jsonschema.validate(json.loads(gap["text"]), SCHEMA)
    assert r.json()["text"] == f"Ref: {gap['text']} end"
    assert r.json()["text"][gap["start"]:gap["end"]] == gap["text"]  # as a plain infill's gap
    assert r.json()["candidates"] == [] and r.json()["length_mode"] is None
    r = client.post("/v1/forms", json={"schema": SCHEMA, "steps": 4, "seed": 3})
    assert r.status_code == 200, r.text
    jsonschema.validate(r.json()["value"], SCHEMA)


def test_streamed_denoising_shows_the_form_filling_in(client):
    r = client.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "x"}],
            "guided_json": SCHEMA,
            "max_tokens": 24,
            "stream": True,
            "stream_denoising": True,
            "steps": 4,
        },
    )
    assert r.status_code == 200, r.text
    events = sse_events(r.text)
    steps = [json.loads(d) for e, d in events if e == "denoising.step"]
    assert len(steps) >= 2
    chunks = [json.loads(d) for e, d in events if e is None and d != "[DONE]"]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    jsonschema.validate(json.loads(content), SCHEMA)


@pytest.mark.parametrize(
    "body,param,message",
    [
        ({"guided_json": {"type": "integer", "multipleOf": 2}}, "guided_json", "multipleOf"),
        ({"guided_regex": "(?<=a)b"}, "guided_regex", "rejects it"),
        ({"guided_regex": "a{9000}"}, "guided_regex", "too large"),
        ({"response_format": {"type": "yaml"}}, "response_format", "not one of text"),
        ({"guided_regex": "a", "guided_choice": ["b"]}, "guided_choice", "one structured"),
        ({"guided_json": '{"items": ' * 3000 + "{}" + "}" * 3000}, "guided_json",
         "nested too deep"),
        ({"guided_json": {"enum": []}}, "guided_json", "enum must be a non-empty list"),
        ({"response_format": {"type": "json_object"}, "stop": ["{"]}, "stop",
         "stop does not apply with response_format"),
        ({"guided_choice": ["yes", "yes please"], "stop": "s"}, "stop", "does not apply"),
    ],
)
def test_unenforceable_constraints_are_400_in_openai_shape(client, body, param, message):
    r = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 8, **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and message in err["message"] and "\n" not in err["message"]


@pytest.mark.parametrize("guided", [{"guided_choice": ["yes", "no"]},
                                    {"response_format": {"type": "json_object"}}])
@pytest.mark.parametrize(
    "body,param,message",
    [
        ({"top_p": 0.5}, "top_p", "autoregressive checkpoints only"),
        ({"threshold": 0.5}, "threshold", "threshold is an option of policy 'threshold'"),
        ({"stream_denoising": True}, "stream_denoising", "needs stream: true"),
        ({"stream_options": {"include_usage": False}}, "stream_options", "when 'stream' is"),
        ({"policy": "nope"}, "policy", "unknown policy"),
        ({"cache": "nope"}, "cache", "unknown cache"),
        ({"n": 99}, "n", "n must be <= 8"),
    ],
)
def test_structured_output_passes_the_checks_of_plain_completions(client, guided, body, param,
                                                                  message):
    """The same 400 with and without structured output (they were accepted and ignored)."""
    for extra in ({}, guided):
        for url, prompt in (("/v1/completions", {"prompt": "x"}),
                            ("/v1/chat/completions",
                             {"messages": [{"role": "user", "content": "x"}]})):
            r = client.post(url, json={**prompt, "max_tokens": 8, **extra, **body})
            assert r.status_code == 400, (url, extra, r.text)
            err = r.json()["error"]
            assert err["param"] == param and message in err["message"], (url, extra, err)


def _counters(client) -> dict[str, float]:
    lines = client.get("/metrics").text.splitlines()
    return {k: float(v) for k, v in (line.split(" ") for line in lines if line[:1] != "#" and line)
            if k in ("unmask_prompt_tokens_total", "unmask_completion_tokens_total")}


@pytest.mark.parametrize("guided", [{"guided_regex": "[0-9]{1,3}"},
                                    {"response_format": {"type": "json_object"}}])
def test_structured_output_usage_counts_the_answer_not_the_canvas(client, guided, caplog):
    """``completion_tokens`` is the returned text's tokens (it was the canvas, ``max_tokens``
    wide with its padding), plain and streamed, and it is counted in the token metrics and
    the access log as a plain completion's."""
    import logging

    caplog.set_level(logging.INFO, logger="unmask.server.access")
    tok = loaded(MODEL).tokenizer
    body = {"prompt": "Year:", "max_tokens": 24, "steps": 6, **guided}
    before = _counters(client)
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    text, use = r.json()["choices"][0]["text"], r.json()["usage"]
    n = len(tok.encode(text))
    assert n <= 3 if "guided_regex" in guided else n <= 24
    assert use == {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}
    after = _counters(client)
    assert after["unmask_prompt_tokens_total"] - before["unmask_prompt_tokens_total"] == 5
    assert after["unmask_completion_tokens_total"] - before["unmask_completion_tokens_total"] == n
    lines = [r.getMessage() for r in caplog.records if r.name == "unmask.server.access"
             and "/v1/completions" in r.getMessage()]
    assert f"rows=1 prompt_tokens=5 completion_tokens={n}" in lines[-1], lines
    _, streamed, streamed_use = _streamed_content(client, "/v1/completions", body)
    assert streamed == text and streamed_use == use
    assert _counters(client)["unmask_completion_tokens_total"] == after[
        "unmask_completion_tokens_total"] + n


def _streamed_content(client, url, body):
    """(content chunks, the joined text, usage) of a streamed completions / chat request."""
    r = client.post(url, json={**body, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200, r.text
    chunks = [json.loads(d) for e, d in sse_events(r.text) if e is None and d != "[DONE]"]
    usage = chunks[-1]["usage"]
    parts = []
    for c in chunks:
        for choice in c["choices"]:
            part = choice["delta"].get("content") if "delta" in choice else choice["text"]
            if part:
                parts.append(part)
    return parts, "".join(parts), usage


@pytest.mark.parametrize(
    "url,body",
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "A verse?"}], "guided_json": SCHEMA},
        ),
        ("/v1/completions", {"prompt": "Code: ", "guided_regex": "[a-z]{3}-[0-9]{3}"}),
    ],
)
def test_guided_stream_fills_in_and_ends_in_the_unstreamed_answer(client, url, body):
    body = {**body, "max_tokens": 12, "steps": 8, "seed": 5, "temperature": 1.0}
    r = client.post(url, json=body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    answer = choice["message"]["content"] if "message" in choice else choice["text"]
    parts, streamed, usage = _streamed_content(client, url, body)
    assert streamed == answer and usage == r.json()["usage"]
    assert len(parts) > 1  # the text arrives as it fills in, not as one chunk after the run


def test_answer_so_far_follows_a_form_filling_in():
    """On a canvas filled one hole at a time (padding spaces after a short value), the final
    text grows piece by piece and is the compact JSON answer at the end."""
    from unmask.infill.schema import constraint_form
    from unmask.server.routes.guided import AnswerSoFar

    state = APP.state.server
    form, parse = constraint_form(state.tok, json_schema=SCHEMA, max_tokens=8)
    so_far = AnswerSoFar(state, form, parse, 2, "guided_json")
    mask = state.cfg.mask_id
    row = [5, 6] + [mask] * (so_far.pieces[-1][1] - 2)
    for start, end, piece in so_far.pieces:
        if isinstance(piece, str):
            row[start:end] = state.tok.encode(piece)
    assert so_far.text(row) == so_far.pieces[0][2]  # the skeleton before the first value
    values = {0: '"Exodus"', 1: "7", 2: "true"}  # a byte tokenizer: no space taken in
    grown = []
    for k, text in values.items():
        start, end, _ = next(p for p in so_far.pieces if p[2] == k)
        ids = state.tok.encode(text)
        row[start:end] = ids + state.tok.encode(" ") * (end - start - len(ids))
        grown.append(so_far.text(row))
    assert grown[-1] == json.dumps({"book": "Exodus", "chapter": 7, "ok": True})
    assert grown[0] != grown[1] != grown[2] and grown[2].startswith(grown[1])


def test_openai_client_response_format():
    openai = pytest.importorskip("openai")
    pytest.importorskip("uvicorn")
    from test_server_openai import live_server

    with (
        live_server(APP) as port,
        openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=30
        ) as c,
    ):
        reply = c.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Which verse?"}],
            max_tokens=24,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "ref", "schema": SCHEMA, "strict": True},
            },
            extra_body={"steps": 4},
        )
        jsonschema.validate(json.loads(reply.choices[0].message.content), SCHEMA)


def test_no_regex_servers_refuse_guided_regex():
    from unmask.server import ServerLimits

    app = create_app(loaded(MODEL), limits=ServerLimits(allow_regex=False))
    with TestClient(app) as c:
        r = c.post("/v1/completions", json={"prompt": "x", "guided_regex": "[ab]+"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "guided_regex"


@pytest.fixture(scope="module")
def own_client():
    """A client of an app of its own (``APP``'s engine is closed by the live-server test)."""
    with TestClient(create_app(loaded(MODEL), chat_template="plain")) as c:
        yield c


@pytest.mark.parametrize(
    "rf,param,code,message",
    [
        ({"type": "json_schema", "json_schema": {"schema": SCHEMA}},
         "response_format.json_schema.name", "missing_field",
         "Missing required parameter: 'response_format.json_schema.name'."),
        ({"type": "json_schema", "json_schema": {"name": "a b", "schema": SCHEMA}},
         "response_format.json_schema.name", "invalid_value", "letters, digits"),
        ({"type": "json_schema", "json_schema": {"name": "x" * 65, "schema": SCHEMA}},
         "response_format.json_schema.name", "invalid_value", "1 to 64"),
        ({"type": "json_schema", "json_schema": {"name": 7, "schema": SCHEMA}},
         "response_format.json_schema.name", "invalid_value", "expected a string"),
        ({"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA,
                                                 "strict": "yes"}},
         "response_format.json_schema.strict", "invalid_value", "expected a boolean"),
        ({"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA, "foo": 1}},
         "response_format.json_schema.foo", "unknown_field", "Unknown parameter"),
        ({"type": "json_schema", "json_schema": {"name": "r"}},
         "response_format.json_schema.schema", "invalid_value", "JSON Schema object"),
        ({"type": "json_schema"}, "response_format.json_schema", "missing_field",
         "Missing required parameter: 'response_format.json_schema'."),
        ({"type": "json_object", "json_schema": {"name": "r", "schema": SCHEMA}},
         "response_format.json_schema", "unknown_field", "with type 'json_object'"),
        ({}, "response_format.type", "missing_field", "'response_format.type'"),
        ({"type": 3}, "response_format", "invalid_value", "not one of text"),
    ],
)
def test_response_format_is_checked_as_openai_checks_it(own_client, rf, param, code, message):
    """OpenAI requires ``json_schema.name`` (and refuses unknown keys and mistyped ones); a
    ``json_schema`` without a name was accepted. The same 400 on every endpoint that takes
    ``response_format``."""
    for url, body in (("/v1/completions", {"prompt": "x", "max_tokens": 8}),
                      ("/v1/chat/completions",
                       {"messages": [{"role": "user", "content": "x"}], "max_tokens": 8}),
                      ("/v1/infill", {"template": "x [MASK:8]"})):
        r = own_client.post(url, json={**body, "response_format": rf})
        assert r.status_code == 400, (url, r.text)
        err = r.json()["error"]
        assert (err["param"], err["code"]) == (param, code), (url, err)
        assert message in err["message"] and "\n" not in err["message"], err


def test_response_format_with_a_name_and_null_options_is_served(own_client):
    client = own_client
    rf = {"type": "json_schema",
          "json_schema": {"name": "ref-1_x", "schema": SCHEMA, "strict": None,
                          "description": "a reference"}}
    r = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 24, "steps": 4,
                                             "response_format": rf})
    assert r.status_code == 200, r.text
    jsonschema.validate(json.loads(r.json()["choices"][0]["text"]), SCHEMA)
    r = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 4,
                                             "response_format": {"type": "text"}})
    assert r.status_code == 200, r.text


def test_with_a_drafter_structured_output_forms_and_infill_use_the_model_alone():
    """``--draft`` drafts for completions and chat only: structured output, ``/v1/forms`` and
    ``/v1/infill`` fill a form under automata with the causal model alone (the drafter runs
    no forward pass), so only the model's context bounds them, not the drafter's shorter one
    (which plain completions keep to); each answers as the same server without a drafter."""
    from test_speculative_draft import loaded as loaded_as
    from test_speculative_draft import transformer

    ar = loaded_as(transformer("causal", 11))  # context 64
    short = Transformer(dataclasses.replace(transformer("bidirectional", 12).config,
                                            max_seq_len=32)).double().eval()
    drafter = Counting(short)
    guided = {"prompt": "hello", "max_tokens": 40, "guided_regex": "[a-c]{3,30}"}  # 5 + 40 > 32
    form = {"form": {"n": "<int>", "word": "<text:2-20>"}}
    infill = {"template": "hello [MASK:30]", "guided_choice": ["yes", "no"]}  # no FIM: at the end
    answers = []
    for draft in (loaded_as(drafter), None):
        with TestClient(create_app(ar, draft=draft)) as c:
            got = [c.post("/v1/completions", json=guided), c.post("/v1/forms", json=form),
                   c.post("/v1/infill", json=infill)]
            assert [r.status_code for r in got] == [200] * 3, [r.text for r in got]
            answers.append([got[0].json()["choices"], got[1].json()["value"],
                            got[2].json()["text"]])
            r = c.post("/v1/completions", json={**guided, "max_tokens": 60})  # 5 + 60 > 64
            assert r.status_code == 400 and "model's context of 64" in r.text, r.text
            if draft is not None:
                r = c.post("/v1/completions", json={"prompt": "hello", "max_tokens": 40})
                assert r.status_code == 400 and "drafter's context of 32" in r.text, r.text
    assert drafter.calls == 0
    assert answers[0] == answers[1]


@pytest.mark.parametrize("path,body,source", [
    ("/v1/completions", {"prompt": "x", "guided_regex": "[a-z]{10}", "max_tokens": 2},
     "guided_regex"),
    ("/v1/completions", {"prompt": "x", "guided_regex": "[a-z]{10}", "max_tokens": 2,
                         "stream": True}, "guided_regex"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "response_format": {"type": "json_object"}, "max_tokens": 1},
     "response_format"),
    ("/v1/infill", {"template": "a [MASK:2] b", "guided_regex": "[a-z]{10}"}, "guided_regex"),
])
def test_an_impossible_constraint_is_refused_in_the_clients_words(path, body, source):
    """It said "guided_regex: hole $ <regex>: no sequence of 2 tokens satisfies it": ``$`` and
    ``<regex>`` are the form library's names for the constraint's one hole, which the client
    never wrote (and a streamed request's 400 had no ``param``)."""
    with TestClient(create_app(loaded(MODEL), chat_template="plain")) as c:
        r = c.post(path, json=body)
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == source, err
    assert "$" not in err["message"] and "hole" not in err["message"], err
    assert err["message"].startswith(f"{source}: no sequence of "), err


def test_guided_choice_keeps_to_a_sent_max_tokens():
    """guided_choice answered its longest choice whatever max_tokens said (the hole's width is
    the longest choice's tokens): a sent max_tokens now leaves out the choices it has no room
    for, and is a 400 naming it when none fits. Not sent: every choice, as before."""
    app = create_app(loaded(Echo(tiny_config(256))), limits=ServerLimits())
    with TestClient(app) as c:
        def post(body):
            return c.post("/v1/completions", json={"prompt": "Hi", **body})

        r = post({"guided_choice": ["abcdefgh"], "max_tokens": 2})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "max_tokens" and "no choice fits in max_tokens (2)" in err["message"]
        assert "shortest is 8 tokens" in err["message"]
        r = post({"guided_choice": ["abcdefgh", "xy"], "max_tokens": 2})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == "xy", r.text
        assert r.json()["nfe"] <= 2  # a hole of 2 tokens, not the longest choice's 8
        r = post({"guided_choice": ["abcdefghijklmnopqrstuvwxyz"]})  # not sent: not 16
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == "abcdefghijklmnopqrstuvwxyz"


def test_structured_output_without_steps_runs_at_most_max_steps():
    """Structured output that sends no steps ran one step per masked token, past the
    server's --max-steps (24 forwards under a limit of 8), as infill and forms did."""
    app = create_app(loaded(Echo(tiny_config(256))), limits=ServerLimits(max_steps=8))
    with TestClient(app) as c:
        r = c.post("/v1/completions", json={"prompt": "Hi", "guided_regex": "[a-z]{20}",
                                            "max_tokens": 24})
        assert r.status_code == 200, r.text
        assert re.fullmatch("[a-z]{20}", r.json()["choices"][0]["text"])
        assert r.json()["nfe"] == 8, r.json()
        r = c.post("/v1/completions", json={"prompt": "Hi", "guided_regex": "[a-z]{20}",
                                            "max_tokens": 24, "steps": 9})
        assert r.status_code == 400 and r.json()["error"]["param"] == "steps"


@pytest.mark.parametrize("path,body,param", [
    ("/v1/completions", {"prompt": "Hi"}, "guided_json"),
    ("/v1/completions", {"prompt": "Hi", "stream": True}, "guided_json"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}, "guided_json"),
])
def test_a_form_too_long_for_the_context_is_context_length_exceeded(path, body, param):
    """A structured-output form that cannot fit the context was ``code invalid_value`` on
    completions and chat (as a syntax error) while /v1/forms said
    ``context_length_exceeded`` for the same schema: a client could not tell "shorten it"."""
    schema = {"type": "object", "required": [f"k{i}" for i in range(12)],
              "properties": {f"k{i}": {"type": "string", "maxLength": 5} for i in range(12)}}
    app = create_app(loaded(Echo(tiny_config(64))), chat_template="plain")
    with TestClient(app) as c:
        r = c.post(path, json={**body, "max_tokens": 4, param: schema})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "context_length_exceeded" and err["param"] == param, err
        assert "the model's context" in err["message"]


def test_a_causal_form_fits_prompt_and_max_tokens_exactly():
    """Structured output on a causal checkpoint: a prompt + max_tokens that fill the context
    exactly fills (the end-of-text token after a full answer is forced, taken without a
    forward: it takes no room, and was counted); one more is a max_tokens 400 (not the
    form's 'fewer or shorter holes', which names nothing the request sent)."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_config(max_seq_len=64), attention="causal", objective="ar")
    with TestClient(create_app(loaded(Transformer(cfg).eval()))) as c:
        body = {"prompt": "A", "temperature": 0, "response_format": {"type": "json_object"}}
        ok = c.post("/v1/completions", json={**body, "max_tokens": 63})
        assert ok.status_code == 200, ok.text
        r = c.post("/v1/completions", json={**body, "max_tokens": 64})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["param"] == "max_tokens" and err["code"] == "context_length_exceeded"
        assert "holes" not in err["message"]


@pytest.mark.parametrize(
    "url,body",
    [
        ("/v1/chat/completions",
         {"messages": [{"role": "user", "content": "A verse?"}], "guided_json": SCHEMA}),
        ("/v1/completions", {"prompt": "Code: ", "guided_regex": "[a-z]{3}-[0-9]{3}"}),
    ],
)
def test_structured_output_reports_the_seed_that_repeats_it(own_client, url, body):
    """A completion reports the seed it ran with (drawn where a sampled request sent none);
    a structured-output response had no ``seed``, so its sampled answer could not be
    repeated. Now it reports one, in the response and in every streamed chunk: sent back, it
    gives the same answer; a sent seed is reported as sent, a greedy request's is null."""
    body = {**body, "max_tokens": 12, "steps": 8, "temperature": 1.0}

    def answer(out: dict) -> str:
        choice = out["choices"][0]
        return choice["message"]["content"] if "message" in choice else choice["text"]

    r = own_client.post(url, json=body)
    assert r.status_code == 200, r.text
    seed = r.json()["seed"]
    assert isinstance(seed, int) and not isinstance(seed, bool)
    again = own_client.post(url, json={**body, "seed": seed}).json()
    assert again["seed"] == seed and answer(again) == answer(r.json())
    assert own_client.post(url, json={**body, "temperature": 0}).json()["seed"] is None
    s = own_client.post(url, json={**body, "seed": 9, "stream": True})
    chunks = [json.loads(d) for _, d in sse_events(s.text) if d and d != "[DONE]"]
    assert chunks and {c.get("seed") for c in chunks if "choices" in c} == {9}
