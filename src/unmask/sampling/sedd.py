"""SEDD samplers: Euler and analytic (Tweedie τ-leaping) reverse steps over a canvas.

Lou, Meng & Ermon 2024 (arXiv:2310.16834, §4; reference ``sampling.py``): the reverse process
of a SEDD graph is simulated from t = 1 to t = 0 on the grid t_k = 1 - k/steps, each step
updating every position independently from the concrete score at the current time:

- ``euler``: one Euler step of the reverse rates, P(x → y) = Δt·σ'(t)·Q(y → x)·s_y;
- ``analytic``: the Tweedie τ-leaping step, P(x → y) ∝ [exp(-Δσ Q) s]_y · exp(Δσ Q)(y → x),
  exact per position for the absorbing graph (MDLM's ancestral step);
- the last step is always the denoiser: the analytic step to σ = 0, with the mask removed
  from the choices under the absorbing graph (every position ends unmasked).

One step = one model call, so NFE = ``steps``, as for the commit policies.

Inside: ``ScoreFn``; ``euler_step``, ``analytic_step``, ``denoise_step`` (transition
probabilities), ``STEPPERS``; ``sample_categorical``; ``sample_sedd`` (any score function over a
``Canvas``); ``model_score_fn`` (a checkpoint as a score function: SEDD models by their
parameterisation, masked-diffusion checkpoints by the exact correspondence); ``SEDDRun`` (the
``sedd`` decoder's run, one grid step per ``advance()``), ``start_model``, ``sample_model`` and
``generate_sedd`` (``unmask generate --decoder sedd``); ``model_noise`` (a checkpoint's
training noise); ``banned_ids`` (the special tokens no finished sample holds);
``SEDD_POLICIES`` (the old policy spellings ``sedd-euler`` / ``sedd-analytic``, aliases of
``decoder='sedd'``) and ``uses_sedd_sampler``. SEDD is a decoder of its own, not a commit
policy: it moves tokens, the commit loop commits them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from unmask.canvas import Canvas
from unmask.config import SEDD_POLICY_ALIASES, SampleConfig
from unmask.errors import UserError
from unmask.facts import ModelFacts
from unmask.sampling.ar import RowGenerators, check_token_ids, row_generators
from unmask.sampling.cache import shift_logits
from unmask.sampling.loop import model_logit_shift, validate
from unmask.sampling.penalties import banned_ids
from unmask.sampling.policies import Draws, RowDraws, _rand
from unmask.sampling.protocol import (
    DecoderRun,
    GenerateResult,
    StepCallback,
    ViewCallback,
    make_generator,
    model_device,
)
from unmask.sampling.registry import (
    COMMIT_LOOP_OPTIONS,
    DECODERS,
    Decoder,
    Prompts,
    Target,
    check_penalty_decoder,
    refuse_unused,
    register_decoder,
)
from unmask.schedules import schedule_of
from unmask.sedd import (
    SEDD_OUTPUT,
    AbsorbingGraph,
    Graph,
    LogLinearNoise,
    Noise,
    as_log_score,
    call_network,
    graph_of,
    noise_of,
)

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""``score_fn(tokens (B, L), sigma (B,)) -> log-score (B, L, V)``: the log of the concrete score
p_t(x with position i set to y) / p_t(x) at every position i and token y."""

Stepper = Callable[[Graph, Tensor, Tensor, float, float, Noise], Tensor]
"""``step(graph, score (N, V), x (N,), t, s, noise) -> probs (N, V)`` of x_s given x_t = x."""


def euler_step(
    graph: Graph, score: Tensor, x: Tensor, t: float, s: float, noise: Noise
) -> Tensor:
    """Euler step of the reverse CTMC from t to s: I + (t - s)·σ'(t)·R, R(x → y) = Q(y → x)·s_y
    (SEDD's ``EulerPredictor``); negative probabilities (too large a step) are clipped to 0."""
    rate = float(noise.dsigma(torch.tensor(t, dtype=torch.float64)))
    # in place on the one fresh (N, V) tensor, no one-hot: the same values, and a step over
    # a 50k vocabulary writes one (N, V) float64 tensor where it wrote seven
    rev = score * graph.rate_into(x).to(score.dtype)  # (N, V), fresh: a graph's own tensor
    rev.scatter_(-1, x[:, None], 0.0)  # is never written (and one of (1, V) broadcasts)
    rev.scatter_(-1, x[:, None], -rev.sum(dim=-1, keepdim=True))  # the diagonal: -(out-rate)
    probs = rev.mul_((t - s) * rate)  # I + Δt·σ'(t)·R: the identity added at x alone
    probs.scatter_add_(-1, x[:, None], torch.ones_like(probs[:, :1]))
    return probs.clamp_min_(0.0)


