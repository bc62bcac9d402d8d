"""Regexes as a Python user writes them, session 36: anchors after a leading flag group or
inside a group that is the whole pattern, and ``\\A``/``\\z``/``\\Z``, are the whole-text anchors
they are (they were refused as matching no token sequence), a trailing ``(?x)`` comment
does not eat the wrapper around the pattern, and Python's own syntax the engine lacks is named
in the refusal ("error building NFA" named nothing)."""

from __future__ import annotations

import re

import pytest

from unmask.errors import UserError
from unmask.infill.automaton import TokenAutomaton, check_regex, vocab_of
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
VOCAB = vocab_of(TOK)


@pytest.mark.parametrize("pattern, python, texts", [
    ("(?i)^abc$", "(?i)^abc$", ["abc", "ABC", "aBc", "abcd", ""]),
    ("(?s)^.+$", "(?s)^.+$", ["a\nb", "", "x"]),
    (r"\Aab\z", r"\Aab\Z", ["ab", "a", "abz"]),
    (r"\Aab\Z", r"\Aab\Z", ["ab", "abZ"]),
    (r"ab\\z", r"ab\\z", ["ab\\z", "ab"]),  # an escaped backslash, then a literal z
    (r"ab\$", r"ab\$", ["ab$", "ab"]),
    ("(?i)^a$|^b$", "(?i)^a$|^b$", ["A", "b", "ab"]),
    ("(?x)a b # c", "(?x)a b # c", ["ab", "a b", "abc"]),
    ("(^abc$)", "(^abc$)", ["abc", "ab"]),
    ("(?:^a|^b)", "(?:^a|^b)", ["a", "b", "ab"]),
    ("(?i:^abc$)", "(?i:^abc$)", ["ABC", "abd"]),
    ("(?P<n>^a+$)", "(?P<n>^a+$)", ["aa", "b"]),
    ("(?:a|^b)", "(?:a|^b)", ["a", "b"]),  # compiled before, to {a}: the cache version moved
    ("(?i)^a$|b", "(?i)^a$|b", ["A", "b", "B"]),
    ("(?x) a b # c\n c # d", "(?x) a b # c\n c # d", ["abc", "ab"]),
])
def test_the_pattern_matches_what_python_fullmatch_does(pattern, python, texts):
    a = TokenAutomaton.from_regex(pattern, VOCAB)
    for text in texts:
        assert a.accepts_text(text, TOK) == (re.fullmatch(python, text) is not None), text


@pytest.mark.parametrize("pattern, named", [
    (r"ab\Zc", r"\Z is Python's"),
    ("x{,3}", "{0,n}"),
    (r"\0", "octal"),
    (r"a\101", "octal"),
    (r"(?a)\w+", "ASCII flag"),
    ("(?>ab)", "atomic groups"),
    (r"\N{LATIN SMALL LETTER E WITH ACUTE}", "named characters"),
    (r"[a\b]", "backspace"),
    ("(?#note)a", "comments"),
    ("a{b", r"write \{"),
    (r"x{1F600}", r"write \{"),
    ("[{]a{1,2", r"write \{"),
])
def test_python_syntax_the_engine_lacks_is_named(pattern, named):
    re.compile(pattern)  # Python reads each of them
    with pytest.raises(UserError) as e:
        check_regex(pattern)
    assert named in str(e.value)
    assert "error building NFA" not in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("pattern", [r"\\0", r"a\\Z", r"[\\]b]"])
def test_escaped_backslashes_are_not_read_as_python_syntax(pattern):
    check_regex(pattern)
