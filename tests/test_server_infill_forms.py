"""``/v1/infill`` with the gap constraints of ``unmask infill`` and ``/v1/forms`` over
``unmask.infill.fill_form``: the same results as the library (and so the CLI), plain and
streamed, and one-line 400s naming the field for bad constraints and forms."""

from __future__ import annotations

import json
import re

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import loaded, tiny_config  # noqa: E402
from test_server import sse_events  # noqa: E402

from unmask.config import SampleConfig  # noqa: E402
from unmask.errors import UserError  # noqa: E402
from unmask.infill import InfillOptions, fill_form, infill, parse_template  # noqa: E402
from unmask.infill.options import constrain_gaps  # noqa: E402
from unmask.model import Transformer  # noqa: E402
from unmask.server import ServerLimits, create_app  # noqa: E402
from unmask.tokenizer import byte_tokenizer  # noqa: E402

TOK = byte_tokenizer()
torch.manual_seed(1)
MODEL = Transformer(tiny_config(max_seq_len=128)).eval()


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(loaded(MODEL))) as c:
        yield c


def streamed(client: TestClient, path: str, body: dict) -> tuple[list[dict], dict]:
    """(denoising.step events, the final body) of a streamed infill or form."""
    r = client.post(path, json={**body, "stream": True})
    assert r.status_code == 200, r.text
    events = sse_events(r.text)
    assert events[-1] == (None, "[DONE]") and events[-2][0] is None
    steps = [json.loads(d) for e, d in events[:-2]]
    assert [e for e, _ in events[:-2]] == ["denoising.step"] * len(steps)
    return steps, json.loads(events[-2][1])


TEMPLATE = "City: [MASK:city], code [MASK:3], tag [MASK]."
CONSTRAINTS = {"choices": {"city": ["Paris", "Rome", "Oslo"]}, "charset": {"2": "digits"},
               "regex": {"3": "[A-Z]{2}"}, "ban": ["Q"]}


def test_infill_constraints_hold_and_match_the_library(client):
    body = {"template": TEMPLATE, **CONSTRAINTS, "steps": 4, "temperature": 0}
    r = client.post("/v1/infill", json=body)
    assert r.status_code == 200, r.text
    res = r.json()
    city, digits, tag = (g["text"] for g in res["gaps"])
    assert city in ("Paris", "Rome", "Oslo") and re.fullmatch(r"\d{3}", digits)
    assert re.fullmatch(r"[A-PR-Z]{2}", tag)
    assert res["text"] == f"City: {city}, code {digits}, tag {tag}."
    # what unmask infill --choices city=Paris|Rome|Oslo --charset 2=digits ... computes
    segments = constrain_gaps(parse_template(TEMPLATE), ban=["Q"],
                              choices=[("city", ["Paris", "Rome", "Oslo"])],
                              charset=[("2", "digits")], regex=[("3", "[A-Z]{2}")])
    lib = infill(MODEL, TOK, segments, SampleConfig(gen_length=1, steps=4))
    assert res["text"] == lib.text and res["nfe"] == lib.nfe
    # streamed: the steps over the whole canvas, then exactly the plain body
    steps, final = streamed(client, "/v1/infill", body)
    assert final == res
    # the last run fills one row per candidate length; the answer is one of them
    last = steps[-1]["choices"]
    assert all(c["masked"] == 0 for c in last)
    assert res["text"] in ["".join(c["tokens"]) for c in last]


@pytest.mark.parametrize("score", ["total", "per_token", "context"])
def test_infill_length_options_match_the_library(client, score):
    template = "The cat [MASK:1-5] on the mat."
    body = {"template": template, "steps": 4, "temperature": 0, "length_score": score,
            "elbo_samples": 4, "max_candidates": 3}
    r = client.post("/v1/infill", json=body)
    assert r.status_code == 200, r.text
    res = r.json()
    lib = infill(MODEL, TOK, template, SampleConfig(gen_length=1, steps=4),
                 options=InfillOptions(length_score=score, elbo_samples=4, max_candidates=3))
    assert res["text"] == lib.text and res["length_mode"] == "elbo"
    assert [c["lengths"] for c in res["candidates"]] == [[1], [3], [5]]
    assert [(c["text"], c["elbo"], c["nll"], c["context"]) for c in res["candidates"]] == [
        (c.text, c.elbo, c.nll, c.context) for c in lib.candidates]
    key = {"total": "nll", "per_token": "elbo", "context": "context"}[score]
    assert min(res["candidates"], key=lambda c: c[key])["text"] == res["text"]


