"""Commit policies and confidence scores: which proposed tokens to keep at each step.

Inside:

- ``StepState``: what a policy sees at one step (proposals, confidences, candidates).
- ``CommitPolicy``: the policy protocol (``start_block``, ``select``, ``block_done``).
- ``LLaDAPolicy`` (``"llada"``): commit a scheduled number of the most confident
  proposals per step (Nie et al. 2025, arXiv:2502.09992, Alg. 4/5; ML-GSAI/LLaDA
  ``generate.py``).
- ``num_transfer_tokens``: LLaDA's per-step count schedule.
- ``POLICIES`` / ``register_policy`` / ``make_policy``: the policy registry.
- ``REMASKING`` / ``register_remasking`` / ``confidence_fn``: confidence scores by name
  (``low_confidence``, ``random``), LLaDA's remasking strategies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.schedules import LinearSchedule, Schedule


@dataclass(frozen=True)
class StepState:
    """What a commit policy sees at one denoising step."""

    step: int
    """Global step index, 0-based."""
    block: int
    """Block index, 0-based."""
    block_step: int
    """Step index inside the block, 0-based."""
    steps_per_block: int
    """Steps the schedule gives each block."""
    block_start: int
    """First column of the current block."""
    block_end: int
    """One past the last column of the current block; nothing at or after it is committed."""
    x0: Tensor
    """(B, L) proposed token per position (the canvas token where nothing is masked)."""
    confidence: Tensor
    """(B, L) score of each proposal; ``-inf`` where not a candidate."""
    candidates: Tensor
    """(B, L) bool: masked, unlocked positions before ``block_end``."""
    logits: Tensor
    """(B, L, V) logits after guidance and constraints (before Gumbel noise)."""


class CommitPolicy:
    """Decides which candidate positions to commit at each step.

    The loop calls ``start_block`` when a block begins, then per step ``select`` (a
    (B, L) bool of positions to commit, a subset of ``state.candidates``) and
    ``block_done`` (whether to move on to the next block).
    """

    def start_block(self, block_masked: Tensor, steps: int) -> None:
        """A block begins; ``block_masked`` (B, Lb) bool = masked positions inside it."""

    def select(self, state: StepState) -> Tensor:
        raise NotImplementedError

    def block_done(self, block_steps_done: int, steps_per_block: int, block_masked: Tensor) -> bool:
        """Whether the block is finished; by default after exactly ``steps_per_block`` steps."""
        return block_steps_done >= steps_per_block


def num_transfer_tokens(block_masked: Tensor, steps: int, schedule: Schedule | None = None) -> Tensor:
    """(B, steps) int64: tokens to commit per step for each row of a block.

    With the linear schedule this is LLaDA's ``get_num_transfer_tokens``: n masked tokens
    over s steps give ``n // s`` per step and one more in the first ``n % s`` steps
    (10 over 4 → 3, 3, 2, 2), per row.
    """
    schedule = schedule or LinearSchedule()
    counts = block_masked.sum(dim=1).tolist()  # (B,)
    out = [schedule.transfer_counts(int(n), steps) for n in counts]
    return torch.tensor(out, dtype=torch.long, device=block_masked.device).reshape(len(counts), steps)


def topk_per_row(confidence: Tensor, k: Tensor) -> Tensor:
    """(B, L) bool selecting, in each row b, the ``k[b]`` highest confidences (``torch.topk``)."""
    transfer = torch.zeros_like(confidence, dtype=torch.bool)
    for b in range(confidence.shape[0]):
        kb = int(k[b])
        if kb > 0:
            _, idx = torch.topk(confidence[b], k=kb)
            transfer[b, idx] = True
    return transfer


class LLaDAPolicy(CommitPolicy):
    """Commit the scheduled number of most confident candidates (LLaDA, arXiv:2502.09992).

    At the start of each block the count schedule is fixed from the masked positions in
    that block (``num_transfer_tokens``); each step commits ``topk(confidence, k)`` per row.
    """

    def __init__(self, schedule: Schedule | None = None) -> None:
        self.schedule = schedule or LinearSchedule()
        self._counts: Tensor | None = None

    def start_block(self, block_masked: Tensor, steps: int) -> None:
        self._counts = num_transfer_tokens(block_masked, steps, self.schedule)  # (B, steps)

    def select(self, state: StepState) -> Tensor:
        assert self._counts is not None, "start_block was not called"
        k = self._counts[:, state.block_step]  # (B,)
        # Like the reference, never ask for more than the candidates (they only run short
        # when padding or locks keep positions out); the reference would pick -inf ones.
        k = torch.minimum(k, state.candidates.sum(dim=1))
        return topk_per_row(state.confidence, k) & state.candidates


PolicyFactory = Callable[[SampleConfig], CommitPolicy]
POLICIES: dict[str, PolicyFactory] = {}


def register_policy(name: str) -> Callable[[PolicyFactory], PolicyFactory]:
    """Decorator: register a ``SampleConfig -> CommitPolicy`` factory under ``name``."""

    def deco(factory: PolicyFactory) -> PolicyFactory:
        POLICIES[name] = factory
        return factory

    return deco


@register_policy("llada")
def _llada(config: SampleConfig) -> CommitPolicy:
    return LLaDAPolicy()


def make_policy(config: SampleConfig) -> CommitPolicy:
    """A fresh policy for one sampling run (policies may keep per-block state)."""
    if config.policy not in POLICIES:
        raise UserError(f"unknown policy {config.policy!r}; choose one of {', '.join(sorted(POLICIES))}")
    return POLICIES[config.policy](config)


ConfidenceFn = Callable[[Tensor, Tensor, "torch.Generator | None"], Tensor]
"""(logits (B, L, V), x0 (B, L), generator) -> confidence (B, L)."""

REMASKING: dict[str, ConfidenceFn] = {}


def register_remasking(name: str) -> Callable[[ConfidenceFn], ConfidenceFn]:
    """Decorator: register a confidence score under ``name`` (``SampleConfig.remasking``)."""

    def deco(fn: ConfidenceFn) -> ConfidenceFn:
        REMASKING[name] = fn
        return fn

    return deco


@register_remasking("low_confidence")
def low_confidence(logits: Tensor, x0: Tensor, generator: torch.Generator | None) -> Tensor:
    """Probability of the proposal, ``softmax(logits.float64)[x0]`` (LLaDA's ``low_confidence``)."""
    p = F.softmax(logits.to(torch.float64), dim=-1)  # (B, L, V)
    return torch.gather(p, dim=-1, index=x0.unsqueeze(-1)).squeeze(-1)  # (B, L)


@register_remasking("random")
def random_confidence(logits: Tensor, x0: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform random scores: commit a random subset (LLaDA's ``random`` remasking)."""
    return _rand(x0.shape, torch.float32, x0.device, generator)


def confidence_fn(name: str) -> ConfidenceFn:
    if name not in REMASKING:
        raise UserError(f"unknown remasking {name!r}; choose one of {', '.join(sorted(REMASKING))}")
    return REMASKING[name]


def _rand(
    shape: torch.Size | tuple[int, ...], dtype: torch.dtype, device: torch.device, generator: torch.Generator | None
) -> Tensor:
    """Uniform [0, 1) draws from ``generator`` (global RNG if None), on ``device``."""
    if generator is None or generator.device == device:
        return torch.rand(shape, dtype=dtype, device=device, generator=generator)
    return torch.rand(shape, dtype=dtype, device=generator.device, generator=generator).to(device)
