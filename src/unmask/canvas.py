"""The canvas the sampler denoises: token ids, locks, padding and per-position constraints.

Inside:

- ``Canvas``: a (B, L) grid of token ids in which ``mask_id`` marks the positions still to
  be decided, with ``locked`` positions (never changed), an optional padding mask, the
  ``prompt_index`` that classifier-free guidance blanks out, the ``region`` of columns
  that semi-autoregressive blocks are laid over, and logit ``constraints``.
- ``Canvas.from_prompts``: plain generation = prompts (left-padded) followed by masks.
- ``Canvas.from_tokens``: any canvas with masks anywhere (infilling, editing).
- ``LogitsProcessor`` and ``TokenMask``: per-position constraints on what a masked
  position may hold, applied to the logits before proposals and confidences.
- ``CanvasConstraint``: a constraint that also reads the current canvas tokens, for
  token-sequence-aware rules (a regex or a list of choices over a gap; see
  ``unmask.infill``); ``Canvas.violations`` lists the spans that break one.

Templates with gaps build canvases (``unmask.infill.template_canvas``); this module depends
on no task module.

Plain generation is infilling with the masks appended at the end, so both go through
the same sampler loop (``unmask.sampling.sample``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from unmask.errors import UserError

LogitsProcessor = Callable[[Tensor], Tensor]
"""A constraint on the logits: takes (B, L, V) logits and returns (B, L, V) logits.

