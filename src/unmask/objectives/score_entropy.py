"""SEDD's objective (Lou, Meng & Ermon 2024, arXiv:2310.16834): the diffusion-weighted
denoising score entropy, a bound on -log p(x0), over the graphs and noise of ``unmask.sedd``.

Inside: ``sedd`` (the loss), ``sedd_model_config`` (the facts a SEDD run stores in the model
config: its graph, and for a time-conditioned absorbing model the log-score output).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from unmask.config import ModelConfig, TrainConfig
from unmask.errors import UserError
from unmask.objectives.spec import (
    LossParts,
    MaskPredictor,
    ObjectiveOptions,
    ObjectiveSpec,
    predicted,
    register_objective,
    unshift,
)
from unmask.schedules import get_schedule
from unmask.sedd import SEDD_OUTPUT, as_log_score, call_network, graph_of, noise_of

T_MIN = 1e-3
"""The least noise time the loss is taken at: t is clamped to it. The reference bounds t by
the same ``sampling_eps`` but rescales t into [1e-3, 1) instead, which stretches the rest of
the integral; the clamp scores t < 1e-3 at 1e-3 and stays closer to it. Under the
log-linear noise σ(0) = 0, and a row at t → 0 masks a token with probability ~t and weighs it
~1/t: the bound's mean is finite, but its variance is not. Unheld, one batch in 3,000 (32
rows of 128 tokens, an imperfect predictor) scored 13x the mean and the spread of the batch
loss was 5x (0.50 against 0.10); holding t at 1e-3 moves the mean by less than the noise,
as the ~1e-3 of t below it contributes about what t = 1e-3 does."""


def sedd(
    model: MaskPredictor,
    config: ModelConfig,
    x0: Tensor,
    *,
    attention_mask: Tensor | None,
    generator: torch.Generator,
    options: ObjectiveOptions,
    t: Tensor | None = None,
) -> LossParts:
    """SEDD's DWDSE bound on -log p(x0) (Lou et al. 2024, arXiv:2310.16834, §3), in nats per token.

    t ~ U(0, 1) per row (antithetic as ``mdlm``), clamped to ``T_MIN`` = 1e-3 at least (the
    reference's ``sampling_eps``, which it rescales t by), σ = σ(t) of the schedule's noise
    (``noise_of``: ``LogLinearNoise`` with the schedule's ``eps``, or the geometric noise),
    x_t ~ q(·|x0, σ) by the model's graph (``config.sedd_graph``, default absorbing), and the
    loss ``dσ/dt · score_entropy`` summed over positions, plus the prior term
    ``prior_kl(σ(1))`` per token, so the whole is a bound on the NLL, not only a training loss
    (under the geometric noise, which starts at σ(0) = 1e-4, up to the reconstruction of
    x0 from x at σ = 1e-4, which the reference leaves out too). Normalised by the number of
    non-pad tokens; padding is never noised. A Dream-style model (``config.logit_shift``)
    is read as ``mdlm`` reads it and the samplers do: position i's output at i - 1
    (``unshift``), and a position no output predicts is never noised nor counted. Under the
    absorbing graph and the linear schedule, with a normalised output (``out = log_softmax +
    log(V - 1)``) this is the ``mdlm`` cross-entropy weighted by 1/t (tested).
    """
    if config.attention != "bidirectional":
        raise UserError(
            f"objective 'sedd' needs attention='bidirectional', not {config.attention!r}"
        )
    graph = graph_of(config)
    noise = noise_of(options.schedule)
    if attention_mask is not None:
        attention_mask = attention_mask.bool()
    real = attention_mask if attention_mask is not None else torch.ones_like(x0, dtype=torch.bool)
    valid = predicted(real, config)  # (B, L): a Dream-style model predicts no position 0
    if graph.absorbing:
        valid = valid & (x0 != config.mask_id)
    B = x0.shape[0]
    if t is None:
        t = options.schedule.sample_t(B, generator, antithetic=options.antithetic)
    t = t.double().clamp_min(T_MIN)  # σ(t) near t = 0 and 1 wants the precision
    sigma, dsigma = noise.sigma(t), noise.dsigma(t)  # (B,) each
    xt = graph.sample_transition(x0, sigma, generator, maskable=valid)
    sigma_f = sigma.float().to(x0.device)
    out = unshift(call_network(model, config, xt, sigma_f, attention_mask), config)  # (B, L, V)
    active = graph.loss_positions(xt) & valid  # (B, L)
    rows = torch.arange(B, device=x0.device)[:, None].expand_as(xt)[active]  # (M,)
    log_score = as_log_score(out[active], config, graph, xt[active], sigma_f[rows])  # (M, V)
    dse = graph.score_entropy(log_score, sigma_f[rows], xt[active], x0[active])  # (M,)
    n = valid.sum()
    loss_sum = (dsigma.to(x0.device)[rows].float() * dse).sum() + graph.prior_kl(
        noise.sigma_max
    ) * n
    return LossParts(loss_sum=loss_sum, n_tokens=n)


def sedd_model_config(model_cfg: ModelConfig, train_cfg: TrainConfig) -> ModelConfig:
    """``model_cfg`` with the facts objective ``sedd`` gives the model.

    ``sedd_graph`` is stored. A time-conditioned absorbing model (``time_conditioning`` with a
    noise level) gets ``output='sedd_log_score'``: its forward with ``sigma`` applies the
    parameterisation itself and returns the log-score. Any other SEDD model keeps ``output=
    'logits'``: its head output is parameterised outside (``as_log_score``), and under the
    absorbing graph it is a denoiser's logits up to a per-row constant, so the commit policies
    sample it as they are. A Dream-style model (``logit_shift``) keeps ``logits`` too: its
    output at i - 1 is position i's, so the log-score is taken after the shift (``unshift``);
    computed in the forward, each position's 0 (its own token's ratio) landed on its right
    neighbour, which then held its left neighbour's token at a score of 1 whatever the noise
    (copied at the first steps of sampling) and the [MASK] entry a learned value.
    """
    graph = train_cfg.sedd_graph
    scored = (
        graph == "absorbing" and model_cfg.time_conditioning and model_cfg.sigma_input != "zero"
        and not model_cfg.logit_shift
    )
    return replace(model_cfg, sedd_graph=graph, output=SEDD_OUTPUT if scored else "logits")


def _check_noise(cfg: TrainConfig) -> None:
    """The run's schedule has a SEDD noise (``noise_of``), and ``eps`` is one it reads: the
    geometric noise has none (σ runs from 1e-4 to 20)."""
    noise_of(get_schedule(cfg.schedule, eps=cfg.eps))
    if cfg.schedule == "geometric" and cfg.eps != TrainConfig.eps:
        raise UserError(
            "eps applies to SEDD's log-linear noise (schedule linear), not to the geometric "
            "one (σ from 1e-4 to 20)"
        )


register_objective(
    ObjectiveSpec(
        name="sedd",
        loss=sedd,
        attention="bidirectional",
        decoder="sedd",
        options=("sedd_graph", "schedule", "eps"),
        check=_check_noise,
        model_config=sedd_model_config,
        noise_level=True,
        summary="score entropy (SEDD): DWDSE bound with the prior term",
    )
)

__all__ = ["T_MIN", "sedd", "sedd_model_config"]
