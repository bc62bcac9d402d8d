"""Session 38 (forms): what a user typing a form template or schema by hand runs into."""

from __future__ import annotations

import json

import pytest

from unmask.errors import UserError
from unmask.infill import parse_form
from unmask.infill.schema import load_schema
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


@pytest.mark.parametrize("text", [
    '{"a": "<text:2-8>", "a": "<int>"}',  # the first hole vanished from the output
    '{"a": 1, "b": {"c": "<int>", "c": 2}}',  # the hole vanished: "no holes"
])
def test_a_key_given_twice_in_a_template_is_refused_by_name(text):
    with pytest.raises(UserError, match=r"^template: the key '(a|c)' is given twice"):
        parse_form(text, TOK, source="template")


def test_a_key_given_twice_in_a_schema_is_refused_by_name():
    # the first "properties" went unenforced, silently
    text = ('{"type": "object", "properties": {"a": {"type": "integer"}}, '
            '"properties": {"b": {"type": "string"}}}')
    with pytest.raises(UserError, match=r"^schema: the key 'properties' is given twice"):
        load_schema(text, "schema")


def test_a_key_given_twice_is_found_by_its_line_and_column():
    # a 1,504-line schema with 500 "type" keys: the message named only "type"
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(500)}}
    text = json.dumps(schema, indent=2).replace(
        '"p250": {\n      "type": "string"', '"p250": {\n      "type": "string", "type": "integer"')
    with pytest.raises(UserError, match=r"^schema.json: the key 'type' is given twice in one "
                                        r"object, the second time at line 755 column 25 "
                                        r"\(JSON would keep only the last\)$"):
        load_schema(text, "schema.json")
    # the first key repeated in the text's order, where several objects repeat one
    with pytest.raises(UserError, match=r"'b' is given twice .* at line 2 column 16 "):
        parse_form('{"a": {"c": 1, "c": 2},\n "x": {"b": 1, "b": 2}, "a": 3,\n "d": {"e": 1, '
                   '"e": 2}}', TOK, source="template")


def test_a_long_key_given_twice_is_quoted_by_its_ends():
    key = "k" * 5000  # the message quoted it whole: 5,082 characters
    with pytest.raises(UserError) as e:
        parse_form(f'{{"{key}": "<int>", "{key}": 2}}', TOK, source="form.json")
    assert len(str(e.value)) < 250 and "(5000 characters)" in str(e.value)
    assert "line 1 column 5015" in str(e.value)


def test_a_key_given_twice_inside_a_schema_annotation_is_let_through():
    # examples and default hold instances nothing reads: JSON Schema validators accept them
    text = ('{"type": "object", "properties": {"a": {"type": "integer", '
            '"examples": [{"x": 1, "x": 2}], "default": {"y": 1, "y": 2}}}}')
    assert load_schema(text)["properties"]["a"]["type"] == "integer"


@pytest.mark.parametrize("text", [
    '{"properties": {"default": {"properties": {"b": {}, "b": {"type": "string"}}}}}',
    '{"properties": {"a": {"const": {"x": 1, "x": 2}}}}',  # a const and an enum constrain
    '{"properties": {"a": {"enum": [1, {"x": 1, "x": 2}]}}}',
    '{"$defs": {"examples": {"type": "string", "type": "integer"}}}',
])
def test_a_key_given_twice_where_a_schema_reads_it_is_refused(text):
    with pytest.raises(UserError, match=r"^schema: the key '(b|x|type)' is given twice"):
        load_schema(text, "schema")


def test_the_same_key_in_two_objects_is_no_repeat():
    _, holes, _ = parse_form('{"a": "<int>", "b": {"a": "<bool>"}}', TOK)
    assert [h.path for h in holes] == ["$.a", "$.b.a"]


@pytest.mark.parametrize("text", [r'{"a": "<regex:\d+>"}', r'{"a": "<regex:[\w ]+>"}'])
def test_a_regex_backslash_written_as_is_gets_a_hint(text):
    with pytest.raises(UserError, match=r'Invalid \\escape \(a backslash inside a JSON string '
                                        r'is written \\\\'):
        parse_form(text, TOK, source="template")


def test_an_automaton_too_large_once_bounded_names_its_hole():
    # the pattern alone fits (8,193 states); under a <regex> hole's 16-character bound the
    # product is over the limit, and the message named no hole ("constraint too large")
    with pytest.raises(UserError, match=r"^template: hole \$\.b '<regex:\(a\|b\)\*a\(a\|b\)"
                                        r"\{12\}>': too large \(its token automaton") as e:
        parse_form('{"a": "<int>", "b": "<regex:(a|b)*a(a|b){12}>"}', TOK, source="template")
    # which constraint multiplies the states is not known there: the advice names both
    # causes (it said "make its counted runs shorter or distinct" for a long choice list too)
    assert str(e.value).endswith("once its constraints are combined); simplify it: fewer or "
                                 "shorter alternatives, or shorter counted runs")


