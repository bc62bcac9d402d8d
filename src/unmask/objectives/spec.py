"""Objective specs and their registry: everything the training loop needs to know about an
objective, so that ``unmask.train`` never branches on an objective's name.

An ``ObjectiveSpec`` says:

- ``loss``: the function ``(model, config, x0, *, attention_mask, generator, options, ...) ->
  LossParts`` (the *sum* of per-token losses and the count it is normalised by);
- ``attention`` (and ``blocks``): the attention the model must have, and whether the model's
  ``block_size`` is the run's ``TrainConfig.block_size``;
- ``batch``: ``tokens`` (windows of a prepared token corpus) or ``prompt_response`` (SFT pairs,
  ``unmask.sft.SFTData``, whose ``prompt_mask`` goes to the loss; fine-tunes an ``init`` model);
- ``options``: the ``TrainConfig`` fields that apply only to some objectives and apply to this
  one; any other such field left at a non-default value is refused (``check``);
- ``tokenizer`` and ``model_config``: how the objective extends the tokenizer (FIM sentinels,
  ``[EMPTY]``) and adjusts the model config (SEDD's graph and output) it trains;
- ``decoder``: the registry name of the decoder that samples a model trained with it
  (``unmask.sampling``).

Adding an objective = one module with its loss and one ``register_objective`` call.

Inside: ``LossParts``, ``ObjectiveOptions``, ``ObjectiveSpec``, ``OBJECTIVES``,
``register_objective``, ``objective_spec``, ``get_objective``, ``objective_of``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from unmask.config import AttentionMode, ModelConfig, TrainConfig
from unmask.errors import UserError

if TYPE_CHECKING:
    from unmask.schedules import Schedule

MaskPredictor = Callable[..., Tensor]
"""Any callable ``(B, L)`` token ids (+ keyword options) -> ``(B, L, V)`` logits."""

BatchKind = Literal["tokens", "prompt_response", "trajectory"]

BATCH_EXTRA: dict[str, str] = {"prompt_response": "prompt_mask", "trajectory": "commit_step"}
"""The loss keyword of the second tensor a batch kind's ``sample`` returns besides ``x0``."""


FORMER_DEFAULTS: dict[str, Any] = {"draft_block": 8}
"""Objective options whose default changed, with the value they had: it still counts as not
given to an objective the option does not apply to. Every ``train_config.json`` written
before 2026-12-07, of any objective, holds ``draft_block: 8`` (now None: an ``--init``
hybrid's own block), and a resume or a ``--config`` of it was to be refused as giving it;
``unmask.train_guards.load_train_config`` reads it there as unset."""


def unshift(logits: Tensor, config: ModelConfig) -> Tensor:
    """``logits`` (B, L, V) where position i predicts token i. A Dream-style model
    (``config.logit_shift``) predicts token i at position i - 1, so its logits move one to the
    right (position 0 keeps its own), as decoding and evaluation read them; a masked loss over
    the raw logits would train position i to predict its own token instead."""
    if not getattr(config, "logit_shift", False):
        return logits
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def predicted(real: Tensor, config: ModelConfig) -> Tensor:
    """The positions (B, L) whose token the ``unshift``-ed logits predict, of the ``real`` (B, L)
    bool ones: all of them, or for a Dream-style model (``config.logit_shift``) those whose
    left neighbour is real too, since its logits at i - 1 predict token i. Position 0 then has
    no prediction (its kept logits are trained to predict token 1): masked, it taught those
    logits two tokens at once and added a loss no model could lower to the bound."""
    if not getattr(config, "logit_shift", False):
        return real
    out = torch.zeros_like(real)
    out[:, 1:] = real[:, 1:] & real[:, :-1]
    return out


