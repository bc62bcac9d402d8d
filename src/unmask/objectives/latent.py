"""Diffusion in a learned latent space (LD4LG, Lovelace et al. 2023; PLANNER, Zhang et al.
2023), in two stages of ``unmask train``: objectives ``latent-ae`` and ``latent-diffusion``.

One network, three modes. A window of L tokens and K = ``latent_len`` slots share one
layout, ``[text (L) ; slots (K) ; time (1)]``, run through the one transformer (``inputs_embeds``,
``return_hidden``):

- ``encode``: text = the tokens' embeddings at unit RMS, slot k = the mean of those of its
  chunk of L/K consecutive tokens, time 0; the slots' hidden states, RMS-normalised, are
  the latent z (B, K, D): L tokens compressed to K vectors of unit scale (the Gaussian
  noise's scale).
- ``decode``: text position i = the [MASK] embedding + z of its chunk, slots = z, time 0;
  the text positions' logits give the tokens back (a non-causal decoder, one pass).
- ``denoise``: as decode with a noisy z_t and time t; the slots' hidden states,
  RMS-normalised, predict z0 (x0-prediction), and the text logits read the text off z_t.
  A self-conditioned model (``ModelConfig.latent_self_condition``, every run since
  2026-12-03; LD4LG's setting, from Chen et al. 2022) has K more slots after the first K,
  holding its previous z0 estimate (zeros for none): the layout is
  ``[text ; slots (z_t) ; slots (estimate) ; time]``. Training feeds half the batches a
  first, gradient-free estimate; the sampler feeds each step the last step's.

Why the chunk means and the spread latent (the autoencoder's plateau, measured): with the
slots and the decoder's text positions starting from the [MASK] vector, a fresh network's
latent depends on its text only through attention outputs of init scale (~1e-5 relative;
the token embeddings, at init std 0.02, were also drowned by the unit-scale position
features), and its decoder reads the latent as faintly. The gradient that opens either
path is proportional to the other, so training sat at the unigram loss (5.84 nats on the
1,024-token demo BPE) for 150+ steps. Giving both a direct path from the start (no extra
weights) makes the reconstruction fall at once (docs/training.md, "latent diffusion").

Stage 1, ``latent-ae``: the reconstruction cross-entropy of decode(encode(x) + 0.1·ε) (the
small noise makes the decoder robust to an imperfect sampled latent, as PLANNER does).
Stage 2, ``latent-diffusion`` (``--init`` a latent-ae run; without one, both stages' losses
train one fresh network jointly from the start): the same network keeps the
reconstruction loss and learns to denoise its own latents: z_t = q_sample(sg(z), t) with
``SqrtSchedule``, loss = the mean squared error per coordinate of the z0 prediction (× L per
row) + the text cross-entropy at z_t + the reconstruction. (Weighted as a unit Gaussian's
negative log-likelihood instead, 8× heavier at K = 16, D = 64, the shared weights pulled the
latents together to make them easy to denoise, and reconstruction fell apart: measured,
docs/training.md.) Why
one network rather than a frozen autoencoder beside a second model: a checkpoint stays one
native folder (``config.json`` + ``model.safetensors``) that ``unmask.load`` and resume
handle like any other, and the kept reconstruction term keeps every latent the denoiser
learns decodable while the encoder moves. Neither loss is a likelihood bound.

Inside: ``AE_NOISE``, ``layout_positions``, ``text_room``, ``encode``, ``decode_logits``,
``denoise``, ``latent_ae``, ``latent_diffusion``, ``latent_model_config``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from unmask.config import ModelConfig, TrainConfig, layout_positions
from unmask.errors import UserError
from unmask.objectives.continuous import TIME_SCALE, SqrtSchedule, rms_normalize
from unmask.objectives.spec import (
    LossParts,
    MaskPredictor,
    ObjectiveOptions,
    ObjectiveSpec,
    register_objective,
)

AE_NOISE = 0.1
"""Standard deviation of the Gaussian noise added to a latent before it is decoded in
training (each latent coordinate has unit scale)."""


def _core(model: MaskPredictor) -> torch.nn.Module:
    return getattr(model, "module", model)  # DDP wraps the model


def _sinusoids(values: Tensor, d: int) -> Tensor:
    """(N, d) sinusoidal features of ``values`` (N,) (Vaswani et al. 2017), unit RMS."""
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(0, d, 2, device=values.device) / d
    )  # (d/2,)
    args = values.float()[:, None] * freqs[None]  # (N, d/2)
    return torch.cat([args.sin(), args.cos()], dim=-1)[:, :d]


def _run(
    model: MaskPredictor, config: ModelConfig, text: Tensor, slots: Tensor, time: Tensor | float
) -> Tensor:
    """Hidden states (B, L + K, D) of the layout ``[text (L) ; slots (K) ; time (1)]``.

    Most inputs are the same [MASK] vector, and RoPE tells positions apart only relative to
    each other, so every position also gets fixed sinusoidal absolute-position features; the
    time (0 to encode and decode) is one more position holding sinusoidal features of
    ``TIME_SCALE·t``. Both are parameter-free, so stage 1 and stage 2 have the same weights
    (and a plain, not time-modulated, transformer trains the autoencoder from the start)."""
    B, L, D = text.shape
    if not isinstance(time, Tensor):
        time = torch.full((B,), float(time))
    clock = _sinusoids(TIME_SCALE * time.to(text.device), D)[:, None]  # (B, 1, D)
    x = torch.cat([text, slots.to(text.dtype), clock.to(text.dtype)], dim=1)  # (B, N, D)
    N = x.shape[1]
    x = x + _sinusoids(torch.arange(N, device=x.device), D).to(x.dtype)
    ids = torch.full((B, N), config.mask_id, dtype=torch.long, device=x.device)
    return model(ids, inputs_embeds=x, return_hidden=True)[:, :-1]  # (B, L + K, D)


def _chunks(L: int, K: int, device: torch.device) -> Tensor:
    """(L, K) weights that average each of K consecutive chunks of L positions (position i is
    in chunk i·K // L; rows of a chunk sum to 1 over its positions when read per column)."""
    chunk = torch.arange(L, device=device) * K // L  # (L,)
    onehot = F.one_hot(chunk, K).float()  # (L, K)
    return onehot / onehot.sum(dim=0, keepdim=True)


def _spread(z: Tensor, L: int) -> Tensor:
    """(B, L, D): latent vector k of ``z`` (B, K, D) at each position of chunk k."""
    chunk = torch.arange(L, device=z.device) * z.shape[1] // L  # (L,)
    return z[:, chunk]


def _mask_rows(model: MaskPredictor, config: ModelConfig, B: int, n: int) -> Tensor:
    """(B, n, D) copies of the [MASK] embedding."""
    m = _core(model).embed.weight[config.mask_id]  # (D,)
    return m[None, None].expand(B, n, -1)


def text_room(config: ModelConfig) -> int:
    """The most text positions a latent model's context holds: ``max_seq_len`` less the
    layout's other positions (``layout_positions``)."""
    return config.max_seq_len - layout_positions(
        _latent_len(config), config.latent_self_condition
    )


def _latent_len(config: ModelConfig) -> int:
    if not config.latent_len:
        raise UserError("this model has no latent slots (latent_len); train it with latent-ae")
    return config.latent_len


def encode(model: MaskPredictor, config: ModelConfig, x0: Tensor) -> Tensor:
    """The latent z (B, K, D) of token windows ``x0`` (B, L), each vector at unit RMS."""
    K = _latent_len(config)
    text = rms_normalize(_core(model).embed(x0))  # (B, L, D), unit scale as the positions
    pooled = torch.einsum("bld,lk->bkd", text.float(), _chunks(x0.shape[1], K, x0.device))
    h = _run(model, config, text, pooled.to(text.dtype), 0)  # slots start as chunk means
    return rms_normalize(h[:, -K:])  # (B, K, D)


def decode_logits(model: MaskPredictor, config: ModelConfig, z: Tensor, length: int) -> Tensor:
    """Logits (B, length, V) of the text that latent ``z`` (B, K, D) stands for."""
    text = _mask_rows(model, config, z.shape[0], length) + _spread(z, length).to(z.dtype)
    h = _run(model, config, text, z, 0)
    return _core(model).lm_head(h[:, :length])  # (B, length, V)


def denoise(
    model: MaskPredictor,
    config: ModelConfig,
    zt: Tensor,
    t: Tensor,
    length: int,
    previous: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """(z0 prediction (B, K, D) at unit RMS, text logits (B, length, V)) from a noisy latent
    ``zt`` (B, K, D) at times ``t`` (B,). A self-conditioned model also reads ``previous``
    (B, K, D), its last z0 prediction (zeros when None), in K more slots."""
    K = zt.shape[1]
    text = _mask_rows(model, config, zt.shape[0], length) + _spread(zt, length)
    slots = zt
    if config.latent_self_condition:
        prev = torch.zeros_like(zt) if previous is None else previous.to(zt.dtype)
        slots = torch.cat([zt, prev], dim=1)  # (B, 2K, D)
    h = _run(model, config, text, slots, t)  # (B, length + K (+ K), D)
    return rms_normalize(h[:, length : length + K]), _core(model).lm_head(h[:, :length])


def _reconstruction(
    model: MaskPredictor, config: ModelConfig, x0: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(z (B, K, D), summed cross-entropy of decoding z + AE_NOISE·ε back to x0)."""
    z = encode(model, config, x0)
    noise = torch.randn(z.shape, generator=generator).to(z.device, z.dtype)
    logits = decode_logits(model, config, z + AE_NOISE * noise, x0.shape[1])  # (B, L, V)
    ce = F.cross_entropy(logits.flatten(0, 1).float(), x0.flatten(), reduction="sum")
    return z, ce


def _check(config: ModelConfig, name: str, attention_mask: Tensor | None) -> None:
    if config.attention != "bidirectional":
        raise UserError(f"objective {name!r} needs a bidirectional model")
    _latent_len(config)
    if attention_mask is not None:
        raise UserError(f"objective {name!r} trains on full windows (no padding)")


def latent_ae(
    model: MaskPredictor,
    config: ModelConfig,
    x0: Tensor,
    *,
    attention_mask: Tensor | None,
    generator: torch.Generator,
    options: ObjectiveOptions,
) -> LossParts:
    """Stage 1: the reconstruction cross-entropy of the text autoencoder (nats per token)."""
    _check(config, "latent-ae", attention_mask)
    _, ce = _reconstruction(model, config, x0, generator)
    return LossParts(loss_sum=ce, n_tokens=torch.tensor(x0.numel(), device=x0.device))


def latent_diffusion(
    model: MaskPredictor,
    config: ModelConfig,
    x0: Tensor,
    *,
    attention_mask: Tensor | None,
    generator: torch.Generator,
    options: ObjectiveOptions,
    t: Tensor | None = None,
) -> LossParts:
    """Stage 2: x0-prediction of the latent + text cross-entropy at z_t + reconstruction (see
    the module docstring), per token."""
    _check(config, "latent-diffusion", attention_mask)
    B, L = x0.shape
    z, recon = _reconstruction(model, config, x0, generator)
    if t is None:
        t = options.schedule.sample_t(B, generator, antithetic=options.antithetic)
    target = z.detach()
    zt = SqrtSchedule().q_sample(target, t, generator)  # (B, K, D)
    previous = None
    if config.latent_self_condition and float(torch.rand(1, generator=generator)) < 0.5:
        with torch.no_grad():  # half the batches learn to refine a first estimate
            previous = denoise(model, config, zt, t, L)[0].detach()
    z0_hat, logits = denoise(model, config, zt, t, L, previous)
    mse = (z0_hat.float() - target.float()).pow(2).mean(dim=(1, 2))  # (B,)
    ce = F.cross_entropy(logits.flatten(0, 1).float(), x0.flatten(), reduction="sum")
    loss_sum = L * mse.sum() + ce + recon
    return LossParts(loss_sum=loss_sum, n_tokens=torch.tensor(x0.numel(), device=x0.device))


def latent_model_config(model_cfg: ModelConfig, train_cfg: TrainConfig) -> ModelConfig:
    """``latent_len`` slots and room for ``seq_len + latent_len + 1`` positions (the time
    is an input position, ``_run``). A stage-2 run keeps the slots of the autoencoder it
    continues, and its window (``latent_window``); one with none to keep (a fresh network
    trained on both losses jointly, or an autoencoder from before the field) records the
    window it trains on, ``seq_len``: the sampler then writes those windows, as it does for
    a two-stage model (a jointly trained one used to take any ``--gen-length``, 64 tokens by
    default, which its slots were never trained to hold)."""
    K = model_cfg.latent_len or train_cfg.latent_len
    # a stage-2 checkpoint keeps its layout (older ones have no self-conditioning slots)
    sc = model_cfg.latent_self_condition or model_cfg.objective != "latent-diffusion"
    n = train_cfg.seq_len + layout_positions(K, sc)
    return replace(
        model_cfg,
        latent_len=K,
        max_seq_len=max(model_cfg.max_seq_len, n),
        latent_self_condition=sc,
        latent_window=model_cfg.latent_window or train_cfg.seq_len,
    )


def _autoencoder_config(model_cfg: ModelConfig, train_cfg: TrainConfig) -> ModelConfig:
    """``latent_model_config`` plus the window the autoencoder learns to compress (stage 2
    keeps its autoencoder's)."""
    return replace(latent_model_config(model_cfg, train_cfg), latent_window=train_cfg.seq_len)


def _check_latent_len(cfg: TrainConfig) -> None:
    if cfg.latent_len < 1 or cfg.latent_len > cfg.seq_len:
        raise UserError(f"latent_len={cfg.latent_len} must be in 1..seq_len ({cfg.seq_len})")


def _needs_autoencoder(model: ModelConfig, cfg: TrainConfig) -> str | None:
    if model.objective not in ("latent-ae", "latent-diffusion") or not model.latent_len:
        return (
            f"objective 'latent-diffusion' continues a latent-ae run, not one of objective "
            f"{model.objective!r}"
        )
    defaults = TrainConfig()
    if cfg.latent_len != defaults.latent_len and cfg.latent_len != model.latent_len:
        return f"the autoencoder has latent_len={model.latent_len}, not {cfg.latent_len}"
    if model.latent_window is not None and cfg.seq_len != model.latent_window:
        return (
            f"the autoencoder compresses windows of {model.latent_window} tokens; train "
            f"latent-diffusion with --seq-len {model.latent_window} (got {cfg.seq_len})"
        )
    return None


register_objective(
    ObjectiveSpec(
        name="latent-ae",
        loss=latent_ae,
        attention="bidirectional",
        decoder="latent-diffusion",
        options=("latent_len",),
        check=_check_latent_len,
        model_config=_autoencoder_config,
        summary="stage 1 of latent diffusion: a text autoencoder (L tokens -> latent_len vectors)",
        likelihood=False,  # a cross-entropy of x0 predictions, not a bound
    )
)
register_objective(
    ObjectiveSpec(
        name="latent-diffusion",
        loss=latent_diffusion,
        attention="bidirectional",
        decoder="latent-diffusion",
        options=("latent_len",),
        check=_check_latent_len,
        model_config=latent_model_config,
        needs=_needs_autoencoder,
        summary="stage 2 of latent diffusion: Gaussian diffusion of the autoencoder's latents",
        likelihood=False,  # a cross-entropy of x0 predictions, not a bound
        # benchmarks/rounding.py (docs/sampling.md): below 0.85 its samples repeat tokens
        # (entropy 2.95 at 0.7 vs 3.55 for held-out text); at 1 the scorer rates it best
        # against a unigram of the same entropy
        sample_defaults=(("temperature", 1.0),),
    )
)

__all__ = [
    "AE_NOISE",
    "decode_logits",
    "denoise",
    "encode",
    "latent_ae",
    "latent_diffusion",
    "latent_model_config",
    "layout_positions",
    "text_room",
]
