"""Constrained decoding left to right: a causal (``ar``) model fills a form's holes in order.

Inside:

- ``FormGuide``: the ``allowed`` callback of ``unmask.sampling.ar.ARRun`` for rows of locked
  text and holes (each hole a ``TokenAutomaton`` and a budget of tokens).
- ``fill_left_to_right``: a form's layout (``unmask.infill.forms.fill_form``) decoded by a
  causal model under the guide; the hole tokens per row, NFE and steps (``Ordered``).
- ``form_span``: the tokens of context a form takes, filled either way (the one count
  ``fill_form``, ``fill_left_to_right`` and the server's guided ``/v1/infill`` check).
- ``refuse_loop_options``: the masked-diffusion loop's options, which a fill left to right
  would ignore, refused in one line (``unmask.api.infill`` and ``fill_form``, the server's
  ``plumbing.left_to_right``); ``steps`` and ``block_length`` pass at the tokens it writes:
  ``declared_width`` (``fim_width``) of a gap (a form's: ``schema.form_width``).

The same automata as the diffusion path, read in one direction only: in a hole the run is
in one automaton state, and a token is allowed when its next state can still reach an
accepting state within the tokens the hole has left (``TokenAutomaton.distance_to_accept``),
so a bounded hole never runs out of room. The hole ends only in an accepting state, where
the model may start the locked text that follows it (or EOS after the last piece); a token
both readings allow is read both ways until the tokens after an accepting point spell that
WHOLE text (the hole ends there) or stop matching it (the hole goes on), so a field is never
cut short because its content starts like the text after it. Locked text is forced token by
token. Unlike diffusion a hole holds as many tokens as the model writes, up to its width:
no padding. Progress is reported on the same canvas the diffusion path fills (each hole's
tokens at the start of its span, masks after them; a finished hole padded with spaces), so
live views and streamed answers read both alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from unmask.config import SampleConfig
from unmask.errors import CONTEXT_WORDS, UserError
from unmask.infill.automaton import TokenAutomaton
from unmask.infill.template import DEFAULT_MAX_LEN, Gap, parse_template
from unmask.sampling.ar import ARRun
from unmask.sampling.loop import StepCallback, make_generator
from unmask.sampling.penalties import Penalties
from unmask.sampling.protocol import model_device

if TYPE_CHECKING:
    from unmask.facts import ModelFacts

Piece = tuple[str, Any]
"""``("text", ids)`` locked tokens, or ``("hole", k)`` hole k of the form."""


@dataclass
class _Cursor:
    """Where one row's run stands: piece index, tokens used in it, automaton state.

    In a hole, ``written`` holds the tokens since the hole began; ``open`` says whether they
    can all still be the hole's (then ``state``/``used`` are that reading's), and ``splits``
    the lengths at which the hole may have ended: each an accepting point whose tokens after
    it spell the start of the text that follows (``FormGuide`` docs).
    """

    piece: int = 0
    used: int = 0
    state: int = 0
    done: bool = False
    open: bool = True
    written: list[int] = field(default_factory=list)
    splits: list[int] = field(default_factory=list)


def _joined(pieces: Sequence[Piece]) -> list[Piece]:
    """``pieces`` with empty texts dropped and adjacent texts joined; two holes with nothing
    between them refused (where the first ends would be written nowhere)."""
    out: list[Piece] = []
    for kind, v in pieces:
        if kind == "text":
            ids = [int(t) for t in v]
            if not ids:
                continue
            if out and out[-1][0] == "text":
                out[-1] = ("text", out[-1][1] + ids)
                continue
            out.append(("text", ids))
        else:
            if out and out[-1][0] == "hole":
                raise UserError(
                    "two holes with no text between them cannot be filled left "
                    "to right (where one ends is not written anywhere)"
                )
            out.append((kind, v))
    return out


class FormGuide:
    """``ARRun(allowed=FormGuide(...))``: which tokens each row may take next.

    ``pieces[row]``: that row's layout after its prompt; ``automata[k]`` / ``widths[k]`` /
    ``minimums[k]`` (default 0): the language and the most and fewest tokens of hole k (a
    least length is counted beside an automaton that ``stretches``, else built into it with
    ``TokenAutomaton.at_least``). After the last piece only EOS is allowed, so the run stops
    there; a row at its widest takes that EOS in ``close``, without a forward.
    ``tokens[row][k]`` collects each hole's tokens as they are written.

    Where a hole ends: the hole is followed by locked text (or by EOS after the last piece).
    From an accepting state the run may start writing that text, and a token that is both the
    text's first and one the hole may take is read both ways at once: the hole ends at the
    first accepting point after which the tokens written spell the WHOLE following text; the
    hole goes on when they stop matching it. So a field whose content starts like the text
    after it (``a,b`` before ``, end``) is not cut at its first comma. Every token the run
    takes keeps at least one reading alive, and each reading stays within the hole's width.
    """

    def __init__(
        self,
        pieces: Sequence[Sequence[Piece]],
        automata: Sequence[TokenAutomaton],
        widths: Sequence[int],
        *,
        vocab_size: int,
        eos_id: int,
        minimums: Sequence[int] | None = None,
    ) -> None:
        self.pieces = [_joined(p) for p in pieces]
        self.automata, self.widths = list(automata), [int(w) for w in widths]
        self.minimums = [int(m) for m in minimums or [0] * len(self.automata)]
        for k, (a, least) in enumerate(zip(self.automata, self.minimums, strict=True)):
            if least > 0 and not a.stretches():  # a counter beside it would not be exact
                self.automata[k] = a.intersect(TokenAutomaton.at_least(least, a.vocab_size))
                self.minimums[k] = 0
        self.V, self.eos_id = int(vocab_size), int(eos_id)
        self.cursors = [_Cursor() for _ in self.pieces]
        self.consumed = 0
        self.tokens: list[list[list[int]]] = [[[] for _ in automata] for _ in self.pieces]
        for r in range(len(self.pieces)):
            self._settle(r)

    # -- one row ---------------------------------------------------------------------------

    def _settle(self, r: int) -> None:
        """Skip used-up text pieces and set the state at the start of a hole."""
        cur, pieces = self.cursors[r], self.pieces[r]
        while (
            cur.piece < len(pieces)
            and pieces[cur.piece][0] == "text"
            and (cur.used >= len(pieces[cur.piece][1]))
        ):
            cur.piece, cur.used = cur.piece + 1, 0
        if cur.piece < len(pieces) and pieces[cur.piece][0] == "hole" and cur.used == 0:
            cur.state = self.automata[pieces[cur.piece][1]].start
            cur.open, cur.written, cur.splits = True, [], []

    def _accepts(self, r: int) -> bool:
        """Whether the current hole may end here: an accepting state, its least length met."""
        cur = self.cursors[r]
        k = self.pieces[r][cur.piece][1]
        return cur.open and bool(self.automata[k].accept[cur.state]) and (
            cur.used >= self.minimums[k])

    def _after(self, r: int) -> list[int]:
        """The tokens that end the current hole: the locked text after it, else ``[EOS]``."""
        pieces, k = self.pieces[r], self.cursors[r].piece + 1
        return list(pieces[k][1]) if k < len(pieces) else [self.eos_id]

    def _in_hole(self, r: int) -> np.ndarray:
        """(V,) bool: the tokens that keep the current hole completable in its budget."""
        cur = self.cursors[r]
        k = self.pieces[r][cur.piece][1]
        a = self.automata[k]
        left = self.widths[k] - cur.used
        ok = np.zeros(self.V, dtype=bool)
        if cur.open and left > 0:
            good = a.distance_to_accept()[a.table[cur.state]] <= left - 1  # (K,) per class
            n = min(self.V, a.vocab_size)
            ok[:n] = good[a.token_class[:n]]
        return ok

    def _end_hole(self, r: int, split: int) -> None:
        """Hole ends after ``written[:split]``; the rest of ``written`` is the next text's."""
        cur, pieces = self.cursors[r], self.pieces[r]
        k = pieces[cur.piece][1]
        self.tokens[r][k] = cur.written[:split]
        matched = len(cur.written) - split
        cur.piece, cur.used = cur.piece + 1, matched
        cur.open, cur.written, cur.splits = False, [], []
        if cur.piece >= len(pieces):  # the hole was the last piece: EOS was written
            cur.done = True
            return
        self._settle(r)

    def _take_in_hole(self, r: int, token: int) -> None:
        cur, pieces = self.cursors[r], self.pieces[r]
        k = pieces[cur.piece][1]
        a, text = self.automata[k], self._after(r)
        n = len(cur.written)
        splits = [p for p in cur.splits if text[n - p] == token]
        if self._accepts(r) and token == text[0]:
            splits.append(n)
        if cur.open and self._in_hole(r)[token]:
            cur.state = int(a.table[cur.state, a.token_class[token]])
            cur.used += 1
        else:
            cur.open = False
        assert cur.open or splits, "the run took a token the guide did not allow"
        cur.written.append(int(token))
        cur.splits = splits
        whole = [p for p in splits if n + 1 - p == len(text)]
        if whole:  # the first time the whole following text is written, the hole ends
            self._end_hole(r, whole[0])
        elif not cur.open and len(splits) == 1:  # only one reading left: the hole ended
            self._end_hole(r, splits[0])
        else:  # still open, or several places it may have ended: shown at its longest
            self.tokens[r][k] = cur.written[: splits[-1]] if not cur.open else list(cur.written)

    def _take(self, r: int, token: int) -> None:
        """Advance row ``r`` past ``token`` (the one it was allowed to take)."""
        cur, pieces = self.cursors[r], self.pieces[r]
        if cur.piece >= len(pieces):
            cur.done = True
            return
        if pieces[cur.piece][0] == "hole":
            self._take_in_hole(r, token)
            return
        cur.used += 1
        self._settle(r)

    def _allowed(self, r: int) -> np.ndarray:
        cur, pieces = self.cursors[r], self.pieces[r]
        ok = np.zeros(self.V, dtype=bool)
        if cur.piece >= len(pieces):
            ok[self.eos_id] = True
            return ok
        kind, v = pieces[cur.piece]
        if kind == "text":
            ok[int(v[cur.used])] = True
            return ok
        ok = self._in_hole(r)
        text, n = self._after(r), len(cur.written)
        if self._accepts(r):
            ok[text[0]] = True
        for p in cur.splits:
            ok[text[n - p]] = True
        if not ok.any():  # cannot happen: the hole's start is within its width of acceptance
            raise RuntimeError("left-to-right hole ran out of room; please report this")
        return ok

    def sync(self, step: int, tokens: Tensor) -> None:
        """Advance past the token just written (``tokens`` (B, P + step)), once per step: the
        run's allowed-token call and its step callback both sync."""
        if step <= self.consumed:
            return
        for r, t in enumerate(tokens[:, -1].tolist()):
            if not self.cursors[r].done:
                self._take(r, int(t))
        self.consumed = step

    def __call__(self, step: int, tokens: Tensor) -> Tensor:
        self.sync(step, tokens)
        out = np.stack([self._allowed(r) for r in range(len(self.pieces))])  # (B, V)
        return torch.from_numpy(out)

    def finished(self) -> bool:
        return all(c.done for c in self.cursors)

    def close(self, steps: int, tokens: Tensor) -> None:
        """After a run of ``steps`` tokens (``tokens`` (B, P + steps)): every row not ended is
        at its widest, where only EOS may follow; it takes that EOS here. A forward for a
        token that has no choice is spent for nothing (and read one position past the form:
        a form that fitted the context exactly was refused)."""
        self.sync(steps, tokens)  # (none to take at 0: consumed starts there)
        for r, cur in enumerate(self.cursors):
            if not cur.done:
                ok = self._allowed(r)
                if not ok[self.eos_id] or int(ok.sum()) != 1:  # cannot happen: see form_span
                    raise RuntimeError("left-to-right fill ended before its form; please report")
                self._take(r, self.eos_id)


