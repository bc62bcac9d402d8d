"""Infill exact match on a gap set: held-out text with one span cut out, refilled by a model.

A gap set is a JSONL file, one gap a line. Written by hand, a line is text, encoded with the
model's tokenizer when read:

    {"prefix": "In the beginning God ", "middle": "created", "suffix": " the heavens"}

``make_gap_set`` draws gaps from a prepared dataset's validation split and ``write_gap_set``
stores them with their exact token ids as well (``"ids": {"prefix", "middle", "suffix"}``):
re-encoding decoded text can split tokens differently, so ids make a gap the same for every
model with that tokenizer. ``read_gap_set`` checks the ids against the reader's tokenizer
(the middle must decode to the stored text), so a gap set made with another tokenizer is an
error, not a silent mismatch.

``infill_exact_match`` fills every gap with its true length and counts exact matches (the
filled ids equal the held-out ids) and token accuracy: a diffusion model through
``unmask.infill.fill.fill_plan`` (the path of ``unmask infill``), by default one token per
step, most confident first; a causal model trained for fill-in-the-middle through
``unmask.infill.fim.fill_middle_ids`` with exactly the gap's length. ``unmask eval --gaps``
and ``benchmarks/infill.py`` call these. See docs/evaluation.md.

Inside: ``SLACK``, ``GapSample``, ``make_gap_set``, ``write_gap_set``, ``read_gap_set``,
``GapFiller``, ``InfillScore``, ``infill_exact_match``.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from unmask.config import SampleConfig
from unmask.errors import CONTEXT_WORDS, UserError

SLACK = 5
"""Lengths a variable gap of ``make_gap_set`` allows: ``lo..hi`` with ``hi - lo + 1 = SLACK``,
the true length at a random place inside."""


@dataclass
class GapSample:
    """One masked span: a window of held-out token ids, the span, and a variable gap's bounds."""

    window: list[int]
    start: int
    """Index of the span's first token in ``window`` (at least 1: text on the left)."""
    length: int
    lo: int
    """Shortest length of the variable gap (``[MASK:lo-hi]``); ``length`` for a fixed gap."""
    hi: int

    @property
    def prefix(self) -> list[int]:
        return self.window[: self.start]

    @property
    def truth(self) -> list[int]:
        return self.window[self.start : self.start + self.length]

    @property
    def suffix(self) -> list[int]:
        return self.window[self.start + self.length :]


def make_gap_set(
    val: Any,
    tok: Any,
    *,
    window: int,
    spans: Sequence[int],
    n: int,
    seed: int,
    block: int | None = None,
) -> dict[int, list[GapSample]]:
    """``n`` gaps per span size from ``val`` (a ``TokenDataset``): a window of ``window``
    tokens and a span of that size at least one token from either edge, holding no special
    token and well-formed UTF-8 (a gap cannot hold half a character). With ``block`` (the
    split's block size, ``unmask.data.SPLIT_BLOCK``) a window lies inside one block, so it
    never joins text from two sides of a train/validation cut (a longer window is a
    ``UserError``). Deterministic in ``seed``. A span or ``n`` below 1 is a ``UserError``
    (span 0 drew empty middles, which ``read_gap_set`` then refused in the written file)."""
    bad = [s for s in spans if isinstance(s, bool) or not isinstance(s, int) or s < 1]
    if bad or isinstance(n, bool) or not isinstance(n, int) or n < 1:
        what = f"spans={bad[0]!r}" if bad else f"n={n!r}"
        raise UserError(f"{what}: spans and n must be whole numbers >= 1 (tokens, gaps)")
    if val.n_tokens < window:
        raise UserError(
            f"the validation split has {val.n_tokens} tokens, fewer than a window of {window}"
        )
    if block and window > block:  # was drawn across blocks, silently
        raise UserError(
            f"a window of {window} tokens is longer than the split's blocks ({block} tokens): "
            "it would join two validation blocks that training text separated in the corpus; "
            f"use a window of at most {block}"
        )
    n_blocks = val.n_tokens // block if block else 0
    out: dict[int, list[GapSample]] = {}
    for s in spans:
        if window < s + 2:
            raise UserError(f"a window of {window} tokens is too short for spans of {s}")
        g = torch.Generator().manual_seed(seed * 1_000 + s)
        rows: list[GapSample] = []
        tries = 0
        while len(rows) < n:
            tries += 1
            if tries > 100 * n:
                raise UserError(f"could not find {n} spans of {s} tokens with well-formed text")
            if n_blocks:
                blk = int(torch.randint(0, n_blocks, (1,), generator=g))
                w0 = blk * block + int(torch.randint(0, block - window + 1, (1,), generator=g))
            else:
                w0 = int(torch.randint(0, val.n_tokens - window + 1, (1,), generator=g))
            ids = val.read(w0, window).tolist()
            start = int(torch.randint(1, window - s, (1,), generator=g))  # >= 1 token either side
            shift = int(torch.randint(0, SLACK, (1,), generator=g))
            truth = ids[start : start + s]
            if any(tok.is_special(t) for t in truth) or _middle_text(tok, truth) is None:
                continue
            lo = max(1, s - shift)
            rows.append(GapSample(window=ids, start=start, length=s, lo=lo, hi=lo + SLACK - 1))
        out[s] = rows
    return out


