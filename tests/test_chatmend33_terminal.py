"""One way a model's text reaches a terminal (``unmask.terminal.escape_controls``): the live
view drew U+FFFD for a control character that the final print then showed as ``\\x17``, and
hid a bidi override (U+202E) that the final print wrote raw, reordering the reply on screen.
A Windows line end showed a literal ``\\r`` at the end of every line of a reply on a tty."""

from __future__ import annotations

import io
import json

import torch

from unmask.sampling.live import LiveView, _line_rows
from unmask.terminal import escape_controls, json_text, shown_text

MASK = 0


class _Bytes:
    """Bytes at id 4 + b; specials 0-3 (mask, pad, eos, bos)."""

    mask_id, pad_id, eos_id, bos_id = 0, 1, 2, 3

    def token_bytes(self, i: int) -> bytes:
        return bytes([i - 4]) if i >= 4 else b""

    def decode(self, ids, *, skip_special: bool = True) -> str:
        return b"".join(map(self.token_bytes, ids)).decode("utf-8", errors="replace")


def _ids(text: str) -> list[int]:
    return [b + 4 for b in text.encode()]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


REPLY = "a\x17b \u202eevil\u2066x\u2069 \x1b[2J\x9b\r\nnext line"
SHOWN = "a\\x17b \\u202eevil\\u2066x\\u2069 \\x1b[2J\\x9b\nnext line"


def test_controls_bidi_overrides_and_windows_line_ends_on_a_terminal():
    assert escape_controls(REPLY) == SHOWN
    assert shown_text(REPLY, _Terminal()) == SHOWN
    assert shown_text(REPLY, io.StringIO()) == REPLY  # a file keeps every byte
    assert escape_controls("a\rb\r\r\nc\r") == "a\\rb\\r\nc\\r"  # only \r\n is a line end
    # format characters that are text: emoji's zero-width joiner, Persian's non-joiner
    text = "👩\u200d💻 می\u200cخواهم soft\u00adhyphen"
    assert escape_controls(text) == text


def _frame(view: LiveView, step: int, ids: list[int], out: io.StringIO) -> str:
    """What ``view`` writes for the row ``ids`` at ``step``."""
    before = len(out.getvalue())
    view(step, torch.tensor([ids]))
    return out.getvalue()[before:]


def test_the_live_view_shows_a_reply_as_the_final_print_does():
    out = io.StringIO()
    view = LiveView(_Bytes(), stream=out, enabled=True, color=False, width=200, height=24)
    frame = _frame(view, 1, _ids(REPLY), out)
    assert frame.startswith(SHOWN) and "\ufffd" not in frame
    assert frame == f"{shown_text(REPLY, _Terminal())}\nstep 1 · 0 masked"
    persian = "می\u200cخواهم"  # kept, and it takes no column: the frame's rows stay right
    assert _frame(view, 2, _ids(persian), out).split("\n")[-2].endswith(persian)
    assert _line_rows("ab\u200ccd", 4) == 1


def test_a_windows_line_end_committed_over_two_steps_is_one_newline():
    """The ``\\r`` committed a step before its ``\\n`` is drawn in the older style, the
    ``\\n`` in the new one: the two decoded apart, and the view showed ``\\r`` there."""
    out = io.StringIO()
    view = LiveView(_Bytes(), stream=out, enabled=True, color=True, width=80, height=24)
    ids = _ids("ab\r\ncd")
    _frame(view, 1, [*ids[:3], MASK, *ids[4:]], out)
    frame = _frame(view, 2, ids, out)
    assert "\\r" not in frame and "\r\n" not in frame and "\ufffd" not in frame
    assert "cd" in frame


def test_json_escapes_bidi_overrides_as_it_does_the_c1_controls():
    text = json_text({"t": "evil\u202eexe.txt \u2066x\u2069"})
    assert text == '{"t": "evil\\u202eexe.txt \\u2066x\\u2069"}'
    assert json.loads(text) == {"t": "evil\u202eexe.txt \u2066x\u2069"}  # the same value