@dataclass
class Ordered:
    """What ``fill_left_to_right`` returns."""

    holes: list[list[list[int]]]
    """holes[row][k]: the tokens written in hole k of that row."""
    nfe: int
    steps: int


def _view(
    canvas: Tensor,
    spans: Sequence[Sequence[tuple[int, int]]],
    guide: FormGuide,
    mask_id: int,
    space_id: int | None,
) -> Tensor:
    """The canvas (B, L) as far as the run got: each hole's tokens at the start of its span,
    masks after them, a finished hole's rest padded with ``space_id`` (when one token)."""
    out = canvas.clone()
    for r, row_spans in enumerate(spans):
        cur = guide.cursors[r]
        pieces = guide.pieces[r]
        current = (
            pieces[cur.piece][1]
            if cur.piece < len(pieces) and (pieces[cur.piece][0] == "hole")
            else None
        )
        for k, (s, e) in enumerate(row_spans):
            got = guide.tokens[r][k][: e - s]
            out[r, s : s + len(got)] = torch.tensor(got, dtype=torch.long)
            ended = cur.done or (_hole_index(pieces, k) < cur.piece)
            if ended and k != current and space_id is not None:
                out[r, s + len(got) : e] = space_id
            else:
                out[r, s + len(got) : e] = mask_id
    return out