def _middle_text(tok: Any, ids: Sequence[int]) -> str | None:
    """The text of ``ids`` when they are whole UTF-8 characters, else None."""
    try:
        return b"".join(tok.token_bytes(t) for t in ids).decode("utf-8")
    except UnicodeDecodeError:
        return None


def write_gap_set(path: str | Path, samples: Sequence[GapSample], tok: Any) -> Path:
    """Write ``samples`` as a gap-set JSONL (text and exact ids, the variable bounds too),
    atomically; returns the path."""
    from unmask.files import atomic_write_text

    lines = []
    for x in samples:
        rec = {
            "prefix": tok.decode(x.prefix),
            "middle": tok.decode(x.truth),
            "suffix": tok.decode(x.suffix),
            "ids": {"prefix": x.prefix, "middle": x.truth, "suffix": x.suffix},
            "lo": x.lo,
            "hi": x.hi,
        }
        lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
    out = Path(path)
    atomic_write_text(out, "".join(lines))
    return out


_GAP = "a JSON object of strings prefix, middle, suffix"
"""What a line of a gap set is, in ``read_gap_set``'s errors."""


def read_gap_set(path: str | Path, tok: Any) -> list[GapSample]:
    """The gaps of a gap-set JSONL for a model with tokenizer ``tok``. A line that does not
    parse, lacks a field, has an empty middle, whose ids belong to another tokenizer (outside
    its vocabulary, or not decoding to the line's prefix, middle and suffix), hold the mask id
    (a special token in the middle), or whose ``lo``/``hi`` do not hold the middle's length is
    a one-line ``UserError`` naming ``file:line``."""
    from unmask.files import parse_json, read_user_text, text_lines

    p = Path(path)
    text = read_user_text(p, "gap set (a JSONL of prefix/middle/suffix lines)")  # BOM dropped
    out: list[GapSample] = []
    # (not str.splitlines: U+2028 is left raw inside the strings write_gap_set stores)
    for n, line in enumerate(text_lines(text), 1):
        if not line.strip():
            continue
        where = f"{p}:{n}"
        d = parse_json(line, p, line=n, what=_GAP)
        try:
            text = {k: d[k] for k in ("prefix", "middle", "suffix")}
            if not all(isinstance(v, str) for v in text.values()):
                raise TypeError
        except KeyError as e:
            raise UserError(
                f"{where}: missing field {e} (a gap is prefix, middle, suffix)"
            ) from None
        except TypeError:
            raise UserError(f"{where}: not {_GAP}") from None
        for k, v in text.items():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:  # \ud800 in JSON: no tokenizer takes it
                raise UserError(f"{where}: {k!r} holds an unpaired surrogate (not valid "
                                "UTF-8)") from None
        ids = d.get("ids")
        if ids is not None:
            parts = [_ids(ids, k, where, tok) for k in ("prefix", "middle", "suffix")]
            for k, part in zip(("prefix", "middle", "suffix"), parts, strict=True):
                if tok.decode(part) != text[k]:  # the middle alone let a prefix of other ids by
                    raise UserError(
                        f"{where}: its token ids do not decode to its {k}: the gap set was made "
                        "with another tokenizer (drop the ids to encode the text instead)"
                    )
            if any(tok.is_special(t) for t in parts[1]):  # decoded to nothing: a middle of
                raise UserError(f"{where}: ids.middle holds a special token")  # [MASK] ids
        else:  # the pieces of one text: a SentencePiece word start on each (``"▁dog"``) read
            # "cat " "dog" " cat" as "cat  dog  cat" (``segment_ids``)
            from unmask.infill.automaton import segment_ids

            parts = []
            for k in ("prefix", "middle", "suffix"):
                first = not any(parts)
                parts.append(segment_ids(tok, text[k], first=first) if text[k] else [])
        prefix, middle, suffix = parts
        if not middle:
            raise UserError(f"{where}: the middle is empty")
        lo, hi = (_bound(d, k, len(middle), where) for k in ("lo", "hi"))
        if not 1 <= lo <= len(middle) <= hi:
            raise UserError(
                f"{where}: lo={lo}, hi={hi}: a variable gap's bounds hold the middle's length "
                f"({len(middle)} tokens) and lo is at least 1"
            )
        out.append(GapSample(prefix + middle + suffix, len(prefix), len(middle), lo, hi))
    if not out:
        raise UserError(f"{p}: no gaps")
    return out


