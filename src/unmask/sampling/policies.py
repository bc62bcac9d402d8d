"""Commit policies and confidence scores: which proposed tokens to keep at each step.

Inside:

- ``StepState``: what a policy sees at one step (proposals, confidences, candidates).
- ``CommitPolicy``: the policy protocol (``start_block``, ``select``, ``block_done``,
  ``step_is_empty``).
- ``LLaDAPolicy`` (``"llada"``): commit a scheduled number of the most confident
  proposals per step (Nie et al. 2025, arXiv:2502.09992, Alg. 4/5; ML-GSAI/LLaDA
  ``generate.py``).
- ``ThresholdPolicy`` (``"threshold"``), ``FactorPolicy`` (``"factor"``): Fast-dLLM's
  parallel decoding (Wu et al. 2025, arXiv:2505.22618); ``EntropyBoundPolicy``
  (``"entropy"``): the EB-sampler (Ben-Hamu et al. 2025, arXiv:2505.24857). These are
  *dynamic*: each row commits as many tokens per step as its confidences allow, and a
  block ends when it has no masks left.
- ``num_transfer_tokens``: LLaDA's per-step count schedule.
- ``POLICIES`` / ``register_policy`` / ``make_policy``: the policy registry.
- ``CONFIDENCES`` / ``register_confidence``: confidence measures (``prob``, ``margin``,
  ``neg_entropy``).
- ``REMASKING`` / ``register_remasking`` / ``confidence_fn`` / ``scorer``: LLaDA's
  remasking strategies (``low_confidence`` = rank by the confidence measure, ``random``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from unmask.config import SampleConfig, check_parameter
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

    dynamic: bool = False
    """True = the number of steps is not scheduled: the loop passes as ``steps`` a bound (the
    block's share of ``SampleConfig.steps``, plus one step per mask before the block, which
    the block commits too; at most one step per mask it holds), asks ``block_done`` after
    every step, ends the block at the bound whatever ``block_done`` says, and lets ``steps``
    be no multiple of the blocks. After ``select`` it commits, in every row, at least the
    scheduled count of LLaDA's schedule over the bound (``num_transfer_tokens`` under the
    model's schedule; the most confident candidates first), so the block is filled within
    its bound: with one step per mask the count is one (a row's top-1)."""

    def block_done(self, block_steps_done: int, steps_per_block: int, block_masked: Tensor) -> bool:
        """Whether the block is finished; by default after exactly ``steps_per_block`` steps."""
        return block_steps_done >= steps_per_block

    def step_is_empty(self, block_step: int) -> bool:
        """Whether step ``block_step`` of the block will commit nothing in any row, known before
        the model runs (then ``SampleConfig.skip_empty_steps`` skips the model call)."""
        return False

    def empty_rows(self, block_step: int) -> Tensor | None:
        """(B,) bool: the rows that step ``block_step`` of the block commits nothing in, known
        before the model runs (each such row's run alone skips the step under
        ``SampleConfig.skip_empty_steps``, drawing nothing); None: none known."""
        return None

    def use_schedule(self, schedule: Schedule) -> None:
        """The noise schedule the model was trained with (``unmask.schedules.schedule_of``),
        given by the loop before the first block; a policy that schedules its counts follows
        it, the others ignore it."""


def num_transfer_tokens(
    block_masked: Tensor, steps: int, schedule: Schedule | None = None
) -> Tensor:
    """(B, steps) int64: tokens to commit per step for each row of a block.

    With the linear schedule this is LLaDA's ``get_num_transfer_tokens``: n masked tokens
    over s steps give ``n // s`` per step and one more in the first ``n % s`` steps
    (10 over 4 → 3, 3, 2, 2), per row. Another schedule shapes the counts only where a row
    has more masks than steps: with ``n <= s`` every schedule gives LLaDA's counts, one token
    in each of the first n steps (cosine's rounding would otherwise scatter the empty steps,
    5 over 6 as 0, 1, 0, 1, 2, 1; callers that pass ``steps = masks`` rely on one token a
    step, which ``Schedule.transfer_counts`` keeps from ``n >= s`` on)."""
    schedule = schedule or LinearSchedule()
    linear = LinearSchedule()
    counts = block_masked.sum(dim=1).tolist()  # (B,)
    out = [(linear if n <= steps else schedule).transfer_counts(int(n), steps) for n in counts]
    return torch.tensor(out, dtype=torch.long, device=block_masked.device).reshape(
        len(counts), steps
    )


def topk_per_row(confidence: Tensor, k: Tensor, kmax: int | None = None) -> Tensor:
    """(B, L) bool selecting, in each row b, the ``k[b]`` highest confidences, exact ties in
    column order (``most_confident``). ``torch.topk`` (LLaDA's reference) breaks a tie by
    where the row sits in the tensor, so a row left-padded beside a longer prompt committed
    other columns than alone, e.g. two confidences of exactly 1.0; column order is the same
    for the row at any padding (the padding is on the left). The columns above each row's
    k-th confidence, then its ties leftmost first: ``most_confident``'s choice without a sort
    of every row (a NaN ranks first, as there; a NaN k-th takes that sort). ``kmax``: a bound
    on ``k`` the caller knows on the host (``LLaDAPolicy``: its counts), which saves reading
    ``k.max()`` from the device every step; None: read. It must be at least ``k.max()``:
    unchecked (a check would read the device), a smaller one indexes past the top-``kmax``
    (an ``IndexError``-like ``RuntimeError``, a device-side assert on CUDA)."""
    k = k.to(confidence.device)
    if kmax is None:
        kmax = int(k.max()) if k.numel() else 0
    kmax = min(kmax, confidence.shape[1])
    if kmax <= 0:
        return torch.zeros_like(confidence, dtype=torch.bool)
    top = torch.topk(confidence, kmax, dim=1).values  # (B, kmax), descending
    kth = top.gather(1, (k - 1).clamp(min=0).unsqueeze(1))  # (B, 1)
    if bool(kth.isnan().any()):
        return most_confident(confidence, k)
    above = (confidence > kth) | confidence.isnan()  # (B, L)
    tied = confidence == kth
    room = (k - above.sum(dim=1)).unsqueeze(1)  # (B, 1): the ties to take
    return (above | (tied & (tied.cumsum(dim=1) <= room))) & (k > 0).unsqueeze(1)


class LLaDAPolicy(CommitPolicy):
    """Commit the scheduled number of most confident candidates (LLaDA, arXiv:2502.09992).

    At the start of each block the count schedule is fixed from the masked positions in
    that block (``num_transfer_tokens``, under the model's schedule: linear, LLaDA's counts,
    unless the checkpoint was trained with another, and LLaDA's counts whatever the schedule
    where a row has no more masks than steps: one token a step); each step commits
    the ``k`` most confident candidates per row, exact ties in column order
    (``topk_per_row``).
    """

    def __init__(self, schedule: Schedule | None = None) -> None:
        self.schedule = schedule or LinearSchedule()
        self._counts: Tensor | None = None
        self._kmax: list[int] | None = None  # per step, the most any row commits (host)

    def use_schedule(self, schedule: Schedule) -> None:
        self.schedule = schedule

    def start_block(self, block_masked: Tensor, steps: int) -> None:
        self._counts = num_transfer_tokens(block_masked, steps, self.schedule)  # (B, steps)
        self._kmax = self._counts.max(dim=0).values.tolist()  # one read a block, none a step

    def select(self, state: StepState) -> Tensor:
        assert self._counts is not None, "start_block was not called"
        k = self._counts[:, state.block_step]  # (B,)
        # Like the reference, never ask for more than the candidates (they only run short
        # when padding or locks keep positions out); the reference would pick -inf ones.
        k = torch.minimum(k, state.candidates.sum(dim=1))
        kmax = None if self._kmax is None else self._kmax[state.block_step]
        return topk_per_row(state.confidence, k, kmax) & state.candidates

    def step_is_empty(self, block_step: int) -> bool:
        assert self._counts is not None, "start_block was not called"
        return not bool(self._counts[:, block_step].any())

    def empty_rows(self, block_step: int) -> Tensor:
        assert self._counts is not None, "start_block was not called"
        return self._counts[:, block_step] == 0  # (B,)


def _ranked(confidence: Tensor) -> tuple[Tensor, Tensor]:
    """Confidences (B, L) sorted descending per row, and the sorting indices."""
    return torch.sort(confidence, dim=1, descending=True, stable=True)


def _commit_sorted_prefix(state: StepState, keep_sorted: Tensor, order: Tensor) -> Tensor:
    """(B, L) bool from ``keep_sorted`` (B, L) given in confidence order (``_ranked``): the
    top-1 candidate of every row is always kept, and nothing outside ``state.candidates`` is."""
    keep_sorted = keep_sorted.clone()
    keep_sorted[:, 0] = True
    transfer = torch.zeros_like(state.candidates)
    transfer.scatter_(1, order, keep_sorted)
    return transfer & state.candidates


def most_confident(confidence: Tensor, k: Tensor) -> Tensor:
    """(B, L) bool selecting, in each row b, the ``k[b]`` (B,) highest confidences, ties in
    column order (the stable ranking of ``_ranked``, which the dynamic policies' prefixes
    follow, so a count and a prefix agree on which candidates come first)."""
    _, order = _ranked(confidence)  # (B, L)
    rank = torch.arange(confidence.shape[1], device=confidence.device)
    keep = rank < k.to(confidence.device).unsqueeze(1)  # (B, L) in confidence order
    return torch.zeros_like(keep).scatter_(1, order, keep)


class DynamicPolicy(CommitPolicy):
    """Base of the parallel policies: the number of commits per step comes from the confidences.

    A block is done when it has no masks left, or after ``steps_per_block`` steps, the bound
    the loop passes (``CommitPolicy.dynamic``). The loop, not the policy, then commits at
    least the scheduled count of LLaDA's schedule over that bound, the most confident first
    (``most_confident``), so the block is filled within it: the dynamic rule of LLaDA 2.x's
    ``generate`` (SDAR's ``low_confidence_dynamic``), the policy's commits or the scheduled
    top-k where fewer pass. A subclass's ``select`` hands its own prefix to ``_commit``.
    """

    dynamic = True

    def _commit(self, state: StepState, keep_sorted: Tensor, order: Tensor) -> Tensor:
        return _commit_sorted_prefix(state, keep_sorted, order)

    def block_done(self, block_steps_done: int, steps_per_block: int, block_masked: Tensor) -> bool:
        return not bool(block_masked.any()) or block_steps_done >= steps_per_block


class ThresholdPolicy(DynamicPolicy):
    """Fast-dLLM's threshold rule (Wu et al. 2025, arXiv:2505.22618, Sec. 3.3): commit every
    candidate with confidence >= ``threshold``, and the most confident one of each row always."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def select(self, state: StepState) -> Tensor:
        conf, order = _ranked(state.confidence)  # (B, L) each
        return self._commit(state, conf >= self.threshold, order)


class FactorPolicy(DynamicPolicy):
    """Fast-dLLM's factor rule (arXiv:2505.22618): with confidences sorted descending, the
    candidate of rank r (0-based) commits if its confidence >= 1 - factor / (r + 2); top-1
    always. Confidences fall and the bar rises with r, so the commits are a prefix."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def select(self, state: StepState) -> Tensor:
        conf, order = _ranked(state.confidence)  # (B, L)
        rank = torch.arange(conf.shape[1], device=conf.device, dtype=torch.float64)
        bar = 1.0 - self.factor / (rank + 2.0)  # (L,)
        ok = conf.to(torch.float64) >= bar
        keep = ok.long().cumprod(dim=1).bool()  # stop at the first rank that misses its bar
        return self._commit(state, keep, order)


def entropy(logits: Tensor) -> Tensor:
    """Shannon entropy (nats) of ``softmax(logits)`` over the last dim, in float64."""
    logp = F.log_softmax(logits.to(torch.float64), dim=-1)
    return -(logp.exp() * logp).nan_to_num(0.0).sum(dim=-1)  # -inf logits contribute 0


class EntropyBoundPolicy(DynamicPolicy):
    """EB-sampler (Ben-Hamu et al. 2025, arXiv:2505.24857, Alg. 1): take candidates most
    confident first and commit the largest prefix U with ``sum_{U} H - max_{U} H <= gamma``
    (H = entropy of each position's predicted distribution). The left side bounds the
    mutual information among the committed tokens, so they are nearly independent given the
    canvas; the top-1 candidate always passes (its bound is 0)."""

    def __init__(self, gamma: float) -> None:
        super().__init__()
        self.gamma = gamma

    def select(self, state: StepState) -> Tensor:
        conf, order = _ranked(state.confidence)  # (B, L)
        H = torch.zeros(state.candidates.shape, dtype=torch.float64, device=conf.device)
        H[state.candidates] = entropy(
            state.logits[state.candidates]
        )  # only candidates: (N, V) -> (N,)
        H_sorted = torch.gather(H, 1, order)  # (B, L) in confidence order
        bound = H_sorted.cumsum(dim=1) - H_sorted.cummax(dim=1).values
        keep = (bound <= self.gamma).long().cumprod(dim=1).bool()
        return self._commit(state, keep, order)


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


def _needs_ranked_scores(config: SampleConfig) -> None:
    if config.remasking != "low_confidence":
        raise UserError(
            f"policy {config.policy!r} compares confidences with a bar; it needs remasking "
            f"low_confidence (got {config.remasking!r}); choose the measure with confidence"
        )


@register_policy("threshold")
def _threshold(config: SampleConfig) -> CommitPolicy:
    check_parameter("threshold", config.threshold)
    _needs_ranked_scores(config)
    return ThresholdPolicy(config.threshold)


@register_policy("factor")
def _factor(config: SampleConfig) -> CommitPolicy:
    check_parameter("factor", config.factor)
    _needs_ranked_scores(config)
    return FactorPolicy(config.factor)


@register_policy("entropy")
def _entropy(config: SampleConfig) -> CommitPolicy:
    check_parameter("entropy_bound", config.entropy_bound)
    return EntropyBoundPolicy(config.entropy_bound)


def make_policy(config: SampleConfig) -> CommitPolicy:
    """A fresh policy for one sampling run (policies may keep per-block state)."""
    if config.policy not in POLICIES:
        raise UserError(
            f"unknown policy {config.policy!r}; choose one of {', '.join(sorted(POLICIES))}"
        )
    return POLICIES[config.policy](config)


ConfidenceFn = Callable[[Tensor, Tensor, "torch.Generator | None"], Tensor]
"""(logits (B, L, V), x0 (B, L), generator) -> confidence (B, L)."""

CONFIDENCES: dict[str, ConfidenceFn] = {}
"""Confidence measures by name (``SampleConfig.confidence``); all lie in [0, 1], 1 = certain,
so one ``threshold`` means the same kind of thing for each."""


def register_confidence(name: str) -> Callable[[ConfidenceFn], ConfidenceFn]:
    """Decorator: register a confidence measure under ``name`` (``SampleConfig.confidence``)."""

    def deco(fn: ConfidenceFn) -> ConfidenceFn:
        CONFIDENCES[name] = fn
        return fn

    return deco


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


@register_confidence("prob")
def prob_confidence(logits: Tensor, x0: Tensor, generator: torch.Generator | None) -> Tensor:
    """p(x0): the probability of the proposal (LLaDA's ``low_confidence``; Fast-dLLM)."""
    return low_confidence(logits, x0, generator)


@register_confidence("margin")
def margin_confidence(logits: Tensor, x0: Tensor, generator: torch.Generator | None) -> Tensor:
    """p(top-1) - p(top-2) of the predicted distribution (margin confidence, Kim et al. 2025,
    arXiv:2502.06768); independent of which token was proposed."""
    p = F.softmax(logits.to(torch.float64), dim=-1)  # (B, L, V)
    top2 = torch.topk(p, k=2, dim=-1).values  # (B, L, 2)
    return top2[..., 0] - top2[..., 1]


@register_confidence("neg_entropy")
def neg_entropy_confidence(logits: Tensor, x0: Tensor, generator: torch.Generator | None) -> Tensor:
    """exp(-H(p)): negative entropy, mapped monotonically into (0, 1] (1 = a point mass,
    1/V = uniform), so it ranks exactly as -H and a threshold in (0, 1] applies to it."""
    return torch.exp(-entropy(logits))  # (B, L)


@register_remasking("random")
def random_confidence(logits: Tensor, x0: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform random scores: commit a random subset (LLaDA's ``random`` remasking)."""
    return _rand(x0.shape, torch.float32, x0.device, generator)


def confidence_fn(name: str) -> ConfidenceFn:
    """The remasking score registered as ``name``."""
    if name not in REMASKING:
        raise UserError(f"unknown remasking {name!r}; choose one of {', '.join(sorted(REMASKING))}")
    return REMASKING[name]


def scorer(config: SampleConfig) -> ConfidenceFn:
    """The score that ranks proposals: ``remasking='low_confidence'`` ranks by the
    ``confidence`` measure (``prob`` = LLaDA's low_confidence, bit for bit); any other
    remasking (``random``, or one registered) replaces the measure, so a ``confidence`` other
    than the default given with it is refused in one line (it was silently ignored)."""
    if config.confidence not in CONFIDENCES:
        raise UserError(
            f"unknown confidence {config.confidence!r}; choose one of "
            f"{', '.join(sorted(CONFIDENCES))}"
        )
    fn = confidence_fn(config.remasking)
    if config.remasking != "low_confidence" and config.confidence != "prob":
        raise UserError(
            f"confidence {config.confidence!r} ranks proposals under remasking low_confidence; "
            f"remasking {config.remasking!r} replaces the measure (it would do nothing): "
            "give one of the two"
        )
    if config.remasking == "low_confidence":
        return CONFIDENCES[config.confidence]
    return fn


class RowDraws:
    """A generator per row of a batched canvas, so that each row draws what it draws alone.

    A batch of rows seeded one seed each (``Decoder.row_seeds``) is one run whose rows are
    left-padded to the longest; row i alone has a canvas of its own ``widths[i]`` columns. A
    draw of shape (B, L, *rest) (``_rand``: the Gumbel noise, random remasking) is then made
    row by row: row i draws (1, widths[i], *rest) from ``generators[i]``, the call its run
    alone makes (a slice of one (B, L, V) draw would be other numbers), into its own last
    ``widths[i]`` columns. A row not in ``live`` (its run alone takes no step now: its block
    is done, or its step is an empty one that it skips) leaves its generator as it is. What
    is not drawn (padding, rows not live) holds 0.5: nothing commits there."""

    def __init__(self, generators: Sequence[torch.Generator], widths: Sequence[int],
                 out: Sequence[bool] | None = None) -> None:
        if len(generators) != len(widths):
            raise ValueError(f"{len(generators)} generators for {len(widths)} rows")
        self.generators = list(generators)
        self.widths = [int(w) for w in widths]
        self.out = [False] * len(widths) if out is None else [bool(o) for o in out]
        """The rows that never draw (their runs alone have ended: a block-diffusion row past
        EOS)."""
        self.live: list[bool] = [True] * len(widths)
        """The rows that draw at this step (the caller sets it before the step's draws)."""

    @classmethod
    def of(cls, generators: Sequence[torch.Generator], canvas_shape: tuple[int, int],
           attention_mask: Tensor | None) -> RowDraws:
        """The draws of a left-padded (B, L) canvas with ``attention_mask`` (None: no
        padding): row i's width is its real columns, the canvas of its run alone."""
        B, L = canvas_shape
        if len(generators) != B:
            raise ValueError(f"{len(generators)} generators for {B} rows")
        if attention_mask is None:
            return cls(generators, [L] * B)
        widths = attention_mask.bool().sum(dim=1)  # (B,)
        cols = torch.arange(L, device=attention_mask.device)
        if not torch.equal(attention_mask.bool(), cols >= (L - widths)[:, None]):
            raise ValueError("a generator per row needs a left-padded canvas")
        return cls(generators, widths.tolist())

    def rand_each(self, counts: Sequence[int], dtype: torch.dtype,
                  device: torch.device) -> Tensor:
        """(sum(counts), 1) uniforms: ``counts[i]`` of them, a (counts[i], 1) draw, from row
        i's generator, rows in order (the positions of a boolean index of a (B, L) canvas,
        row by row); a row of none draws nothing, as its run alone."""
        if len(counts) != len(self.generators):
            raise ValueError(f"{len(self.generators)} generators for {len(counts)} rows")
        parts = [_rand((int(n), 1), dtype, device, g)
                 for g, n, ended in zip(self.generators, counts, self.out, strict=True)
                 if n and not ended]
        return torch.cat(parts) if parts else torch.zeros(0, 1, dtype=dtype, device=device)

    def rand(self, shape: torch.Size | tuple[int, ...], dtype: torch.dtype,
             device: torch.device) -> Tensor:
        """(B, L, *rest) uniforms, row by row (see the class)."""
        B, L = shape[0], shape[1]
        if B != len(self.generators):
            raise ValueError(f"{len(self.generators)} generators for {B} rows")
        out = torch.full(tuple(shape), 0.5, dtype=dtype, device=device)
        for i, (g, width, live, ended) in enumerate(
                zip(self.generators, self.widths, self.live, self.out, strict=True)):
            if live and not ended:
                if width > L:
                    raise ValueError(f"row {i} is {width} columns wide, the canvas {L}")
                out[i : i + 1, L - width :] = _rand((1, width, *shape[2:]), dtype, device, g)
        return out


Draws = torch.Generator | RowDraws | None
"""Where random numbers come from: one generator (None: the global RNG), or one per row."""


def _rand(
    shape: torch.Size | tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    generator: Draws,
) -> Tensor:
    """Uniform [0, 1) draws from ``generator`` (global RNG if None; ``RowDraws``: row by row),
    on ``device``."""
    if isinstance(generator, RowDraws):
        return generator.rand(shape, dtype, device)
    if generator is None or generator.device == device:
        return torch.rand(shape, dtype=dtype, device=device, generator=generator)
    return torch.rand(shape, dtype=dtype, device=generator.device, generator=generator).to(device)