def _dsigma(noise: Noise, t: float, s: float | None, n: int, like: Tensor) -> Tensor:
    """(n,) Δσ = σ(t) - σ(s), or σ(t) itself for ``s`` None (down to σ = 0)."""
    grid = noise.sigma(torch.tensor([t] if s is None else [t, s], dtype=torch.float64))
    delta = grid[0] if s is None else grid[0] - grid[1]
    return torch.full((n,), float(delta), dtype=like.dtype, device=like.device)


def _analytic(graph: Graph, score: Tensor, x: Tensor, dsigma: Tensor) -> Tensor:
    """The staggered score times the transition into ``x``, by its two values
    (``Graph.transition_parts``): no (N, V) transition tensor is written, and the products
    are made in place (a step over a 50k vocabulary runs on (N, V) float64 tensors). A graph
    that gives ``transition_into`` only (no ``transition_parts``) is multiplied by it, and a
    staggered score that shares ``score``'s memory is copied first (the caller reads ``score``
    again)."""
    stag = graph.staggered_score(score, dsigma)  # (N, V)
    if type(graph).transition_parts is Graph.transition_parts:
        return (stag * graph.transition_into(x, dsigma).to(score.dtype)).clamp_min_(0.0)
    if stag.untyped_storage().data_ptr() == score.untyped_storage().data_ptr():
        stag = stag.clone()
    off, at = (p.to(score.dtype) for p in graph.transition_parts(x, dsigma))  # (N, 1) each
    own = stag.gather(-1, x[:, None]) * at  # (N, 1)
    return stag.mul_(off).scatter_(-1, x[:, None], own).clamp_min_(0.0)


def analytic_step(
    graph: Graph, score: Tensor, x: Tensor, t: float, s: float, noise: Noise
) -> Tensor:
    """Analytic (Tweedie τ-leaping) step from t to s: the staggered score times the forward
    transition into x over Δσ = σ(t) - σ(s) (SEDD's ``AnalyticPredictor``)."""
    return _analytic(graph, score, x, _dsigma(noise, t, s, x.shape[0], score))


def denoise_step(
    graph: Graph, score: Tensor, x: Tensor, t: float, s: float, noise: Noise
) -> Tensor:
    """The final step, to σ = 0 (``s`` is ignored): analytic over Δσ = σ(t), all the noise
    left (the geometric noise still has σ(0) = 1e-4 at t = 0), and under an absorbing graph
    the mask is no choice (SEDD's ``Denoiser``), so every position ends as a token."""
    probs = _analytic(graph, score, x, _dsigma(noise, t, None, x.shape[0], score))
    if isinstance(graph, AbsorbingGraph):
        probs[:, graph.mask_id] = 0.0
    return probs


STEPPERS: dict[str, Stepper] = {"euler": euler_step, "analytic": analytic_step}
"""Reverse steps by name; every run ends with ``denoise_step``."""

SEDD_POLICIES: dict[str, str] = SEDD_POLICY_ALIASES
"""The old ``SampleConfig.policy`` spellings of the SEDD decoder (aliases of ``decoder='sedd'``
with ``sedd_sampler`` = the value; ``SampleConfig`` rewrites them)."""


def sample_categorical(
    probs: Tensor, generator: Draws, fallback: Tensor, counts: Sequence[int] | None = None
) -> Tensor:
    """(N,) draws from unnormalised ``probs`` (N, V) by inverse CDF, one uniform per row from
    ``generator``; a row with no mass keeps its ``fallback`` (N,) token. With a generator per
    canvas row (``RowDraws``), ``counts`` (B,) says how many of the N rows, in order, are each
    canvas row's: each draws its own from its generator (``RowDraws.rand_each``)."""
    cdf = probs.to(torch.float64).cumsum(dim=-1)  # (N, V)
    total = cdf[:, -1:]
    if isinstance(generator, RowDraws):
        if counts is None or sum(counts) != probs.shape[0]:
            raise ValueError("a generator per row needs the count of draws of every row")
        u = generator.rand_each(counts, torch.float64, probs.device) * total
    else:
        u = _rand((probs.shape[0], 1), torch.float64, probs.device, generator) * total
    idx = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_max(probs.shape[1] - 1)
    return torch.where(total.squeeze(-1) > 0, idx, fallback)