def _ids(ids: Any, key: str, where: str, tok: Any) -> list[int]:
    """``ids[key]``: token ids of ``tok``'s vocabulary, never its mask id (a mask in the
    prefix or suffix is one more hole the model fills), else a one-line ``UserError``."""
    v = ids.get(key) if isinstance(ids, dict) else None
    if not isinstance(v, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in v
    ):
        raise UserError(f"{where}: ids.{key} must be a list of token ids")
    bad = [i for i in v if not 0 <= i < tok.vocab_size]
    if bad:  # an embedding lookup failed on them after the gaps before were filled
        raise UserError(
            f"{where}: ids.{key} holds {bad[0]}, outside the tokenizer's {tok.vocab_size} ids: "
            "the gap set was made with another tokenizer"
        )
    if tok.mask_id in v:
        raise UserError(f"{where}: ids.{key} holds the mask id {tok.mask_id}")
    return v


def _bound(d: dict[str, Any], key: str, length: int, where: str) -> int:
    """A gap line's ``lo`` or ``hi`` (the middle's length when absent), a whole number."""
    v = d.get(key, length)
    if not isinstance(v, int) or isinstance(v, bool):
        raise UserError(f"{where}: {key} must be a whole number of tokens, got {v!r}")
    return v


class GapFiller:
    """Fills one gap between exact prefix/suffix ids with a diffusion model through
    ``unmask.infill.fill.fill_plan``; each ``[MASK:lo-hi]`` gap is planned once."""

    def __init__(self, model: Any, tok: Any, options: Any) -> None:
        self.model, self.tok, self.options = model, tok, options
        self._gaps: dict[tuple[int, int], Any] = {}

    @property
    def has_empty(self) -> bool:
        """Whether the model was trained with ``[EMPTY]`` (length mode ``empty`` is possible)."""
        return getattr(self.model.config, "empty_id", None) is not None

    def __call__(
        self, sample: GapSample, lo: int, hi: int, config: SampleConfig, mode: str = "elbo"
    ) -> Any:
        """The ``InfillResult`` of the gap of ``sample`` as a ``lo..hi``-token gap."""
        from unmask.infill import Gap, plan_template
        from unmask.infill.fill import fill_plan
        from unmask.infill.template import Plan, check_context
        from unmask.sampling.protocol import make_generator

        key = (lo, hi)
        if key not in self._gaps:
            gap = Gap(lo) if lo == hi else Gap(min_len=lo, max_len=hi)
            # a gap between ids (move_spaces=False: no space or start context of its own)
            self._gaps[key] = plan_template(
                [gap], self.tok, max_candidates=self.options.max_candidates, move_spaces=False
            )
        hole = self._gaps[key]
        # exact window ids (re-encoding decoded text could split tokens differently)
        plan = Plan(
            items=[("text", (sample.prefix, "")), *hole.items, ("text", (sample.suffix, ""))],
            holes=hole.holes,
        )
        check_context(plan, self.model.config.max_seq_len)
        return fill_plan(
            self.model,
            self.tok,
            plan,
            config,
            options=replace(self.options, length_mode=mode),
            # the sampling seed (``--seed``), 0 when none is given: a fixed 0 made every seed
            # fill the gaps alike at a temperature above 0
            generator=make_generator(0 if config.seed is None else config.seed),
        )


@dataclass
class InfillScore:
    """Fixed-length infill on a gap set: every gap refilled with its true length."""

    method: str
    """``diffusion`` (``fill_plan``) or ``ar-fim`` (``fill_middle_ids``)."""
    n: int
    exact: float
    """Fraction of gaps whose filled ids equal the held-out ids."""
    token_acc: float
    """Fraction of gap tokens equal to the held-out token at their position."""
    nfe: float
    """Mean model evaluations per gap."""
    seconds: float
    """Mean seconds per gap (after one untimed warm-up fill)."""
    sampling: dict[str, Any] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    """The first few gaps as text, with the fill."""