def _hole_index(pieces: Sequence[Piece], k: int) -> int:
    return next(i for i, (kind, v) in enumerate(pieces) if kind == "hole" and v == k)


def form_span(text: int, form: int, *, causal: bool, fim: bool = False) -> int:
    """The tokens of context a form takes: ``text`` tokens of locked text around it (a
    prompt, a template's text before and after the form), the form at its widest (``form``:
    its own text and every hole at its width), and, filled left to right by a causal model
    (``causal``), the three fill-in-the-middle sentinels when text after the form is read
    before it (``fim``: ``unmask.infill.fim.fim_prompt``). The end-of-text token after a form
    at its widest takes no room: it is the only token allowed there, taken without a forward
    (``FormGuide.close``); an earlier one is read from a position inside the form."""
    return text + form + (3 * int(fim) if causal else 0)


def fill_left_to_right(
    model: Any,
    prompts: Sequence[Sequence[int]],
    pieces: Sequence[Sequence[Piece]],
    automata: Sequence[TokenAutomaton],
    widths: Sequence[int],
    config: SampleConfig,
    *,
    eos_id: int,
    canvas: Tensor | None = None,
    spans: Sequence[Sequence[tuple[int, int]]] = (),
    mask_id: int = 0,
    space_id: int | None = None,
    generator: torch.Generator | None = None,
    step_callback: StepCallback | None = None,
    minimums: Sequence[int] | None = None,
) -> Ordered:
    """Decode ``pieces`` after each prompt with a causal model (``ARRun`` with a ``FormGuide``):
    locked text forced, every hole held to its automaton within its width (and to at least
    ``minimums[k]`` tokens, default 0).

    Leading locked text joins the prompt (one forward for all of it). ``config`` supplies
    ``temperature``, ``top_k``, ``top_p``, ``seed`` and the repetition penalties. With
    ``canvas`` (B, L) and ``spans`` (the diffusion path's layout), ``step_callback(step,
    view)`` sees that canvas as far as the run got (``_view``).
    """
    prompts = [list(p) for p in prompts]
    pieces = [list(p) for p in pieces]
    for r, row in enumerate(pieces):
        while row and row[0][0] == "text":  # leading text: part of the prompt
            prompts[r].extend(int(t) for t in row.pop(0)[1])
    longest = max(sum(len(v) if kind == "text" else widths[v] for kind, v in row) for row in pieces)
    mcfg = getattr(model, "config", None)
    vocab_size = int(getattr(mcfg, "vocab_size", max(a.vocab_size for a in automata)))
    guide = FormGuide(pieces, automata, widths, vocab_size=vocab_size, eos_id=eos_id,
                      minimums=minimums)
    max_seq_len = getattr(mcfg, "max_seq_len", None)
    need = form_span(max(len(p) for p in prompts), longest, causal=True)
    if max_seq_len is not None and need > max_seq_len:
        raise UserError(
            f"the form needs up to {need} tokens with the prompt (holes at their widest), "
            f"more than {CONTEXT_WORDS} {max_seq_len}); use fewer or shorter holes"
        )
    device = model_device(model) or torch.device("cpu")
    if generator is None:
        generator = make_generator(config.seed, device)

    on_step = None
    if step_callback is not None and canvas is not None:

        def on_step(step: int, tokens: Tensor) -> None:
            guide.sync(step, tokens)
            step_callback(step, _view(canvas, spans, guide, mask_id, space_id))

    if longest == 0:  # nothing to write: every row's EOS is forced (close)
        guide.close(0, torch.empty(0))
        return Ordered(holes=guide.tokens, nfe=0, steps=0)
    run = ARRun(
        model,
        prompts,
        max_new_tokens=longest,
        temperature=config.temperature,
        top_k=config.top_k,
        top_p=config.top_p,
        eos_id=eos_id,
        generator=generator,
        allowed=guide,
        step_callback=on_step,
        penalties=Penalties.of(config),
    )
    run.run()
    guide.close(run.steps, torch.cat([run.prompt, run.gen[:, : run.steps]], dim=1))
    return Ordered(holes=guide.tokens, nfe=run.nfe, steps=run.steps)


