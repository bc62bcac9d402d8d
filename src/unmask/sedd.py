"""Score entropy discrete diffusion (SEDD; Lou, Meng & Ermon 2024, arXiv:2310.16834).

SEDD learns the *concrete score* ``s(x)_y ≈ p_t(y) / p_t(x)`` of a continuous-time Markov
forward process for every single-token change ``x_i → y`` of a sequence, and trains it with
the diffusion-weighted denoising score entropy (DWDSE), an upper bound on ``-log p(x0)``.
The one transformer (``unmask.model``) is the score network: its output is read as a
log-score (``ModelConfig.output = 'sedd_log_score'``).

Inside:

- ``LogLinearNoise``: σ(t) = -log(1 - (1 - eps)·t) and its rate dσ/dt (SEDD's ``loglinear``);
  under the absorbing graph the masked fraction is (1 - eps)·t, MDLM's linear schedule.
  ``Noise``: what a noise gives (σ, dσ/dt, σ(1)); ``noise_of``: the noise of a run's schedule
  (``linear``: log-linear; ``geometric``: ``unmask.schedules.GeometricSchedule`` itself).
- ``Graph``, ``AbsorbingGraph``, ``UniformGraph``: the forward rate matrices Q (SEDD's
  ``absorb`` and ``uniform``, rates normalised as in the reference): forward samples
  x_t ~ q(·|x0, σ), rates and transitions into a state, the staggered score of the analytic
  sampler, the per-position denoising score entropy with its constant (0 at the true
  score, ≥ 0 everywhere), the network parameterisation and the KL of the prior.
- ``GRAPHS``, ``get_graph``, ``graph_of``: graphs by name; the graph of a model config.
- ``call_network``, ``as_log_score``, ``model_log_score``: one call of the score network (with
  ``sigma=`` for time-conditioned models), and that output as a log-score (parameterised here,
  or by the model itself when ``ModelConfig.output`` is ``sedd_log_score``).
The objective (``sedd``, its DWDSE loss, and ``sedd_model_config``) is registered in
``unmask.objectives.score_entropy``, which imports this module; nothing here imports back.

Facts follow the reference (louaaron/Score-Entropy-Discrete-Diffusion: ``graph_lib``,
``noise_lib``, ``losses``, ``sampling``); the samplers are in ``unmask.sampling.sedd``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from unmask.config import SEDD_GRAPHS
from unmask.errors import UserError
from unmask.model import log_expm1, sedd_log_score
from unmask.schedules import GeometricSchedule, Schedule

MaskPredictor = Callable[..., Tensor]
"""Any callable ``(B, L)`` token ids (+ keyword options) -> ``(B, L, V)`` output."""

SEDD_OUTPUT = "sedd_log_score"
"""``ModelConfig.output`` of a model trained with objective ``sedd``: its output is a log-score."""


def phi(z: Tensor) -> Tensor:
    """e^z - 1 - z ≥ 0, computed without cancellation near 0 (the score-entropy kernel)."""
    return torch.expm1(z) - z


def r_phi(log_s: Tensor, log_r: Tensor) -> Tensor:
    """r·φ(log s - log r) = s - r - r·log(s/r), the score-entropy term of a score s against a
    ratio r (elementwise, from logs), without cancellation near s = r and finite at the edges:
    at r = 0 (σ = 0 under the uniform graph) it is its limit s, and where s/r would overflow
    e^z it is s - r·(1 + log(s/r)) (``r·φ`` itself gave NaN = 0·∞ there, or ∞ for a finite
    term)."""
    z = log_s - log_r
    near = z < 30.0  # e^z finite: the cancellation-free form
    zero = torch.zeros_like(z)
    r = log_r.exp()
    near_term = r * phi(torch.where(near, z, zero))
    z_far = torch.where(near | torch.isneginf(log_r), zero, z)  # no 0·∞, even in the gradient
    far_term = log_s.exp() - r * (1.0 + z_far)
    return torch.where(near, near_term, far_term)


def _rows(sigma: Tensor, like: Tensor) -> Tensor:
    """``sigma`` (B,) broadcast against ``like`` (B, ...) by trailing singleton dims."""
    return sigma.reshape(sigma.shape + (1,) * (like.dim() - sigma.dim()))


EPS_FLOOR = 1e-30
"""The smallest ``eps`` of ``LogLinearNoise``: at t = 1 the sampler's scores are about eps and
its rate dσ/dt about 1/eps, in float32 (below ~1e-38 its steps gave inf and NaN)."""

_KEPT_FLOOR = 1e-6
"""Below this share e^{-σ} the log-linear noise takes σ and dσ/dt from (1 - t) + eps·t: there
``1 - (1 - eps)·t`` has a relative error above 1e-10 (above 1 where 1 - eps rounds to 1)."""


@dataclass(frozen=True)
class LogLinearNoise:
    """σ(t) = -log(1 - (1 - eps)·t), t ∈ [0, 1] (SEDD's ``LogLinearNoise``).

    e^{-σ(t)} = 1 - (1 - eps)·t: under the absorbing graph a token is masked with probability
    (1 - eps)·t, so σ(1) = -log(eps) leaves a fraction eps unmasked (accounted for by
    ``Graph.prior_kl``). ``eps`` ≥ ``EPS_FLOOR`` (1e-30); σ(1) is finite for each.
    """

    eps: float = 1e-3

    def __post_init__(self) -> None:
        if not EPS_FLOOR <= self.eps < 1.0:
            raise UserError(
                f"SEDD noise eps={self.eps} must be in [{EPS_FLOOR:g}, 1): below it the score at "
                f"t = 1, about eps, is out of float32's range"
            )

    def _kept(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(kept, near): kept = e^{-σ(t)} = (1 - t) + eps·t, exact near t = 1 for any eps
        (``1 - (1 - eps)·t`` lost eps below 1.1e-16, where 1 - eps rounds to 1: σ(1) was inf,
        not -log(eps)), and ``near`` where kept < ``_KEPT_FLOOR``, the only place the old
        forms are replaced (they stay bit-identical for eps ≥ 1e-6)."""
        kept = (1.0 - t) + self.eps * t
        return kept, kept < _KEPT_FLOOR

    def sigma(self, t: Tensor) -> Tensor:
        """Total noise σ(t); σ(1) = -log(eps), finite for any eps > 0."""
        kept, near = self._kept(t)
        return torch.where(near, -torch.log(kept), -torch.log1p(-(1.0 - self.eps) * t))

    def dsigma(self, t: Tensor) -> Tensor:
        """Noise rate dσ/dt = (1 - eps) / (1 - (1 - eps)·t), finite at t = 1 for any eps > 0."""
        kept, near = self._kept(t)
        return (1.0 - self.eps) / torch.where(near, kept, 1.0 - (1.0 - self.eps) * t)

    @property
    def sigma_max(self) -> float:
        """σ(1) = -log(eps)."""
        return -math.log(self.eps)


class Noise(Protocol):
    """A SEDD noise: total noise σ(t) and rate dσ/dt for t ∈ [0, 1] (tensors of t's shape), and
    σ(1) (``LogLinearNoise``, ``unmask.schedules.GeometricSchedule``)."""

    def sigma(self, t: Tensor) -> Tensor: ...

    def dsigma(self, t: Tensor) -> Tensor: ...

    @property
    def sigma_max(self) -> float: ...


def noise_of(schedule: Schedule) -> Noise:
    """The SEDD noise of a run's schedule (``TrainConfig.schedule``, a checkpoint's
    ``schedule``): ``linear`` is SEDD's log-linear noise with the schedule's ``eps``,
    ``geometric`` its geometric noise (the schedule itself); ``cosine`` has no SEDD noise
    (a ``UserError``)."""
    if isinstance(schedule, GeometricSchedule):
        return schedule
    if schedule.name != "linear":
        raise UserError(
            f"objective 'sedd' takes schedule linear (SEDD's log-linear noise) or geometric, "
            f"not {schedule.name!r}"
        )
    return LogLinearNoise(schedule.eps)


class Graph:
    """A forward rate matrix Q over the ``vocab_size`` token ids, applied to each position
    independently: x_t ~ exp(σ(t)·Q) from x_0. Subclasses give the closed forms."""

    name = "base"

    def __init__(self, vocab_size: int) -> None:
        if vocab_size < 2:
            raise UserError(f"a SEDD graph needs at least 2 tokens, got vocab_size={vocab_size}")
        self.vocab_size = vocab_size

    absorbing: bool = False
    """Whether one state (``mask_id``) absorbs all others (the sampler must leave it at the end)."""

    def sample_transition(
        self,
        x0: Tensor,
        sigma: Tensor,
        generator: torch.Generator,
        *,
        maskable: Tensor | None = None,
    ) -> Tensor:
        """x_t (B, L) ~ q(x_t | x0, σ) per position; σ (B,); positions outside ``maskable`` stay."""
        raise NotImplementedError

    def rate_into(self, x: Tensor) -> Tensor:
        """(..., V) forward rates Q(y → x) into each state of ``x`` (...), 0 at y = x."""
        raise NotImplementedError

    def transition_parts(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """P(x_{t} = x | x_{s} = y) for a noise increment σ = σ(t) - σ(s) (σ (B,), x (B, ...)),
        which under both graphs is one value for every y ≠ x: (off, at), each (B, ..., 1),
        the probability from any other state and from x itself. A graph without that shape
        overrides ``transition_into`` instead (the analytic step then multiplies by it)."""
        raise NotImplementedError

    def transition_into(self, x: Tensor, sigma: Tensor) -> Tensor:
        """(..., V) P(x_{t} = x | x_{s} = y) for a noise increment σ = σ(t) - σ(s)
        (σ (B,), x (B, ...)): ``transition_parts`` written out."""
        off, at = self.transition_parts(x, sigma)
        out = off.expand(*x.shape, self.vocab_size).clone()
        return out.scatter_(-1, x[..., None], at)

    def staggered_score(self, score: Tensor, dsigma: Tensor) -> Tensor:
        """exp(-dσ·Q)ᵀ applied to ``score`` (..., V): the score moved back by dσ (SEDD's analytic
        sampler, Tweedie τ-leaping); dσ (B,)."""
        raise NotImplementedError

    def score_entropy(self, log_score: Tensor, sigma: Tensor, xt: Tensor, x0: Tensor) -> Tensor:
        """(N,) denoising score entropy of log-scores (N, V) at states ``xt`` (N,) drawn from ``x0``
        (N,) at noise σ (N,):

            Σ_{y≠x_t} Q(y → x_t) · [s_y - r_y·log s_y + r_y·(log r_y - 1)],
            r_y = q(y|x0) / q(x_t|x0)

        The constant makes it 0 exactly at s = r (the true conditional score) and ≥ 0 elsewhere.
        """
        raise NotImplementedError

    def loss_positions(self, xt: Tensor) -> Tensor:
        """(B, L) bool: positions whose score entropy can be non-zero."""
        return torch.ones_like(xt, dtype=torch.bool)

    def parameterize(self, out: Tensor, xt: Tensor, sigma: Tensor) -> Tensor:
        """Network output (B, L, V) → log-score (B, L, V); the entry of the current token is 0."""
        raise NotImplementedError

    def sample_limit(
        self, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
    ) -> Tensor:
        """A draw from the prior the reverse process starts from."""
        raise NotImplementedError

    def prior_kl(self, sigma_max: float) -> float:
        """KL(q(x_T | x0) ‖ prior) per token at σ(T) = ``sigma_max`` (nats, the same for every x0):
        the term that completes the DWDSE into a bound on -log p(x0)."""
        raise NotImplementedError


def _zero_current(log_score: Tensor, x: Tensor) -> Tensor:
    """The log-score with the entry of the current token set to 0 (ratio p(x)/p(x) = 1)."""
    return log_score.scatter(-1, x[..., None], 0.0)


class AbsorbingGraph(Graph):
    """Every token jumps to ``mask_id`` at rate 1 (SEDD's ``Absorbing``; masked diffusion).

    Only a masked position has a score (the ratios of unmasking it); the loss at a masked
    position with clean token x0 and r = 1/(e^σ - 1) is

        Σ_{y∉{mask, x0}} s_y + r·φ(log s_{x0} - log r),   φ(z) = e^z - 1 - z,

    the DWDSE term of SEDD's ``score_entropy`` rearranged so nothing cancels.
    """

    name = "absorbing"
    absorbing = True

    def __init__(self, vocab_size: int, mask_id: int) -> None:
        super().__init__(vocab_size)
        if not 0 <= mask_id < vocab_size:
            raise UserError(f"mask_id={mask_id} is outside the vocabulary (size {vocab_size})")
        self.mask_id = mask_id

    def sample_transition(
        self,
        x0: Tensor,
        sigma: Tensor,
        generator: torch.Generator,
        *,
        maskable: Tensor | None = None,
    ) -> Tensor:
        u = torch.rand(x0.shape, generator=generator).to(x0.device)  # (B, L), drawn on CPU
        move = u < _rows(-torch.expm1(-sigma), x0).to(x0.device)  # P(masked) = 1 - e^{-σ}
        if maskable is not None:
            move &= maskable
        return torch.where(move, torch.full_like(x0, self.mask_id), x0)

    def rate_into(self, x: Tensor) -> Tensor:
        rate = (x == self.mask_id)[..., None].float().expand(*x.shape, self.vocab_size).clone()
        rate[..., self.mask_id] = 0.0
        return rate

    def transition_parts(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        stay = torch.exp(-_rows(sigma, x))[..., None]  # (B, ..., 1)
        is_mask = (x == self.mask_id)[..., None]
        # into the mask: from any token with prob 1 - e^{-σ}, from the mask itself with prob 1;
        # into a token: from no other state, from itself with prob e^{-σ}
        off = torch.where(is_mask, 1.0 - stay, torch.zeros_like(stay))
        return off, torch.where(is_mask, torch.ones_like(stay), stay)

    def staggered_score(self, score: Tensor, dsigma: Tensor) -> Tensor:
        e = torch.exp(_rows(dsigma, score[..., 0]))[..., None]  # (B, ..., 1)
        total = score.sum(dim=-1, keepdim=True)
        out = score * e
        out[..., self.mask_id : self.mask_id + 1] += (1.0 - e) * total
        return out

    def score_entropy(self, log_score: Tensor, sigma: Tensor, xt: Tensor, x0: Tensor) -> Tensor:
        is_mask = xt == self.mask_id  # (N,)
        log_r = -log_expm1(sigma)  # (N,) r = 1/(e^σ - 1)
        ls_x0 = log_score.gather(-1, x0[:, None]).squeeze(-1)  # (N,)
        others = torch.zeros_like(log_score, dtype=torch.bool)
        others[:, self.mask_id] = True
        others.scatter_(-1, x0[:, None], True)
        others_ls = log_score.masked_fill(others, float("-inf"))  # (N, V)
        rest = torch.logsumexp(others_ls, dim=-1).exp()  # Σ_{y∉{m,x0}} s_y
        dse = rest + r_phi(ls_x0, log_r)
        return torch.where(is_mask, dse, torch.zeros_like(dse))

    def loss_positions(self, xt: Tensor) -> Tensor:
        return xt == self.mask_id

    def parameterize(self, out: Tensor, xt: Tensor, sigma: Tensor) -> Tensor:
        """SEDD's ``scale_by_sigma`` (``unmask.model.sedd_log_score``):
        out - log(e^σ - 1) - log(V - 1), current entry 0; ``out`` (B, L, V) with σ (B,), or rows
        (N, V) with σ (N,). At a masked position the optimum is
        out_y = log p(x0 = y | x_t) + log(V - 1), a time-independent target, so the network needs
        no time input."""
        if out.dim() == 2:  # rows, each with its own σ
            return sedd_log_score(out[:, None], xt[:, None], sigma)[:, 0]
        return sedd_log_score(out, xt, sigma)

    def log_score_from_logits(self, logits: Tensor, xt: Tensor, sigma: Tensor) -> Tensor:
        """The log-score of a mask predictor (MDLM/LLaDA logits (B, L, V) of p(x0 | x_t)): at a
        masked position the true score is s_y = p(x0 = y | x_t) / (e^σ - 1), so SEDD samplers
        run on masked-diffusion checkpoints too."""
        logits = logits.float().index_fill(
            -1, torch.tensor([self.mask_id], device=logits.device), float("-inf")
        )
        shift = log_expm1(_rows(sigma, logits[..., 0]).float())[..., None]
        # in place on the fresh log-softmax: at a 50k vocabulary every (B, L, V) tensor written
        # anew cost ~0.2 s a step on a 1,024-token canvas (two of the four passes here)
        log_score = torch.log_softmax(logits, dim=-1).sub_(shift)  # (B, L, V)
        return log_score.scatter_(-1, xt[..., None], 0.0)

    def sample_limit(
        self, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
    ) -> Tensor:
        return torch.full(shape, self.mask_id, dtype=torch.long, device=device)

    def prior_kl(self, sigma_max: float) -> float:
        """The prior: the mask with prob 1 - e^{-σ_max}, else a uniform non-mask token; q(x_T|x0)
        keeps x0 with prob e^{-σ_max} (= eps of ``LogLinearNoise``): KL = e^{-σ_max}·log(V - 1)."""
        return math.exp(-sigma_max) * math.log(self.vocab_size - 1)


class UniformGraph(Graph):
    """Every token jumps to a uniformly drawn token at rate 1: Q = 11ᵀ/V - I (SEDD's ``Uniform``).

    Every position has a score. With x = x_t and r_y = q(y|x0)/q(x|x0) the loss is
    (1/V)·Σ_{y≠x} r_y·φ(log s_y - log r_y), where r_y = ρ = (e^σ-1)/(e^σ-1+V) for all y when
    x = x0, and otherwise r_{x0} = V/(e^σ-1) + 1 and r_y = 1 for the rest.
    """

    name = "uniform"

    def sample_transition(
        self,
        x0: Tensor,
        sigma: Tensor,
        generator: torch.Generator,
        *,
        maskable: Tensor | None = None,
    ) -> Tensor:
        u = torch.rand(x0.shape, generator=generator).to(x0.device)
        new = torch.randint(0, self.vocab_size, x0.shape, generator=generator).to(x0.device)
        move = u < _rows(-torch.expm1(-sigma), x0).to(x0.device)  # resampled (possibly to itself)
        if maskable is not None:
            move &= maskable
        return torch.where(move, new, x0)

    def rate_into(self, x: Tensor) -> Tensor:
        rate = torch.full((*x.shape, self.vocab_size), 1.0 / self.vocab_size, device=x.device)
        return rate.scatter(-1, x[..., None], 0.0)

    def transition_parts(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        move = -torch.expm1(-_rows(sigma, x))[..., None]  # (B, ..., 1)
        return move / self.vocab_size, 1.0 - move + move / self.vocab_size

    def staggered_score(self, score: Tensor, dsigma: Tensor) -> Tensor:
        e = torch.exp(_rows(dsigma, score[..., 0]))[..., None]
        return (e * score).add_((1.0 - e) * score.mean(dim=-1, keepdim=True))

    def score_entropy(self, log_score: Tensor, sigma: Tensor, xt: Tensor, x0: Tensor) -> Tensor:
        V = self.vocab_size
        lem1 = log_expm1(sigma)  # (N,) log(e^σ - 1)
        log_V = torch.full_like(lem1, math.log(V))
        log_rho = lem1 - torch.logaddexp(lem1, log_V)  # x = x0: every ratio
        log_a = torch.logaddexp(
            math.log(V) - lem1, torch.zeros_like(lem1)
        )  # x ≠ x0: ratio toward x0
        same = xt == x0
        log_r = (
            torch.where(same, log_rho, torch.zeros_like(log_rho))[:, None]
            .expand_as(log_score)
            .clone()
        )
        log_r.scatter_(-1, x0[:, None], torch.where(same, log_rho, log_a)[:, None])
        terms = r_phi(log_score, log_r)  # (N, V); at σ = 0 (no move, r = 0): the score itself
        terms = terms.scatter(-1, xt[:, None], 0.0)  # y = x_t is not a jump
        return terms.sum(dim=-1) / V

    def parameterize(self, out: Tensor, xt: Tensor, sigma: Tensor) -> Tensor:
        """The output is the log-score itself (current entry 0); the score depends on σ, so a
        uniform-graph model should be time-conditioned."""
        return _zero_current(out, xt)

    def sample_limit(
        self, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
    ) -> Tensor:
        gen_device = generator.device if generator is not None else device
        return torch.randint(0, self.vocab_size, shape, generator=generator, device=gen_device).to(
            device
        )

    def prior_kl(self, sigma_max: float) -> float:
        """KL(q(x_T|x0) ‖ uniform): x0 kept with prob e^{-σ} + (1 - e^{-σ})/V, each other token
        (1 - e^{-σ})/V."""
        V, keep = self.vocab_size, math.exp(-sigma_max)
        stay = keep + (1.0 - keep) / V
        other = (1.0 - keep) / V
        return stay * math.log(stay * V) + (V - 1) * (
            other * math.log(other * V) if other > 0 else 0.0
        )


GRAPHS = SEDD_GRAPHS
"""Names of the SEDD graphs (``TrainConfig.sedd_graph``, ``ModelConfig.sedd_graph``)."""


def get_graph(name: str, *, vocab_size: int, mask_id: int) -> Graph:
    """The graph ``name`` over ``vocab_size`` tokens (``mask_id`` absorbs, for ``absorbing``)."""
    if name == "absorbing":
        return AbsorbingGraph(vocab_size, mask_id)
    if name == "uniform":
        return UniformGraph(vocab_size)
    raise UserError(f"unknown SEDD graph {name!r}; choose one of {', '.join(GRAPHS)}")


def graph_of(config: Any) -> Graph:
    """The graph of a model config: ``config.sedd_graph``; absorbing when None (masked-diffusion
    models) and for ``output='sedd_log_score'`` (the model computes the absorbing log-score)."""
    name = getattr(config, "sedd_graph", None) or "absorbing"
    if getattr(config, "output", None) == SEDD_OUTPUT:
        name = "absorbing"
    return get_graph(name, vocab_size=config.vocab_size, mask_id=config.mask_id)


def call_network(
    model: MaskPredictor, config: Any, xt: Tensor, sigma: Tensor, attention_mask: Tensor | None
) -> Tensor:
    """Raw output (B, L, V) of ``model`` at ``xt`` (B, L); ``sigma=`` (B,) is passed only to
    time-conditioned models (``config.time_conditioning``), so unconditioned ones work as they
    are."""
    if getattr(config, "time_conditioning", False):
        out = model(xt, attention_mask=attention_mask, sigma=sigma)
    else:
        out = model(xt, attention_mask=attention_mask)
    return getattr(out, "logits", out)


def as_log_score(out: Tensor, config: Any, graph: Graph, xt: Tensor, sigma: Tensor) -> Tensor:
    """A SEDD network's output (``call_network``; (B, L, V), or rows (N, V) with their own σ) as a
    log-score: as it is when the model computes it (``config.output == 'sedd_log_score'``, a
    time-conditioned absorbing model), else through ``graph.parameterize``."""
    if getattr(config, "output", None) == SEDD_OUTPUT:
        return out.float()
    return graph.parameterize(out.float(), xt, sigma.to(out.device).float())


def model_log_score(
    model: MaskPredictor,
    config: Any,
    xt: Tensor,
    sigma: Tensor,
    *,
    graph: Graph,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """Log-score (B, L, V) of a SEDD score network at ``xt`` (B, L), noise σ (B,): ``call_network``
    then ``as_log_score``."""
    return as_log_score(
        call_network(model, config, xt, sigma, attention_mask), config, graph, xt, sigma
    )


__all__ = [
    "EPS_FLOOR",
    "GRAPHS",
    "SEDD_OUTPUT",
    "AbsorbingGraph",
    "Graph",
    "LogLinearNoise",
    "UniformGraph",
    "as_log_score",
    "call_network",
    "Noise",
    "get_graph",
    "graph_of",
    "log_expm1",
    "model_log_score",
    "noise_of",
    "phi",
    "r_phi",
]
