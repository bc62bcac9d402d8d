"""A regex whose DFA explodes is refused in one line before the engine builds it: outlines-core
determinizes in native code that no timeout stops, and ``.*a.{30}`` (2^31 states) or
``[a-z]{1,60}x[a-z]{1,60}`` held a server's worker for good (no answer in 10 minutes)."""

from __future__ import annotations

import pytest
from server_helpers import Echo, loaded, tiny_config

from unmask.errors import UserError
from unmask.infill.automaton import MAX_DFA_STATES, check_regex, check_size
from unmask.infill.dfa import dfa_states

EXPLODING = [".*a.{30}", "[a-z]{1,60}x[a-z]{1,60}", "(a|b)*a(a|b){20}", "(?i)(?:.*x){2}.{40}"]


@pytest.mark.parametrize("pattern", EXPLODING)
def test_an_exploding_pattern_is_one_line_before_the_engine(pattern, monkeypatch):
    def never(*args, **kwargs):  # the engine would not come back
        raise AssertionError("the engine was asked to build it")

    monkeypatch.setattr("outlines_core.Index", never)
    for check in (check_size, check_regex):
        with pytest.raises(UserError) as e:
            check(pattern, "guided_regex")
        message = str(e.value)
        assert "\n" not in message and message.startswith("guided_regex: too large")
        assert f"over {MAX_DFA_STATES} states" in message


@pytest.mark.parametrize(("pattern", "states"), [
    # the start, START, SENTINEL and every set of the last 9 places an a was
    ("(a|b)*a(a|b){8}", 2**9 + 3),
    ("[a-z]{1,16}", 19),
    # 7 states inside a character after each `.` but last, counted 8 (dfa._SLACK)
    (".{1,200}", 201 + 200 * 8 + 2),
    (r"\d{3}-\d{4}", 172),  # \d holds digits of many scripts: states inside them
    ("(?i)hello|world", 13),
    ("(a|aa)*b", 6),
])
def test_the_count_of_common_patterns(pattern, states):
    assert dfa_states(pattern, 10**6) == states
    assert dfa_states(pattern, states - 1) == states  # stops once past the limit


def test_patterns_it_does_not_model_are_left_to_the_engine():
    for pattern in ("(", "a(?=b)", r"(a)\1"):
        assert dfa_states(pattern, 100) is None
    # too many positions to count is too large, not uncounted
    assert dfa_states("a{40000}", 10**6, most_positions=1000) == 10**6 + 1


@pytest.mark.parametrize("pattern", [r"[A-Za-z0-9 ]{1,200}", r'[^"\\]{0,500}',
                                     r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}", "(x+x+)+y",
                                     r"[a-z]{1,40}@[a-z]{1,40}\.com", r"\p{L}+"])
def test_everyday_patterns_still_compile(pattern):
    check_regex(pattern)


def _client():
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    return TestClient(create_app(loaded(Echo(tiny_config())), chat_template="plain"))


def test_the_server_answers_an_exploding_constraint_with_a_400(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the engine was asked to build it")

    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": ".*a.{30}"}}}
    with _client() as c:
        monkeypatch.setattr("outlines_core.Index", never)
        for body, param in (({"guided_regex": "[a-z]{1,60}x[a-z]{1,60}"}, "guided_regex"),
                            ({"guided_json": schema}, "guided_json")):
            r = c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 48, **body})
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["param"] == param and "too large" in err["message"], err
        r = c.post("/v1/forms", json={"form": {"a": "<regex:.*a.{30}>"}})
        assert r.status_code == 400 and "too large" in r.json()["error"]["message"], r.text
        r = c.post("/v1/infill", json={"template": "x [MASK:8] y", "regex": {"1": ".*a.{30}"}})
        assert r.status_code == 400 and "too large" in r.json()["error"]["message"], r.text