UNIFORM_BLOCKS = ("semi-autoregressive blocks (block_length) need the absorbing graph; "
                  "decoder 'sedd' denoises the whole region at once on a uniform-graph model")
"""The refusal of blocks on a uniform-graph model (``_check``, ``SEDDDecoder.check``)."""


def _check(config: SampleConfig, graph: Graph, num_blocks: int) -> str:
    _check_options(config)
    if num_blocks > 1 and not graph.absorbing:
        raise UserError(UNIFORM_BLOCKS)
    return config.sedd_sampler


def _check_options(config: SampleConfig) -> None:
    """Refuse options the SEDD decoder has no use for (``SEDDDecoder.unused``: it draws, it
    does not commit; the penalties): ``SEDDRun`` checks them itself, as it is also started without
    ``choose_decoder`` (``sample_sedd``, ``sample_model``)."""
    if config.decoder not in ("auto", "sedd"):
        raise UserError(f"decoder {config.decoder!r} is not the SEDD decoder")
    _refuse_policy(config)
    refuse_unused(DECODERS["sedd"], config)
    check_penalty_decoder("sedd", config)  # no logits to apply them to


def _refuse_policy(config: SampleConfig) -> None:
    """A commit policy (``threshold``, ...) means nothing to SEDD's reverse steps: one line
    (``sample_sedd`` / ``generate_sedd`` ran it as if it were not given)."""
    if config.policy != SampleConfig.policy:
        raise UserError(
            f"policy {config.policy!r} is a commit policy of decoder 'llada'; decoder 'sedd' "
            "takes SEDD's reverse steps (an absorbing SEDD model runs the policies with "
            "decoder llada)"
        )