@pytest.mark.parametrize(("extra", "param", "message"), [
    ({"length_score": "mean"}, "length_score", "Input should be 'total', 'per_token' or 'context'"),
    ({"elbo_samples": 0}, "elbo_samples", "greater than or equal to 1"),
    ({"max_candidates": 100}, "max_candidates", "less than or equal to 16"),
    # in the request's words, naming the field (it said "use --length-mode elbo", no param)
    ({"length_mode": "empty"}, "length_mode", "length_mode 'empty' needs a model trained with"),
])
def test_bad_length_options_are_400s(client, extra, param, message):
    r = client.post("/v1/infill", json={"template": "The [MASK:1-3] sat.", **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert message in err["message"] and err["param"] == param, err
    assert "\n" not in err["message"] and "--length-mode" not in err["message"]


def test_a_template_over_the_search_limit_is_a_400_without_advice_a_client_cannot_take(client):
    """The length search's limit is the server's (``max_search_calls`` is no request field):
    the refusal names the limit and the ways a client has (narrower ranges, fewer
    candidates), not "raise max_search_calls". (Nine such gaps fit since the search's fills
    run the library's steps, 64 at most, as ``unmask infill``'s: twelve do not.)"""
    r = client.post("/v1/infill", json={"template": "[MASK:1-16] " * 12})
    assert r.status_code == 400, r.text
    msg = r.json()["error"]["message"]
    assert "over the limit of 256 (the server's --max-search-calls)" in msg, msg
    assert "max_candidates" in msg, msg
    assert "raise" not in msg, msg


@pytest.mark.parametrize(("extra", "param", "message"), [
    ({"choices": {"town": ["a"]}}, "choices.town", "choices 'town': no gap 'town' in the template"),
    ({"regex": {"1": "(?=a)b"}}, "regex.1", "regex '(?=a)b': the regex engine"),
    ({"charset": {"city": "hex"}}, "charset.city", "unknown character class 'hex'"),
    ({"charset": {"1": "digits", "city": "alpha"}}, "charset", "is given twice"),
    ({"ban": [""]}, "ban", "ban: the word is empty"),
    ({"choices": {"city": []}}, "choices.city", "List should have at least 1 item"),
    ({"choices": {"city": "Paris|Rome"}}, "choices.city", "valid list"),
])
def test_bad_constraints_are_400s_naming_the_field(client, extra, param, message):
    r = client.post("/v1/infill", json={"template": TEMPLATE, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert message in err["message"] and err["param"] == param, err
    assert "\n" not in err["message"]
    r = client.post("/v1/infill", json={"template": TEMPLATE, "stream": True, **extra})
    assert r.status_code == 400 and r.json()["error"]["message"] == err["message"]


def test_anchors_at_a_patterns_ends_change_nothing(client):
    """docs/infill.md: a leading ^ and a trailing $ are accepted and change nothing, also
    where the pattern is wrapped (a gap that takes in a space, a form's value, a guided
    regex); they made every such constraint impossible."""
    for plain, anchored in (
        ({"template": "x [MASK:2] y", "regex": {"1": "[a-c]+"}},
         {"template": "x [MASK:2] y", "regex": {"1": "^[a-c]+$"}}),
        ({"template": "a [MASK:4] b", "guided_regex": "[0-9]+"},
         {"template": "a [MASK:4] b", "guided_regex": "^[0-9]+$"}),
    ):
        want = client.post("/v1/infill", json={**plain, "steps": 2})
        got = client.post("/v1/infill", json={**anchored, "steps": 2})
        assert want.status_code == got.status_code == 200, got.text
        assert got.json()["text"] == want.json()["text"]
    r = client.post("/v1/forms", json={"form": {"a": "<regex:^ab$>"}, "steps": 2})
    assert r.status_code == 200, r.text
    assert r.json()["value"] == {"a": "ab"}
    r = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 4,
                                             "guided_regex": "^[0-9]{2}$"})
    assert r.status_code == 200, r.text
    assert re.fullmatch(r"[0-9]{2}", r.json()["choices"][0]["text"])
    # each alternative's own anchors (only the outer two were stripped: ``ab$|^cd`` matched
    # nothing, a 400)
    r = client.post("/v1/forms", json={"form": {"a": "<regex:^ab$|^cd$>"}, "steps": 2})
    assert r.status_code == 200, r.text
    assert r.json()["value"]["a"] in ("ab", "cd")


@pytest.mark.parametrize("template", ["[MASK:0-3]", "[MASK:0-1][MASK:0-1]"])
def test_a_template_of_optional_gaps_only_is_filled_with_something(client, template):
    """Nothing at all is not a candidate (its per-token score divided by zero: a 500)."""
    r = client.post("/v1/infill", json={"template": template, "steps": 2})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["text"] and all(sum(c["lengths"]) > 0 for c in res["candidates"])
    assert res["text"] == infill(MODEL, TOK, template, SampleConfig(gen_length=1, steps=2)).text


def test_unpaired_surrogates_in_forms_schemas_and_guided_json_are_400s(client):
    """Valid JSON, no text a tokenizer can encode: they were 500s."""
    bad = "\ud800"
    for path, body in (("/v1/forms", {"form": {"a": f"<choice:{bad}|x>"}}),
                       ("/v1/forms", {"form": {bad: "<bool>"}}),
                       ("/v1/forms", {"schema": {"enum": [bad, "x"]}}),
                       ("/v1/completions", {"prompt": "x", "max_tokens": 4,
                                            "guided_json": {"enum": [bad, "x"]}}),
                       ("/v1/completions", {"prompt": "x", "max_tokens": 4,
                                            "guided_choice": [bad, "x"]})):
        r = client.post(path, content=json.dumps(body),  # escaped: \\ud800 in the JSON
                        headers={"content-type": "application/json"})
        assert r.status_code == 400, (body, r.text)
        message = r.json()["error"]["message"]
        assert "unpaired surrogate" in message or "unicode string" in message, message


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"template": "a [MASK:5-8] b", "guided_choice": ["x", "y"]}, "template", "not a range"),
    ({"template": "a [MASK:1] b", "guided_json": {"type": "string", "minLength": 30}},
     "guided_json", "a value's shortest answer takes 32 tokens; the gap [MASK:1] bounds"),
])
def test_guided_infill_refuses_what_its_gap_cannot_hold(client, body, param, message):
    """A range's minimum and a constraint longer than the gap were ignored (a 1-token answer
    in [MASK:5-8], 4 tokens in [MASK:1])."""
    r = client.post("/v1/infill", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert message in err["message"] and err["param"] == param, err
    r = client.post("/v1/infill", json={"template": "a [MASK:8] b", "guided_choice": ["x", "yy"]})
    assert r.status_code == 200 and r.json()["gaps"][0]["text"] in ("x", "yy")


def test_regex_constraints_can_be_turned_off():
    with TestClient(create_app(loaded(MODEL), limits=ServerLimits(allow_regex=False))) as c:
        r = c.post("/v1/infill", json={"template": TEMPLATE, "regex": {"1": "a+"}})
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported"
        r = c.post("/v1/forms", json={"form": {"a": ["<int>", "<regex:[ab]+>"]}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "form"
        assert c.post("/v1/forms", json={"form": {"a": "<bool>"}}).status_code == 200


FORM = {"name": "<text:2-6>", "age": "<int>", "city": "<choice:Paris|Rome>", "ok": "<bool>",
        "fixed": [1, "kept"]}


def test_forms_fill_like_fill_form_plain_and_streamed(client):
    body = {"form": FORM, "steps": 6, "temperature": 0}
    r = client.post("/v1/forms", json=body)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["object"] == "form" and json.loads(res["text"]) == res["value"]
    value = res["value"]
    assert set(value) == set(FORM) and value["fixed"] == [1, "kept"]
    assert value["city"] in ("Paris", "Rome") and isinstance(value["ok"], bool)
    assert isinstance(value["age"], int) and 2 <= len(value["name"]) <= 6
    assert [h["path"] for h in res["holes"]] == ["$.name", "$.age", "$.city", "$.ok"]
    lib = fill_form(MODEL, TOK, FORM, SampleConfig(gen_length=1, steps=6))
    assert res["value"] == lib.value and res["nfe"] == lib.nfe
    # the form as JSON text, as unmask fill-form reads it, gives the same
    assert client.post("/v1/forms", json={**body, "form": json.dumps(FORM)}).json() == res
    steps, final = streamed(client, "/v1/forms", body)
    assert final == res
    assert [s["step"] for s in steps[:6]] == [1, 2, 3, 4, 5, 6]  # then repairs, if any
    assert steps[-1]["choices"][0]["masked"] == 0


@pytest.mark.parametrize(("form", "message"), [
    ('{"a": "<int>"', "form: invalid JSON at line 1 column"),
    ({"a": 1}, "no holes"),
    ({"a": "<date>"}, "<date>"),
    ("[" * 3000 + '"<int>"' + "]" * 3000, "form: JSON nested too deep"),
    ('{"a": "<int>", "b": ' + "9" * 5000 + "}", "form: invalid JSON"),
])
def test_bad_forms_are_400s(client, form, message):
    for stream in (False, True):
        r = client.post("/v1/forms", json={"form": form, "stream": stream})
        assert r.status_code == 400, r.text
        assert message in r.json()["error"]["message"]


def test_forms_on_causal_checkpoints_fill_left_to_right_and_unknown_fields():
    from unmask.config import model_preset
    torch.manual_seed(0)
    causal = Transformer(model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=32,
                                      attention="causal", **TOK.special_ids())).eval()
    with TestClient(create_app(loaded(causal))) as c:
        # Once refused (400 unsupported); causal checkpoints now fill forms left to right
        # under the same automata (unmask.infill.ordered).
        r = c.post("/v1/forms", json={"form": {"a": "<int>"}})
        assert r.status_code == 200 and isinstance(r.json()["value"]["a"], int)
        r = c.post("/v1/forms", json={"form": {"a": "<int>"}, "template": "x"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_field"


@pytest.mark.parametrize("path,body", [
    ("/v1/infill", {"template": "a [MASK:3] b"}),
    ("/v1/infill", {"template": "a [MASK:3] b", "guided_choice": ["xy", "z"]}),
    ("/v1/forms", {"form": {"a": "<choice:x|y>"}}),
    ("/v1/forms", {"schema": {"enum": ["x", "y"]}}),
    ("/v1/edit", {"text": "abc", "spans": [[0, 1]]}),
])
def test_threshold_with_another_policy_is_refused_everywhere(client, path, body):
    """As in completions: ``threshold`` sent with a policy that does not read it would do
    nothing; with policy threshold it is taken."""
    r = client.post(path, json={**body, "threshold": 0.5})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert "threshold is an option of policy 'threshold'" in err["message"], err
    assert err["param"] == "threshold", err
    r = client.post(path, json={**body, "threshold": 0.5, "policy": "threshold"})
    assert r.status_code == 200, r.text


def test_streamed_infill_at_offset_0_shows_no_hidden_line_break():
    """A gap that starts the text is filled after a locked line break (not part of the
    output): the streamed steps and the API's step callback showed it as ``tokens[0] ==
    "\\n"`` and shifted every position by one. They start at the gap, as the text does."""
    from server_helpers import random_transformer

    from unmask import api
    from unmask.tokenizer import train_bpe

    bpe = train_bpe(["The cat sat on the mat. The dog sat."] * 20, vocab_size=300)
    model = random_transformer(0, tokenizer=bpe)
    rest = bpe.encode(" sat on the mat.")
    body = {"template": "[MASK:3] sat on the mat.", "steps": 3, "temperature": 0}
    with TestClient(create_app(loaded(model, bpe))) as c:
        steps, final = streamed(c, "/v1/infill", body)
    assert final["text"].endswith(" sat on the mat.")
    for k, ev in enumerate(steps, 1):
        (choice,) = ev["choices"]
        assert len(choice["tokens"]) == 3 + len(rest), choice
        assert "".join(choice["tokens"][3:]) == " sat on the mat."
        assert choice["masked"] == 3 - k == choice["tokens"][:3].count(None)
    # the first step lists every unmasked position: the text, and one of the gap's
    assert len(steps[0]["choices"][0]["committed"]) == 1 + len(rest)
    views: list[list[int]] = []
    res = api.infill(loaded(model, bpe), body["template"], config={"steps": 3, "temperature": 0},
                     step_callback=lambda step, tokens: views.append(tokens[0].tolist()))
    assert res.text == final["text"] and len(views) == 3
    assert all(v[3:] == rest and len(v) == 3 + len(rest) for v in views)
    assert bpe.decode(views[-1][:3]).removeprefix(" ") == res.detail.gaps[0].text


WIDE = {"type": "object", "properties": {k: {"type": "string"} for k in "abcdef"},
        "required": list("abcdef")}  # 6 strings of up to max_tokens: more than the context


@pytest.mark.parametrize(("path", "body", "param", "message"), [
    ("/v1/infill", {"template": "a [MASK:0] b"}, "template", "template column 3"),
    ("/v1/infill", {"template": "a [MASK:2", "choices": {"1": ["x"]}}, "template", "column"),
    ("/v1/forms", {"form": '{"a": "<int>"'}, "form", "form: invalid JSON"),
    ("/v1/forms", {"form": {"a": "<text:1-100000>"}}, "form", "over 1000 characters"),
    ("/v1/forms", {"schema": WIDE}, "schema", "more than the model's context"),
    ("/v1/infill", {"template": "a [MASK:100] b", "guided_json": WIDE}, "guided_json",
     "more than the model's context"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 100, "guided_json": WIDE}, "guided_json",
     "more than the model's context"),
    ("/v1/infill", {"template": "word " * 150 + "[MASK:2]"}, "template",
     "template needs at least 752 tokens (750 of text), more than the model's context"),
    ("/v1/edit", {"text": "The cat sat.", "spans": [[5, 3]]}, "spans", "span 5:3 is empty"),
    ("/v1/edit", {"text": "The cat sat.", "regex": "zzz"}, "regex", "matches nothing"),
    ("/v1/edit", {"text": "The cat sat.", "lowest": 12}, "lowest",
     "lowest 12: the text has 12 tokens and its closing '.' is kept, so at most 11 can be "
     "rewritten"),
])
def test_refusals_found_on_the_worker_name_their_field(client, path, body, param, message):
    """A refusal the worker finds (a template's syntax, a form's JSON, a form too wide for the
    context, an edit span outside the text) names the field it is about, as the refusals found
    before it do: ``param`` was null. Streamed or not (``/v1/edit`` does not stream)."""
    for stream in (False, True) if path != "/v1/edit" else (False,):
        r = client.post(path, json={**body, **({"stream": True} if stream else {})})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == param and message in err["message"], (stream, err)


@pytest.mark.parametrize("template", ["Ref: [MASK:8] end", "Ref: [MASK:ref:8] end"])
def test_a_guided_gap_is_named_as_a_plain_gap(client, template):
    """``gaps[].name`` of a guided infill was ``"1"`` (or the bare name) where the same gap
    filled without a constraint is ``"gap 1 [MASK:8]"`` (``"'ref' [MASK:ref:8]"``), as
    ``unmask infill --json`` names it."""
    plain = client.post("/v1/infill", json={"template": template})
    guided = client.post("/v1/infill", json={"template": template, "guided_choice": ["a"]})
    assert plain.status_code == guided.status_code == 200, (plain.text, guided.text)
    names = [r.json()["gaps"][0]["name"] for r in (plain, guided)]
    assert names[0] == names[1] == ("gap 1 [MASK:8]" if ":ref:" not in template
                                    else "'ref' [MASK:ref:8]"), names


def test_a_bare_guided_gap_bounds_values_to_32_tokens(client):
    """As docs/serving.md says: a bare ``[MASK]`` under a constraint is ``[MASK:32]`` (an
    answer longer than one token fits), the same answer as ``[MASK:32]``."""
    body = {"guided_regex": "[0-9]{5}", "seed": 0, "temperature": 1.0, "steps": 4}
    bare = client.post("/v1/infill", json={"template": "x [MASK] y", **body})
    sized = client.post("/v1/infill", json={"template": "x [MASK:32] y", **body})
    assert bare.status_code == sized.status_code == 200, (bare.text, sized.text)
    assert re.fullmatch("[0-9]{5}", bare.json()["gaps"][0]["text"])
    assert bare.json()["text"] == sized.json()["text"]


def test_an_error_that_quotes_a_huge_value_is_cut(client):
    """A refusal that quotes the request (here the 60,000-character key of a bad hole, in its
    path; a hole's spec is quoted by its ends since session 38, and a choice that long is
    refused by its schema, 256 characters at most) sent it all back, twice: the message is
    cut at ``MAX_MESSAGE`` characters, saying how much was left out
    (``unmask.server.http.MAX_MESSAGE``, 2,000)."""
    r = client.post("/v1/forms", json={"form": {"a" * 60_000: "<wat>"}})
    assert r.status_code == 400, r.text[:300]
    err = r.json()["error"]
    assert err["param"] == "form" and err["message"].startswith("form: hole $.aaa")
    assert len(err["message"]) < 2050
    assert re.search(r"\.\.\. \(\d+ more characters\)$", err["message"]), err["message"][-80:]


def test_the_operator_sets_the_search_limit():
    """``unmask serve --max-search-calls N`` (``ServerLimits.max_search_calls``; 0: none):
    the server used the library's 256 whatever the operator wanted."""
    from unmask.infill.fill import search_calls
    from unmask.infill.template import plan_template

    template = "The [MASK:1-4] sat on [MASK:1-4]."
    plan = plan_template(parse_template(template), TOK, max_seq_len=128, max_candidates=6,
                         default_max_len=16)
    need = search_calls(plan, SampleConfig(), InfillOptions(), mask_id=TOK.mask_id,
                        pad_id=TOK.pad_id)
    for limit, status in ((need - 1, 400), (need, 200), (0, 200)):
        app = create_app(loaded(MODEL), limits=ServerLimits(max_search_calls=limit))
        with TestClient(app) as c:
            r = c.post("/v1/infill", json={"template": template})
        assert r.status_code == status, (limit, r.text)
        if status == 400:
            msg = r.json()["error"]["message"]
            assert f"needs up to {need} model calls, over the limit of {need - 1}" in msg, msg
            assert "raise" not in msg and "\n" not in msg, msg
            # not a request field: a client sending it gets "unknown field"
            assert "(max_search_calls)" not in msg and "--max-search-calls" in msg, msg
        else:  # 0: no limit (the refills of this template's gaps: none, unconstrained)
            assert r.json()["nfe"] == need and len(r.json()["candidates"]) > 1
    with pytest.raises(UserError, match="server limit max_search_calls=-1 must be at least 0"):
        ServerLimits(max_search_calls=-1)


@pytest.mark.parametrize("path,body", [
    ("/v1/infill", {"template": "a [MASK:30] b"}),
    ("/v1/infill", {"template": "a [MASK:30] b", "steps": 6}),
    ("/v1/forms", {"form": {"a": "<text:30>", "b": "<choice:yes|no>"}}),
    ("/v1/completions", {"prompt": "Q:", "max_tokens": 30,
                         "response_format": {"type": "json_object"}}),
])
def test_a_repair_stays_within_max_steps(path, body):
    """Without ``steps``, infill and forms run at most ``--max-steps`` steps, but the refill
    of a span that broke its constraint (one forward per re-masked token) came on top:
    ``a [MASK:30] b`` at ``--max-steps 10`` ran 40 forwards, the demo form 46 (36 with no
    cap at all). Now the refill gets what ``--max-steps`` leaves (``max_repair_calls``);
    past it the broken span is completed from its automaton without the model."""
    from server_helpers import Recording, random_transformer

    model = Recording(random_transformer())
    with TestClient(create_app(loaded(model), limits=ServerLimits(max_steps=10))) as c:
        r = c.post(path, json=body)
    assert r.status_code == 200, r.text
    assert 0 < len(model.sizes) <= 10, len(model.sizes)
    if path == "/v1/infill":
        out = r.json()
        assert out["nfe"] == len(model.sizes)
        assert out["repaired"] >= 1  # the gap broke its constraint and was repaired
        assert out["text"].startswith("a ") and out["text"].endswith(" b")
    elif path == "/v1/forms":
        assert set(r.json()["value"]) == {"a", "b"} and r.json()["value"]["b"] in ("yes", "no")