def text_positions(x0: Tensor, commit_step: Tensor | None, eos_id: int | None) -> Tensor | None:
    """(B, L) bool: the positions of trajectory rows that are text (the prompt, then the
    generated tokens up to and including the first generated EOS; not the filler a decoder
    writes after it), or None for corpus rows. The rule of every objective that learns from
    an autoregressive teacher's rows (``hybrid``; ``distill`` with ``distill_window``)."""
    if commit_step is None:
        return None
    generated = commit_step >= 0
    if eos_id is None:
        return torch.ones_like(generated)
    ended = (generated & (x0 == eos_id)).long().cumsum(dim=1)  # EOS so far, itself included
    after = (ended - (generated & (x0 == eos_id)).long()) > 0  # an EOS strictly before
    return ~after


@dataclass
class LossParts:
    loss_sum: Tensor
    """Sum of per-token losses (scalar, differentiable)."""
    n_tokens: Tensor
    """Number of (non-pad) tokens the sum is normalised by (scalar)."""
    terms: Tensor | None = None
    """(B, L) each position's share of ``loss_sum`` (0 where nothing was counted), when the
    objective was asked for it (``mdlm(..., keep_terms=True)``); else None."""
    parts: dict[str, Tensor] | None = None
    """Named parts of the loss, each a sum over the same tokens as ``loss_sum`` (scalars, no
    gradient): the training loop logs each divided by ``n_tokens`` next to the loss, under
    its name (``distill``: ``loss_ce``, ``loss_certainty`` and ``frac_correct``, the fraction
    of masked positions it predicts right); None for an objective of one term."""


@dataclass(kw_only=True)
class ObjectiveOptions:
    """Knobs shared by the objectives (from TrainConfig)."""

    schedule: Schedule
    antithetic: bool = True
    random_length_frac: float = 0.0
    fim_rate: float = 0.0
    """``ar`` only: fraction of rows rearranged by ``fim_rearrange`` (0 = plain AR)."""
    empty_rate: float = 0.0
    """``mdlm`` only: fraction of rows given a run of ``[EMPTY]`` by ``insert_empty`` (0 = off)."""
    draft_weight: float = 0.0
    """``hybrid`` only: weight of the draft-block loss (``TrainConfig.draft_weight`` in training).
    0, the default here, leaves the causal next-token loss alone, so evaluation
    (``unmask.evaluate.evaluate_loss``) reports a hybrid model's causal NLL, comparable with an
    ``ar`` run's."""
    distill_ce_weight: float = 1.0
    """``distill`` only: weight of the cross-entropy to the teacher's final tokens."""
    distill_entropy_weight: float = 2.0
    """``distill`` only: weight of the certainty-forcing entropy term."""
    distill_temperature: float = 0.5
    """``distill`` only: softmax temperature of the certainty-forcing entropy."""
    distill_window: int = 0
    """``distill`` only: > 0 trains a drafter: states of a prefix and this many masks."""
    teacher: Any = None
    """``hybrid`` on trajectory rows only: the frozen model that wrote them (the trajectory
    file's teacher, loaded by ``unmask.train``), whose next-token distributions the causal
    part learns (``ObjectiveSpec.trajectories``); None elsewhere."""


Objective = Callable[..., LossParts]
"""``loss(model, config, x0, *, attention_mask, generator, options, **batch) -> LossParts``."""


