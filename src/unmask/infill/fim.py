"""Fill-in-the-middle with an autoregressive model: the AR-FIM baseline of infilling.

A causal model trained with ``--objective ar --fim-rate R`` (``unmask.objectives.fim_rearrange``)
has seen rows ``[FIM_PREFIX] prefix [FIM_SUFFIX] suffix [FIM_MIDDLE] middle [EOS]`` (PSM;
Bavarian et al. 2022, arXiv:2207.14255). Given a prefix and a suffix it writes the middle
left to right and ends it with EOS. The sentinel ids are facts of ``ModelConfig``
(``fim_prefix_id``, ``fim_suffix_id``, ``fim_middle_id``), stored with the checkpoint.

Inside:

- ``fim_prompt(config, prefix_ids, suffix_ids)``: the PSM prompt; ``check_sentinels``: the
  tokenizer has the model's sentinel ids.
- ``fill_middle_ids``: decode a middle of ``min_new_tokens`` to ``max_new_tokens`` tokens with
  the KV cache of ``unmask.sampling.ar.generate_ar`` (greedy by default). EOS is banned
  before ``min_new_tokens``, so ``min_new_tokens = max_new_tokens = n`` gives exactly n
  tokens; special tokens other than EOS are never proposed.
- ``fill_middle``: the same on text; ``FimResult``. Free decoding: the middle need not be
  well-formed UTF-8 when the tokenizer splits characters.
- ``infill_causal``: a one-gap template (``"The [MASK:2-6] sat."``) filled left to right under
  the gap's token automaton (``unmask.infill.ordered``), as the diffusion path holds it: its
  constraint (regex/choices/classes/banned words), the spacing rules (after a space it took,
  at the start of the text) and well-formed UTF-8; returned as an ``InfillResult`` (what
  ``unmask infill`` does with a causal checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.infill.automaton import TokenAutomaton, vocab_of
from unmask.infill.fill import InfillResult, _after_context, _render
from unmask.infill.ordered import form_span
from unmask.infill.template import (
    Gap,
    GapError,
    Plan,
    Spans,
    _named,
    layouts_canvas,
    parse_template,
    plan_template,
    segment_ids,
    takes_space,
)
from unmask.sampling.ar import forbid_id, generate_ar
from unmask.sampling.cache import call_model
from unmask.sampling.loop import StepCallback
from unmask.sampling.penalties import Penalties

_NO_FIM = (
    "this model was not trained for fill-in-the-middle (its config.json has no fim_prefix_id); "
    "train a causal model with --objective ar --fim-rate 0.5"
)


@dataclass
class FimResult:
    """What ``fill_middle`` / ``fill_middle_ids`` return."""

    tokens: list[int]
    """Token ids of the middle (the EOS that ended it is not included)."""
    ended: bool
    """True when the model ended the middle with EOS; False when it reached ``max_new_tokens``."""
    nfe: int
    """Model evaluations: one for the prompt, one per further token."""
    middle: str = ""
    """The middle as text (``fill_middle`` only)."""
    text: str = ""
    """prefix + middle + suffix (``fill_middle`` only)."""


def _config(model: Any) -> Any:
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "fim_prefix_id", None) is None:
        raise UserError(_NO_FIM)
    if getattr(cfg, "attention", "causal") != "causal":
        raise UserError(f"fill-in-the-middle needs a causal model, not attention={cfg.attention!r}")
    return cfg


def check_sentinels(config: Any, tokenizer: Any) -> None:
    """``UserError`` unless ``tokenizer`` agrees with ``config`` on the FIM sentinels: the
    same three ids, or none of them where those ids are past its vocabulary (a test double,
    a tokenizer that never spells them). A tokenizer whose sentinels sit at other ids, or
    whose ordinary tokens have the model's sentinel ids, is not the model's: the prompt it
    encodes is not one the model was trained on. Every FIM path checks it (a constrained
    gap, a form with text after it and the eval's gap set ran without it)."""
    want = {k: getattr(config, k) for k in ("fim_prefix_id", "fim_suffix_id", "fim_middle_id")}
    fim = tokenizer.fim_ids() if hasattr(tokenizer, "fim_ids") else {}
    if fim and fim != want:
        raise UserError(
            f"the tokenizer's FIM sentinels {fim} differ from the model's {want}; "
            "use the model's tokenizer"
        )
    size = getattr(tokenizer, "vocab_size", None)
    if not fim and size is not None and any(v is not None and v < size for v in want.values()):
        raise UserError(
            f"the tokenizer has no FIM sentinels, and the model's {want} are ordinary tokens "
            "of it; use the model's tokenizer"
        )


def fim_prompt(config: Any, prefix_ids: Sequence[int], suffix_ids: Sequence[int]) -> list[int]:
    """``[FIM_PREFIX] prefix [FIM_SUFFIX] suffix [FIM_MIDDLE]`` with the ids of ``config``."""
    if getattr(config, "fim_prefix_id", None) is None:
        raise UserError(_NO_FIM)
    return [
        config.fim_prefix_id,
        *map(int, prefix_ids),
        config.fim_suffix_id,
        *map(int, suffix_ids),
        config.fim_middle_id,
    ]


def _check_fits(config: Any, prefix: int, suffix: int, middle: int) -> None:
    """``UserError`` when the PSM prompt (``prefix`` + ``suffix`` tokens and 3 sentinels) and
    up to ``middle`` tokens do not fit the model's ``max_seq_len``: the text is refused, never
    cut. The EOS that ends the middle takes no room (``unmask.infill.ordered.form_span``):
    the one rule of ``fill_middle_ids`` and ``infill_causal``."""
    max_seq_len = getattr(config, "max_seq_len", None)
    if max_seq_len is not None and form_span(prefix + suffix, middle, causal=True,
                                              fim=True) > max_seq_len:
        raise GapError(  # the template's: its text and its gap's length
            f"prefix ({prefix} tokens) + suffix ({suffix} tokens) + 3 sentinels + up to "
            f"{middle} middle tokens exceed the model's max_seq_len "
            f"({max_seq_len}); shorten the text or the middle"
        )


def _params(model: Any) -> Iterator[Any]:
    params = getattr(model, "parameters", None)
    return iter(params()) if callable(params) else iter(())


class _EosAfter:
    """A causal model whose logits never propose EOS before the middle has ``min_new``
    tokens. Keeps the KV-cache interface, so ``generate_ar`` drives it, which itself never
    proposes mask, pad, BOS, ``[EMPTY]`` nor the sentinels (``never_proposed``, the rule of
    every decoder: this kept a hand-written copy of that list)."""

    supports_kv_cache = True

    def __init__(self, model: Any, *, eos_id: int, prompt_len: int, min_new: int) -> None:
        self.model = model
        self.config = model.config
        self.eos_id = eos_id
        self.prompt_len = prompt_len
        self.min_new = min_new

    def parameters(self) -> Iterator[Any]:
        return _params(self.model)

    def __call__(self, tokens: Tensor, attention_mask: Tensor | None = None, *, cache: Any = None,
                 start: int = 0) -> Tensor:
        # (B, L, V)
        logits = call_model(self.model, tokens, attention_mask, cache=cache, start=start)
        # The last position predicts middle token number start + L - prompt_len (0-based).
        if start + tokens.shape[1] - self.prompt_len < self.min_new:
            return forbid_id(logits, self.eos_id)
        return logits


def fill_middle_ids(
    model: Any,
    prefix_ids: Sequence[int],
    suffix_ids: Sequence[int],
    *,
    max_new_tokens: int,
    min_new_tokens: int = 0,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    penalties: Penalties | None = None,
) -> FimResult:
    """Decode the middle between ``prefix_ids`` and ``suffix_ids`` with an AR-FIM model.

    ``model``: a causal model with the KV-cache interface (``unmask.model.Transformer`` or a
    double with ``supports_kv_cache``) whose ``config`` has the FIM sentinel ids. The prompt
    ``fim_prompt`` runs once, then one position per token (``generate_ar``); decoding stops at
    EOS or after ``max_new_tokens`` tokens. EOS is banned until the middle has
    ``min_new_tokens`` tokens; mask, pad, BOS and the sentinels are always banned. Greedy at
    ``temperature`` 0, else sampled with ``top_k`` / ``top_p`` from ``generator``;
    ``penalties`` as ``generate_ar``'s (the FIM prompt, suffix included, counts as text).
    """
    cfg = _config(model)
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not 0 <= min_new_tokens <= max_new_tokens:
        raise UserError(
            f"min_new_tokens must be in [0, max_new_tokens={max_new_tokens}], got {min_new_tokens}"
        )
    prompt = fim_prompt(cfg, prefix_ids, suffix_ids)
    _check_fits(cfg, len(prefix_ids), len(suffix_ids), max_new_tokens)
    wrapped = _EosAfter(model, eos_id=cfg.eos_id, prompt_len=len(prompt), min_new=min_new_tokens)
    res = generate_ar(
        wrapped,
        prompt,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=cfg.eos_id,
        pad_id=cfg.pad_id,
        generator=generator,
        penalties=penalties,
    )
    gen = res.gen_ids[0][: res.steps]
    ended = cfg.eos_id in gen
    middle = gen[: gen.index(cfg.eos_id)] if ended else gen
    return FimResult(tokens=middle, ended=ended, nfe=res.nfe)


def fill_middle(
    model: Any,
    tokenizer: Any,
    prefix: str,
    suffix: str,
    *,
    max_new_tokens: int,
    min_new_tokens: int = 0,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    penalties: Penalties | None = None,
) -> FimResult:
    """The text between ``prefix`` and ``suffix``, written by an AR-FIM model (``fill_middle_ids``).

    Stops at EOS or after ``max_new_tokens`` tokens; ``min_new_tokens = max_new_tokens = n``
    gives exactly n tokens. ``prefix`` and ``suffix`` are encoded separately, the suffix as
    text that continues one (``unmask.infill.template.segment_ids``: no SentencePiece word
    start of its own), and after a prefix ``middle`` is its tokens' bytes (docs/infill.md,
    BPE spacing). ``tokenizer`` must be the model's own: its FIM sentinels must have the ids
    of ``model.config``.
    """
    check_sentinels(_config(model), tokenizer)
    res = fill_middle_ids(
        model,
        tokenizer.encode(prefix),
        segment_ids(tokenizer, suffix, first=False),  # it continues the text, no word start
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        generator=generator,
        penalties=penalties,
    )
    # after a prefix, its tokens' bytes: a SentencePiece decoder drops the space of a text's
    # first word start, and the middle's first token is then none ("mo" + "▁cat" + "sat"
    # was "mocatsat")
    res.middle = (vocab_of(tokenizer).decode(res.tokens) if prefix
                  else tokenizer.decode(res.tokens))
    res.text = prefix + res.middle + suffix
    return res


def _constrained(gap: Gap) -> bool:
    return bool(gap.allowed is not None or gap.banned or gap.regex is not None or
                gap.choices is not None)


def check_declared_room(model: Any, tokenizer: Any, gap: Gap, prefix: str, suffix: str) -> None:
    """``infill_causal``'s first refusal, before the gap compiles ([MASK:1-100000] took
    seconds): ``UserError`` when an unconstrained gap's declared length (a range's maximum)
    and the PSM prompt of ``prefix`` and ``suffix`` do not fit the model's context (an
    unconstrained gap can take every length up to its maximum, a constrained one maybe
    fewer: the plan's, checked later). The server runs it before it checks ``steps``."""
    declared = gap.length if gap.length is not None else gap.max_len
    if isinstance(declared, int) and not _constrained(gap):
        cut = prefix[:-1] if takes_space(gap, prefix, tokenizer) else prefix  # as the plan
        _check_fits(_config(model), len(tokenizer.encode(cut)),
                    len(segment_ids(tokenizer, suffix, first=False)), declared)


def _guided_middle(
    model: Any, tokenizer: Any, auto: TokenAutomaton, label: str, prefix: str, suffix: str,
    bounds: tuple[int, int], config: SampleConfig, shown: dict[str, Any] | None = None,
) -> FimResult:
    """The middle of a gap held to its automaton ``auto`` (a constraint, or the spacing
    rules of a gap that took a space or starts the text: ``unmask.infill.template
    .gap_automaton``), written left to right (``unmask.infill.ordered``): at least
    ``bounds[0]`` and at most ``bounds[1]`` tokens, ended by EOS only where accepted (at
    ``bounds[1]`` tokens without a forward: ``FormGuide.close``). The least length is the
    guide's counter, not a product automaton (10 states a token: a [MASK:2100] was refused).
    ``shown``: ``fill_left_to_right``'s view arguments (``_progress``)."""
    from unmask.infill.ordered import fill_left_to_right

    cfg = _config(model)
    check_sentinels(cfg, tokenizer)
    lo, hi = bounds
    if not auto.feasible_lengths(hi)[lo:].any():
        raise GapError(f"{label}: no text of {lo} to {hi} tokens satisfies its constraint", 1)
    prefix_ids = tokenizer.encode(prefix)
    suffix_ids = segment_ids(tokenizer, suffix, first=False)
    # fill_left_to_right's own check speaks of a form's holes
    _check_fits(cfg, len(prefix_ids), len(suffix_ids), hi)
    prompt = fim_prompt(cfg, prefix_ids, suffix_ids)
    got = fill_left_to_right(model, [prompt], [[("hole", 0)]], [auto], [hi], config,
                             eos_id=cfg.eos_id, minimums=[lo], **(shown or {}))
    tokens = got.holes[0][0]
    return FimResult(tokens=tokens, ended=True, nfe=got.nfe,
                     middle=vocab_of(tokenizer).decode(tokens))


def _progress(plan: Plan, width: int, tokenizer: Any,
              step_callback: StepCallback | None) -> dict[str, Any] | None:
    """``fill_left_to_right``'s view arguments for ``plan``'s one gap at ``width`` tokens for
    ``step_callback`` (None: none), from the end of the hidden line break before a gap at
    offset 0 (``_after_context``, as the diffusion path reports); a gap that ends short shows
    spaces after its text, as a form's hole does."""
    report = _after_context(plan, step_callback)
    if report is None:
        return None
    hole = plan.holes[0]
    canvas, spans = layouts_canvas([plan.layout([width])], [hole.automaton], [hole.label],
                                   mask_id=tokenizer.mask_id, pad_id=tokenizer.pad_id)
    space = segment_ids(tokenizer, " ", first=False)
    return dict(canvas=canvas.tokens, spans=spans.holes, mask_id=tokenizer.mask_id,
                space_id=space[0] if len(space) == 1 else None, step_callback=report)


def infill_causal(
    model: Any,
    tokenizer: Any,
    template: str | Sequence[str | Gap],
    config: SampleConfig | None = None,
    *,
    step_callback: StepCallback | None = None,
) -> InfillResult:
    """Fill a one-gap template with an AR-FIM model, as an ``InfillResult``.

    ``[MASK:n]`` / ``Gap(n)`` gives exactly n tokens; ``[MASK:a-b]`` lets the model end the
    middle with EOS after a to b tokens (the model chooses the length, not an ELBO search;
    ``[MASK:0-b]`` may stay empty, unless the template has no other text); a gap takes the
    lengths the diffusion path gives it (``Hole.feasible``: a bare ``[MASK]`` with a regex
    or choices, what its constraint allows).
    ``config`` supplies ``temperature``, ``top_k``, ``top_p``, ``seed`` and the repetition
    penalties. The spacing rules of the diffusion path hold (``plan_template``): a space
    right before the gap moves into the middle (``takes_space``), and an unconstrained
    middle then starts with neither whitespace nor closing punctuation after it
    (``AFTER_SPACE_TEXT``); a gap that starts the text takes a virtual space, dropped from
    the output (``leads``; ``LEAD_TEXT``), but is not given the diffusion path's locked line
    break (``START_CONTEXT``): the FIM prompt's prefix is empty. Every gap is written under
    its automaton left to right (``unmask.infill.ordered``), so its text satisfies its
    constraint (regex, choices, class, banned words) and, unconstrained too, is well-formed
    UTF-8, as on the diffusion path (n tokens: n forwards, the EOS after them forced). Templates
    with several gaps raise ``UserError``: PSM conditions on one prefix and one suffix.
    ``step_callback(step, canvas)`` sees each step on the diffusion path's canvas of the
    template, the gap at its longest (``_progress``; it was never called: no live view, and
    a streamed ``/v1/infill`` sent no step).
    """
    config = config or SampleConfig()
    segments = parse_template(template) if isinstance(template, str) else list(template)
    for p in segments:
        if not isinstance(p, (str, Gap)):
            raise UserError(f"template items must be text or Gap, got {type(p).__name__}")
    gaps = [k for k, p in enumerate(segments) if isinstance(p, Gap)]
    if len(gaps) != 1:
        raise UserError(
            "a causal (AR-FIM) model fills templates with exactly one gap, "
            f"this one has {len(gaps)}; use a diffusion model for several gaps"
        )
    k = gaps[0]
    gap = segments[k]
    assert isinstance(gap, Gap)
    label = _named(gap, 1)
    prefix = "".join(str(p) for p in segments[:k])
    suffix = "".join(str(p) for p in segments[k + 1 :])
    # The spacing rules of the diffusion path (docs/infill.md, BPE spacing): the plan says
    # whether the gap took the space before it (Hole.space) or starts the text (Hole.lead),
    # holds its fill to the same automaton and renders it the same way (fill._render).
    check_declared_room(model, tokenizer, gap, prefix, suffix)
    plan = plan_template(segments, tokenizer)
    hole = plan.holes[0]
    # the lengths the diffusion path may give it: [MASK:0-b] may stay empty, a bare [MASK]
    # with a regex or choices takes the lengths its constraint allows
    lo, hi = hole.feasible[0], hole.feasible[-1]
    if not plan.has_given_text and lo == 0 and hi > 0:  # as the diffusion path: a
        lo = hole.feasible[1]  # template of a gap only (and spaces) is never left empty
    before = prefix[:-1] if hole.space else prefix
    if hi == 0:  # a constraint that only the empty text satisfies: nothing to write
        res = FimResult(tokens=[], ended=True, nfe=0)
    else:  # under the gap's automaton, as the diffusion path: an unconstrained gap's too,
        # whose text must still be well-formed UTF-8 (the free middle of ``fill_middle``
        # ended inside a character, or wrote bytes no character has: "a \ufffd\ufffd b")
        res = _guided_middle(model, tokenizer, hole.automaton, label, before, suffix, (lo, hi),
                             config, _progress(plan, hi, tokenizer, step_callback))
    layout = plan.layout([len(res.tokens)])
    row: list[int] = []
    span = (0, 0)
    for kind, v in layout:
        if kind == "hole":
            span = (len(row), len(row) + len(res.tokens))
            row += res.tokens
        else:
            row += v[0]
    text, gaps_out, ids = _render(plan, layout, row, Spans(holes=[[span]]), 0, tokenizer)
    return InfillResult(text=text, gaps=gaps_out, tokens=ids, nfe=res.nfe)


__all__ = ["FimResult", "check_declared_room", "check_sentinels", "fill_middle",
           "fill_middle_ids", "fim_prompt", "infill_causal"]
