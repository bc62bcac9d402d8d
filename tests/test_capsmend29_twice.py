"""A schema whose dropped ``maxLength`` makes ``schema_form`` build its form a second time
(as given) compiles both forms' languages: the request's bound on its patterns together
counted each form alone, so the real ceiling was twice the documented one (review rf29 #5)."""

from __future__ import annotations

from unmask.infill import schema as schema_module
from unmask.infill.schema import schema_form
from unmask.tokenizer import byte_tokenizer


def test_the_second_build_counts_the_first_builds_languages(monkeypatch):
    calls: list[list[str]] = []
    real = schema_module.check_total

    def spy(patterns, what, *args, **kwargs):
        patterns = list(patterns)
        calls.append([p for _, p in patterns])
        return real(patterns, what, *args, **kwargs)

    monkeypatch.setattr(schema_module, "check_total", spy)
    schema = {"type": "object", "required": ["a", "b"], "properties": {
        "a": {"type": "string", "pattern": "^[a-z]{12}$"},  # 12 tokens wide: over 8
        "b": {"type": "string", "maxLength": 11},  # over (8 + 2) bytes: dropped, then kept
    }}
    schema_form(schema, byte_tokenizer(), max_value_tokens=8)
    assert len(calls) == 3, calls  # the patterns as written, the first form, the second
    first, second = set(calls[1]), set(calls[2])
    assert first < second, (first, second)  # the second build's check counts both