@dataclass(frozen=True, kw_only=True)
class ObjectiveSpec:
    """One registered objective (see the module docstring)."""

    name: str
    """Registry name (``TrainConfig.objective``, ``ModelConfig.objective``)."""
    loss: Objective
    """The loss function."""
    attention: AttentionMode
    """Attention the model must have while training and sampling."""
    decoder: str
    """Registry name of the decoder that samples a model trained with this objective."""
    batch: BatchKind = "tokens"
    """``tokens``: rows of a prepared corpus (``unmask.data.TokenDataset``) with a validation
    split; ``prompt_response``: SFT pairs (``unmask.sft``), no validation split, and the model
    must come from ``TrainConfig.init``; ``trajectory``: a teacher's sampling trajectories
    (``unmask.objectives.distill.TrajectoryData``), likewise from ``init`` with no validation
    split."""
    trajectories: bool = False
    """A ``tokens`` objective that can also train on a trajectory file of ``unmask distill``
    (``TrainConfig.data`` a ``.safetensors`` file): the teacher's rows are the text, learned
    as this objective learns a corpus (sequence-level distillation; the ``hybrid`` student of
    an autoregressive teacher learns to draft the teacher's own continuations). The loss then
    also receives ``commit_step``, and ``ObjectiveOptions.teacher`` holds the teacher named by
    the file (frozen, on the run's device); as for every trajectory batch, the model comes
    from ``TrainConfig.init`` and there is no validation split."""
    blocks: bool = False
    """The model is cut into blocks of ``TrainConfig.block_size`` tokens (required, dividing
    ``seq_len``), stored as ``ModelConfig.block_size``."""
    options: tuple[str, ...] = ()
    """``TrainConfig`` fields in ``OBJECTIVE_OPTIONS`` that apply to this objective."""
    model_options: tuple[str, ...] = ()
    """``ModelConfig`` fields (set with ``--model-set``) that only this objective reads; set
    for another objective they are refused (``validate``)."""
    random_length: bool = False
    """LLaDA's random-length cut (``TrainConfig.random_length_frac``) applies; a value other
    than the default or 0 (off) is refused otherwise (``validate``)."""
    check: Callable[[TrainConfig], None] | None = None
    """Validates the values of this objective's options (one-line ``UserError``)."""
    tokenizer: Callable[[Any, TrainConfig], Any] | None = None
    """The tokenizer the objective trains with, from the corpus' tokenizer (tokens appended)."""
    model_config: Callable[[ModelConfig, TrainConfig], ModelConfig] | None = None
    """Facts the objective stores in the model config beyond attention and blocks."""
    needs: Callable[[ModelConfig, TrainConfig], str | None] | None = None
    """Why a given (e.g. ``init``) model cannot be trained with these options, or None."""
    summary: str = ""
    """One line for listings."""
    likelihood: bool = True
    """The loss is a negative log-likelihood per token or an upper bound on one (AR, the ELBOs
    of the masked and score-entropy objectives), so the bits per byte and perplexity derived
    from it are bounds. False for training losses that are neither (the continuous families'
    cross-entropy of x0 predictions): validation then reports the loss alone, never a number
    that reads like a bound (``unmask.evaluate.EvalResult.likelihood``)."""
    noise_level: bool = False
    """The loss passes each row's noise level to a time-conditioned model (``sigma=``; SEDD,
    embedding diffusion). Otherwise ``--model-set time_conditioning=true`` needs a model that
    finds its level itself (``sigma_input`` ``masked_fraction`` or ``zero``): with ``given``
    its first step would fail (``validate``)."""
    continues: bool = False
    """The objective fine-tunes an ``init`` model that stays a model of its own objective
    (``distill``): its attention, objective and schedule are kept, so it is sampled and
    evaluated as before; only ``sample_defaults``, when the spec has some, replace its own."""
    sample_defaults: tuple[tuple[str, Any], ...] = ()
    """Sampling options measured to read best for models of this objective, stored with every
    checkpoint (``ModelConfig.sample_defaults``) as the CLI's defaults for it."""

    def batch_for(self, data: str | None) -> BatchKind:
        """The batch kind of a run of this objective on ``data``: ``trajectory`` for a
        trajectory file (a ``.safetensors`` path) where the objective takes one
        (``trajectories``), else its own ``batch``."""
        if self.trajectories and data and str(data).endswith(".safetensors"):
            return "trajectory"
        return self.batch

    def validate(self, cfg: TrainConfig) -> None:
        """Refuse options that do not apply to this objective, and bad values of those that do."""
        defaults = TrainConfig()
        for name in OBJECTIVE_OPTIONS:
            value = getattr(cfg, name)
            if name in self.options or value == getattr(defaults, name) or (
                    name in FORMER_DEFAULTS and value == FORMER_DEFAULTS[name]):
                continue
            owners = [s.name for s in OBJECTIVES.values() if name in s.options]
            which = "objective" if len(owners) == 1 else "objectives"
            raise UserError(
                f"{name} applies to {which} {', '.join(map(repr, owners))}, not {self.name!r}"
            )
        for name, value in cfg.model_overrides.items():
            owners = [s.name for s in OBJECTIVES.values() if name in s.model_options]
            if value and owners and self.name not in owners:
                which = "objective" if len(owners) == 1 else "objectives"
                raise UserError(f"--model-set {name} applies to {which} "
                                f"{', '.join(map(repr, owners))}, not {self.name!r}")  # fmt: skip
        if not self.random_length and cfg.random_length_frac not in (
                0.0, defaults.random_length_frac):  # a cut asked for that would not happen
            owners = [s.name for s in OBJECTIVES.values() if s.random_length]
            which = "objective" if len(owners) == 1 else "objectives"
            raise UserError(f"random_length_frac applies to {which} "
                            f"{', '.join(map(repr, owners))}, not {self.name!r}")
        if self.blocks:
            if not cfg.block_size or cfg.block_size < 1:
                raise UserError(
                    f"objective {self.name!r} needs --block-size (tokens per diffusion block, "
                    "dividing seq_len)"
                )
            if cfg.seq_len % cfg.block_size:
                raise UserError(f"block_size={cfg.block_size} must divide seq_len={cfg.seq_len}")
        if self.check is not None:  # before the advice below, which this objective may refuse
            self.check(cfg)
        overrides = cfg.model_overrides
        given = overrides.get("sigma_input", "given") == "given"
        if overrides.get("time_conditioning") and given and not self.noise_level:
            raise UserError(
                f"--model-set time_conditioning=true: objective {self.name!r} passes the model "
                "no noise level; add --model-set sigma_input=masked_fraction (the level read "
                "off the canvas's [MASK] count) or leave time conditioning off"
            )

    def facts(self, cfg: TrainConfig) -> dict[str, Any]:
        """The ``ModelConfig`` fields this objective fixes: attention, and block_size if blocks."""
        if self.continues:  # the init model's own facts stay
            return {}
        out: dict[str, Any] = {"attention": self.attention}
        if self.blocks:
            out["block_size"] = cfg.block_size
        return out

    def mismatch(self, model: ModelConfig, cfg: TrainConfig) -> str | None:
        """Why ``model`` (a config to continue from) cannot be trained by this objective with
        ``cfg``'s options, or None: a wrong attention or block size, a missing token."""
        for name, want in self.facts(cfg).items():
            have = getattr(model, name)
            if have != want:
                return f"the model has {name}={have!r}; objective {self.name!r} trains {want!r}"
        return self.needs(model, cfg) if self.needs is not None else None

    def prepare_tokenizer(self, tokenizer: Any, cfg: TrainConfig) -> Any:
        """The corpus tokenizer with the tokens this objective adds (FIM sentinels, [EMPTY])."""
        return self.tokenizer(tokenizer, cfg) if self.tokenizer is not None else tokenizer

    def configure(self, model: ModelConfig, cfg: TrainConfig) -> ModelConfig:
        """``model`` with the facts a run of this objective stores with its checkpoints: the
        objective's own (``model_config``), its name and the run's noise schedule."""
        if self.model_config is not None:
            model = self.model_config(model, cfg)
        own = dict(self.sample_defaults)
        if self.continues or self.batch == "prompt_response":  # a fine-tune (SFT) of --init
            # without a recommendation of its own keeps the one measured on the weights it
            # starts from: with none, its checkpoints decoded in one greedy block without a
            # penalty, in which the demo's SFT repeats itself (docs/training.md, SFT)
            own = own or dict(model.sample_defaults)
        if self.continues:
            return replace(model, sample_defaults=own)
        return replace(model, objective=self.name, schedule=cfg.schedule, schedule_eps=cfg.eps,
                       sample_defaults=own)

    def options_for(self, cfg: TrainConfig, schedule: Schedule) -> ObjectiveOptions:
        """The loss options of a run: its schedule and the options that apply here."""
        return ObjectiveOptions(
            schedule=schedule,
            antithetic=cfg.antithetic,
            random_length_frac=cfg.random_length_frac if self.random_length else 0.0,
            fim_rate=cfg.fim_rate,
            empty_rate=cfg.empty_rate,
            draft_weight=cfg.draft_weight,
            distill_ce_weight=cfg.distill_ce_weight,
            distill_entropy_weight=cfg.distill_entropy_weight,
            distill_temperature=cfg.distill_temperature,
            distill_window=cfg.distill_window,
        )