def declared_width(gap: Gap, *, constrained: bool = False) -> int:
    """The most tokens a fill-in-the-middle ``gap`` is written in, as declared (nothing
    compiles): ``[MASK:n]`` n, a range's maximum, a bare ``[MASK]`` 1, else (a regex or
    choices, or ``constrained``: one is set for it elsewhere) ``DEFAULT_MAX_LEN``, or its
    minimum where more: the bounds ``plan_template`` starts from, before a constraint narrows
    them. ``steps`` and ``block_length`` pass at this width only (``refuse_loop_options``)."""
    if gap.length is not None:
        return int(gap.length)
    if gap.max_len is not None:
        return int(gap.max_len)
    if gap.min_len is None and not (gap.constrained or constrained):
        return 1
    return max(gap.min_len or 0, DEFAULT_MAX_LEN)


def fim_width(template: str | Sequence[Any]) -> int | None:
    """``declared_width`` of the one gap of ``template`` (text, or segments), None for a
    template of other than one gap (a causal checkpoint refuses it, naming why)."""
    segments = parse_template(template) if isinstance(template, str) else list(template)
    gaps = [s for s in segments if isinstance(s, Gap)]
    return declared_width(gaps[0]) if len(gaps) == 1 else None


def refuse_loop_options(facts: ModelFacts, config: SampleConfig | Mapping[str, Any],
                        width: int | Callable[[], int | None] | None = None) -> None:
    """One ``UserError`` line for an option a causal checkpoint's fill left to right
    (``fill_left_to_right``: a fill-in-the-middle gap, a form, structured output) would
    ignore: a commit policy and its parameters, ``remasking``, ``cache``, ``cfg_scale``, and
    ``steps`` or ``block_length`` other than ``width``, the tokens it writes (one step per
    token, one block, as a causal completion's at ``max_tokens``): the ``ar`` decoder's
    refusals (``unmask.sampling.choose_decoder``). The one check of ``unmask infill`` and
    ``fill-form``, ``api.infill`` and ``api.fill_form``, and the server's left-to-right
    requests (``plumbing.left_to_right``): ``unmask infill --policy threshold`` (``--steps
    100000000``) on an AR-FIM checkpoint ran and changed nothing.

    ``config``: a mapping of the options the caller set (the command line's flags, a library
    call's dict), ``steps`` and ``block_length`` checked only where set, ``width`` then worked
    out (a callable: a form's automata compile; None from it: not checked, a template of
    other than one gap); or a ``SampleConfig``, whose ``steps`` is always set: checked at
    ``width`` where one is given (the server's, ``steps`` not sent set to it), else not (a
    library caller's, whose steps may be the dataclass's). The decoder may be ``auto`` only
    (``llada``, which the callers take on a diffusion checkpoint, is refused naming that way
    out: ``choose_decoder``'s line says to use ``ar``, which infill and forms refuse)."""
    from unmask.sampling import choose_decoder

    sent = None
    if isinstance(config, Mapping):
        sent = {k: v for k, v in config.items() if v is not None}
        config = SampleConfig(**sent)
    if config.decoder != "auto":
        raise UserError(f"decoder {config.decoder!r} needs a bidirectional model; this "
                        f"checkpoint is {facts.attention}, filled left to right: leave decoder "
                        "out (auto)")
    n = None
    if sent is None or "steps" in sent or "block_length" in sent:
        n = width() if callable(width) else width
    if n is None:  # not checked: one step per token, one block
        config = dataclasses.replace(config, steps=config.gen_length, block_length=None)
    else:
        steps = config.steps if sent is None or "steps" in sent else n
        config = dataclasses.replace(config, gen_length=n, steps=steps)
    choose_decoder(facts, config, sent or ())  # steps sent at 64 are as sent as any other


__all__ = [
    "FormGuide",
    "Ordered",
    "declared_width",
    "fill_left_to_right",
    "fim_width",
    "form_span",
    "refuse_loop_options",
]
