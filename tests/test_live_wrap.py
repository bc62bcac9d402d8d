"""The live view's row count when double-width characters (CJK, emoji) wrap: a terminal moves
a wide character that does not fit at the end of a row to the next row, so a line can take more
rows than ``ceil(width / cols)``. Checked as a pure function and on a small xterm-like screen."""

from __future__ import annotations

import io
import re
import unicodedata

import torch

from unmask.sampling.live import LiveView, _line_rows


def test_line_rows_simulates_the_wrap_of_wide_characters() -> None:
    assert _line_rows("", 10) == 1
    assert _line_rows("abcd", 4) == 1  # exactly full: the cursor waits at the margin
    assert _line_rows("abcde", 4) == 2
    assert _line_rows("神创", 4) == 1
    assert _line_rows("a神创", 4) == 2  # 5 columns
    # "ab神" is 4 columns, but at width 3 the wide character does not fit after "ab": 2 rows,
    # where ceil(4 / 3) == 2 happens to agree; "ab神神" (6 columns) at width 3 takes 3 rows,
    # not 2: "ab" + an empty column, "神", "神".
    assert _line_rows("ab神", 3) == 2
    assert _line_rows("ab神神", 3) == 3
    # The live view's batch prefix before CJK text at 21 columns: each row holds 10 wide
    # characters (the first only 8, after "[0] "), so "[0] " + 29 of them (62 columns, where
    # ceil(62 / 21) == 3) takes 8 + 10 + 10 + 1: 4 rows.
    assert _line_rows("[0] " + "神" * 28, 21) == 3
    assert _line_rows("[0] " + "神" * 29, 21) == 4
    assert _line_rows("🙂" * 5, 9) == 2  # emoji are wide too: 4 per row, not 4.5
    # Zero width: combining marks and the zero-width joiner take no column.
    assert _line_rows("e\u0301" * 4, 4) == 1
    assert _line_rows("👩\u200d💻" * 2, 8) == 1
    assert _line_rows("abc", 0) == 3  # a zero-column terminal is treated as one column


class _Screen:
    """A small xterm-like screen behind a tty: wide characters wrap early, pending wrap at the
    margin, CR, LF as CR LF (scrolling counted), cursor up, erase below; colours ignored."""

    def __init__(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        self.grid = [[" "] * cols for _ in range(rows)]
        self.x = self.y = 0
        self.pending = False
        self.scrolled: list[str] = []

    def _lf(self) -> None:
        if self.y == self.rows - 1:
            self.scrolled.append("".join(self.grid[0]).rstrip())
            self.grid = [*self.grid[1:], [" "] * self.cols]
        else:
            self.y += 1

    def _put(self, ch: str) -> None:
        if ch == "\u200d" or unicodedata.category(ch) in ("Mn", "Me"):
            return
        w = 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
        if self.pending or self.x + w > self.cols:
            self.x, self.pending = 0, False
            self._lf()
        self.grid[self.y][self.x] = ch
        if w == 2 and self.x + 1 < self.cols:
            self.grid[self.y][self.x + 1] = ""
        self.x += w
        if self.x >= self.cols:
            self.x, self.pending = self.cols - 1, True

    def feed(self, text: str) -> None:
        for m in re.finditer(r"\x1b\[([0-9;]*)([A-Za-z])|\r|\n|[^\x1b\r\n]", text):
            t = m.group(0)
            if t == "\r":
                self.x, self.pending = 0, False
            elif t == "\n":  # the tty's output translation (onlcr) makes it CR LF
                self._lf()
                self.x, self.pending = 0, False
            elif m.group(2) == "A":
                self.y, self.pending = max(0, self.y - int(m.group(1) or 1)), False
            elif m.group(2) == "J":
                self.grid[self.y][self.x :] = [" "] * (self.cols - self.x)
                for r in range(self.y + 1, self.rows):
                    self.grid[r] = [" "] * self.cols
            elif not t.startswith("\x1b"):
                self._put(t)

    def lines(self) -> list[str]:
        return ["".join(r).rstrip() for r in self.grid if "".join(r).strip()]


class _CharTokenizer:
    """One token per character (ids are code points + 10); 0 = mask, 1 = EOS."""

    mask_id, eos_id, pad_id, bos_id = 0, 1, None, None

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i - 10) for i in ids if i >= 10)


def test_live_frames_with_wide_characters_are_erased_completely() -> None:
    text = "神创造天地。地是空虚混沌，渊面黑暗。🙂a神"
    for cols in (9, 13, 21):
        screen = _Screen(cols, 40)
        screen.feed("TOP-LINE\r\n")
        out = io.StringIO()
        view = LiveView(
            _CharTokenizer(), stream=out, enabled=True, color=True, width=cols, height=40
        )
        rows = [[ord(c) + 10 for c in text], [ord(c) + 10 for c in "起初" + text]]
        g = max(len(r) for r in rows)
        full = torch.tensor([r + [1] * (g - len(r)) for r in rows])
        for step in range(g + 1):  # unmask one more column per step
            tokens = full.clone()
            tokens[:, step:] = 0
            view(step, tokens)
            screen.feed(out.getvalue())
            out.seek(0)
            out.truncate()
        view.close(clear=True)
        screen.feed(out.getvalue() + "END\r\n")
        assert screen.lines() == ["TOP-LINE", "END"], (cols, screen.lines())
        assert screen.scrolled == []