OBJECTIVES: dict[str, ObjectiveSpec] = {}
"""Registered objectives by name, in registration order."""

OBJECTIVE_OPTIONS = (
    "eps",
    "fim_rate",
    "empty_rate",
    "block_size",
    "sedd_graph",
    "schedule",
    "latent_len",
    "draft_block",
    "draft_weight",
    "distill_ce_weight",
    "distill_entropy_weight",
    "distill_temperature",
    "distill_window",
    "chat_template",
)
"""``TrainConfig`` fields that apply only to the objectives that list them in ``options``."""


def register_objective(spec: ObjectiveSpec) -> ObjectiveSpec:
    """Add ``spec`` to ``OBJECTIVES`` (a programming error, ``ValueError``, if the name is taken
    or its ``options`` are not objective options; a ``blocks`` objective takes ``block_size``)."""
    if spec.name in OBJECTIVES:
        raise ValueError(f"objective {spec.name!r} is already registered")
    unknown = sorted(set(spec.options) - set(OBJECTIVE_OPTIONS))
    if unknown:
        raise ValueError(f"objective {spec.name!r}: unknown options {unknown}")
    if spec.blocks != ("block_size" in spec.options):
        raise ValueError(f"objective {spec.name!r}: blocks=True goes with option block_size")
    have = {f.name for f in fields(TrainConfig)}
    if not set(OBJECTIVE_OPTIONS) <= have:
        raise ValueError(f"OBJECTIVE_OPTIONS names fields TrainConfig lacks: {OBJECTIVE_OPTIONS}")
    OBJECTIVES[spec.name] = spec
    return spec