class SEDDRun(DecoderRun):
    """The ``sedd`` decoder's run: SEDD's reverse process over a canvas, one grid step per
    ``advance()`` (see ``sample_sedd`` for the semantics). It runs alone (``shares_forward``
    False): each step calls the score function with this run's noise level."""

    def __init__(
        self,
        score_fn: ScoreFn,
        canvas: Canvas,
        config: SampleConfig,
        *,
        graph: Graph,
        noise: Noise | None = None,
        eos_id: int | None = None,
        generator: torch.Generator | RowGenerators | None = None,
        return_history: bool = False,
        step_callback: StepCallback | None = None,
        on_view: ViewCallback | None = None,
        banned: Sequence[int] = (),
    ) -> None:
        region_len = canvas.region[1] - canvas.region[0]
        self.num_blocks, self.steps_per_block = validate(
            dataclasses.replace(config, gen_length=region_len),
            prompt_length=canvas.length - region_len,
        )
        self.step_fn = STEPPERS[_check(config, graph, self.num_blocks)]
        # an id past the graph's vocabulary was the embedding's IndexError (a checkpoint), or a
        # gather's deep in the step (a score function); the commit loop refuses it alike
        check_token_ids(canvas.tokens, graph.vocab_size)
        self.graph, self.noise = graph, noise or LogLinearNoise()
        canvas = canvas.clone()
        self.ruled_out = _ruled_out(graph, banned, eos_id, forbid_eos=config.forbid_eos)
        # no unmasking move goes to them: set on the log-score in place (no copy of it)
        self.bans = (torch.tensor(self.ruled_out, dtype=torch.long, device=canvas.device)
                     if self.ruled_out and graph.absorbing else None)
        device = canvas.device
        self.generator: Draws = (
            make_generator(config.seed, device) if generator is None
            else generator if isinstance(generator, torch.Generator)
            else RowDraws.of(generator, (canvas.batch_size, canvas.length),
                             canvas.attention_mask))  # row i draws as alone
        self.canvas, self.model, self.eos_id = canvas, score_fn, eos_id
        self.mask_id, self.gen_length = canvas.mask_id, region_len
        self.x = canvas.tokens  # (B, L), updated in place
        self.todo = canvas.masked  # (B, L): the positions this run decides
        if not graph.absorbing:
            self.x[self.todo] = self._prior(device)[self.todo]
        self.block_length = region_len // self.num_blocks
        self.grid = torch.linspace(1.0, 0.0, self.steps_per_block + 1, dtype=torch.float64).tolist()
        self.history: list[Tensor] | None = [] if return_history else None
        self.step_callback, self.on_view = step_callback, on_view
        self.nfe = self.steps = 0
        self.block = self.block_step = 0

    def _prior(self, device: torch.device) -> Tensor:
        """(B, L) a draw from the graph's prior; with a generator per row each row's draw
        over its own columns, as alone."""
        shape = (self.x.shape[0], self.x.shape[1])
        if not isinstance(self.generator, RowDraws):
            return self.graph.sample_limit(shape, self.generator, device)
        out = self.x.clone()
        L = shape[1]
        for i, (g, width) in enumerate(
                zip(self.generator.generators, self.generator.widths, strict=True)):
            out[i : i + 1, L - width :] = self.graph.sample_limit((1, width), g, device)
        return out

    @property
    def done(self) -> bool:
        return self.block >= self.num_blocks

    def advance(self) -> None:
        x, canvas, k = self.x, self.canvas, self.block_step
        start = canvas.region[0] + self.block * self.block_length
        in_block = torch.zeros_like(self.todo)
        in_block[:, : start + self.block_length] = True  # as the commit loop: prompt masks too
        t, s = self.grid[k], self.grid[k + 1]
        B = x.shape[0]
        with torch.no_grad():
            sigma = self.noise.sigma(torch.full((B,), t, dtype=torch.float64)).float()
            log_score = self.model(x, sigma.to(x.device)).float()  # (B, L, V)
            self.nfe += 1
            if self.bans is not None:
                log_score.index_fill_(-1, self.bans, float("-inf"))
            if canvas.constraints:
                # a constraint may also shift a position's values (infill's gap automata:
                # the best allowed to 0, ``restrict_logits``), which a softmax ignores but a
                # log-score's scale, the rate of unmasking, does not: every mask of a
                # template's gaps left at the first step. Only what it rules out is taken
                ruled = torch.isneginf(canvas.apply_constraints(log_score.clone()))
                log_score = log_score.masked_fill_(ruled, float("-inf"))
            last = k == self.steps_per_block - 1
            # (B, L, V): ruled out by a constraint or, under the uniform graph, by ``ruled_out``
            # (the last step only: the exact reverse process passes through them on the way)
            forbidden = None
            if last and (canvas.constraints or self.ruled_out):
                forbidden = torch.isneginf(log_score)
                forbidden[..., self.ruled_out] = True
            moving = self.todo & in_block
            if self.graph.absorbing:
                moving &= x == canvas.mask_id
            if bool(moving.any()):
                xm = x[moving]  # (N,)
                # the current token's ratio is 1 (log 0), on the moving rows only
                score = log_score[moving].scatter_(-1, xm[:, None], 0.0)
                score = score.to(torch.float64).exp_()  # (N, V)
                step_fn = denoise_step if last else self.step_fn
                probs = step_fn(self.graph, score, xm, t, s, self.noise)
                if forbidden is not None:  # zeroed and renormalised (the draw) at the end only
                    ruled = forbidden[moving]  # (N, V)
                    probs.masked_fill_(ruled, 0.0)  # the step's own fresh tensor
                    # a score that favours staying clips every allowed move to 0 (the
                    # staggered score goes negative): draw by the score among the allowed
                    # tokens, not the fallback (the forbidden token itself); those rows only
                    stuck = probs.sum(dim=-1) <= 0  # (N,)
                    if bool(stuck.any()):
                        probs[stuck] = score[stuck].masked_fill(ruled[stuck], 0.0)
                x[moving] = sample_categorical(probs, self.generator, xm,
                                               counts=moving.sum(dim=1).tolist())
        self.steps += 1
        self.block_step += 1
        if self.block_step == self.steps_per_block:
            self.block, self.block_step = self.block + 1, 0
        if self.history is not None:
            self.history.append(x.clone())
        if self.step_callback is not None:
            self.check_finite()  # not a canvas of garbage: NaN logits
            self.step_callback(self.nfe, x)
        self._report()

    def view(self) -> Tensor:
        start, end = self.canvas.region
        return self.x[:, start:end]  # (B, G)

    def result(self) -> GenerateResult:
        return GenerateResult(
            tokens=self.x,
            region=self.canvas.region,
            nfe=self.nfe,
            steps=self.nfe,
            eos_id=self.eos_id,
            history=self.history,
            attention_mask=self.canvas.attention_mask,
        )


