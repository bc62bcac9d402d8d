"""The model engine of the server, built in one place.

Inside: ``make_engine(loaded, limits, metrics)``: the ``Engine`` (worker thread, queue,
continuous batching) around one checkpoint. Nothing else in the server knows how a
checkpoint is decoded: routes submit ``Job`` s and read ``GenOutput`` s.
"""

from __future__ import annotations

from typing import Any

import torch

from unmask.checkpoint import Loaded
from unmask.config import SampleConfig
from unmask.server.batching import DiffusionStepper, Engine, OnStep, RunGenerate
from unmask.server.metrics import Metrics
from unmask.server.state import ServerLimits


def _runner(loaded: Loaded) -> RunGenerate:
    """``run_generate`` for the engine's whole-batch runs: diffusion sampling with a KV
    cache, or token by token for causal checkpoints (the rest is continuously batched,
    ``_stepper``)."""
    from unmask.sampling import generate, generate_ar, make_generator

    model, cfg = loaded.model, loaded.config
    causal = getattr(cfg, "attention", None) == "causal"

    def run(rows: list[list[int]], config: SampleConfig, on_step: OnStep) -> tuple[Any, ...]:
        if causal:
            P = max(len(r) or 1 for r in rows)  # an empty prompt starts from one start token
            gen = config.gen_length

            def step_ar(step: int, tokens: torch.Tensor) -> None:
                rest = torch.full((tokens.shape[0], gen - step), cfg.mask_id, dtype=tokens.dtype,
                                  device=tokens.device)
                on_step(step, torch.cat([tokens, rest], dim=1), (P, P + gen))  # (B, P + gen)

            device = next(iter(model.parameters()), torch.empty(0)).device
            r = generate_ar(model, rows, max_new_tokens=gen, temperature=config.temperature,
                            top_p=config.top_p, eos_id=cfg.eos_id, pad_id=cfg.pad_id,
                            generator=make_generator(config.seed, device), step_callback=step_ar)
        else:
            P = max(len(r) for r in rows)
            region = (P, P + config.gen_length)
            r = generate(model, rows, config, mask_id=cfg.mask_id, pad_id=cfg.pad_id,
                         eos_id=cfg.eos_id,
                         step_callback=lambda step, tokens: on_step(step, tokens, region))
        return r.tokens, r.region, r.nfe, r.steps

    return run


def _stepper(loaded: Loaded) -> DiffusionStepper | None:
    """Continuous batching for masked diffusion checkpoints (None for causal ones)."""
    cfg = loaded.config
    if getattr(cfg, "attention", None) == "causal":
        return None
    return DiffusionStepper(loaded.model, mask_id=cfg.mask_id, pad_id=cfg.pad_id,
                            eos_id=cfg.eos_id)


def make_engine(loaded: Loaded, limits: ServerLimits, metrics: Metrics) -> Engine:
    """The engine that runs ``loaded`` for every request, with the queue and batch bounds of
    ``limits``, counting forward passes into ``metrics``. Its worker thread starts with the
    first job; ``Engine.close`` stops it."""
    return Engine(_runner(loaded), stepper=_stepper(loaded), max_batch=limits.max_batch,
                  max_queue=limits.max_queue, batch_wait_s=limits.batch_wait_s, metrics=metrics)


__all__ = ["make_engine"]
