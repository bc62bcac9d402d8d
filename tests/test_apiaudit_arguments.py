"""Wrong arguments to the public API are one-line ``UserError`` s naming the argument, never a
``TypeError`` from deep inside or a silently different run: ``max_repair_calls`` of ``infill``
and ``fill_form`` (a text failed inside the fill; a fraction or a negative number ran as
another limit), ``chat_template``'s ``template`` and ``loaded``."""

from __future__ import annotations

import pytest
from server_helpers import loaded, random_transformer

from unmask import api
from unmask.errors import UserError


@pytest.fixture(scope="module")
def tiny():
    return loaded(random_transformer())


@pytest.mark.parametrize("value", ["3", 1.5, -1, True])
def test_max_repair_calls_must_be_a_count(tiny, value):
    with pytest.raises(UserError, match=r"max_repair_calls must be a whole number >= 0"):
        api.infill(tiny, "a[MASK]b", config={"steps": 1}, max_repair_calls=value)
    with pytest.raises(UserError, match=r"max_repair_calls must be a whole number >= 0"):
        api.fill_form(tiny, {"a": "<int:0..9>"}, config={"steps": 2}, max_repair_calls=value)


@pytest.mark.parametrize("value", [None, 0, 2])
def test_max_repair_calls_counts_and_none_run(tiny, value):
    out = api.infill(tiny, "a[MASK]b", config={"steps": 1}, max_repair_calls=value)
    assert out.text.startswith("a") and out.text.endswith("b")


def test_chat_template_refuses_what_is_not_a_template_in_one_line(tiny):
    with pytest.raises(UserError, match="template must be a built-in name, a file or Jinja "
                                        "text, not int"):
        api.chat_template(tiny, 5)  # type: ignore[arg-type]
    with pytest.raises(UserError, match=r"loaded must be a checkpoint loaded by unmask.load"):
        api.chat_template("demo", "plain")  # type: ignore[arg-type]
    assert api.chat_template(tiny, "plain").origin == "built-in chat template 'plain'"


def test_a_system_message_that_is_not_text_is_named(tiny):
    """``generate(system=5)`` was refused as "messages[0].content must be a string": the
    caller passed no messages."""
    for call in (lambda: api.generate(tiny, "x", config={"gen_length": 2}, template="plain",
                                      system=5),
                 lambda: api.prompt_lengths(tiny, "x", template="plain", system=5)):
        with pytest.raises(UserError, match=r"^system must be a str \(the system message\) or "
                                            r"None, not int$"):
            call()


def test_encode_prompt_refuses_what_is_not_text_in_one_line(tiny):
    with pytest.raises(UserError, match="a prompt must be a str, not int"):
        api.encode_prompt(tiny.tokenizer, 5)  # type: ignore[arg-type]
    assert api.encode_prompt(tiny.tokenizer, "ab") == tiny.tokenizer.encode("ab")
