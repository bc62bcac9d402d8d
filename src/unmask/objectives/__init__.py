"""Training objectives as specs in a registry (``unmask.objectives.spec``).

Each objective maps (model, clean batch x0, ...) to ``LossParts``: the *sum* of the
per-token losses and the number of tokens it is normalised by. The training loop
divides by the token count summed over micro-batches and processes, so gradient
accumulation and data parallelism give exactly the loss of one big batch. Its spec says
what else the loop needs: attention, batch kind, options, tokenizer and model-config
changes, and the decoder that samples the result.

- ``mdlm`` (``masked``): continuous-time masked-diffusion ELBO as LLaDA and MDLM train it;
  with ``empty_rate`` > 0 rows first get runs of ``[EMPTY]`` inserted (``insert_empty``),
  which teaches the filler of unused variable-length gap slots. Decoder ``llada``.
- ``sft`` (``masked``): LLaDA's supervised fine-tuning loss: prompt never masked, per-row loss
  divided by the answer length (data: ``unmask.sft``). Decoder ``llada``.
- ``ar`` (``autoregressive``): next-token cross-entropy with the same transformer in causal
  mode; with ``fim_rate`` > 0 a fraction of rows is first rearranged for fill-in-the-middle
  (``fim_rearrange``, PSM; Bavarian et al. 2022). Decoder ``ar``.
- ``bd3lm`` (``blocks``): block diffusion (Arriola et al. 2025): masked diffusion inside
  blocks, autoregressive across them, trained in one pass over ``[x_t ; x_0]``
  (``bd3lm_attention_bias``, ``bd3lm_logits``). Decoder ``bd3lm``.
- ``sedd`` (``score_entropy``): SEDD's score-entropy bound over the graphs of ``unmask.sedd``.
  Decoder ``sedd``.
- ``embed-diffusion`` (``continuous``): Gaussian diffusion on normalised token embeddings
  (Diffusion-LM's sqrt schedule, CDCD's cross-entropy). Decoder ``embed-diffusion``.
- ``latent-ae`` / ``latent-diffusion`` (``latent``): a text autoencoder (stage 1), then
  Gaussian diffusion of its latents (stage 2, ``--init`` the autoencoder). Decoder
  ``latent-diffusion``.
- ``hybrid`` (``hybrid``): the one-model TiDAR hybrid: causal next-token loss plus fully
  masked draft blocks after every block boundary, in one pass (``draft_layout``). Decoder
  ``hybrid``.
- ``distill`` (``distill``): certainty-forcing distillation (dParallel) of a masked-diffusion
  teacher on its own sampling trajectories (batch kind ``trajectory``); the student stays a
  model of the teacher's objective and is sampled by its decoder (``unmask distill``).

Adding an objective: a module with its loss and one ``register_objective(ObjectiveSpec(...))``,
imported below, and its name in ``unmask.config.OBJECTIVE_NAMES`` (the names ``unmask train
--objective`` takes without importing torch; a test compares the two).
"""

from __future__ import annotations

from unmask.objectives.autoregressive import FIM_EXTRA, ar, fim_rearrange
from unmask.objectives.blocks import bd3lm, bd3lm_attention_bias, bd3lm_logits
from unmask.objectives.continuous import embed_diffusion
from unmask.objectives.distill import Trajectories, TrajectoryData, distill
from unmask.objectives.hybrid import draft_layout, hybrid
from unmask.objectives.latent import latent_ae, latent_diffusion
from unmask.objectives.masked import EMPTY_MAX_RUN, insert_empty, mdlm, random_length_cut, sft
from unmask.objectives.score_entropy import sedd, sedd_model_config
from unmask.objectives.spec import (
    BATCH_EXTRA,
    OBJECTIVE_OPTIONS,
    OBJECTIVES,
    BatchKind,
    LossParts,
    MaskPredictor,
    Objective,
    ObjectiveOptions,
    ObjectiveSpec,
    get_objective,
    objective_of,
    objective_spec,
    register_objective,
)
from unmask.schedules import LinearSchedule

__all__ = [
    "BATCH_EXTRA",
    "EMPTY_MAX_RUN",
    "FIM_EXTRA",
    "OBJECTIVES",
    "OBJECTIVE_OPTIONS",
    "BatchKind",
    "LinearSchedule",
    "LossParts",
    "MaskPredictor",
    "Objective",
    "ObjectiveOptions",
    "ObjectiveSpec",
    "Trajectories",
    "TrajectoryData",
    "ar",
    "bd3lm",
    "bd3lm_attention_bias",
    "bd3lm_logits",
    "draft_layout",
    "embed_diffusion",
    "distill",
    "fim_rearrange",
    "get_objective",
    "hybrid",
    "insert_empty",
    "latent_ae",
    "latent_diffusion",
    "mdlm",
    "objective_of",
    "objective_spec",
    "random_length_cut",
    "register_objective",
    "sedd",
    "sedd_model_config",
    "sft",
]
