"""A regex refused as too large only because its Unicode classes count every byte of a
multi-byte character (``(?:\\w+ ){1,80}``: over the limit of 40,000 states) was told
"a repetition that overlaps what follows it", which it has not: the refusal now names the
pattern with ASCII classes, which fits, and only where it does."""

from __future__ import annotations

import pytest

from unmask.errors import UserError
from unmask.infill.automaton import ascii_classes, check_size


@pytest.mark.parametrize(("pattern", "narrow"), [
    (r"(?:\w+ ){1,80}", "(?:[A-Za-z0-9_]+ ){1,80}"),
    (r"[\w ,.]{1,150}", "[A-Za-z0-9_ ,.]{1,150}"),
])
def test_a_refusal_by_unicode_classes_names_the_ascii_pattern_that_fits(pattern, narrow):
    with pytest.raises(UserError) as e:
        check_size(pattern)
    message = str(e.value)
    assert f"with ASCII classes, '{narrow}', it fits" in message, message
    assert "\n" not in message
    check_size(narrow)  # the advice holds


@pytest.mark.parametrize("pattern", [r".*a.{30}", r"\p{L}*a\p{L}{20}"])
def test_no_ascii_advice_where_it_would_not_fit_or_cannot_be_given(pattern):
    with pytest.raises(UserError) as e:
        check_size(pattern)
    assert "ASCII" not in str(e.value)


def test_ascii_classes_keeps_brackets_escapes_and_negations_apart():
    assert ascii_classes(r"a\.b.\d[\s\]x]") == r"a\.b[ -~][0-9][ \t\n\r\f\v\]x]"
    assert ascii_classes(r"[]\w]+") == r"[]A-Za-z0-9_]+"
    assert ascii_classes(r"\W+") is None and ascii_classes(r"[^a]\w") is None