def _ruled_out(
    graph: Graph, banned: Sequence[int], eos_id: int | None, *, forbid_eos: bool
) -> list[int]:
    """The ids no finished sample may hold: ``banned``, and EOS under ``forbid_eos``; a
    ``UserError`` for an id outside the graph's vocabulary or a set that leaves no token."""
    ids = {int(i) for i in banned}
    outside = sorted(ids - set(range(graph.vocab_size)))
    if outside:
        raise UserError(f"banned ids {outside} are outside the graph's vocabulary "
                        f"(size {graph.vocab_size})")
    if forbid_eos:
        if eos_id is None:
            raise UserError("forbid_eos needs the EOS id (eos_id is None)")
        if not 0 <= eos_id < graph.vocab_size:
            raise UserError(f"eos_id={eos_id} is outside the graph's vocabulary "
                            f"(size {graph.vocab_size})")
        ids.add(int(eos_id))
    left = set(range(graph.vocab_size)) - ids
    if isinstance(graph, AbsorbingGraph):
        left.discard(graph.mask_id)  # the denoiser never ends on it
    if not left:
        what = "the banned ids and EOS (forbid_eos)" if forbid_eos else "the banned ids"
        raise UserError(f"{what} cover the whole vocabulary (size {graph.vocab_size}): "
                        "no token is left to sample")
    return sorted(ids)


def sample_sedd(
    score_fn: ScoreFn,
    canvas: Canvas,
    config: SampleConfig,
    *,
    graph: Graph,
    noise: Noise | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    return_history: bool = False,
    step_callback: StepCallback | None = None,
    banned: Sequence[int] = (),
) -> GenerateResult:
    """Fill the masked positions of ``canvas`` by SEDD's reverse process under ``score_fn``.

    ``config.sedd_sampler`` picks the stepper (``euler`` / ``analytic``); ``config.steps``
    steps per canvas, split evenly over the ``block_length`` blocks of the region (absorbing
    graph only), each block running its own grid from t = 1 to 0 with the positions after it
    still masked; the last step of a block is ``denoise_step``. Under the uniform graph the
    masked positions first get a draw from the prior (uniform tokens) and every one of them
    may change at every step; given tokens (locked, prompt, padding) never change.

    A canvas constraint only rules tokens out of the log-score (where it sets -inf); any
    other change it makes (a shift, a finite bias of a ``LogitsProcessor``) is ignored, as the
    log-score's scale is the unmasking rate (a ruled-out token's score is dropped, not moved to
    the allowed ones, so a position that loses score unmasks more slowly than the time grid
    says and the rest is drawn at the last step; docs/infill.md). Then the entry of each position's
    current token is set to 0 (ratio 1: "stay" is always possible, except at the last step for
    a token a constraint rules out, which the uniform prior may have drawn: it moves, by the
    step's probabilities, or by the score among the allowed tokens where the step leaves no
    allowed move). ``banned`` ids, and EOS under ``forbid_eos``, are ruled out so that a
    finished sample holds none of them (a checkpoint's run bans its special tokens,
    ``banned_ids``): under the absorbing graph no unmasking move goes to them (their score is
    0: the per-position law renormalised); under the uniform graph every step but the last
    runs on the whole score, as the exact reverse process passes through them on the way, and
    the last step's probabilities of them are set to 0 and renormalised (zeroing their score
    at every step moved every other token's probability through the staggered score
    e·s + (1 - e)·mean(s): one step under an exact score drew uniformly among the allowed ids).
    A ruled-out set that leaves no token to end on (the whole vocabulary, [MASK] aside under
    the absorbing graph) is a ``UserError``, as is a banned id or EOS outside the vocabulary.
    ``generator`` (else ``config.seed``, else the global RNG) drives every draw. The caller's
    canvas is not modified. ``noise`` defaults to ``LogLinearNoise()`` (eps 1e-3, the
    training default; a checkpoint's run takes its own, ``model_noise``).
    ``SEDDRun(...).run()``.
    """
    return SEDDRun(
        score_fn,
        canvas,
        config,
        graph=graph,
        noise=noise,
        eos_id=eos_id,
        generator=generator,
        return_history=return_history,
        step_callback=step_callback,
        banned=banned,
    ).run()