def refuse_unfillable(config: Any) -> None:
    """``UserError`` where ``infill_exact_match`` cannot fill gaps with a model of ``config``:
    a causal model trained without fill-in-the-middle sentinels."""
    if getattr(config, "attention", None) == "causal" and not getattr(config, "has_fim", False):
        raise UserError(
            "this causal model was not trained for fill-in-the-middle (no FIM ids in its "
            "config.json; train with --fim-rate > 0)"
        )


@torch.no_grad()
def infill_exact_match(
    model: Any,
    tok: Any,
    samples: Sequence[GapSample],
    *,
    config: SampleConfig | None = None,
    elbo_samples: int = 16,
    keep_examples: int = 3,
) -> InfillScore:
    """Fill each gap of ``samples`` with its true length; exact match and token accuracy.

    A bidirectional model fills through ``fill_plan`` with ``config`` (None: one token per
    step, ``steps`` = the gap's length, greedy); a causal model needs fill-in-the-middle
    sentinels (``config.has_fim``, trained with ``fim_rate`` > 0) and decodes exactly the
    gap's length greedily; a causal model without them is a ``UserError``.
    """
    from unmask.infill import InfillOptions
    from unmask.infill.fim import check_sentinels, fill_middle_ids, fim_prompt

    if not samples:
        raise UserError("the gap set is empty")
    cfg = model.config
    refuse_unfillable(cfg)
    if getattr(cfg, "attention", None) == "causal":
        check_sentinels(cfg, tok)  # the gaps' prompts are read with the model's sentinels
        method = "ar-fim"
        sampling: dict[str, Any] = {"decoder": "ar-fim", "temperature": 0.0}

        def fill(x: GapSample) -> tuple[list[int], int]:
            r = fill_middle_ids(
                model, x.prefix, x.suffix, max_new_tokens=x.length, min_new_tokens=x.length
            )
            return r.tokens, r.nfe

        def size(x: GapSample) -> int:  # the FIM prompt: prefix, suffix, sentinels; the middle
            return len(fim_prompt(cfg, x.prefix, x.suffix)) + x.length

        what = "prefix, suffix, FIM sentinels and middle"

    else:
        method = "diffusion"
        filler = GapFiller(
            model, tok, InfillOptions(max_candidates=SLACK, elbo_samples=elbo_samples)
        )
        sampling = (
            {"steps": "gap length (one token per step)", "policy": "llada", "temperature": 0.0}
            if config is None
            else {"steps": config.steps, "policy": config.policy, "temperature": config.temperature}
        )
        if config is not None and config.temperature > 0:  # the fills are the seed's draws
            sampling["seed"] = 0 if config.seed is None else config.seed

        def fill(x: GapSample) -> tuple[list[int], int]:
            c = SampleConfig(steps=x.length) if config is None else config
            r = filler(x, x.length, x.length, c)
            return r.gaps[0].tokens, r.nfe

        def size(x: GapSample) -> int:
            return len(x.window)

        what = "prefix, middle and suffix"

    context = getattr(cfg, "max_seq_len", None)
    for i, x in enumerate(samples, 1):  # before any work (a late one failed after the rest)
        if context is not None and size(x) > context:
            raise UserError(
                f"gap {i} of the set has {size(x)} tokens ({what}), "
                f"more than {CONTEXT_WORDS} {context}); give it a shorter "
                "prefix and suffix"
            )
    fill(samples[0])  # warm-up: plans the gap automata, first-call costs
    got: list[tuple[list[int], int, float]] = []
    for x in samples:
        t0 = time.perf_counter()
        ids, nfe = fill(x)
        got.append((ids, nfe, time.perf_counter() - t0))
    exact = sum(ids == x.truth for (ids, _, _), x in zip(got, samples, strict=True))
    right = sum(
        sum(a == b for a, b in zip(ids, x.truth, strict=False))
        for (ids, _, _), x in zip(got, samples, strict=True)
    )
    examples = [
        {
            "prefix": tok.decode(x.prefix[-24:]),
            "middle": tok.decode(x.truth),
            "fill": tok.decode(ids),
            "suffix": tok.decode(x.suffix[:24]),
        }
        for (ids, _, _), x in list(zip(got, samples, strict=True))[:keep_examples]
    ]
    return InfillScore(
        method=method,
        n=len(samples),
        exact=exact / len(samples),
        token_acc=right / sum(x.length for x in samples),
        nfe=statistics.fmean(g[1] for g in got),
        seconds=statistics.fmean(g[2] for g in got),
        sampling=sampling,
        examples=examples,
    )


__all__ = [
    "SLACK",
    "GapFiller",
    "GapSample",
    "InfillScore",
    "infill_exact_match",
    "make_gap_set",
    "read_gap_set",
    "write_gap_set",
]
