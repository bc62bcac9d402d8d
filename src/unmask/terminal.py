"""Whether a stream is a terminal, without torch: the live view (``unmask.sampling.live``),
``unmask demo`` and the line ``unmask.cli`` prints before torch loads ask the same question;
``unmask prepare -`` and ``unmask generate`` ask it of standard input. Also how text a model
wrote reaches a terminal: ``shown_text`` (control characters escaped on a tty, as they are
otherwise) and ``json_text`` (JSON with no raw control character)."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any


def is_tty(stream: Any, default: bool = False) -> bool:
    """Whether ``stream`` is a terminal, whatever ``TERM`` says (standard input a person types
    into, not a pipe or a file); ``default`` for none, a closed stream or a stand-in without
    ``isatty``."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # None, a closed file, a stand-in
        return default


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal that takes escape codes (a tty, not ``TERM=dumb``);
    False for a closed stream or none."""
    return is_tty(stream) and os.environ.get("TERM") != "dumb"


_BIDI = "\u202a-\u202e\u2066-\u2069"
"""The bidirectional embeddings, overrides and isolates, as a character class's ranges."""
_CONTROLS = re.compile(f"\r\n|[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")
"""The C0 control characters but newline and tab, DEL and the C1 controls: what a terminal
may take as a command (ESC starts a sequence that moves the cursor, clears the screen, sets
the window title; a carriage return writes over the line; U+009B is a one-character CSI);
and the bidirectional embeddings, overrides and isolates (U+202A..U+202E, U+2066..U+2069),
which reorder the text after them ("Trojan Source": ``evil\\u202etxt.exe`` shows as
``evilexe.txt``). Other format characters (the zero-width joiner and non-joiner of emoji and
Persian, a soft hyphen) are text. A carriage return before a newline (Windows line ends) is
matched with it: the newline it is."""


def _escaped(match: re.Match[str]) -> str:
    return "\n" if match[0] == "\r\n" else repr(match[0])[1:-1]  # \x1b, \r, \u202e


def escape_controls(text: str) -> str:
    """``text`` as a terminal is to show it, the one way a model's text reaches a screen (the
    final print, ``shown_text``, and the live view, ``unmask.sampling.live``): each character
    of ``_CONTROLS`` written as Python writes it in a string (``\\x1b``, ``\\r``, ``\\x9b``,
    ``\\u202e``), a Windows line end (``\\r\\n``) as a newline; newlines, tabs and all other
    text as they are."""
    return _CONTROLS.sub(_escaped, text)


def shown_text(text: str, stream: Any = None) -> str:
    """``text`` (a model's, or a prompt echoed with it) as written to ``stream`` (default
    ``sys.stdout``): control characters escaped where it is a terminal (``escape_controls``:
    a model could emit bytes that rewrite the user's screen or title), the exact text where it
    is a pipe or a file (``unmask generate ... > out.txt`` keeps every byte)."""
    return escape_controls(text) if is_tty(sys.stdout if stream is None else stream) else text


def json_text(value: Any, indent: int | None = None) -> str:
    """``value`` as JSON for ``sys.stdout``, non-ASCII characters as
    themselves (``ensure_ascii=False``) but DEL, the C1 controls and the bidi overrides of
    ``_CONTROLS`` escaped (``\\u009b``, ``\\u202e``), as JSON already escapes the C0 ones: the
    same JSON value, which no terminal can take as a command or show reordered, wherever it
    is written. A stream whose encoding is not a UTF one (``PYTHONIOENCODING=ascii``, a
    cp1252 file) gets every non-ASCII character as a JSON escape: its ``backslashreplace``
    wrote ``\\xe9`` and ``\\U0001f600``, which no JSON parser reads."""
    wide = _encoding_holds_all(sys.stdout)
    return json_escaped(json.dumps(value, ensure_ascii=not wide, indent=indent))


def json_escaped(text: str) -> str:
    """The JSON ``text`` with DEL, the C1 controls and the bidi overrides written as JSON
    escapes (``\\u009b``, ``\\u202e``): the same value (no JSON has them outside a string).
    ``json_text``'s, and the server's bodies and server-sent events (``json.dumps`` with
    ``ensure_ascii=False`` wrote them raw)."""
    return re.sub(f"[\x7f-\x9f{_BIDI}]", lambda m: f"\\u{ord(m[0]):04x}", text)


def _encoding_holds_all(stream: Any) -> bool:
    """Whether ``stream``'s encoding can write every character (UTF-8, -16, -32)."""
    import codecs

    try:
        return codecs.lookup(getattr(stream, "encoding", None) or "").name.startswith("utf")
    except LookupError:
        return False