def objective_spec(name: str) -> ObjectiveSpec:
    """The spec registered as ``name``; a one-line ``UserError`` naming the choices otherwise."""
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def get_objective(name: str) -> Objective:
    """The loss function of objective ``name``."""
    return objective_spec(name).loss


def objective_of(config: ModelConfig) -> ObjectiveSpec:
    """The spec of the objective that trained a model: ``config.objective`` when recorded, else
    read off the older facts (SEDD graph, attention, chat template) for checkpoints written
    before the field existed and imported ones."""
    if config.objective is not None:
        return objective_spec(config.objective)
    if config.sedd_graph is not None:  # only SEDD runs store a graph
        return objective_spec("sedd")
    kind = "prompt_response" if config.chat_template is not None else "tokens"
    plain = [  # objectives that store no facts of their own (SEDD's graph is checked above)
        s for s in OBJECTIVES.values() if s.attention == config.attention and s.model_config is None
    ]
    if not plain:
        raise UserError(f"no objective trains attention={config.attention!r}")
    return next((s for s in plain if s.batch == kind), plain[0])


__all__ = [
    "BATCH_EXTRA",
    "OBJECTIVES",
    "OBJECTIVE_OPTIONS",
    "BatchKind",
    "LossParts",
    "MaskPredictor",
    "Objective",
    "ObjectiveOptions",
    "ObjectiveSpec",
    "get_objective",
    "objective_of",
    "objective_spec",
    "register_objective",
    "text_positions",
]
