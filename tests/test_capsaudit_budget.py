"""One request's patterns are bounded together, and each is compiled once per request: a
schema of 12 properties with a ``pattern`` of about 19,000 states each (under the
per-pattern limit) held the server's worker for 150 s, and each value's language was
compiled three times (its pattern alone, and its value twice)."""

from __future__ import annotations

import collections

import pytest
from server_helpers import Echo, loaded, tiny_config

from unmask.errors import UserError
from unmask.infill import automaton
from unmask.infill.forms import parse_form
from unmask.infill.schema import constraint_form, schema_form
from unmask.tokenizer import byte_tokenizer


def _wide(n: int) -> dict:
    """An object of ``n`` properties, each a string with its own pattern of ~19,000 states."""
    props = {f"p{i}": {"type": "string", "pattern": f"^{chr(65 + i)}[\\w ]{{1,60}}$"}
             for i in range(n)}
    return {"type": "object", "properties": props, "required": list(props)}


def _guard(monkeypatch) -> None:
    """The engine refuses to build any of the patterns in full (their syntax check, with
    counted runs cut short, is a DFA of a few states)."""
    import outlines_core

    real = outlines_core.Index

    def index(regex, vocabulary):
        assert "{1,60}" not in regex, "the engine was asked to build it"
        return real(regex, vocabulary)

    monkeypatch.setattr("outlines_core.Index", index)


def test_the_states_of_a_requests_patterns_are_bounded_together(monkeypatch):
    _guard(monkeypatch)
    wide = _wide(5)  # each pattern alone is under the per-pattern limit
    for p in wide["properties"].values():
        automaton.check_size(p["pattern"])
    with pytest.raises(UserError) as e:
        schema_form(wide, byte_tokenizer(), source="guided_json")
    message = str(e.value)
    from unmask.infill.automaton import MAX_DFA_STATES, MAX_REQUEST_DFA_STATES

    assert "\n" not in message and message.startswith("guided_json: too large in all")
    assert f"over {MAX_REQUEST_DFA_STATES} automaton states together" in message
    assert f"each may have {MAX_DFA_STATES}" in message
    assert "the patterns before schema at $.p4 fit" in message, message


def test_a_forms_regex_holes_are_bounded_together(monkeypatch):
    _guard(monkeypatch)
    form = {f"k{i}": f"<regex:{chr(65 + i)}[\\w ]{{1,60}}>" for i in range(5)}
    with pytest.raises(UserError, match=r"too large in all .* before hole \$\.k4 fit"):
        parse_form(form, byte_tokenizer())


def test_the_sum_counts_each_distinct_pattern_once():
    from unmask.infill.automaton import check_total

    same = [(f"at {i}", "[a-z]{1,16}") for i in range(100)]  # 19 states, compiled once
    check_total(same, "schema", limit=19)
    with pytest.raises(UserError, match=r"over 30 automaton states .* before at b fit"):
        check_total([("at a", "[a-z]{1,16}"), ("at b", "[0-9]{1,16}")], "schema", limit=30)


def test_the_server_refuses_it_before_any_compile(monkeypatch):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    with TestClient(create_app(loaded(Echo(tiny_config())), chat_template="plain")) as c:
        _guard(monkeypatch)
        r = c.post("/v1/completions", json={"prompt": "Hi", "guided_json": _wide(5)})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "guided_json" and "too large in all" in err["message"], err


def test_each_language_is_compiled_once_per_request(monkeypatch):
    monkeypatch.setenv(automaton.CACHE_ENV, "off")
    built = collections.Counter()
    index = automaton._index

    def counted(pattern, vocab, what, **kw):
        built[(pattern, vocab.size)] += 1
        return index(pattern, vocab, what, **kw)

    monkeypatch.setattr(automaton, "_index", counted)
    tok = byte_tokenizer()
    pattern = "^Q[a-z]{1,9}$"  # not compiled by another test of this process
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": pattern},
                                               "b": {"type": "string", "pattern": pattern}}}
    form, _ = constraint_form(tok, json_schema=schema, max_tokens=16)
    for _ in range(3):  # as the server reads it: the room check, the stream, the fill
        parse_form(form, tok)
    assert built and max(built.values()) == 1, built
    # the pattern alone is checked with its counted runs cut short, not compiled in full
    assert not any(p.startswith(pattern) for p, _ in built), built


def test_patterns_beside_an_enum_are_bounded_together_too(monkeypatch):
    # each enum value is checked against its pattern's automaton, compiled in check_schema
    _guard(monkeypatch)
    props = {f"p{i}": {"type": "string", "enum": [f"{chr(65 + i)}b"],
                       "pattern": f"^{chr(65 + i)}[\\w ]{{1,60}}$"} for i in range(5)}
    with pytest.raises(UserError, match="too large in all"):
        schema_form({"type": "object", "properties": props}, byte_tokenizer())
