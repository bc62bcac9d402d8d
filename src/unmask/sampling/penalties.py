"""Repetition penalties on the logits, one definition for every decoder that reads them.

Three knobs, as the tools users know define them (and with their neutral values as defaults):

- ``repetition_penalty`` r (CTRL, Keskar et al. 2019; Hugging Face ``generate``, vLLM): the
  logit of every token already in the text (prompt or generated) is divided by r where it is
  positive and multiplied by r where it is negative; r > 1 discourages repeats, 1 = off.
- ``presence_penalty`` a and ``frequency_penalty`` f (OpenAI, vLLM): the logit of token v is
  lowered by ``a · [c_v > 0] + f · c_v``, c_v = how often v occurs in the *generated* text so
  far (the prompt is not counted); 0 = off, negative values encourage repeats.

r is applied first, then a and f (vLLM's order). What "the text so far" is depends on the
decoder, and each says it in one place:

- left to right (``ar``, and the verifier of ``speculative`` / ``hybrid``): the prompt and the
  tokens before the position being predicted, drafts included where a draft is verified, so
  a verified draft is judged exactly as ``ar`` would judge it (greedy output stays
  token-identical to ``ar`` with the same penalties, sampled output distributed as it);
- the commit loop (``llada``, ``bd3lm``; ``PenaltyConstraint``): every token committed so far
  anywhere on the canvas, given tokens included for r; every masked position is penalised
  for all of them (a masked diffusion model sees the whole canvas, not a prefix).

``SampleConfig.repetition_penalty`` etc. carry them; ``Penalties.of(config)`` is None when all
three are neutral, and then no decoder does any extra work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from unmask.canvas import CanvasConstraint
from unmask.config import SampleConfig
from unmask.errors import UserError

PENALTY_FIELDS: tuple[str, ...] = ("repetition_penalty", "presence_penalty", "frequency_penalty")
"""The ``SampleConfig`` fields of the penalties."""

PENALTY_DECODERS: tuple[str, ...] = ("llada", "bd3lm", "ar", "speculative", "hybrid")
"""The decoders that apply them (the others have no logits to penalise: SEDD's score, the
continuous decoders' vectors)."""


@dataclass(frozen=True)
class Penalties:
    """The three penalties (see the module); build with ``Penalties.of(config)``."""

    repetition: float = 1.0
    presence: float = 0.0
    frequency: float = 0.0

    @classmethod
    def of(cls, config: SampleConfig) -> Penalties | None:
        """The penalties a ``SampleConfig`` asks for (checked when it was made); None when
        every one is neutral."""
        if not given_penalties(config):
            return None
        return cls(repetition=float(config.repetition_penalty),
                   presence=float(config.presence_penalty),
                   frequency=float(config.frequency_penalty))  # fmt: skip

    def apply(self, logits: Tensor, seen: Tensor, generated: Tensor, *,
              where: Tensor | None = None, inplace: bool = False) -> Tensor:
        """Penalised ``logits`` (..., V). ``seen`` (..., V) counts every token of the text so
        far (prompt included; r reads whether it is > 0), ``generated`` (..., V) the generated
        ones (a and f; a subset of ``seen``); both broadcast against ``logits``. ``where``
        (...) bool: penalise only those positions. A new tensor unless ``inplace``.

        Only the columns of tokens the text holds can change, so only those are computed (a
        few hundred of V: the full-width version cost a third of a demo-model step)."""
        V = logits.shape[-1]
        cols = (seen.reshape(-1, V) > 0).any(dim=0).nonzero().flatten()  # (K,)
        out = logits if inplace else logits.clone()
        if cols.numel() == 0:
            return out
        sub = logits.index_select(-1, cols)  # (..., K)
        pen = sub
        if self.repetition != 1.0:
            r = self.repetition
            hit = seen.index_select(-1, cols) > 0
            pen = torch.where(hit, torch.where(pen > 0, pen / r, pen * r), pen)
        if self.presence != 0.0 or self.frequency != 0.0:
            g = generated.index_select(-1, cols).to(pen.dtype)
            pen = pen - self.presence * (g > 0).to(pen.dtype) - self.frequency * g
        if where is not None:
            pen = torch.where(where[..., None], pen, sub)
        return out.index_copy_(-1, cols, pen.to(out.dtype))


SPECIAL_ID_FIELDS: tuple[str, ...] = (
    "eos_id", "pad_id", "bos_id", "mask_id", "fim_prefix_id", "fim_suffix_id", "fim_middle_id",
)
"""The model config fields whose tokens the penalties never count (``special_ids``)."""


def special_ids(model_config: Any) -> tuple[int, ...]:
    """The model's special token ids (``SPECIAL_ID_FIELDS`` of its config): never counted, so
    never penalised. An end-of-text token in the prompt (a document separator, the end of an
    earlier chat turn) must not make the model less willing to stop."""
    ids = (getattr(model_config, f, None) for f in SPECIAL_ID_FIELDS)
    return tuple(sorted({int(i) for i in ids if i is not None}))


def token_counts(tokens: Tensor, keep: Tensor | None, vocab: int,
                 exempt: Sequence[int] = ()) -> Tensor:
    """(B, V) float32: how often each token id occurs in each row of ``tokens`` (B, L), counting
    only the positions where ``keep`` (B, L) bool is True (all when None) and never the ids in
    ``exempt``. Ids outside [0, V) are ignored."""
    B = tokens.shape[0]
    ok = (tokens >= 0) & (tokens < vocab)
    if keep is not None:
        ok = ok & keep
    if exempt:
        ok = ok & ~torch.isin(tokens, torch.tensor(list(exempt), device=tokens.device))
    out = torch.zeros(B, vocab, dtype=torch.float32, device=tokens.device)
    return out.scatter_add_(1, tokens.clamp(0, vocab - 1), ok.to(torch.float32))


def prefix_counts(base: Tensor, drafts: Tensor, live: Tensor | None = None,
                  exempt: Sequence[int] = ()) -> Tensor:
    """Counts (B, K + 1, V) before each of K + 1 positions that follow a committed text with
    counts ``base`` (B, V) and the drafts (B, K) in between: position j sees the first j
    drafts (only the ``live`` (B, K) ones, where given; never the ids in ``exempt``).
    Position 0 is ``base`` itself."""
    B, K = drafts.shape
    V = base.shape[-1]
    if K == 0:
        return base[:, None]
    one = torch.zeros(B, K, V, dtype=base.dtype, device=base.device)
    valid = (drafts >= 0) & (drafts < V)
    if live is not None:
        valid = valid & live
    if exempt:
        valid = valid & ~torch.isin(drafts, torch.tensor(list(exempt), device=drafts.device))
    one.scatter_(2, drafts.clamp(0, V - 1)[..., None], valid[..., None].to(base.dtype))
    before = torch.cat([torch.zeros_like(one[:, :1]), one.cumsum(dim=1)], dim=1)  # (B, K+1, V)
    return base[:, None] + before


class TextCounts:
    """Running counts of a left-to-right text (``ar``, ``speculative``, ``hybrid``) and the
    penalties they drive: ``seen`` (B, V) over prompt and generated tokens, ``generated``
    (B, V) over generated ones only, built from ``prompt`` (B, P) where ``keep`` (B, P) on the
    first ``penalise`` (which learns V from the logits). ``add(tokens, keep)`` counts newly
    committed tokens (B, n) where ``keep`` (B, n). Ids in ``exempt`` are never counted."""

    def __init__(self, penalties: Penalties, prompt: Tensor, keep: Tensor,
                 exempt: Sequence[int] = ()) -> None:
        self.penalties, self._prompt, self._keep = penalties, prompt, keep
        self.exempt = tuple(exempt)
        self.seen: Tensor | None = None  # (B, V)
        self.generated: Tensor | None = None  # (B, V)

    def _counts(self, vocab: int) -> tuple[Tensor, Tensor]:
        if self.seen is None or self.generated is None:
            self.seen = token_counts(self._prompt, self._keep, vocab, self.exempt)
            self.generated = torch.zeros_like(self.seen)
        return self.seen, self.generated

    def add(self, tokens: Tensor, keep: Tensor | None = None) -> None:
        if self.seen is None or self.generated is None:  # a run penalises, then commits
            raise RuntimeError("TextCounts.add before the first penalise (V unknown)")
        new = token_counts(tokens, keep, self.seen.shape[-1], self.exempt)
        self.seen += new
        self.generated += new

    def penalise(self, logits: Tensor, drafts: Tensor | None = None,
                 live: Tensor | None = None) -> Tensor:
        """``logits`` (B, V) of the next position, or (B, K + 1, V) of the positions after
        each of K ``drafts`` (B, K) (``live`` (B, K): which of them a row drafted), each
        penalised for the text before it; without ``drafts``, (B, n, V) logits are all
        penalised for the committed text alone."""
        seen, generated = self._counts(logits.shape[-1])
        if drafts is None:
            if logits.dim() == 3:
                seen, generated = seen[:, None], generated[:, None]
            return self.penalties.apply(logits, seen, generated)
        return self.penalties.apply(logits, prefix_counts(seen, drafts, live, self.exempt),
                                    prefix_counts(generated, drafts, live, self.exempt))


def text_counts(penalties: Penalties | None, prompt: Tensor, real: Tensor,
                started: Sequence[bool], model_config: Any) -> TextCounts | None:
    """The ``TextCounts`` of a left-to-right run with ``penalties`` (None without) over
    ``prompt`` (B, P), counting its ``real`` (B, P) positions except in the rows ``started``
    (an empty prompt given a start token: not text), never the model's ``special_ids``."""
    if penalties is None:
        return None
    no_text = torch.tensor(list(started), dtype=torch.bool, device=prompt.device)
    return TextCounts(penalties, prompt, real & ~no_text[:, None], special_ids(model_config))


class PenaltyConstraint(CanvasConstraint):
    """The penalties as a canvas constraint of the commit loop (``llada``, ``bd3lm``): every
    masked position's logits are penalised for the tokens committed so far (``seen``: every
    non-mask token of the row that is not padding; ``generated``: those the sampler wrote, i.e.
    not locked), except the ``exempt`` ids (``special_ids``). Committed positions keep their
    logits (block editing reads them)."""

    def __init__(self, penalties: Penalties, *, mask_id: int, locked: Tensor,
                 attention_mask: Tensor | None, exempt: Sequence[int] = ()) -> None:
        self.penalties, self.mask_id, self.exempt = penalties, mask_id, tuple(exempt)
        self.locked, self.attention_mask = locked, attention_mask

    def apply(self, logits: Tensor, tokens: Tensor) -> Tensor:
        B, L, V = logits.shape
        if tokens.shape[0] != B:  # guidance's doubled batch is merged before constraints
            raise ValueError(f"logits for {B} rows, canvas of {tokens.shape[0]}")
        filled = tokens != self.mask_id
        if self.attention_mask is not None:
            filled = filled & self.attention_mask.bool()
        seen = token_counts(tokens, filled, V, self.exempt)[:, None]  # (B, 1, V)
        generated = token_counts(tokens, filled & ~self.locked, V, self.exempt)[:, None]
        open_ = (tokens == self.mask_id) & ~self.locked  # (B, L)
        return self.penalties.apply(logits, seen, generated, where=open_, inplace=True)


def given_penalties(config: SampleConfig) -> list[str]:
    """The ``PENALTY_FIELDS`` of ``config`` that are not at their neutral default."""
    return [f for f in PENALTY_FIELDS if getattr(config, f) != getattr(SampleConfig, f)]


def check_penalty_decoder(decoder: str, config: SampleConfig) -> None:
    """Refuse penalties for a decoder that has no logits to apply them to (one line)."""
    given = given_penalties(config)
    if given and decoder not in PENALTY_DECODERS:
        raise UserError(
            f"{given[0]} applies to the decoders that sample from logits "
            f"({', '.join(PENALTY_DECODERS)}), not to decoder {decoder!r}"
        )


__all__ = [
    "PENALTY_DECODERS",
    "PENALTY_FIELDS",
    "Penalties",
    "PenaltyConstraint",
    "TextCounts",
    "check_penalty_decoder",
    "given_penalties",
    "prefix_counts",
    "special_ids",
    "text_counts",
    "token_counts",
]
