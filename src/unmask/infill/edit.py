"""Span rewriting: re-mask parts of a text and regenerate them given everything else.

Inside:

- ``token_confidence``: the model's probability of each current token.
- ``edit``: re-mask character spans, regex matches, or the k least confident tokens, and
  refill them (same number of tokens) with the one sampler loop; text outside the spans is
  never changed. Returns an ``EditResult`` with one ``Change`` per rewritten span.
- ``revise``: ``rounds`` times: re-mask the least confident tokens, refill, report what
  changed; stops early when a round changes nothing.
- ``max_calls`` (both): the most model calls the whole edit makes, scoring, steps and refills
  of every round together (the server's ``--max-steps``); ``CallLimitError`` where the
  rounds cannot fit it.
- ``regex_spans``: the matches of a user's regex, found in a child process stopped after
  ``REGEX_SECONDS`` (Python's ``re`` cannot be interrupted); ``edit_spans``: the checked
  spans and regex matches an edit re-masks.
"""

from __future__ import annotations

import array
import dataclasses
import errno
import math
import operator
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.infill.automaton import quote_pattern, vocab_of
from unmask.infill.fill import (
    FewerStepsThanBlocks,
    InfillOptions,
    _device,
    _max_seq_len,
    fill_plan,
)
from unmask.infill.template import (
    Gap,
    Hole,
    Plan,
    check_context,
    gap_automaton,
    leads,
    plan_template,
    segment_ids,
    start_context,
    takes_space,
)
from unmask.messages import plural
from unmask.sampling import model_logit_shift, shift_logits
from unmask.sampling.loop import MaskPredictor, StepCallback

CONFIDENCE_MODES = ("masked", "visible")

SCORE_BATCH = 32
"""Masked copies ``token_confidence`` scores per model call (``mode="masked"``)."""


class CallLimitError(UserError):
    """An edit that cannot fit ``max_calls`` model calls: its rounds' scoring and a step each
    (``rounds_over``), or a round's blocks (a step each, ``blocks_over``). ``message(limit=
    ...)`` names the limit as the caller spells it (the server: its ``--max-steps``)."""

    def __init__(self, what: str, limit: int) -> None:
        self.what, self.limit = what, limit
        super().__init__(self.message())

    def __reduce__(self) -> tuple[Any, ...]:  # its arguments, not its message (a copy, pickle)
        return (type(self), (self.what, self.limit))

    def message(self, limit: str = "max_calls") -> str:
        """The line, ``{limit}`` in ``what`` spelled ``limit (N)``."""
        return self.what.replace("{limit}", f"{limit} ({self.limit})")

    @classmethod
    def rounds_over(cls, lowest: int, rounds: int, n_tokens: int, scoring: int,
                    limit: int) -> CallLimitError:
        each = scoring + 1
        fit = limit // each
        total = f"{rounds} rounds take {rounds * each}" if rounds > 1 else f"the edit takes {each}"
        hint = f"give rounds {fit} or fewer" if fit >= 1 else "edit a shorter text"
        if scoring > 1:
            hint += " (confidence_mode visible scores in 1 call)"
        return cls(f"lowest {lowest}: scoring the text's {n_tokens} tokens takes "
                   f"{plural(scoring, 'model call')} and a refill at least 1, so {total}, "
                   "more than {limit}; " + hint, limit)

    @classmethod
    def blocks_over(cls, fewer: FewerStepsThanBlocks, limit: int) -> CallLimitError:
        """The fill's refusal ``fewer`` of the steps the edit's share of ``limit`` left."""
        some = (f", {fewer.blocks} of them with a re-masked token" if fewer.blocks < fewer.total
                else "")
        return cls(f"block_length {fewer.block_length}: the {fewer.length} tokens from the "
                   f"first re-masked span to the last are "
                   f"{plural(fewer.total, 'block')}{some} (a step each), more than the "
                   f"{plural(fewer.steps, 'step')} the edit's share of " "{limit} leaves "
                   f"after scoring; give block_length {fewer.fitting_block_length}", limit)


