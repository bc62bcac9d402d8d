"""Live view: draw the canvas in the terminal after every denoising step.

Inside: ``LiveView``, a ``step_callback`` for ``unmask.sampling.generate`` that redraws
the generation region in place: masked positions as a dim placeholder (``░``), committed
tokens as text, tokens committed or changed (token editing) in this step highlighted, and
(speculative decoding, ``LiveView.draft``) drafts not yet verified in their own style. Runs
of committed tokens between masks are decoded together (byte-exact with
``tokenizer.token_bytes``) so multi-byte characters render. Colour follows the NO_COLOR
convention (https://no-color.org); the view draws nothing unless its stream is a terminal
(or it is forced on).
"""

from __future__ import annotations

import codecs
import os
import shutil
import sys
import unicodedata
from typing import Any, TextIO

from torch import Tensor

from unmask.terminal import escape_controls, is_terminal

# SGR styles; "old" (text committed in an earlier step) is drawn plain.
_STYLES = {
    "mask": "\x1b[2m",
    "special": "\x1b[2m",
    "new": "\x1b[1;32m",
    "status": "\x1b[2m",
    "draft": "\x1b[2;3;36m",  # dim italic cyan: proposed, not yet verified
}
_RESET = "\x1b[0m"

Segment = tuple[str, str]  # (text, style): mask | special | new | old | draft | status


def _sanitize(text: str) -> str:
    """``text`` as the final print shows it on a terminal (``escape_controls``: ``\\x1b``,
    ``\\u202e``, a Windows line end as a newline; until 2026-12-07 the view drew U+FFFD for
    the character the final print wrote ``\\x17``, and hid a bidi override it printed raw),
    tabs as four spaces: the view counts the columns a line takes, and a tab's depend on where
    it starts."""
    return escape_controls(text).replace("\t", "    ")


def _char_width(ch: str) -> int:
    """Terminal columns one character takes (as wcwidth): wide and full-width East Asian
    characters (CJK, most emoji) 2; combining and enclosing marks and the format characters
    ``_sanitize`` keeps (the zero-width joiner and non-joiner, an emoji's tag characters) 0,
    but a soft hyphen; anything else 1."""
    if unicodedata.category(ch) in ("Mn", "Me", "Cf") and ch != "\u00ad":
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _line_rows(text: str, cols: int) -> int:
    """Terminal rows one line of ``text`` (no newline) takes on a screen ``cols`` wide.

    Simulates the terminal's wrap, as xterm does it: a double-width character that does not
    fit in what is left of a row starts the next row (the last column stays empty), so
    ``ceil(width / cols)`` can be short. A line exactly ``cols`` wide takes one row (the
    cursor waits at the margin; the newline after it does not add a row)."""
    cols = max(cols, 1)
    rows, col = 1, 0
    for ch in text:
        w = _char_width(ch)
        if not w:
            continue
        if col and col + w > cols:
            rows, col = rows + 1, 0
        col += w
    return rows


def _merge(line: list[Segment]) -> list[Segment]:
    """Join neighbouring segments of the same style (fewer escape codes)."""
    out: list[Segment] = []
    for text, style in line:
        if out and out[-1][1] == style:
            out[-1] = (out[-1][0] + text, style)
        else:
            out.append((text, style))
    return out


