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
    # a trailing comment after a top-level "|" (it ate the group that wraps the alternatives),
    # a "|" inside a comment (it split the alternatives), a space before an anchor
    ("(?x)a|b # c", "(?x)a|b # c", ["a", "b", "ab"]),
    ("(?x)ab # c|d", "(?x)ab # c|d", ["ab", "d", "c"]),
    ("(?x)^a$|^b$ # c", "(?x)^a$|^b$ # c", ["a", "b", "ab"]),
    ("(?x) ^ab $", "(?x) ^ab $", ["ab", "a b"]),
    (r"(?x)a\ b # c", r"(?x)a\ b # c", ["a b", "ab"]),  # an escaped space is kept
    # under (?m), ^ after a newline and $ before one are line anchors the engine reads
    ("(?m)a\n^b", "(?m)a\n^b", ["a\nb", "ab"]),
    (r"(?m)a$\nb", r"(?m)a$\nb", ["a\nb", "ab"]),
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


@pytest.mark.parametrize("pattern", ["(" * 3000 + "a" + ")" * 3000,
                                     "(a|" * 3000 + "b" + ")" * 3000,
                                     "(?:" * 3000 + "^a$" + ")" * 3000])
def test_a_deeply_nested_pattern_is_refused_in_one_line(pattern):
    # whole_pattern called itself once per group: RecursionError, a traceback (exit 1)
    with pytest.raises(UserError) as e:
        check_regex(pattern)
    assert "\n" not in str(e.value)


def test_nested_whole_groups_are_read_inside_up_to_the_engine_limit():
    check_regex("(" * 200 + "^a$" + ")" * 200)