@pytest.mark.parametrize(("pattern", "advice"), [
    ("(a|b)*a" + "(a|b)" * 19, "make what follows each repetition shorter or distinct from it"),
    (".*a" + "." * 30, "make what follows each repetition shorter or distinct from it"),
    (".*a.{30}", "make its counted runs shorter or distinct"),
    ("(?:" + "|".join(f"w{i}x{i * 7919 % 1000}" for i in range(5000)) + ")x*",
     "list fewer or shorter alternatives"),
])
def test_a_pattern_too_large_is_advised_by_its_cause(pattern, advice):
    from unmask.infill.automaton import check_size

    # an overlap spelt out by hand has no counted run, yet is no list of alternatives (it
    # was told to "list fewer or shorter alternatives"); a long list with a repetition after
    # it is (it was told about counted runs)
    with pytest.raises(UserError) as e:
        check_size(pattern)
    assert str(e.value).endswith(advice)
    assert ("repetition that overlaps" in str(e.value)) == ("alternatives" not in advice)


def test_a_long_choice_hole_is_quoted_by_its_ends_in_an_error():
    # 5,000 choices are over the automaton limit; the message quoted the whole spec
    # (48,000 characters on one line); a <regex:...> hole was already cut
    words = [f"w{i}x{i * 7919 % 1000}" for i in range(5000)]
    with pytest.raises(UserError, match=r"^template: hole \$\.a '<choice:w0x0\|.*\(48348 "
                                        r"characters\): too large .*; list fewer or shorter "
                                        r"alternatives$") as e:
        parse_form('{"a": "<choice:' + "|".join(words) + '>"}', TOK, source="template")
    assert len(str(e.value)) < 400


@pytest.mark.parametrize("spec", ["<int:{x}>", "<text:{x}>", "<digits:1-{x}>", "<{x}>",
                                  "<float:1..2{x}>"])
def test_a_long_bad_hole_argument_is_quoted_by_its_ends(spec):
    hole = spec.format(x="x" * 3000)  # each error quoted the argument whole after the spec
    with pytest.raises(UserError) as e:
        parse_form('{"a": "' + hole + '"}', TOK)
    assert len(str(e.value)) < 400


@pytest.mark.parametrize("template", ["a [MASK:1-{x}]", "a [MASK:my-{x}:3]", "a [MASK:{n}]",
                                      "a [MASK:0-{z}]", "a [MASK:{n}-{n}]"])
def test_a_long_bad_gap_is_quoted_by_its_ends(template):
    from unmask.infill.template import parse_template

    text = template.format(x="x" * 3000, n="1" * 3000, z="0" * 3000)
    with pytest.raises(UserError, match=r"^template column 3: ") as e:
        parse_template(text)
    assert len(str(e.value)) < 400  # it was 3,000 to 7,000 characters on one line


@pytest.mark.parametrize("text", ["", " \n\t"])
def test_an_empty_template_or_schema_file_is_called_empty(text):
    with pytest.raises(UserError, match=r"^form\.json: empty; it holds no JSON$"):
        parse_form(text, TOK, source="form.json")
    with pytest.raises(UserError, match=r"^form\.json: empty; it holds no JSON$"):
        load_schema(text, "form.json")


def test_a_form_whose_only_holes_are_keys_says_keys_are_no_holes():
    with pytest.raises(UserError, match=r"no holes; .* \(a key is never a hole: '<text:3>' is "
                                        r"a key\)$"):
        parse_form('{"a": {"<text:3>": 1}}', TOK)
    with pytest.raises(UserError, match=r"no holes; write values such as .*\"<choice:a\|b>\"$"):
        parse_form('{"a": 1}', TOK)  # no key like a hole: the message as before


def test_a_gap_name_used_twice_is_refused_where_it_stands():
    from unmask.infill.template import parse_template

    with pytest.raises(UserError, match=r"^template line 2 column 12: gap name 'a' is used "
                                        r"twice; give each gap its own name$"):
        parse_template("[MASK:a:1]\n[MASK:b] x [MASK:a:3]")


def test_a_long_gap_name_used_twice_is_quoted_by_its_ends():
    from unmask.infill.template import Gap, check_names, parse_template

    name = "a" * 3000  # the message quoted it whole: 3,075 characters
    with pytest.raises(UserError) as e:
        parse_template(f"[MASK:{name}:1] [MASK:{name}:2]")
    assert len(str(e.value)) < 200 and "(3000 characters) is used twice" in str(e.value)
    with pytest.raises(UserError) as e:  # segments built in Python
        check_names([Gap(name=name), " ", Gap(name=name)])
    assert len(str(e.value)) < 200 and "(3000 characters) is used twice" in str(e.value)