It may modify its input in place. Set logits to ``-inf`` to forbid a token."""


class CanvasConstraint:
    """A constraint that sees the canvas: ``apply(logits, tokens)`` instead of ``proc(logits)``.

    For rules over a sequence of positions (a regex or a set of choices over a gap) the
    tokens allowed at one masked position depend on what has been committed elsewhere, so
    the constraint reads the current (B, L) tokens. ``Canvas.apply_constraints`` passes
    them; a sampler loop must call it (not the processors one by one).
    """

    def apply(self, logits: Tensor, tokens: Tensor) -> Tensor:
        """(B, L, V) logits restricted given the (B, L) canvas ``tokens``; may not modify
        ``tokens``."""
        raise NotImplementedError

    def violations(self, tokens: Tensor) -> list[tuple[int, int, int]]:
        """``(row, start, end)`` spans of ``tokens`` (B, L) that break the constraint (a span
        still holding a mask counts as broken)."""
        return []

    def complete(self, tokens: Tensor, scores: Tensor) -> Tensor:
        """``tokens`` (B, L) with the open (mask) positions of each span filled left to right,
        each by the best of its ``scores`` (B, L, V) among the tokens that keep its span
        completable (a span that cannot be completed stays as it is); ``tokens`` itself is
        not modified. Default: ``tokens`` (a constraint without spans has nothing to fill)."""
        return tokens


Constraint = LogitsProcessor | CanvasConstraint
"""What ``Canvas.constraints`` holds."""


@dataclass(kw_only=True)
class Canvas:
    """Token ids being denoised, with what may change and where blocks are laid."""

    tokens: Tensor
    """(B, L) int64 token ids; ``mask_id`` marks positions still to decide."""
    mask_id: int
    """Id of the ``[MASK]`` token."""
    locked: Tensor
    """(B, L) bool; True = never changed (given tokens and padding), even if it holds a mask."""
    prompt_index: Tensor
    """(B, L) bool; the given (conditioning) tokens that classifier-free guidance replaces by
    masks in its unconditional pass (LLaDA: ``x != mask_id`` at the start, padding excluded)."""
    attention_mask: Tensor | None = None
    """(B, L) bool, True = real token; None when no row is padded."""
    region: tuple[int, int] = (0, 0)
    """[start, end) columns split into semi-autoregressive blocks (the generation region)."""
    constraints: list[Constraint] = field(default_factory=list)
    """Applied in order to the (B, L, V) logits of every step, before proposals."""

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2:
            raise UserError(f"canvas tokens must be (B, L), got shape {tuple(self.tokens.shape)}")
        if self.tokens.is_floating_point() or self.tokens.is_complex():
            what = _NOT_IDS.replace("prompt ids", "canvas tokens")
            raise UserError(f"{what}, got {self.tokens.dtype}")
        shape = self.tokens.shape
        for name in ("locked", "prompt_index", "attention_mask"):
            t = getattr(self, name)
            if t is not None:
                _check_shape(name, t, shape)
                setattr(self, name, _as_flags(t, f"canvas {name}"))  # ~ and indexing need bools
        start, end = self.region
        if not 0 <= start <= end <= shape[1]:
            raise UserError(
                f"canvas region {self.region} is outside the canvas (length {shape[1]})"
            )

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def length(self) -> int:
        return self.tokens.shape[1]

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    @property
    def masked(self) -> Tensor:
        """(B, L) bool: positions the sampler may still fill (mask token and not locked)."""
        return (self.tokens == self.mask_id) & ~self.locked

    def num_masked(self) -> Tensor:
        """(B,) int64: masked positions left per row."""
        return self.masked.sum(dim=1)

    def to(self, device: torch.device | str) -> Canvas:
        """The same canvas on another device (constraints are kept as they are)."""
        return Canvas(
            tokens=self.tokens.to(device),
            mask_id=self.mask_id,
            locked=self.locked.to(device),
            prompt_index=self.prompt_index.to(device),
            attention_mask=None if self.attention_mask is None else self.attention_mask.to(device),
            region=self.region,
            constraints=list(self.constraints),
        )

    def clone(self) -> Canvas:
        return Canvas(
            tokens=self.tokens.clone(),
            mask_id=self.mask_id,
            locked=self.locked.clone(),
            prompt_index=self.prompt_index.clone(),
            attention_mask=None if self.attention_mask is None else self.attention_mask.clone(),
            region=self.region,
            constraints=list(self.constraints),
        )

    def commit(self, transfer: Tensor, x0: Tensor) -> None:
        """Write proposals ``x0`` (B, L) at ``transfer`` (B, L) bool; locked positions stay."""
        transfer = transfer & ~self.locked
        self.tokens[transfer] = x0[transfer]

    def apply_constraints(self, logits: Tensor) -> Tensor:
        """Run every constraint over the (B, L, V) logits (``CanvasConstraint`` s also see
        the current tokens)."""
        for proc in self.constraints:
            if isinstance(proc, CanvasConstraint):
                logits = proc.apply(logits, self.tokens)
            else:
                logits = proc(logits)
        return logits

    def violations(self, tokens: Tensor | None = None) -> list[tuple[int, int, int]]:
        """``(row, start, end)`` spans that break a ``CanvasConstraint`` in ``tokens``
        (default: this canvas' tokens), in constraint order."""
        tokens = self.tokens if tokens is None else tokens
        out: list[tuple[int, int, int]] = []
        for proc in self.constraints:
            if isinstance(proc, CanvasConstraint):
                out.extend(proc.violations(tokens))
        return out

    @classmethod
    def from_tokens(
        cls,
        tokens: Tensor,
        *,
        mask_id: int,
        attention_mask: Tensor | None = None,
        locked: Tensor | None = None,
        region: tuple[int, int] | None = None,
        constraints: Sequence[Constraint] = (),
    ) -> Canvas:
        """A canvas from (B, L) ids with masks anywhere (infilling).

        By default every non-mask real token is locked and counts as prompt for guidance,
        padding (``attention_mask`` False) is locked, and the block region is the whole row.
        """
        raw = torch.as_tensor(tokens)
        if raw.is_floating_point() or raw.is_complex():
            what = _NOT_IDS.replace("prompt ids", "canvas tokens")
            raise UserError(f"{what}, got {raw.dtype}")
        tokens = raw.to(torch.long)
        if attention_mask is not None:
            attention_mask = _as_flags(torch.as_tensor(attention_mask), "canvas attention_mask")
        if locked is not None:
            locked = _as_flags(torch.as_tensor(locked), "canvas locked")
        if tokens.dim() == 1:  # one row: its mask and locks may be given as one row too
            tokens = tokens[None]
            if attention_mask is not None and attention_mask.dim() == 1:
                attention_mask = attention_mask[None]
        _check_flags(tokens, attention_mask, locked)
        real = (
            torch.ones_like(tokens, dtype=torch.bool)
            if attention_mask is None
            else attention_mask.to(tokens.device)
        )
        given = (tokens != mask_id) & real
        locked = given | ~real if locked is None else locked.to(tokens.device) | ~real
        if attention_mask is not None and bool(real.all()):
            attention_mask = None
        return cls(
            tokens=tokens,
            mask_id=mask_id,
            locked=locked,
            prompt_index=given,
            attention_mask=None if attention_mask is None else real,
            region=(0, tokens.shape[1]) if region is None else region,
            constraints=list(constraints),
        )

    @classmethod
    def from_prompts(
        cls,
        prompts: Sequence[Sequence[int]] | Sequence[int] | Tensor,
        gen_length: int,
        *,
        mask_id: int,
        pad_id: int,
        device: torch.device | str | None = None,
    ) -> Canvas:
        """Prompts followed by ``gen_length`` masks: plain generation (LLaDA's canvas).

        ``prompts`` is one prompt (a list of ids or a 1-D tensor), a batch of prompts (a list
        of lists, left-padded with ``pad_id`` to the longest, with an attention mask), or a
        2-D tensor of equal-length prompts (no padding). ``[]`` is one empty prompt.
        Mask ids inside a prompt are filled by the sampler too, as in LLaDA.
        """
        rows = as_rows(prompts)
        if not rows:
            raise UserError("no prompts given")
        if not _is_id(gen_length) or int(gen_length) < 0:  # -1 was a broadcast error of torch
            raise UserError(f"gen_length must be a whole number >= 0, got {gen_length!r}")
        gen_length = operator.index(gen_length)
        P = max(len(r) for r in rows)
        B, L = len(rows), P + gen_length
        tokens = torch.full((B, L), mask_id, dtype=torch.long)
        real = torch.ones(B, L, dtype=torch.bool)
        for i, r in enumerate(rows):
            pad = P - len(r)
            tokens[i, :pad] = pad_id
            real[i, :pad] = False
            if r:
                tokens[i, pad:P] = torch.tensor(r, dtype=torch.long)
        canvas = cls.from_tokens(tokens, mask_id=mask_id, attention_mask=real, region=(P, L))
        return canvas if device is None else canvas.to(device)


def _check_shape(name: str, flags: Tensor, shape: torch.Size) -> None:
    """One line for canvas flags (``locked``, ``attention_mask``, ...) not of shape (B, L)."""
    if flags.shape != shape:
        raise UserError(f"canvas {name} has shape {tuple(flags.shape)}, tokens {tuple(shape)}")


def _check_flags(tokens: Tensor, attention_mask: Tensor | None, locked: Tensor | None) -> None:
    """One line for a padding mask that is not the shape of ``tokens`` (B, L), or ``locked``
    flags that do not broadcast to it (a row (L,) for every row may): else torch's broadcast
    error, or a (2, L) mask beside one row of tokens refused as the shape of ``locked``. Run
    before the broadcast of ``from_tokens``; ``Canvas`` checks the shapes it is given too."""
    if attention_mask is not None:
        _check_shape("attention_mask", attention_mask, tokens.shape)
    if locked is None:
        return
    try:
        fits = torch.broadcast_shapes(locked.shape, tokens.shape) == tokens.shape
    except RuntimeError:
        fits = False
    if not fits:
        _check_shape("locked", locked, tokens.shape)


def _as_flags(flags: Tensor, what: str) -> Tensor:
    """``flags`` as bools: True/False, or the numbers 0 and 1 (``what`` names them in the
    error). Any other number is refused in one line: ``!= 0`` took 0.5 (a probability
    mask) and NaN as True without a word, where the docs promise 0/1."""
    if flags.dtype == torch.bool:
        return flags
    if not bool(((flags == 0) | (flags == 1)).all()):
        raise UserError(f"{what} must hold True/False or 0/1, got other values (for "
                        "probabilities or scores, pass a comparison: probs > 0)")
    return flags != 0


def as_rows(prompts: Sequence[Sequence[int]] | Sequence[int] | Tensor) -> list[list[int]]:
    """Prompt ids as a list of rows: one prompt (ids or a 1-D tensor), a batch (lists or a
    2-D tensor); ``[]`` is one empty prompt. Raises ``UserError`` for mixed or bad input:
    text, bools (a mask passed for ids), or numbers that are not whole (a float id was
    silently cut to an int)."""
    if isinstance(prompts, Tensor):
        if prompts.dim() not in (1, 2):
            raise UserError(
                f"prompt tensor must be 1-D or 2-D, got shape {tuple(prompts.shape)}")
        ids = _tensor_ids(prompts)
        return [ids] if prompts.dim() == 1 else ids
    if isinstance(prompts, (str, bytes)):
        raise UserError(_NOT_IDS + ", got text")
    _refuse_unordered(prompts)
    if not isinstance(prompts, Iterable):  # None, a lone id: list() raised a TypeError
        one = f" (one prompt of one id: [{prompts}])" if _is_id(prompts) else ""
        raise UserError(f"prompt ids must be a list of ids or of lists of ids (one a prompt), "
                        f"not {type(prompts).__name__}{one}")
    prompts = list(prompts)
    if not prompts:
        return [[]]
    if all(map(_is_id, prompts)):
        return [_ids(prompts)]
    for p in prompts:  # before the mix: in [4, True] the True is what is wrong
        if not (_is_id(p) or _is_row(p)):
            raise UserError(_NOT_IDS + f", got {_what(p)}")
        _refuse_unordered(p)
    if any(map(_is_id, prompts)):
        raise UserError("prompts mix token ids and lists of token ids")
    return [_ids(p) for p in prompts]


def _refuse_unordered(ids: object) -> None:
    """One line for a set given as prompt ids: it has no order, so the prompt was read in
    hash order (small ids sorted, repeats dropped) without a word."""
    if isinstance(ids, (set, frozenset)):
        raise UserError(f"prompt ids must be in order (a list or tuple), not a "
                        f"{type(ids).__name__}: its order is not the text's")


_NOT_IDS = (
    "prompt ids must be whole numbers (token ids; text goes through the tokenizer: "
    "unmask.api.prompt_ids, or api.generate)"
)


def _is_id(p: object) -> bool:
    """Whether ``p`` is one token id: an int, a NumPy integer, a 0-d integer tensor or array;
    not a bool, nor a 0-d bool tensor (a mask passed for ids: True was id 1)."""
    if type(p) is int:  # the common case, first
        return True
    if isinstance(p, Tensor):
        return p.dim() == 0 and not _not_int(p)
    return (hasattr(p, "__index__") and getattr(p, "ndim", 0) == 0
            and not isinstance(p, bool))


def _is_row(p: object) -> bool:
    """Whether ``p`` may be one prompt's ids: an iterable that is no text and no 0-d tensor or
    array (iterating those raised a TypeError)."""
    return (hasattr(p, "__iter__") and not isinstance(p, (str, bytes))
            and getattr(p, "ndim", 1) != 0)


def _not_int(t: Tensor) -> bool:
    return t.is_floating_point() or t.is_complex() or t.dtype == torch.bool


def _tensor_ids(t: Tensor) -> list:
    """``t.tolist()`` of an integer tensor; a float, complex or bool one is no ids."""
    if _not_int(t):
        raise UserError(_NOT_IDS + f", got a {t.dtype} tensor")
    return t.tolist()


def _what(p: object) -> str:
    """``p`` in a refusal: its type and value, a tensor's dtype (and shape)."""
    if isinstance(p, Tensor):
        return f"a {p.dtype} tensor" + (f" of shape {tuple(p.shape)}" if p.dim() else "")
    return f"{type(p).__name__} {p!r:.40}"


def _ids(row: Iterable[Any]) -> list[int]:
    """One prompt's ids; ``UserError`` naming the first that is none (``_is_id``)."""
    if isinstance(row, Tensor):  # one prompt of a list: list(row) gave 0-d tensors
        if row.dim() != 1:
            raise UserError(f"a prompt tensor in a list must be 1-D, got shape {tuple(row.shape)}")
        return _tensor_ids(row)
    row = list(row)  # a generator is read once
    if all(type(t) is int for t in row):  # plain ints (the common case): ids as they are
        return row
    ids = []
    for t in row:
        try:
            if not _is_id(t):
                raise TypeError
            ids.append(operator.index(t))
        except TypeError:  # also a 0-d NumPy bool array, which has __index__ and refuses
            raise UserError(_NOT_IDS + f", got {_what(t)}") from None
    return ids


def left_pad(rows: Sequence[Sequence[int]], width: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """``rows`` right-aligned in ``width`` columns: (B, width) ids with ``pad_id`` in front,
    and the (B, width) bool mask of real tokens (CPU tensors)."""
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    real = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        if r:
            tokens[i, width - len(r) :] = torch.tensor(list(r), dtype=torch.long)
            real[i, width - len(r) :] = True
    return tokens, real

@dataclass
class TokenMask:
    """Constraint: only ``allowed`` tokens may be proposed where the mask is given.

    ``allowed`` is (B, L, V) or (L, V) bool (True = allowed). Positions whose row is all
    True are unconstrained. A position with nothing allowed is a user error.
    """

    allowed: Tensor

    def __post_init__(self) -> None:
        # 0/1 numbers, as the canvas' flags: ~ needs bools
        self.allowed = _as_flags(torch.as_tensor(self.allowed), "allowed-token mask")
        if self.allowed.dim() not in (2, 3):
            raise UserError(
                f"allowed-token mask must be (L, V) or (B, L, V), got {tuple(self.allowed.shape)}"
            )
        if not bool(self.allowed.any(dim=-1).all()):
            raise UserError("allowed-token mask leaves some position with no allowed token")

    def __call__(self, logits: Tensor) -> Tensor:  # (B, L, V)
        allowed = self.allowed.to(logits.device)
        want = tuple(logits.shape[-allowed.dim():])
        if tuple(allowed.shape) != want and not (
            allowed.dim() == 3 and allowed.shape[0] == 1 and tuple(allowed.shape[1:]) == want[1:]
        ):
            raise UserError(
                f"allowed-token mask has shape {tuple(allowed.shape)}; this canvas needs "
                f"{want} (positions x vocabulary{', rows first' if allowed.dim() == 3 else ''})"
            )
        return logits.masked_fill(~allowed, float("-inf"))
