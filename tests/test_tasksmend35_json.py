"""Session 35 (tasksmend): every way Python's JSON parser fails is one line naming the file
(``unmask.files.parse_json``). An integer of more than 4,300 digits is a plain ``ValueError``
(Python 3.11+), not a ``JSONDecodeError``, and arrays nested a hundred thousand deep a
``RecursionError``: each was a traceback from ``read_json`` (config.json, trainer.json), a
run's ``metrics.jsonl``, ``benchmarks/report.py`` (no page at all), ``distinct_ci.py``,
``unmask prepare``/SFT data and a ``--template`` JSON file."""

from __future__ import annotations

import json
import sys

import pytest

from unmask.errors import UserError

LONG = "1" * 5000  # past sys.get_int_max_str_digits(): 4,300 by default
DEEP = "[" * 100_000 + "]" * 100_000

needs_limit = pytest.mark.skipif(
    not getattr(sys, "get_int_max_str_digits", lambda: 0)(),
    reason="this Python converts integers of any length",
)


@needs_limit
def test_parse_json_names_a_long_integer_and_where_it_is(tmp_path):
    from unmask.files import BadJSON, parse_json

    with pytest.raises(BadJSON) as got:
        parse_json('{"a": 1,\n "b": ' + LONG + "}", "x.json")
    assert got.value.why == "an integer of more than 4,300 digits at line 2"
    assert str(got.value) == f"x.json: not valid JSON ({got.value.why})"
    with pytest.raises(BadJSON) as got:
        parse_json('{"b": ' + LONG + "}", "x.jsonl", line=3, what="a JSON line")
    assert str(got.value) == ("x.jsonl:3: not a JSON line (an integer of more than 4,300 "
                              "digits at column 7)")


def test_parse_json_says_nested_too_deep_and_keeps_python_s_words(tmp_path):
    from unmask.files import parse_json

    with pytest.raises(UserError, match=r"^d\.json: not valid JSON \(nested too deep to read\)$"):
        parse_json(DEEP, "d.json")
    with pytest.raises(UserError, match=r"^e\.json: not valid JSON \(the file is empty\)$"):
        parse_json("  \n", "e.json")
    with pytest.raises(UserError, match=r"^c\.jsonl:2: not valid JSON \(a comma after the last "
                                        r"entry, column 8\)$"):
        parse_json('{"a": 1,}', "c.jsonl", line=2)
    assert parse_json('{"a": [1, 2]}', "ok.json") == {"a": [1, 2]}


def test_bad_json_survives_a_trip_between_processes():
    import pickle

    from unmask.files import BadJSON

    back = pickle.loads(pickle.dumps(BadJSON("x.jsonl:2", "a JSON line", "nested too deep")))
    assert str(back) == "x.jsonl:2: not a JSON line (nested too deep)"
    assert back.why == "nested too deep"


@needs_limit
@pytest.mark.parametrize("body", [DEEP, '{"step": ' + LONG + "}"])
def test_read_json_refuses_in_one_line(tmp_path, body):
    from unmask.files import read_json

    path = tmp_path / "trainer.json"
    path.write_text(body)
    with pytest.raises(UserError, match=r"trainer\.json: not valid JSON \((nested too deep|an "
                                        r"integer of more than 4,300 digits at line 1)"):
        read_json(path)


@needs_limit
def test_a_metrics_log_with_a_long_integer_names_its_line(tmp_path):
    from unmask.report import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": ' + LONG + "}\n" + json.dumps({"step": 1, "loss": 2.0}) + "\n")
    with pytest.raises(UserError, match=r"metrics\.jsonl:1: not a JSON line \(an integer of "
                                        r"more than 4,300 digits at column 10\)"):
        read_metrics(path)
    path.write_text(json.dumps({"step": 1, "loss": 2.0}) + '\n{"step": 2, "lo')  # torn: skipped
    assert [r["step"] for r in read_metrics(path)] == [1]


@needs_limit
def test_the_report_skips_a_result_with_a_long_integer(tmp_path, benchmark):
    report = benchmark("report")
    results = tmp_path / "results"
    results.mkdir()
    (results / "startup_big.json").write_text('{"rows": [{"a": ' + LONG + "}]}")
    (results / "startup_x.json").write_text(json.dumps({"rows": [{"case": "a", "median_s": 1}]}))
    notes = report.build(results, tmp_path / "out" / "report.md")
    page = (tmp_path / "out" / "report.md").read_text()
    assert ("`startup_big.json`: not valid JSON (an integer of more than 4,300 digits at line 1), "
            "skipped.") in page
    assert "| a | 1 |" in page and "startup_big.json: not valid JSON, skipped" in notes


@needs_limit
def test_distinct_ci_refuses_a_long_integer_in_one_line(tmp_path, benchmark):
    ci = benchmark("distinct_ci")
    path = tmp_path / "r.json"
    path.write_text('{"sections": [{"rows": [{"a": ' + LONG + "}]}]}")
    with pytest.raises(UserError, match=r"r\.json: not a benchmarks/decoding\.py --json file "
                                        r"\(an integer of more than 4,300 digits at line 1\)"):
        ci.main([str(path)])


@needs_limit
def test_training_data_with_a_long_integer_names_its_line(tmp_path):
    from unmask.data import read_jsonl

    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps({"text": "a"}) + '\n{"text": "b", "n": ' + LONG + "}\n")
    with pytest.raises(UserError, match=r"sft\.jsonl:2: not valid JSON \(an integer of more "
                                        r"than 4,300 digits at column 20\)"):
        list(read_jsonl(path))


@needs_limit
@pytest.mark.parametrize("body", [DEEP, '{"chat_template": "x", "n": ' + LONG + "}"])
def test_a_template_json_file_refuses_in_one_line(tmp_path, body):
    from unmask.chat import template_arg

    path = tmp_path / "tokenizer_config.json"
    path.write_text(body)
    with pytest.raises(UserError, match=r"tokenizer_config\.json: not valid JSON \("):
        template_arg(str(path))