def model_score_fn(model: Any, *, graph: Graph, attention_mask: Tensor | None = None) -> ScoreFn:
    """``model`` as a ``ScoreFn``: a SEDD checkpoint (``sedd_graph`` set, or ``output ==
    'sedd_log_score'``) by ``unmask.sedd.as_log_score``, exactly as it was trained; a
    masked-diffusion checkpoint (logits) by ``AbsorbingGraph.log_score_from_logits``.
    ``sigma=`` is passed only to time-conditioned models; Dream-style ``logit_shift`` is applied."""
    cfg = getattr(model, "config", None)
    is_sedd = (
        getattr(cfg, "output", None) == SEDD_OUTPUT or getattr(cfg, "sedd_graph", None) is not None
    )
    if not is_sedd and not isinstance(graph, AbsorbingGraph):
        raise UserError(
            "a masked-diffusion checkpoint (logits) gives a score only under the absorbing graph"
        )
    shift = model_logit_shift(model)

    def score_fn(tokens: Tensor, sigma: Tensor) -> Tensor:
        out = call_network(model, cfg, tokens, sigma, attention_mask)  # (B, L, V)
        if shift:
            out = shift_logits(out)
        if is_sedd:
            return as_log_score(out, cfg, graph, tokens, sigma)
        assert isinstance(graph, AbsorbingGraph)
        return graph.log_score_from_logits(out, tokens, sigma)

    score_fn.__wrapped__ = model  # type: ignore[attr-defined]  # its runs' NaN check finds it
    return score_fn


def model_noise(config: Any) -> Noise:
    """The noise a checkpoint was trained with: a SEDD model's schedule (``noise_of``: the
    geometric noise, or the log-linear one with its ``schedule_eps``, ``--eps``; a
    time-conditioned model never saw σ outside its noise's range), else the default
    log-linear one (masked-diffusion checkpoints: their denoiser's score needs no particular
    grid). A SEDD config whose schedule has no SEDD noise (hand-edited: ``cosine``, eps 0,
    an eps that is no number) gets the default one too."""
    sedd = getattr(config, "objective", None) == "sedd" or getattr(config, "output", None) == (
        SEDD_OUTPUT
    )
    if not sedd:
        return LogLinearNoise()
    try:
        return noise_of(schedule_of(config))
    except (UserError, TypeError, ValueError):  # get_schedule compares eps: None, "x"
        return LogLinearNoise()


def uses_sedd_sampler(config: SampleConfig, model_config: Any) -> bool:
    """Whether ``config`` asks for the SEDD decoder (``decoder='sedd'``, or the old policy
    spellings); raises ``UserError`` for a pairing that cannot work (the SEDD decoder on a
    causal or block-causal model, a commit policy on a uniform-graph SEDD model)."""
    wanted = config.decoder == "sedd"
    attention = getattr(model_config, "attention", "bidirectional")
    if wanted and attention != "bidirectional":
        raise UserError(
            f"decoder 'sedd' needs a bidirectional diffusion model, not attention={attention!r}"
        )
    if not wanted and getattr(model_config, "sedd_graph", None) == "uniform":
        raise UserError(
            "this is a uniform-graph SEDD model; sample it with decoder 'sedd', "
            f"not the commit policy {config.policy!r}"
        )
    return wanted