class LiveView:
    """A ``step_callback`` that redraws the generation region after each step.

    ``start``: first column of the generation region (the padded prompt length); columns
    before it are not drawn. ``enabled=None`` draws only when ``stream`` is a terminal and
    ``TERM`` is not ``dumb``; ``color=None`` uses colour unless ``NO_COLOR`` is set
    (cursor movement for the in-place redraw is still used without colour).
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        start: int = 0,
        total_steps: int | None = None,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        color: bool | None = None,
        width: int | None = None,
        height: int | None = None,
        mask_glyph: str = "░",
        special_glyph: str = "·",
    ) -> None:
        self.tokenizer = tokenizer
        self.start = start
        self.total_steps = total_steps
        self.stream = stream if stream is not None else sys.stdout
        if enabled is None:
            enabled = is_terminal(self.stream)
        self.enabled = enabled
        self.color = (not os.environ.get("NO_COLOR")) if color is None else color
        self._width, self._height = width, height
        self.mask_glyph, self.special_glyph = mask_glyph, special_glyph
        self.mask_id = getattr(tokenizer, "mask_id", None)
        self.specials = {
            i
            for i in (getattr(tokenizer, n, None) for n in ("eos_id", "pad_id", "bos_id"))
            if i is not None
        }
        self._token_bytes = getattr(tokenizer, "token_bytes", None)
        self._prev: list[list[int]] | None = None
        self._rows_drawn = 0

    # -- rendering (pure) ---------------------------------------------------------------

    def _decode_run(self, ids: list[int], styles: list[str]) -> list[Segment]:
        """Text of consecutive tokens, split by style (new / old / draft) for highlighting."""
        chars: list[tuple[str, str]] = []
        if self._token_bytes is not None:
            dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
            for t, st in zip(ids, styles, strict=True):
                for byte in self._token_bytes(t):
                    chars.extend((c, st) for c in dec.decode(bytes([byte])))
            chars.extend((c, styles[-1]) for c in dec.decode(b"", final=True))
        else:
            i = 0
            while i < len(ids):  # decode each same-style stretch in one go
                j = i
                while j < len(ids) and styles[j] == styles[i]:
                    j += 1
                chars.extend((c, styles[i]) for c in self.tokenizer.decode(ids[i:j]))
                i = j
        for k in range(len(chars) - 1):  # a Windows line end split across two styles
            if chars[k][0] == "\r" and chars[k + 1][0] == "\n":  # shows as one newline
                chars[k] = ("\r", chars[k + 1][1])
        segs: list[Segment] = []
        for c, style in chars:
            if segs and segs[-1][1] == style:
                segs[-1] = (segs[-1][0] + c, style)
            else:
                segs.append((c, style))
        return [(_sanitize(text), style) for text, style in segs]

    def render_row(
        self, row: list[int], prev: list[int] | None, drafts: list[int] | None = None
    ) -> list[Segment]:
        """Segments of one row's region; ``prev`` is the row one step earlier (None = all
        masked); ``drafts`` the row's drafts (``mask_id`` where none), drawn where ``row``
        is still masked. A token that differs from ``prev`` is new: committed this step, or
        a committed one replaced (``bd3lm``'s token editing, ``edit_threshold``; drawn as
        unchanged text until 2026-12-07)."""
        segs: list[Segment] = []
        run: list[int] = []
        run_new: list[str] = []

        def flush() -> None:
            if run:
                segs.extend(self._decode_run(run, run_new))
                run.clear()
                run_new.clear()

        for i, t in enumerate(row):
            fresh = prev is None or prev[i] != t
            if t == self.mask_id and drafts is not None and drafts[i] != self.mask_id:
                run.append(drafts[i])
                run_new.append("draft")
            elif t == self.mask_id:
                flush()
                segs.append((self.mask_glyph, "mask"))
            elif t in self.specials:
                flush()
                segs.append((self.special_glyph, "new" if fresh else "special"))
            else:
                run.append(t)
                run_new.append("new" if fresh else "old")
        flush()
        return segs

    def render(
        self, step: int, tokens: Tensor, drafts: Tensor | None = None
    ) -> list[list[Segment]]:
        """The frame as lines of segments (rows, then a status line); ``drafts`` (B, G) are
        shown where ``tokens`` is masked (``draft``)."""
        rows = tokens[:, self.start :].tolist()
        drows = None if drafts is None else drafts[:, self.start :].tolist()
        prev = self._prev
        lines: list[list[Segment]] = []
        for b, row in enumerate(rows):
            segs = self.render_row(
                row, None if prev is None else prev[b], None if drows is None else drows[b]
            )
            if len(rows) > 1:
                segs = [(f"[{b}] ", "status"), *segs]
            # Split segments at newlines into terminal lines.
            line: list[Segment] = []
            for text, style in segs:
                parts = text.split("\n")
                for k, part in enumerate(parts):
                    if k:
                        lines.append(line)
                        line = []
                    if part:
                        line.append((part, style))
            lines.append(line)
        lines = [_merge(ln) for ln in lines]
        total = f"/{self.total_steps}" if self.total_steps else ""
        masked = sum(r.count(self.mask_id) for r in rows) if self.mask_id is not None else 0
        status = f"step {step}{total} · {masked} masked"
        if drows is not None:
            n = sum(d != self.mask_id for r in drows for d in r)
            status += f" · {n} drafted"
        lines.append([(status, "status")])
        return lines

    def _paint(self, line: list[Segment]) -> str:
        if not self.color:
            return "".join(text for text, _ in line)
        out = []
        for text, style in line:
            code = _STYLES.get(style)
            out.append(f"{code}{text}{_RESET}" if code else text)
        return "".join(out)

    # -- drawing ------------------------------------------------------------------------

    def __call__(self, step: int, tokens: Tensor) -> None:
        if not self.enabled:
            return
        lines = self.render(step, tokens)
        self._prev = tokens[:, self.start :].tolist()
        self._draw(lines)

    def draft(self, step: int, tokens: Tensor, drafts: Tensor) -> None:
        """Show a speculative round's ``drafts`` (B, G; ``mask_id`` where none) over the
        committed ``tokens`` (B, G) before they are verified: drawn in the ``draft`` style,
        then replaced by what the next call commits. Without colour nothing is drawn (drafts
        would look like accepted text)."""
        if not self.enabled or not self.color:
            return
        self._draw(self.render(step, tokens, drafts))

    def _draw(self, lines: list[list[Segment]]) -> None:
        size = shutil.get_terminal_size()
        cols = max(self._width or size.columns, 1)
        max_rows = max((self._height or size.lines) - 1, 1)
        heights = [_line_rows("".join(t for t, _ in ln), cols) for ln in lines]
        # Keep the frame within the screen (cursor-up cannot pass the top): drop lines from the top.
        while len(lines) > 1 and sum(heights) > max_rows:
            lines, heights = lines[1:], heights[1:]
        out = [self._erase()] if self._rows_drawn else []
        out.append("\n".join(self._paint(ln) for ln in lines))
        self.stream.write("".join(out))
        self.stream.flush()
        self._rows_drawn = sum(heights)

    def close(self, *, clear: bool = False) -> None:
        """End the live region: keep the last frame (and move below it), or erase it."""
        if self.enabled and self._rows_drawn:
            self.stream.write(self._erase() if clear else "\n")
            self.stream.flush()
        self._rows_drawn = 0
        self._prev = None

    def _erase(self) -> str:
        """Cursor back to the start of the frame, everything below cleared."""
        up = f"\x1b[{self._rows_drawn - 1}A" if self._rows_drawn > 1 else ""
        return f"\r{up}\x1b[J"