def scoring_calls(n_tokens: int, mode: str) -> int:
    """Model calls ``token_confidence`` makes for a text of ``n_tokens``: one (``visible``),
    or one per ``SCORE_BATCH`` masked copies (``masked``)."""
    return 1 if mode == "visible" else -(-n_tokens // SCORE_BATCH)


@dataclass
class Change:
    """One rewritten span."""

    round: int
    """Round (1-based) in which it changed."""
    start: int
    """Character offset of the new text in the text after that round."""
    end: int
    old: str
    """Text before."""
    new: str
    """Text after."""


@dataclass
class EditResult:
    """What ``edit`` / ``revise`` return."""

    text: str
    """The edited text."""
    changes: list[Change] = field(default_factory=list)
    """Spans whose text changed, in order (re-masked spans refilled with the same text are left
    out)."""
    rounds: int = 1
    """Rounds run."""
    nfe: int = 0
    """Model evaluations (confidence scoring included)."""
    spans: list[tuple[int, int]] = field(default_factory=list)
    """Character spans of the input that were re-masked (first round)."""
    stopped: str | None = None
    """Why ``revise`` ran fewer rounds than asked where a round could not fit, a sentence
    (``stopped before round 2 of 3: ...``): its scoring outgrew its share of ``max_calls``,
    or its tokens lay across more blocks than it had steps. None where every round ran or a
    round changed nothing (the next would be the same)."""


@torch.no_grad()
def token_confidence(
    model: MaskPredictor,
    tokens: Sequence[int] | Tensor,
    *,
    mask_id: int,
    mode: str = "masked",
    batch_size: int = SCORE_BATCH,
    context: Sequence[int] = (),
) -> Tensor:
    """(L,) float64: the model's probability of each token of ``tokens`` where it stands.

    ``mode="masked"`` (default): p(x_i | x with position i masked), one masked copy per
    position (batched) — what a masked-diffusion model is trained to predict, so low values
    mark tokens the model would not have written. ``mode="visible"``: p(x_i | x) from one
    pass over the unmasked text (cheap, but such models are not trained on visible tokens).
    ``context``: ids the model sees before ``tokens``, not scored (``_lowest_plan`` passes
    ``START_CONTEXT``, so the first token is read as the start of a text). For a Dream-style
    model (``config.logit_shift``: the logits at i predict token i + 1) the first token with
    no context before it has no prediction: its value is NaN (it was scored by the logits
    that predict the second token).
    """
    if mode not in CONFIDENCE_MODES:
        raise UserError(
            f"unknown confidence_mode {mode!r}; choose one of {', '.join(CONFIDENCE_MODES)}"
        )
    n_ctx = len(context)
    x = torch.as_tensor([*context, *torch.as_tensor(tokens).reshape(-1).tolist()],
                        dtype=torch.long).to(_device(model))
    L = x.shape[0]
    shift = model_logit_shift(model)

    def logits_of(batch: Tensor) -> Tensor:
        out = model(batch, attention_mask=None)
        lg = getattr(out, "logits", out)
        return (shift_logits(lg) if shift else lg).to(torch.float64)  # (b, L, V)

    if mode == "visible":
        p = F.softmax(logits_of(x[None])[0], dim=-1)  # (L, V)
        out = p.gather(-1, x[:, None])[:, 0].cpu()
        if shift and n_ctx == 0 and L:
            out[0] = float("nan")
        return out[n_ctx:]
    out = torch.empty(L, dtype=torch.float64)
    for lo in range(n_ctx, L, batch_size):
        pos = torch.arange(lo, min(lo + batch_size, L), device=x.device)
        batch = x[None].repeat(len(pos), 1)  # (b, L)
        batch[torch.arange(len(pos)), pos] = mask_id
        lg = logits_of(batch)[torch.arange(len(pos)), pos]  # (b, V)
        out[lo : lo + len(pos)] = F.softmax(lg, dim=-1).gather(-1, x[pos][:, None])[:, 0].cpu()
    if shift and n_ctx == 0 and L:  # no logits predict it
        out[0] = float("nan")
    return out[n_ctx:]


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _offset(v: Any) -> int:
    """A character offset: a whole number (``operator.index``: 0.5 was cut to 0), not a bool
    (True was read as 1)."""
    if isinstance(v, bool):
        raise TypeError("a bool is no character offset")
    return operator.index(v)


REGEX_SECONDS = 5.0
"""The longest a user's regex may search the text (``regex_spans``)."""

_FIND = ("import array, itertools, re, sys\n"
         "try:\n"
         "    import resource\n"
         "    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
         "    cpu = resource.getrlimit(resource.RLIMIT_CPU)[1]\n"
         "    resource.setrlimit(resource.RLIMIT_CPU, (int(sys.argv[1]), cpu))\n"
         "except (ImportError, ValueError, OSError):\n"
         "    pass\n"
         "size, _, data = sys.stdin.buffer.read().partition(b'\\n')\n"
         "pattern, text = (b.decode('utf-8', 'surrogatepass')\n"
         "                 for b in (data[:int(size)], data[int(size):]))\n"
         "found = map(re.Match.span, re.finditer(pattern, text))\n"
         "sys.stdout.buffer.write(array.array('q', itertools.chain.from_iterable(found)))\n")
"""The child's search. In: the pattern's size in bytes on a line, then the pattern and the
text in UTF-8 (``surrogatepass``: every ``str`` as it is; JSON read the two characters
``"\\ud83d\\ude00"``, a surrogate pair, as one, and every offset after them was one short).
Out: every match's start and end as packed 64-bit ints (JSON spans were written a piece at
a time: 11,000 matches took 70 ms on top of the start, 1M took 4 s). Its argument: the CPU
seconds after which the kernel stops it (SIGXCPU, no core file), whether or not its parent
still waits: a server that exited at once (a second Ctrl-C) left it searching for days."""


def regex_spans(regex: str, text: str, *, seconds: float | None = None) -> list[tuple[int, int]]:
    """(start, end) of every match of the Python ``regex`` in ``text`` (``re.finditer``).

    The search runs in a child Python process, stopped after ``seconds`` (default
    ``REGEX_SECONDS``) with a ``UserError``: ``re`` backtracks, and a pattern such as
    ``(a+)+$`` on a line of 40 a's runs for days, in C, where neither Ctrl-C nor a server's
    timeout can stop it (it hung ``unmask edit --regex`` and ``/v1/edit``). Ctrl-C stops the
    child with the wait. The child starts in tens of milliseconds; only where no interpreter
    can be started (``sys.executable`` unset, missing or not executable) the search runs
    here, unbounded; any other failure to start it (no file descriptors or processes left)
    is a ``UserError``. A child that ends without its answer (killed: out of memory) is a
    ``UserError``, never a search here (which could run for days)."""
    limit = REGEX_SECONDS if seconds is None else seconds
    try:
        re.compile(regex)  # its syntax here: the message names the error's position
    except (re.error, OverflowError, RecursionError, ValueError) as err:
        raise UserError(f"bad regex {quote_pattern(regex)}: {err}") from None
    run = None
    if sys.executable:
        try:  # -I -S: no site, no PYTHON* variables (the child needs only the stdlib)
            cpu = str(math.ceil(limit) + 1)  # CPU seconds: after the wall-clock limit
            run = subprocess.run([sys.executable, "-I", "-S", "-c", _FIND, cpu],
                                 capture_output=True,
                                 input=_child_input(regex, text), timeout=limit,
                                 check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise UserError(
                f"regex {quote_pattern(regex)} searched the text for over {limit:g} s and was "
                "stopped (nested repeats such as (a+)+ backtrack exponentially); simplify it"
            ) from None
        except (FileNotFoundError, PermissionError):
            pass  # no interpreter to start (a frozen app): the search runs here
        except OSError as err:
            if err.errno != errno.ENOEXEC:  # a loaded machine (no descriptors, no fork):
                raise UserError(  # searching here, unbounded, could freeze a server
                    f"regex {quote_pattern(regex)}: could not start its search process "
                    f"({err.strerror or err}); try again") from None
    if run is None:
        return [m.span() for m in re.finditer(regex, text)]
    flat = array.array("q")
    if run.returncode == 0 and len(run.stdout) % (2 * flat.itemsize) == 0:
        flat.frombytes(run.stdout)
        return list(zip(flat[0::2], flat[1::2], strict=True))
    # e.g. a recursion limit in the search; a child killed (the OOM killer) says nothing
    lines = run.stderr.decode("utf-8", "replace").strip().splitlines()
    if lines:
        why = lines[-1]
    elif run.returncode < 0:
        why = f"its process was killed ({_signal_name(-run.returncode)})"
    else:
        why = f"its process ended with status {run.returncode} and no answer"
    raise UserError(f"regex {quote_pattern(regex)} failed on the text: {why}")


def _child_input(regex: str, text: str) -> bytes:
    """What ``_FIND`` reads: the pattern's size, then the pattern and the text (``_FIND``)."""
    pattern = regex.encode("utf-8", "surrogatepass")
    return b"%d\n" % len(pattern) + pattern + text.encode("utf-8", "surrogatepass")


def _signal_name(number: int) -> str:
    """``SIGKILL`` for 9; the number where the platform names no such signal."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def edit_spans(
    text: str, spans: Sequence[tuple[int, int]], regex: str | None
) -> list[tuple[int, int]]:
    """The character spans ``edit`` re-masks, sorted and merged: ``spans`` (each checked: whole
    offsets, not empty, inside the text) and every non-empty match of ``regex``
    (``regex_spans``: a ``UserError`` where it matches nothing or only empty text). The
    server finds them before the edit is queued (``/v1/edit``), so a slow regex holds no
    model worker."""
    found: list[tuple[int, int]] = []
    for span in spans:
        try:
            s, e = (_offset(v) for v in span)
        except (TypeError, ValueError):
            raise UserError(
                f"span {span!r} is not a (start, end) pair of character offsets"
            ) from None
        if not 0 <= s < e <= len(text):
            raise UserError(f"span {s}:{e} is empty or outside the text (0:{len(text)})")
        found.append((s, e))
    if regex is not None:
        every = regex_spans(regex, text)
        matches = [(s, e) for s, e in every if e > s]
        if not matches:  # '' or '\b' match empty text only: "nothing" was not so
            what = "only empty text (nothing to rewrite)" if every else "nothing"
            raise UserError(f"regex {quote_pattern(regex)} matches {what} in the text")
        found.extend(matches)
    return _merge(found)


_SENTENCE_END = re.compile(r"[.!?]+[\"'\u2019\u201d)\]]*\s*")
"""The text of a last token ``--lowest`` leaves alone: the end of the closing sentence."""


def _check_fits(n_tokens: int, context: int | None) -> None:
    """A ``UserError`` for a text of ``n_tokens`` longer than the model's ``context``."""
    if context is not None and n_tokens > context:
        raise UserError(f"the text has {n_tokens} tokens, more than the model's context "
                        f"(max_seq_len {context}); edit a shorter part")


def _lowest_plan(
    model: MaskPredictor, tokenizer: Any, text: str, k: int, mode: str, clamp: bool = False,
    max_calls: int | None = None, start_ids: Sequence[int] = (),
) -> tuple[Plan, list[str], int]:
    """A plan with the ``k`` least confident tokens (widened to whole characters) as holes.
    A ``k`` over the tokens the text offers is a ``UserError`` (it rewrote the whole text),
    or, ``clamp``, all of them (a later round of ``revise``, whose text may have become
    fewer tokens). Scoring and a one-step refill over ``max_calls`` is a ``CallLimitError``
    (before any model work).

    Returns the plan, the old text of each hole, and the model evaluations spent.
    """
    if k <= 0:
        raise UserError(f"lowest must be at least 1, got {k}")
    ids = list(tokenizer.encode(text))
    if not ids:
        raise UserError("the text is empty")
    vocab = vocab_of(tokenizer)
    offsets = [0]
    for t in ids:
        offsets.append(offsets[-1] + len(vocab.token_bytes(t)))
    raw = b"".join(vocab.token_bytes(t) for t in ids)
    # a SentencePiece-style tokenizer marks the text's start with a word start ("▁cat"): a
    # space that is not in the text (the kept text was read from the tokens' bytes, and the
    # edited text gained it); ``cut`` such bytes before the text, None where the tokens do
    # not spell the text (a tokenizer that normalizes: the text is their bytes)
    whole = text.encode("utf-8")
    cut = len(raw) - len(whole)
    if not (cut >= 0 and raw.endswith(whole) and raw[:cut] == b" " * cut):
        cut = None

    def piece(a: int, b: int) -> str:  # the text of tokens a to b
        if cut is None:
            return vocab.decode(ids[a:b])
        return whole[max(0, offsets[a] - cut) : max(0, offsets[b] - cut)].decode("utf-8")

    # tokens that stand for no character of the text (a lone word start) are never picked
    blank = [i for i in range(len(ids)) if cut is not None and offsets[i + 1] <= cut]
    closing = len(ids) > 1 and bool(_SENTENCE_END.fullmatch(vocab.decode(ids[-1:])))
    context = _max_seq_len(model)
    # the first token is scored (and refilled) after START_CONTEXT: a model trained on chunks
    # cut from running text gave it almost no probability alone (the demo: p("And") = 0.0001)
    # and --lowest always rewrote the first word (24 of 40 verses in the lowest 4; 4 after it)
    lead = not text[:1].isspace() and leads(Gap(), tokenizer)
    # a published model's BOS (``start_ids``) is the context of every token instead
    start = list(start_ids) or (start_context(tokenizer) if lead else [])
    if context is not None and len(ids) + len(start) > context:
        start = []
    # a Dream-style model with nothing before the first token has no logits that predict it
    # (token_confidence: NaN): it is never picked (it was scored by the second's logits)
    unscored = model_logit_shift(model) and not start and 0 not in blank
    offered = len(ids) - closing - unscored - len(blank)  # every token but those (below)
    if k > offered and not clamp:  # before any model work
        parts = [p for p, on in ((f"its closing {vocab.decode(ids[-1:])!r}", closing),
                                 ("its first (no logits predict it: logit_shift)", unscored),
                                 (f"{plural(len(blank), 'word-start mark')} of the tokenizer's "
                                  "own", blank))
                 if on]
        kept = f" and {' and '.join(parts)} {'are' if len(parts) > 1 else 'is'} kept" * bool(parts)
        raise UserError(f"lowest {k}: the text has {plural(len(ids), 'token')}{kept}, so "
                        f"at most {offered} can be rewritten; give a smaller number (a span "
                        f"such as 0:{len(text)} rewrites the whole text)")
    _check_fits(len(ids), context)
    nfe = scoring_calls(len(ids), mode)
    if max_calls is not None and nfe + 1 > max_calls:
        raise CallLimitError.rounds_over(k, 1, len(ids), nfe, max_calls)
    conf = token_confidence(model, ids, mask_id=tokenizer.mask_id, mode=mode, context=start)
    order = torch.argsort(conf, stable=True).tolist()
    if closing:
        # the text's closing '.': a model trained on chunks that end mid-sentence gives it
        # little probability (in the lowest 4 of 11 of 40 verses), and its refill (" to")
        # left the sentence unfinished
        order.remove(len(ids) - 1)
    if unscored:
        order.remove(0)
    for i in blank:
        order.remove(i)
    chosen = sorted(order[: min(k, len(order))])

    def boundary(i: int) -> bool:  # token boundary i is a character boundary
        o = offsets[i]
        return o >= len(raw) or not 0x80 <= raw[o] <= 0xBF

    joins = leads(Gap(), tokenizer)
    runs: list[tuple[int, int]] = []
    for i in chosen:
        s, e = i, i + 1
        while s > 0 and not boundary(s):
            s -= 1
        while e < len(ids) and not boundary(e):
            e += 1
        if (joins and s > len(blank) and vocab.token_bytes(ids[s - 1]) == b" "
                and not raw[offsets[s] : offsets[s] + 1].isspace()):
            # a word whose first character has no word-start token of its own ("cat ü" is
            # "▁cat", "▁", "<0xC3>", "<0xBC>"): the lone space before it is its word boundary,
            # which the run takes in (``spaced``, below); kept, the fill's own word start
            # ("▁dog") doubled it ("cat  dog")
            s -= 1
        runs.append((s, e))
    runs = _merge(runs)
    # a run right after the word-start marks that stand for no character of the text starts
    # the text ("2 cat" is "▁", "2", ...: a digit, a byte or a CJK character has no word-start
    # token of its own): it takes them in, as a span over it does (the text encoded on its
    # own), and its fill's virtual space is dropped (``Hole.lead``), not kept as " dog"
    head = len(blank)  # the marks are the first tokens: their bytes are all before the text
    runs = [(0 if s == head else s, e) for s, e in runs]
    automaton = gap_automaton(Gap(), tokenizer)
    items: list[tuple[str, Any]] = []
    holes: list[Hole] = []
    olds: list[str] = []
    pos = 0
    for s, e in runs:
        if s > pos:
            items.append(("text", (ids[pos:s], piece(pos, s))))
        # the start of the text, or of a line (a line starts without a space: "\n dog" was
        # kept): a virtual space, dropped from the output (``leads``, as plan_template);
        # a run that starts with whitespace of its own is refilled as it is
        line = (s > 0 and raw[: offsets[s]].endswith(b"\n")
                and not raw[offsets[s] : offsets[e]][:1].isspace() and leads(Gap(), tokenizer))
        first = (s == 0 and lead) or line
        old = piece(s, e)
        # a run that is a space and then a word (" sat"): the space is a word boundary, which
        # the run keeps as a gap after a space does (``Hole.space``: the fill may start with
        # it, or it is put back; "The cta sat" came back "The ctaates", 2 of 47 such changes
        # on the demo glued two words)
        spaced = (not first and s > 0 and old[:1] == " " and old[1:2].strip() != ""
                  and joins)
        auto = (gap_automaton(Gap(), tokenizer, lead=True) if first
                else gap_automaton(Gap(), tokenizer, space=True) if spaced else automaton)
        holes.append(Hole(label=f"span {len(holes) + 1}", candidates=[e - s], feasible=[e - s],
                          automaton=auto, lead=first, space=spaced))
        items.append(("hole", len(holes) - 1))
        olds.append(old[1:] if spaced else old)
        pos = e
    if pos < len(ids):
        items.append(("text", (ids[pos:], piece(pos, len(ids)))))
    if start and (runs[0][0] == 0 or start_ids):  # refilled after the context it was
        items = [("context", (start, "")), *items]  # scored after (``with_start_context``)
    return Plan(items=items, holes=holes), olds, nfe


def edit(
    model: MaskPredictor,
    tokenizer: Any,
    text: str,
    *,
    spans: Sequence[tuple[int, int]] = (),
    regex: str | None = None,
    lowest: int | None = None,
    config: SampleConfig | None = None,
    confidence_mode: str = "masked",
    generator: torch.Generator | None = None,
    step_callback: StepCallback | None = None,
    max_calls: int | None = None,
    start_ids: Sequence[int] = (),
) -> EditResult:
    """Re-mask parts of ``text`` and regenerate them conditioned on everything else.

    What to re-mask: character ``spans`` (``[(start, end), ...]``) and/or every match of the
    Python ``regex``, each refilled with as many tokens as it had (the span's text encoded
    on its own); or the ``lowest`` k tokens by ``token_confidence`` (``confidence_mode``),
    widened to whole characters (more than the text has is a ``UserError``). Text outside
    the re-masked spans is kept exactly.

    ``max_calls``: the most model calls the edit makes, scoring, steps and refills together
    (None: no limit). The steps are capped at what the scoring leaves; a refill of a span
    that broke its constraint gets what the steps leave, and past it the span is completed
    from its automaton without the model (``fill_canvas``). Scoring and one step over it is a
    ``CallLimitError``. ``start_ids``: what the text begins with, locked and hidden, also
    when scoring (a published model's BOS: ``unmask.infill.template.plan_template``).
    """
    return _edit(model, tokenizer, text, spans=spans, regex=regex, lowest=lowest, config=config,
                 confidence_mode=confidence_mode, generator=generator,
                 step_callback=step_callback, max_calls=max_calls, start_ids=start_ids)


def _edit(
    model: MaskPredictor,
    tokenizer: Any,
    text: str,
    *,
    spans: Sequence[tuple[int, int]] = (),
    regex: str | None = None,
    lowest: int | None = None,
    config: SampleConfig | None = None,
    confidence_mode: str = "masked",
    generator: torch.Generator | None = None,
    step_callback: StepCallback | None = None,
    later_round: bool = False,
    max_calls: int | None = None,
    whole: int | None = None,
    start_ids: Sequence[int] = (),
) -> EditResult:
    """``edit``; ``later_round``: a round of ``revise`` after the first, where a ``lowest`` over the
    text's tokens rewrites them all (``_lowest_plan``'s ``clamp``), and where tokens that lie in
    more blocks of ``block_length`` than the round's steps (``max_calls`` capping them or not;
    the blocks with a re-masked token, as the fill counts round 1's) raise ``_RoundOver`` (the
    revision ends before the round) instead of a ``UserError``; ``whole``: the limit
    ``max_calls`` is a round's share of, for messages (``revise``)."""
    config = config or SampleConfig()
    if confidence_mode not in CONFIDENCE_MODES:  # a typo with spans/regex was ignored
        raise UserError(f"unknown confidence_mode {confidence_mode!r}; choose one of "
                        f"{', '.join(CONFIDENCE_MODES)}")
    if regex is not None and not isinstance(regex, str):  # re.compile(5) was a TypeError
        raise UserError(f"regex must be a str, not {type(regex).__name__}")
    spans = () if spans is None else spans
    if isinstance(spans, (str, bytes)) or not isinstance(spans, Iterable):  # spans=5 too
        raise UserError(f"spans must be a list of (start, end) pairs of character offsets, "
                        f"not {type(spans).__name__}")
    if lowest is not None and (spans or regex is not None):
        raise UserError("choose spans/regex or lowest, not both")
    if lowest is None and not spans and regex is None:
        raise UserError("nothing to edit: give spans, a regex or lowest")
    if lowest is None and confidence_mode != "masked":  # it scored nothing: ignored
        raise UserError(f"confidence_mode {confidence_mode!r} applies to lowest (it scores the "
                        "tokens to re-mask); spans and a regex choose the text themselves")
    _check_max_calls(max_calls)
    if lowest is not None:
        plan, olds, nfe = _lowest_plan(model, tokenizer, text, lowest, confidence_mode,
                                       later_round, max_calls, start_ids)
        check_context(plan, _max_seq_len(model))
        char_spans: list[tuple[int, int]] = []
        cursor = 0
        for kind, v in plan.items:  # character spans of the holes in the input
            if kind == "context":
                continue
            if kind == "text":
                cursor += len(v[1])
            else:
                old = olds[v]
                cursor += plan.holes[v].space  # the space it keeps (``_lowest_plan``)
                char_spans.append((cursor, cursor + len(old)))
                cursor += len(old)
    else:
        # as --lowest words it (the plan's own check spoke of "the template"); before the
        # regex, whose search of a text far over the context ran out of time and blamed it
        _check_fits(len(tokenizer.encode(text)), _max_seq_len(model))
        joins = leads(Gap(), tokenizer)
        char_spans = [_trim_start(text, *_trim_end(text, s, e), joins)
                      for s, e in edit_spans(text, spans, regex)]
        segments: list[str | Gap] = []
        olds, pos = [], 0
        for s, e in char_spans:
            segments.append(text[pos:s])
            # the tokens the span is in the text: a gap after a space takes that space in,
            # and " Jerusalem" is 1 token where "Jerusalem" is 3 (the 2 extra were junk); a
            # span at offset 0 takes a virtual space (``leads``), dropped from the output,
            # unless the text starts with whitespace of its own (kept as it is)
            keep = s == 0 and text[:1].isspace()
            lead = s == 0 and not keep and leads(Gap(), tokenizer)
            space = " " if lead or takes_space(Gap(), text[pos:s], tokenizer) else ""
            # as text that continues one: a SentencePiece word start ("▁sat") is no token of
            # "mosat" (``segment_ids``)
            n = len(segment_ids(tokenizer, space + text[s:e], first=False))
            segments.append(Gap(n, name=f"span {s}:{e}", take_space=not keep))
            olds.append(text[s:e])
            pos = e
        segments.append(text[pos:])
        plan = plan_template(segments, tokenizer, max_seq_len=_max_seq_len(model),
                             start_ids=start_ids)
        nfe = 0
    run, repair = _within(config, plan, max_calls, nfe)
    try:
        res = fill_plan(model, tokenizer, plan, run, options=InfillOptions(),
                        generator=generator, step_callback=step_callback,
                        max_repair_calls=repair)
    except FewerStepsThanBlocks as e:  # before any step: the fill counts the blocks
        # those with a re-masked token, as it counts round 1's
        capped = e.steps < config.steps  # the share of max_calls left fewer than asked
        if later_round:
            # the tokens a later round chose lie in more blocks than the first round's: the
            # rounds done stand
            raise _RoundOver(nfe, f"its least confident tokens lie in "
                                  f"{plural(e.blocks, 'block')} of "
                                  f"{plural(e.block_length, 'token')} (a step each), more "
                                  f"than the {plural(e.steps, 'step')}"
                                  f"{' its share of max_calls leaves' * capped}") from None
        if capped:  # the fill's own line would blame steps the caller did not give
            raise CallLimitError.blocks_over(e, whole or max_calls) from None
        raise
    changes = [
        Change(round=1, start=g.start, end=g.end, old=old, new=g.text)
        for g, old in zip(res.gaps, olds, strict=True)
        if g.text != old
    ]
    return EditResult(text=res.text, changes=changes, rounds=1, nfe=nfe + res.nfe, spans=char_spans)


def _check_max_calls(max_calls: int | None) -> None:
    if max_calls is not None and (isinstance(max_calls, bool) or not isinstance(max_calls, int)
                                  or max_calls < 1):
        raise UserError(f"max_calls must be a positive int or None, got {max_calls!r}")


def _within(config: SampleConfig, plan: Plan, max_calls: int | None,
            spent: int) -> tuple[SampleConfig, int | None]:
    """``config`` with its steps capped at the model calls ``max_calls`` leaves after the
    ``spent`` scoring (None: no limit), and the calls a refill of broken spans may make
    (``max_repair_calls``): what the steps leave. Without blocks, a fill runs at most one
    step per masked token (``infill_config``), so fewer masks than steps leave the rest to
    the refill. Capped steps fewer than the blocks with a hole are the fill's refusal
    (``FewerStepsThanBlocks``; ``_edit`` names the limit)."""
    if max_calls is None:
        return config, None
    calls = max_calls - spent
    steps = min(config.steps, calls) if config.steps > 0 else calls
    masks = sum(max(h.candidates) for h in plan.holes)
    runs = min(steps, max(1, masks)) if config.block_length is None else steps
    return dataclasses.replace(config, steps=steps), calls - runs


class _RoundOver(Exception):
    """A later round of ``revise`` whose re-masked tokens lie in more blocks of ``block_length``
    than it has steps (a step each; ``FewerStepsThanBlocks``): the revision ends before it, as
    when a round's scoring outgrows its share of ``max_calls``. ``nfe``: its scoring calls;
    ``why``: the reason, for ``EditResult.stopped``."""

    def __init__(self, nfe: int, why: str) -> None:
        super().__init__(nfe, why)
        self.nfe, self.why = nfe, why


def _trim_end(text: str, s: int, e: int) -> tuple[int, int]:
    """The span ``s:e`` without the spaces it ends with, when some text is left: those spaces
    belong to the next word's token (" went"), which re-masked would come back glued
    ("unwent")."""
    end = e
    while end > s + 1 and text[end - 1] == " ":
        end -= 1
    return (s, end) if text[s:end].strip() else (s, e)


def _trim_start(text: str, s: int, e: int, joins: bool) -> tuple[int, int]:
    """The span ``s:e`` without the one space it starts with after a word (``" sat"`` of
    ``"The cat sat"``), when the tokenizer joins spaces to words (``joins``) and a word
    follows: the gap then takes that space in as a template gap does (``takes_space``), so
    the refill keeps a word boundary (``"ers"`` came back glued: ``"The caters"``, 4 of 69
    such spans on the demo)."""
    if joins and 0 < s and e - s > 1 and text[s] == " " and not text[s - 1].isspace() \
            and not text[s + 1].isspace():
        return s + 1, e
    return s, e


def revise(
    model: MaskPredictor,
    tokenizer: Any,
    text: str,
    *,
    rounds: int,
    lowest: int,
    config: SampleConfig | None = None,
    confidence_mode: str = "masked",
    generator: torch.Generator | None = None,
    step_callback: StepCallback | None = None,
    max_calls: int | None = None,
    start_ids: Sequence[int] = (),
) -> EditResult:
    """Repeat ``rounds`` times: re-mask the ``lowest`` least confident tokens and refill.

    ``changes`` lists ``(round, old span, new span)`` for every span that changed; a round
    that changes nothing ends the revision early (the next would be the same). A ``lowest``
    over the tokens of ``text`` is a ``UserError``; a later round whose text has become
    fewer tokens rewrites them all.

    ``max_calls``: the most model calls of all rounds together (None: no limit). Each round gets an
    even share of what the rounds before it left (``edit``'s ``max_calls``: its scoring, then
    its steps, then refills); rounds whose scoring and one step each cannot fit it are a
    ``CallLimitError`` before any model work. A later round whose text now takes more scoring
    calls than its share allows ends the revision there (``rounds`` says how many ran), and so
    does one whose least confident tokens lie in more blocks of ``config.block_length`` than it
    has steps (each block with one takes a step, as the fill counts them; the first round
    refuses that in one line): the rounds before it stand, its scoring counted in ``nfe``, and
    ``stopped`` says why.
    """
    if rounds < 1:
        raise UserError(f"rounds must be at least 1, got {rounds}")
    _check_max_calls(max_calls)
    if (max_calls is not None and isinstance(lowest, int) and lowest > 0
            and confidence_mode in CONFIDENCE_MODES):
        n = len(tokenizer.encode(text))
        scoring = scoring_calls(n, confidence_mode)
        if n and rounds * (scoring + 1) > max_calls:
            raise CallLimitError.rounds_over(lowest, rounds, n, scoring, max_calls)
    out = EditResult(text=text, rounds=0)
    for r in range(1, rounds + 1):
        share = None
        if max_calls is not None:
            share = (max_calls - out.nfe) // (rounds - r + 1)
            n = len(tokenizer.encode(out.text))
            scoring = scoring_calls(n, confidence_mode)
            if r > 1 and scoring + 1 > share:
                out.stopped = (f"stopped before round {r} of {rounds}: scoring its text's "
                               f"{plural(n, 'token')} takes {plural(scoring, 'model call')} "
                               f"and a refill at least 1, more than the {share} its share of "
                               f"max_calls ({max_calls}) leaves")
                break
        try:
            res = _edit(
                model,
                tokenizer,
                out.text,
                lowest=lowest,
                config=config,
                confidence_mode=confidence_mode,
                generator=generator,
                step_callback=step_callback,
                later_round=r > 1,
                max_calls=share,
                whole=max_calls,
                start_ids=start_ids,
            )
        except _RoundOver as over:  # its tokens span more blocks than its steps: stop here
            out.nfe += over.nfe
            out.stopped = f"stopped before round {r} of {rounds}: {over.why}"
            break
        for c in res.changes:
            c.round = r
        out.nfe += res.nfe
        out.rounds = r
        if r == 1:
            out.spans = res.spans
        out.changes.extend(res.changes)
        out.text = res.text
        if not res.changes:
            break
    return out