def start_model(
    model: Any,
    canvas: Canvas,
    config: SampleConfig,
    *,
    eos_id: int | None = None,
    generator: torch.Generator | RowGenerators | None = None,
    return_history: bool = False,
    step_callback: StepCallback | None = None,
    on_view: ViewCallback | None = None,
) -> SEDDRun:
    """The ``SEDDRun`` of a checkpoint (``model.config`` gives the graph, the max length and
    the noise it was trained with, ``model_noise``)."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        raise UserError(
            "sample_model needs a model with a config; pass a score function to sample_sedd"
        )
    uses_sedd_sampler(config, cfg)
    max_len = getattr(cfg, "max_seq_len", None)
    if max_len is not None and canvas.length > max_len:
        raise UserError(
            f"the canvas ({canvas.length} tokens) exceeds the model's max_seq_len ({max_len})"
        )
    graph = graph_of(cfg)
    canvas = canvas.to(model_device(model) or canvas.device)
    score_fn = model_score_fn(model, graph=graph, attention_mask=canvas.attention_mask)
    return SEDDRun(
        score_fn,
        canvas,
        config,
        graph=graph,
        noise=model_noise(cfg),
        eos_id=eos_id,
        generator=generator,
        return_history=return_history,
        step_callback=step_callback,
        on_view=on_view,
        banned=banned_ids(cfg),
    )


def sample_model(
    model: Any,
    canvas: Canvas,
    config: SampleConfig,
    *,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    return_history: bool = False,
    step_callback: StepCallback | None = None,
) -> GenerateResult:
    """``sample_sedd`` with a checkpoint (``start_model(...).run()``)."""
    return start_model(
        model,
        canvas,
        config,
        eos_id=eos_id,
        generator=generator,
        return_history=return_history,
        step_callback=step_callback,
    ).run()


def generate_sedd(
    model: Any,
    prompt_ids: Sequence[Sequence[int]] | Sequence[int] | Tensor,
    config: SampleConfig,
    *,
    mask_id: int,
    pad_id: int,
    eos_id: int | None,
    generator: torch.Generator | None = None,
    return_history: bool = False,
    step_callback: StepCallback | None = None,
) -> GenerateResult:
    """``config.gen_length`` tokens after each prompt by the SEDD decoder (as ``generate`` for
    the commit policies): prompts left-padded, masks appended, ``sample_model``."""
    validate(config)
    canvas = Canvas.from_prompts(prompt_ids, config.gen_length, mask_id=mask_id, pad_id=pad_id)
    return sample_model(
        model,
        canvas,
        config,
        eos_id=eos_id,
        generator=generator,
        return_history=return_history,
        step_callback=step_callback,
    )


@register_decoder("sedd")
class SEDDDecoder(Decoder):
    """SEDD's reverse process (``sedd_sampler`` euler / analytic) over a SEDD checkpoint."""

    summary = "score entropy (SEDD): Euler or analytic reverse steps; no commit policy"
    row_seeds = True
    unused = ("temperature", "cfg_scale", "top_k", "top_p",
              *(o for o in COMMIT_LOOP_OPTIONS if o != "policy"))  # policy: check's own line
    unused_why = "draws tokens from the model's reverse process (sedd_sampler) and commits none"

    def uses_steps(self, config: SampleConfig) -> bool:
        return True

    def check(self, facts: ModelFacts, config: SampleConfig) -> None:
        if facts.objective != "sedd" and not facts.sedd_score:  # an imported SEDD: its score
            raise UserError(
                "decoder 'sedd' needs a SEDD checkpoint (objective sedd, or an imported SEDD's "
                f"log-score head); this one is {facts.objective}: "
                f"use decoder {facts.default_decoder!r}"
            )
        if facts.attention != "bidirectional":
            raise UserError(
                f"decoder 'sedd' needs a bidirectional diffusion model, "
                f"not attention={facts.attention!r}"
            )
        _refuse_policy(config)
        # the options it has no use for (unused): choose_decoder's refuse_unused, once
        blocks = config.block_length is not None and config.block_length < config.gen_length
        if blocks and facts.sedd_graph == "uniform":
            raise UserError(UNIFORM_BLOCKS)

    def start(
        self,
        target: Target,
        prompt_ids: Prompts,
        config: SampleConfig,
        *,
        on_view: ViewCallback | None = None,
        seeds: Sequence[int] | None = None,
    ) -> DecoderRun:
        f = target.facts
        validate(config)
        canvas = Canvas.from_prompts(
            prompt_ids, config.gen_length, mask_id=f.mask_id, pad_id=f.pad_id
        )
        device = model_device(target.model) or "cpu"
        return start_model(target.model, canvas, config, eos_id=f.eos_id, on_view=on_view,
                           generator=None if seeds is None else row_generators(seeds, device))


__all__ = [
    "SEDD_POLICIES",
    "SEDDDecoder",
    "STEPPERS",
    "SEDDRun",
    "ScoreFn",
    "analytic_step",
    "banned_ids",
    "denoise_step",
    "euler_step",
    "generate_sedd",
    "model_noise",
    "model_score_fn",
    "sample_categorical",
    "sample_model",
    "sample_sedd",
    "start_model",
    "uses_sedd_sampler",
]
