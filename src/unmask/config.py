"""Typed configuration: ModelConfig, TrainConfig, SampleConfig, presets, JSON I/O.

Every fact a model needs at run time (vocabulary size, special token ids, attention
mode, RoPE theta, ...) lives in ``ModelConfig`` and is stored with the checkpoint in
``config.json``; call sites never hard-code token ids.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

from unmask.errors import UserError
from unmask.files import atomic_write_text

if TYPE_CHECKING:
    import torch

AttentionMode = Literal["bidirectional", "causal", "block-causal"]
Norm = Literal["rms", "layer"]
Mlp = Literal["swiglu", "gelu"]
SigmaInput = Literal["given", "zero", "masked_fraction"]
Output = Literal["logits", "sedd_log_score"]
SeddGraph = Literal["absorbing", "uniform"]
ScheduleName = Literal["linear", "cosine", "geometric"]
"""Noise schedules by name; ``unmask.schedules.SCHEDULES`` implements exactly these (tested)."""

ATTENTION_MODES: tuple[str, ...] = get_args(AttentionMode)
NORMS: tuple[str, ...] = get_args(Norm)
MLPS: tuple[str, ...] = get_args(Mlp)
SIGMA_INPUTS: tuple[str, ...] = get_args(SigmaInput)
OUTPUTS: tuple[str, ...] = get_args(Output)
SEDD_GRAPHS: tuple[str, ...] = get_args(SeddGraph)
SCHEDULE_NAMES: tuple[str, ...] = get_args(ScheduleName)
ParallelMode = Literal["auto", "ddp", "fsdp"]
"""How ``torchrun`` processes share a training run (``unmask.parallel``)."""
PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]
"""Training precisions (``unmask.parallel.resolve_precision``)."""
PARALLEL_MODES: tuple[str, ...] = get_args(ParallelMode)
PRECISIONS: tuple[str, ...] = get_args(PrecisionName)
OBJECTIVE_NAMES: tuple[str, ...] = ("mdlm", "sft", "ar", "bd3lm", "sedd", "embed-diffusion",
                                    "latent-ae", "latent-diffusion", "hybrid", "distill")
"""The built-in training objectives (``unmask.objectives.OBJECTIVES``, which registers exactly
these: tests/test_apiaudit_registry_names.py), the names ``unmask train --objective`` checks
without importing torch (the registry lives in torch modules, which ``--help`` and flag
errors must not import). A new ``unmask`` process knows only these."""
ROUTERS: tuple[str, ...] = ("softmax", "sigmoid")
"""Values of ``ModelConfig.router``."""
BLOCK_ALIGNS: tuple[str, ...] = ("pad", "absolute")
"""Values of ``ModelConfig.block_align``."""
FIM_FIELDS = ("fim_prefix_id", "fim_suffix_id", "fim_middle_id")
"""``ModelConfig`` fields of the fill-in-the-middle sentinel ids, in PSM order."""
SIGMA_FREQ_DIM = 256
"""Sinusoidal features of the noise level that feed the sigma-embedding MLP (DiT's timestep
embedder)."""

MODEL_MODES: dict[str, tuple[str, ...]] = {
    "attention": ATTENTION_MODES,
    "norm": NORMS,
    "mlp": MLPS,
    "sigma_input": SIGMA_INPUTS,
    "output": OUTPUTS,
    "sedd_graph": SEDD_GRAPHS,
    "schedule": SCHEDULE_NAMES,
}
"""``ModelConfig`` fields whose value is one of a fixed set of names (None allowed where the
field is optional), checked when a config is built or loaded."""


def check_mode(name: str, value: Any, allowed: tuple[str, ...], *, optional: bool = False) -> None:
    """A one-line ``UserError`` naming the field and the allowed values unless ``value`` is one."""
    if (value is None and optional) or value in allowed:
        return
    raise UserError(f"{name}={value!r}; choose one of {', '.join(allowed)}")

T = TypeVar("T")


@dataclass(kw_only=True)
class ModelConfig:
    """Shape and facts of the one transformer (``unmask.model.Transformer``)."""

    vocab_size: int = 512
    """Number of token ids, special tokens included (embedding rows)."""
    d_model: int = 64
    """Width of the residual stream."""
    n_layers: int = 2
    """Number of transformer blocks."""
    n_heads: int = 4
    """Number of query heads; ``d_model`` must be divisible by it."""
    n_kv_heads: int | None = None
    """Number of key/value heads (grouped-query attention); None = ``n_heads``."""
    ffn_hidden: int | None = None
    """Hidden width of the MLP; None = 8/3·d_model rounded up to a multiple of 64 (SwiGLU),
    4·d_model for ``mlp='gelu'``."""
    max_seq_len: int = 256
    """Longest sequence (prompt + generation) the model is trained and used for."""
    rope_theta: float = 10000.0
    """Base of the rotary position embedding frequencies."""
    norm_eps: float = 1e-5
    """Epsilon of the norms (RMSNorm, or LayerNorm for ``norm='layer'``; ``qk_norm`` too)."""
    tie_embeddings: bool = True
    """Share the input embedding and the output projection."""
    qkv_bias: bool = False
    """Add a bias to the query/key/value projections (Qwen2/Dream style)."""
    norm: Norm = "rms"
    """``rms`` (RMSNorm) or ``layer`` (LayerNorm with a weight and no bias, as the DiT of
    MDLM/SEDD)."""
    mlp: Mlp = "swiglu"
    """``swiglu`` (gated, no biases) or ``gelu`` (up, GELU(tanh), down, both with biases;
    DiT/GPT-2)."""
    head_bias: bool = False
    """Add a bias to the output projection (the DiT's final linear layer)."""
    qk_norm: bool = False
    """RMSNorm (weight per head dimension, epsilon ``norm_eps``) over each head's query and key
    before RoPE (OLMoE, LLaDA-MoE ``qk_layernorm``)."""
    n_experts: int = 0
    """Routed experts of every block's MLP (mixture of experts, ``unmask.model.MoE``): a
    bias-free router, softmax over the experts, the ``experts_top_k`` most probable experts
    (SwiGLU, width ``expert_hidden``) summed with their probabilities as weights; 0 = the dense
    MLP of width ``ffn_hidden``."""
    experts_top_k: int = 1
    """Experts each token is routed to, 1..``n_experts`` (``n_experts`` > 0 only)."""
    expert_hidden: int | None = None
    """Hidden width of each routed expert's SwiGLU; None = ``ffn_hidden`` (``n_experts`` > 0
    only)."""
    norm_topk_prob: bool = False
    """Renormalise the top-k routing probabilities to sum to 1 (Mixtral, Qwen-MoE); False keeps
    the softmax probabilities as they are (OLMoE, LLaDA-MoE) (``n_experts`` > 0 only)."""
    shared_expert_hidden: int = 0
    """Width of an always-on shared SwiGLU expert whose output is added to the routed experts'
    (LLaDA-MoE ``shared_expert_intermediate_size``); 0 = none (``n_experts`` > 0 only)."""
    router: str = "softmax"
    """Router of a mixture of experts (``n_experts`` > 0): ``softmax`` (OLMoE, LLaDA-MoE: top-k of
    softmax probabilities) or ``sigmoid`` (DeepSeek-V3 / Ling 2.0 / LLaDA 2.x: per-expert sigmoid
    scores, chosen by score + ``router_expert_bias`` inside the best ``router_topk_groups`` of
    ``router_groups`` groups, weighted by their scores renormalised (``norm_topk_prob``) and
    multiplied by ``routed_scaling``)."""
    router_groups: int = 1
    """Groups the experts are split into for group-limited routing (``n_group``); 1 = none."""
    router_topk_groups: int = 1
    """Groups a token may route into (``topk_group``), ranked by the sum of their two best
    scores; used when ``router_groups`` > 1."""
    routed_scaling: float = 1.0
    """Factor on the routed experts' weights (``routed_scaling_factor``)."""
    router_expert_bias: bool = False
    """A per-expert bias added to the scores for choosing experts only, not to their weights
    (aux-loss-free load balancing; ``moe_router_enable_expert_bias``); a non-trained parameter
    ``mlp.expert_bias`` of each MoE block."""
    dense_layers: int = 0
    """The first this many blocks have a dense SwiGLU MLP of width ``ffn_hidden`` instead of
    experts (``first_k_dense_replace``; ``n_experts`` > 0 only)."""
    rotary_dim: int | None = None
    """Leading dimensions of each head rotated by RoPE (partial rotary embeddings,
    ``partial_rotary_factor`` x head dim); None = the whole head."""
    block_align: str = "pad"
    """How block decoding (``block-causal``) places the prompt: ``pad`` (left-padded to whole
    blocks, so generation starts on a block boundary; BD3-LM here) or ``absolute`` (blocks at
    positions 0, B, 2B, ... from the prompt's first token: the prompt's last, partial block is
    completed by the first generated tokens; LLaDA 2.x's ``generate``)."""
    time_conditioning: bool = False
    """DiT adaLN-Zero conditioning on the noise level (Peebles & Xie 2023; MDLM, SEDD): an embedding
    of ``sigma`` shifts, scales and gates every block's two sublayers and shifts/scales the final
    norm (modulation layers start at zero). ``forward`` then takes ``sigma`` (see
    ``sigma_input``)."""
    cond_dim: int = 128
    """Width of the noise-level embedding that drives the modulation (``time_conditioning``
    only)."""
    sigma_input: SigmaInput = "given"
    """Where the noise level comes from (``time_conditioning`` only): ``given`` (``forward`` needs
    ``sigma``), ``zero`` (always sigma = 0: MDLM's released checkpoints, trained with time
    conditioning off), ``masked_fraction`` (``sigma`` when given, else the absorbing process's total
    noise read off the input, sigma = -log(1 - fraction of [MASK] tokens), so samplers that pass
    no noise level work; SEDD)."""
    output: Output = "logits"
    """What ``forward(..., sigma=s)`` returns: ``logits`` (the denoiser) or ``sedd_log_score``
    (SEDD's absorbing-graph log concrete score, Lou et al. 2024: head output - log(e^sigma - 1) -
    log(V - 1), 0 at each position's own token). Called without ``sigma`` (samplers, evaluators),
    a model returns denoiser logits either way (``unmask.model.denoiser_logits``). A Dream-style
    model (``logit_shift``) has ``logits``: its log-score is taken after the shift."""
    sedd_graph: SeddGraph | None = None
    """Forward graph of a model trained with objective ``sedd`` (``absorbing`` or ``uniform``;
    ``unmask.sedd``); None = not a SEDD model. A ``uniform`` model's head output is its log-score
    and is sampled only by the SEDD samplers (policy ``sedd-euler`` / ``sedd-analytic``)."""
    attention: AttentionMode = "bidirectional"
    """``bidirectional`` (diffusion), ``causal`` (autoregressive) or ``block-causal``."""
    block_size: int | None = None
    """Block length for ``block-causal`` attention."""
    logit_shift: bool = False
    """Logits at position i predict token i+1 (Dream); False for LLaDA/MDLM-style models."""
    init_std: float = 0.02
    """Standard deviation of the normal weight init; output projections are scaled by
    1/sqrt(2·n_layers)."""
    mask_id: int = 0
    """Id of the ``[MASK]`` token; an id of its own, not ``pad_id``'s nor ``eos_id``'s."""
    pad_id: int = 1
    """Id of the ``[PAD]`` token (never predicted, never masked)."""
    eos_id: int = 2
    """Id of the end-of-sequence token; it separates documents in training data."""
    bos_id: int | None = 3
    """Id of the beginning-of-sequence token, if the tokenizer has one."""
    prompt_bos_id: int | None = None
    """Id of the token a raw (non-chat) prompt begins with when it is decoded: the BOS a
    published model saw first in every training text (LLaDA's ``<|startoftext|>``), recorded
    when its folder is read (``unmask.convert.load.prompt_bos_id``) and put in front by
    ``unmask.facts.ModelFacts.prompt_ids``; None = a prompt is encoded as it is (unmask's own
    models, and checkpoints converted before it was recorded)."""
    fim_prefix_id: int | None = None
    """Id of ``[FIM_PREFIX]`` for fill-in-the-middle models (objective ``ar`` with
    ``fim_rate`` > 0)."""
    fim_suffix_id: int | None = None
    """Id of ``[FIM_SUFFIX]`` (fill-in-the-middle models only)."""
    fim_middle_id: int | None = None
    """Id of ``[FIM_MIDDLE]`` (fill-in-the-middle models only)."""
    empty_id: int | None = None
    """Id of ``[EMPTY]``, the filler of unused variable-length gap slots, for models trained with
    ``empty_rate`` > 0 (objective ``mdlm``; ``unmask.objectives.insert_empty``); None = no such
    token."""
    chat_template: str | None = None
    """Jinja chat template (``messages``, ``add_generation_prompt``) the model was fine-tuned
    with (objective ``sft``; ``unmask.sft``); None = not a chat model."""
    objective: str | None = None
    """The objective that trained the model (``unmask.objectives.OBJECTIVES``: ``mdlm``, ``ar``,
    ``bd3lm``, ``sft``, ``sedd``), written by ``unmask train``; it says which decoder samples
    the model. None = not recorded (imported checkpoints, runs older than this field)."""
    schedule: ScheduleName = "linear"
    """Noise schedule α(t) the model was trained with (``unmask.schedules``): ``linear``
    (LLaDA, MDLM), ``cosine`` or ``geometric`` (SEDD's; the ``sedd`` decoder steps on its
    σ(t)). In sampling it drives the ``llada`` policy's counts only
    (tokens to reveal per step, decoders ``llada`` and ``bd3lm``, where a block has more masks
    than steps; with no more masks than steps every schedule gives one token a step): the
    parallel policies, the speculative drafter (linear left-to-right chunks) and the other
    decoders but ``sedd`` do not read it. Checkpoints without the field were trained with
    ``linear``."""
    schedule_eps: float = 1e-3
    """The schedule's floor on the mask probability, p_mask = (1 - eps)·(1 - α(t)) + eps
    (``TrainConfig.eps``)."""
    latent_len: int | None = None
    """Latent vectors a window of text is compressed to (objectives ``latent-ae`` and
    ``latent-diffusion``, ``unmask.objectives.latent``); None = not a latent model."""
    latent_window: int | None = None
    """Tokens per window the latent autoencoder was trained to compress (its run's
    ``--seq-len``): each latent slot stands for a fixed chunk of that window, so stage 2 and
    sampling use the same length. None in checkpoints older than the field (not checked)."""
    latent_self_condition: bool = False
    """A ``latent-diffusion`` denoiser that also reads its previous z0 prediction
    (self-conditioning, ``unmask.objectives.latent``); False in checkpoints older than the
    field."""
    embed_self_condition: bool = False
    """An ``embed-diffusion`` model that also reads its previous x0 estimate (the expected
    clean embedding under its last logits) through ``self_condition`` (a D×D map added to
    x_t; self-conditioning, Chen et al. 2022, as CDCD and Plaid use it;
    ``unmask.objectives.continuous``); False in checkpoints older than the field."""
    draft_block: int | None = None
    """Tokens per draft block of a model trained with objective ``hybrid``
    (``unmask.objectives.hybrid``; TiDAR-style): a block of that many ``[MASK]`` tokens after
    the causal prefix drafts the next tokens in one forward, which the causal part verifies
    (decoder ``hybrid``). None = not a hybrid model."""
    sample_defaults: dict[str, Any] = field(default_factory=dict)
    """Sampling options recommended for this checkpoint (``SampleConfig`` field -> value,
    e.g. ``{"temperature": 0.8, "block_length": 4}``), measured, not guessed: written by
    ``unmask train`` from the objective's spec. The CLI and chat use them where the user
    gives no flag (``unmask.api.sample_config``); the Python API takes its ``SampleConfig``
    as given. Empty = the ``SampleConfig`` defaults."""

    def __post_init__(self) -> None:
        check_field_types(self)  # d_model="64", block_size="4": a TypeError deep in the checks
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.ffn_hidden is None:
            gelu = self.mlp == "gelu"
            self.ffn_hidden = 4 * self.d_model if gelu else 64 * -(-(8 * self.d_model // 3) // 64)
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads",
                     "ffn_hidden", "max_seq_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"{name}={v!r} must be a whole number of at least 1")
        for name in ("latent_len", "latent_window"):  # a negative count of slots claimed
            v = getattr(self, name)  # positions the model has not (ModelFacts.max_seq_len)
            if v is not None and v < 1:
                raise UserError(f"{name}={v!r} must be a whole number of at least 1 "
                                "(or absent: not a latent model)")
        for name, low, strict in (("norm_eps", 0.0, True), ("init_std", 0.0, False),
                                  ("rope_theta", 0.0, True), ("routed_scaling", 0.0, True)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or (
                    v <= low if strict else v < low):
                raise UserError(f"{name}={v!r} must be a finite number "
                                f"{'>' if strict else '>='} {low:g}")
        if self.d_model % self.n_heads:
            raise UserError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise UserError(
                f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}"
            )
        if (self.d_model // self.n_heads) % 2:
            raise UserError(f"head dimension d_model/n_heads = {self.d_model}/{self.n_heads} = "
                            f"{self.d_model // self.n_heads} must be even for rotary embeddings")
        for name, allowed in MODEL_MODES.items():
            check_mode(name, getattr(self, name), allowed, optional=name == "sedd_graph")
        if self.attention == "block-causal" and not self.block_size:
            raise UserError("attention='block-causal' needs block_size")
        if self.block_size is not None and self.block_size < 1:
            raise UserError(f"block_size={self.block_size} must be positive")
        if self.attention == "block-causal" and self.block_size > self.max_seq_len:
            raise UserError(f"block_size={self.block_size} exceeds max_seq_len="
                            f"{self.max_seq_len}: not one block fits the context")
        if self.draft_block is not None and self.draft_block < 1:
            raise UserError(f"draft_block={self.draft_block} must be positive")
        if not 0.0 <= self.schedule_eps < 1.0:
            raise UserError(f"schedule_eps={self.schedule_eps} must be in [0, 1)")
        if not isinstance(self.sample_defaults, dict):  # a list was a TypeError in the join
            raise UserError(f"sample_defaults must be a dict of sampling options, not "
                            f"{self.sample_defaults!r}")
        names = {f.name for f in fields(SampleConfig)}
        unknown = sorted(repr(k) if not isinstance(k, str) else k
                         for k in self.sample_defaults if k not in names)
        if unknown:
            from unmask.names import closest

            meant = [f"{k} (did you mean {near}?)" if (near := closest(k, sorted(names)))
                     else k for k in unknown]
            what = "is not a sampling option" if len(unknown) == 1 else "are not sampling options"
            raise UserError(f"sample_defaults: {', '.join(meant)} {what}")
        try:  # the values too: a bad one failed at the first run, not naming config.json
            SampleConfig(**self.sample_defaults)
            for name in POLICY_PARAMETERS:  # (in order: the same one named on every run)
                if name in self.sample_defaults:  # the policy may be another's flag
                    check_parameter(name, self.sample_defaults[name])
        except UserError as e:
            raise UserError(f"sample_defaults: {e}") from None
        if self.n_experts < 0 or (self.n_experts and not 1 <= self.experts_top_k <= self.n_experts):
            raise UserError(
                f"n_experts={self.n_experts}, experts_top_k={self.experts_top_k}: "
                "need n_experts >= 0 and 1 <= experts_top_k <= n_experts"
            )
        if self.n_experts and self.mlp != "swiglu":
            raise UserError(
                f"n_experts > 0 needs mlp='swiglu' (experts are SwiGLU), got mlp={self.mlp!r}"
            )
        bad_expert = self.expert_hidden is not None and self.expert_hidden <= 0
        if bad_expert or self.shared_expert_hidden < 0:
            raise UserError(
                f"expert_hidden={self.expert_hidden}, "
                f"shared_expert_hidden={self.shared_expert_hidden}: widths must be positive "
                "(shared_expert_hidden 0 = no shared expert)"
            )
        self._check_moe_options()
        if self.time_conditioning and self.cond_dim <= 0:
            raise UserError(f"cond_dim must be positive, got {self.cond_dim}")
        no_level = not self.time_conditioning or self.sigma_input == "zero"
        if self.output == "sedd_log_score" and no_level:
            raise UserError(
                "output='sedd_log_score' needs time_conditioning with a noise level "
                "(sigma_input given or masked_fraction)"
            )
        if self.output == "sedd_log_score" and self.logit_shift:
            self._shifted_sedd_output()
        if self.output == "sedd_log_score" and self.sedd_graph == "uniform":
            # the head computes the absorbing log-score: sampled as absorbing (graph_of) while
            # the facts said uniform (blocks refused, the commit policies refused), silently
            raise UserError(
                "output='sedd_log_score' is the absorbing graph's log-score, not "
                "sedd_graph='uniform''s: a uniform-graph model has output 'logits' (its head "
                "is the log-score)"
            )
        for name in ("mask_id", "pad_id", "eos_id", "bos_id", "prompt_bos_id", *FIM_FIELDS,
                     "empty_id"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < self.vocab_size:
                raise UserError(f"{name}={v} is outside the vocabulary (size {self.vocab_size})")
        clash = [n for n in ("eos_id", "pad_id") if getattr(self, n) == self.mask_id]
        if clash:  # every [MASK] read as an EOS (a row ended where nothing was committed yet),
            # padding taken for positions to fill: the rule the importers apply (convert.load)
            raise UserError(f"mask_id={self.mask_id} is also the {' and '.join(clash)}: the "
                            "[MASK] token needs an id of its own")
        if len({getattr(self, name) is None for name in FIM_FIELDS}) > 1:
            raise UserError(f"give all of {', '.join(FIM_FIELDS)} or none")

    def _shifted_sedd_output(self) -> None:
        """A Dream-style ``sedd`` run with ``output='sedd_log_score'`` (written before session
        34) put each position's 0 (its own token's ratio) on its right neighbour. It gets
        ``output='logits'``, the config that objective writes now
        (``unmask.objectives.score_entropy.sedd_model_config``): the same weights, their
        log-score taken after the shift (``unmask.sedd.as_log_score``); an objective not
        recorded is ``sedd``, the one its graph says (``unmask.facts.infer_objective``), so the
        run's noise still reads its schedule. Another objective on the absorbing graph (a
        run fine-tuned with ``--init ... --objective mdlm``) gets ``output='logits'`` too: its
        forwards pass no noise level, so the output head is the same. Any other such pair (a
        uniform graph) is refused; a graph not recorded is absorbing (``sedd.graph_of``)."""
        if self.sedd_graph not in (None, "absorbing"):
            raise UserError(
                "output='sedd_log_score' with logit_shift scores each position against its "
                "left neighbour's token: set output to 'logits' (with objective 'sedd' and "
                "sedd_graph 'absorbing' the log-score is taken after the shift)"
            )
        self.output = "logits"
        if self.objective is None:
            self.objective = "sedd"

    def _check_moe_options(self) -> None:
        """The router / partial-rotary / block-alignment options (one-line ``UserError``s)."""
        check_mode("router", self.router, ROUTERS)
        if self.n_experts and self.router == "softmax":  # MoE.route reads them for sigmoid only
            sigmoid_only = [f"{name}={getattr(self, name)!r}" for name, plain in (
                ("routed_scaling", 1.0), ("router_groups", 1), ("router_topk_groups", 1),
                ("router_expert_bias", False)) if getattr(self, name) != plain]
            if sigmoid_only:
                raise UserError(f"{', '.join(sigmoid_only)}: set only with router='sigmoid'; "
                                "the softmax router does not read it")
        check_mode("block_align", self.block_align, BLOCK_ALIGNS)
        groups, topk = self.router_groups, self.router_topk_groups
        if groups < 1 or not 1 <= topk <= groups or (self.n_experts and self.n_experts % groups):
            raise UserError(
                f"router_groups={groups}, router_topk_groups={topk}: need 1 <= topk <= groups "
                f"and groups dividing n_experts ({self.n_experts})"
            )
        if groups > 1 and self.n_experts and self.experts_top_k > topk * self.n_experts // groups:
            raise UserError(
                f"experts_top_k={self.experts_top_k} exceeds the experts of "
                f"{topk} of {groups} groups"
            )
        if not 0 <= self.dense_layers <= self.n_layers:
            raise UserError(f"dense_layers={self.dense_layers} must be in [0, n_layers]")
        rd = self.rotary_dim
        if rd is not None and (rd <= 0 or rd % 2 or rd > self.d_model // self.n_heads):
            raise UserError(
                f"rotary_dim={rd} must be even, positive and at most the head dimension "
                f"({self.d_model // self.n_heads})"
            )

    @property
    def has_fim(self) -> bool:
        """Whether the model knows the fill-in-the-middle sentinels (trained with
        ``fim_rate`` > 0)."""
        return self.fim_prefix_id is not None

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def moe_expert_hidden(self) -> int:
        """Hidden width of each routed expert: ``expert_hidden``, else ``ffn_hidden``."""
        return self.expert_hidden if self.expert_hidden is not None else self.ffn_hidden

    def num_params(self) -> int:
        """Parameter count of the transformer this config describes (embedding counted once if
        tied)."""
        d, f, hd = self.d_model, self.ffn_hidden, self.head_dim
        kv = self.n_kv_heads * hd
        attn = d * d + 2 * d * kv + d * d + (d + 2 * kv if self.qkv_bias else 0)
        mlp = 2 * d * f + f + d if self.mlp == "gelu" else 3 * d * f
        dense_mlp = mlp
        if self.n_experts:  # router + routed experts + shared expert (+ expert bias)
            widths = self.n_experts * self.moe_expert_hidden + self.shared_expert_hidden
            mlp = d * self.n_experts + 3 * d * widths
            mlp += self.n_experts if self.router_expert_bias else 0
        per_layer = attn + mlp + 2 * d + (2 * hd if self.qk_norm else 0)
        emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        total = self.n_layers * per_layer + emb + d + (self.vocab_size if self.head_bias else 0)
        if self.n_experts and self.dense_layers:  # first blocks dense (first_k_dense_replace)
            total += self.dense_layers * (dense_mlp - mlp)
        if self.time_conditioning:  # sigma embedding MLP, 6·d modulation per block, 2·d final
            c = self.cond_dim
            total += SIGMA_FREQ_DIM * c + c + c * c + c
            total += self.n_layers * (c + 1) * 6 * d + (c + 1) * 2 * d
        if self.embed_self_condition:  # embed-diffusion's self-condition map, d × d, no bias
            total += d * d
        return total


# Presets: shapes only; vocabulary and special ids come from the tokenizer.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64),
    # the benchmarks' size (benchmarks/objectives.py, data_constrained.py): hundreds of
    # epochs of a small corpus in minutes on one CPU core
    "bench": dict(d_model=64, n_layers=4, n_heads=4, n_kv_heads=2, max_seq_len=128),
    "demo": dict(d_model=256, n_layers=6, n_heads=8, n_kv_heads=4, max_seq_len=256),
    "small": dict(d_model=512, n_layers=8, n_heads=8, n_kv_heads=4, max_seq_len=512),
    "base": dict(d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, max_seq_len=1024),
}


def layout_positions(latent_len: int, self_condition: bool) -> int:
    """The positions a latent-diffusion denoiser's layout holds besides the text
    (``unmask.objectives.latent``): ``latent_len`` slots (twice that for a self-conditioned
    model, its previous estimate) and the time. Here, not there, so that ``unmask.facts``
    needs no torch (and no import circle through ``unmask.objectives``)."""
    return (2 if self_condition else 1) * latent_len + 1


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """A ``ModelConfig`` from a named preset (``MODEL_PRESETS``) with field overrides."""
    if name not in MODEL_PRESETS:
        raise UserError(f"unknown model preset {name!r}; choose one of {', '.join(MODEL_PRESETS)}")
    return ModelConfig(**{**MODEL_PRESETS[name], **overrides})


@dataclass(kw_only=True)
class TrainConfig:
    """Everything ``unmask train`` needs besides the model shape."""

    data: str = ""
    """Directory written by ``unmask prepare`` (shards + index.json + tokenizer.json); for
    objective ``sft`` a JSONL file of prompt/response pairs or chat ``messages``; for objective
    ``distill`` a trajectory file written by ``unmask distill`` (objective ``hybrid`` takes
    one too: an autoregressive teacher's rows, with ``init``, as ``unmask distill`` runs it
    for a causal student)."""
    heldout_data: str = ""
    """The prepared corpus ``unmask eval`` measures the held-out bound on when ``data`` has no
    validation split; ``unmask distill`` sets its ``--data`` (the trajectories' corpus).
    Empty = ``data``."""
    heldout_seq_len: int = 0
    """Window length of that bound (capped at the model's context); ``unmask distill`` sets
    the teacher's ``seq_len``, so student and teacher are measured alike. 0 = ``seq_len``."""
    out: str = ""
    """Run directory: checkpoints, metrics.jsonl, train_config.json."""
    preset: str = "tiny"
    """Model preset (``MODEL_PRESETS``: tiny, bench, demo, small, base)."""
    objective: str = "mdlm"
    """Training objective by registry name (``mdlm``, ``ar``, ``bd3lm``, ``sft``, ``sedd``,
    ``embed-diffusion``, ``latent-ae``, ``latent-diffusion``, ``hybrid``, ``distill``)."""
    seq_len: int = 128
    """Tokens per training row. A new model's context (``max_seq_len``) is made at least this
    long; an ``--init`` model's must already be (or ``--model-set max_seq_len=N``)."""
    batch_size: int = 32
    """Global rows per optimizer step (split across processes and accumulation steps)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    steps: int = 1000
    """Optimizer steps in total."""
    lr: float = 1e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr`` (cosine decay)."""
    warmup: int = 100
    """Linear warmup steps."""
    weight_decay: float = 0.1
    """AdamW weight decay (not applied to norms)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 = off)."""
    ema: float = 0.0
    """EMA decay of the weights kept for inference (0 = off, e.g. 0.999); warmed up as
    min(ema, (1+step)/(10+step))."""
    eps: float = 1e-3
    """Minimum mask probability: p_mask = (1 - eps)·(1 - α(t)) + eps; saved as the model's
    ``schedule_eps``."""
    schedule: ScheduleName = "linear"
    """Objectives ``mdlm``, ``bd3lm``, ``sft`` and ``sedd``: the noise schedule α(t), ``linear``
    (α = 1 - t; LLaDA, MDLM; SEDD's log-linear noise), ``cosine`` (α = 1 - sin(πt/2),
    MaskGIT's order; not MDLM's cos(πt/2); not for ``sedd``) or ``geometric`` (SEDD's
    σ(t) = 1e-4^{1-t}·20^t, α = e^{-σ}); saved as the model's ``schedule``, which the samplers
    follow."""
    antithetic: bool = True
    """Low-discrepancy time sampling across the batch (MDLM)."""
    random_length_frac: float = 0.01
    """Fraction of batches cut to a random length (LLaDA)."""
    fim_rate: float = 0.0
    """Objective ``ar`` only: fraction of rows rearranged for fill-in-the-middle (PSM with
    [FIM_PREFIX]/[FIM_SUFFIX]/[FIM_MIDDLE] sentinels appended to the tokenizer; Bavarian et al.
    2022), e.g. 0.5; 0 = plain next-token prediction."""
    empty_rate: float = 0.0
    """Objective ``mdlm`` only: fraction of rows that get a run of ``[EMPTY]`` tokens inserted at a
    random position (the row keeps its length; ``unmask.objectives.insert_empty``), so the model
    learns to fill unused slots of a variable-length gap with ``[EMPTY]`` (appended to the
    tokenizer); in [0, 1), e.g. 0.3; 0 = off."""
    block_size: int | None = None
    """Objective ``bd3lm`` only: tokens per diffusion block (BD3-LM, Arriola et al. 2025); must
    divide ``seq_len``; saved as the model's ``block_size`` (block-causal attention). 1 = an
    autoregressive model, ``seq_len`` = plain masked diffusion."""
    sedd_graph: SeddGraph = "absorbing"
    """Objective ``sedd`` only: the forward graph, ``absorbing`` (tokens jump to [MASK]) or
    ``uniform`` (tokens jump to random tokens; wants a time-conditioned model); the noise is
    ``schedule``'s: SEDD's log-linear one with ``eps`` (``linear``) or its ``geometric`` one
    (Lou et al. 2024; docs/training.md)."""
    latent_len: int = 16
    """Objectives ``latent-ae`` / ``latent-diffusion`` only: latent vectors (of width d_model)
    each window of ``seq_len`` tokens is compressed to; saved as the model's ``latent_len``
    (stage 2 takes the autoencoder's). 16 (4 tokens per vector at seq_len 64) reconstructs
    far better than 8 after the same steps (docs/training.md, latent diffusion)."""
    draft_block: int | None = None
    """Objective ``hybrid`` only: tokens per draft block, the number of tokens the model learns
    to draft in one forward after a causal prefix (TiDAR; saved as the model's
    ``draft_block``); >= 1, and ``seq_len`` >= draft_block + 2. None = the ``init`` model's
    own when it is a hybrid already (a hybrid continued keeps its blocks), else 8."""
    draft_weight: float = 1.0
    """Objective ``hybrid`` only: weight of the draft blocks' mean cross-entropy added to the
    causal next-token loss (TiDAR's balance of the diffusion and AR losses); >= 0, 0 = plain
    next-token training."""
    distill_ce_weight: float = 1.0
    """Objective ``distill`` only: weight of the cross-entropy between the student's
    predictions on masked positions and the teacher's final tokens (``unmask distill``)."""
    distill_entropy_weight: float = 2.0
    """Objective ``distill`` only: weight of the certainty-forcing term, the entropy of the
    student's distribution averaged over the masked positions it already predicts correctly
    (dParallel uses 2, with that average)."""
    distill_temperature: float = 0.5
    """Objective ``distill`` only: softmax temperature of that entropy (dParallel uses 0.5)."""
    distill_window: int = 0
    """Objective ``distill`` only: 0 = the student learns the teacher's own states. N > 0 =
    drafter distillation from an autoregressive teacher (``unmask distill --student``): each
    state is a committed prefix followed by N masks and nothing else, the canvas a drafter of
    ``--draft-length`` N fills in speculative decoding."""
    init: str = ""
    """Checkpoint (run directory or checkpoint folder) whose weights, config and tokenizer start
    the run (objective ``sft`` needs it); empty = a fresh model from ``preset``."""
    chat_template: str | None = None
    """Objective ``sft``: the chat template to train with and store in the checkpoint, as
    ``unmask chat --template`` takes it (``default``, ``plain``, a Jinja or JSON file, or Jinja
    text); None = the ``--init`` model's template, else ``unmask.sft.DEFAULT_CHAT_TEMPLATE``."""
    eval_every: int = 100
    """Validate every N steps (0 = only at the end)."""
    eval_batches: int = 8
    """Validation batches per evaluation (fixed seed, so numbers are comparable); 0 = the whole
    validation split (as ``unmask eval`` reads it)."""
    save_every: int = 500
    """Checkpoint every N steps (also on SIGINT/SIGTERM and at the end)."""
    keep_best: bool = False
    """Also keep the weights of the best validation so far in ``OUT/best`` (a checkpoint for
    ``generate``/``eval --model OUT/best``; written at each validation that improves it). On a
    small corpus an ``ar`` model overfits after a few epochs while ``OUT/checkpoint`` keeps
    the last step (docs/training.md, "Small corpora")."""
    log_every: int = 10
    """Append a training line to metrics.jsonl every N steps (0: only the last step's)."""
    seed: int = 0
    """Seed for init, data order and noise."""
    time_limit: float = 0.0
    """Stop (with a checkpoint) after this many minutes of training (0 = no limit)."""
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu`` or ``cuda[:i]``."""
    threads: int = 0
    """CPU threads for torch (0 = torch's default)."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """ModelConfig fields that override the preset (e.g. {"d_model": 384})."""
    parallel: ParallelMode = "auto"
    """Several processes (``torchrun``): ``ddp`` (a full replica each), ``fsdp`` (FSDP2: weights,
    gradients and AdamW state sharded over the processes; sharded checkpoints that resume on
    any number of processes) or ``auto`` (FSDP once a replica would take over a quarter of a
    process's memory, else DDP)."""
    precision: PrecisionName = "auto"
    """``fp32``, ``bf16`` (autocast, fp32 master weights and loss), ``fp16`` (autocast + gradient
    scaler; CUDA only) or ``auto`` (bf16 on GPUs that have it, else fp16; fp32 on CPU, where
    bf16 measured slower; docs/training.md)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward instead of storing them (less memory,
    about a third more compute)."""
    compile: bool = False
    """``torch.compile`` every block of the training step (first steps pay the compile)."""

    def __post_init__(self) -> None:
        for name in PATH_FIELDS:  # a pathlib.Path is a path: kept as its str (train_config.json)
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        check_field_types(self)  # steps="5" failed deep in training, seq_len=32.0 after it began
        if not isinstance(self.model_overrides, dict):
            raise UserError(f"model_overrides={self.model_overrides!r} should be an object of "
                            f"ModelConfig fields")
        for name, value in self.model_overrides.items():
            problem = model_override_error(name, value)
            if problem:
                raise UserError(f"model_overrides: {problem}")
        check_mode("schedule", self.schedule, SCHEDULE_NAMES)
        check_mode("sedd_graph", self.sedd_graph, SEDD_GRAPHS)
        check_mode("parallel", self.parallel, PARALLEL_MODES)
        check_mode("precision", self.precision, PRECISIONS)


PATH_FIELDS = ("data", "heldout_data", "out", "init")
"""``TrainConfig``'s path fields: a ``pathlib.Path`` given there is kept as its ``str`` (a Path
failed as JSON when the run wrote train_config.json)."""


OBJECTIVE_MODEL_FIELDS: dict[str, str] = {
    "objective": "--objective", "schedule": "--schedule", "schedule_eps": "--eps",
    "sample_defaults": "the objective's measured defaults",
}  # fmt: skip
"""ModelConfig fields a training run writes from its own settings (``ObjectiveSpec.configure``),
so a ``--model-set`` of them would be overwritten: field -> what sets it."""


def model_override_error(name: str, value: Any) -> str | None:
    """Why ``value`` cannot override ModelConfig field ``name`` (``--model-set``, or
    ``TrainConfig.model_overrides`` from a ``--config`` or a run's train_config.json), or
    None: not a field, or not of the field's type (``d_model="x"``, ``sample_defaults=1``)."""
    kinds = {f.name: str(f.type) for f in fields(ModelConfig)}
    if name not in kinds:
        return f"{name!r} is not a ModelConfig field (one of {', '.join(sorted(kinds))})"
    return _type_error(name, kinds[name], value)


def check_objective_fields(overrides: dict[str, Any]) -> None:
    """Refuse in one line model overrides of the fields the run writes itself
    (``OBJECTIVE_MODEL_FIELDS``), naming the flag to use instead; for a new run (a saved run
    that has them resumes: they were never applied)."""
    for name in overrides:
        owner = OBJECTIVE_MODEL_FIELDS.get(name)
        if owner is not None:
            use = f"use {owner}" if owner.startswith("--") else f"training writes {owner}"
            raise UserError(f"--model-set {name}: set by the run, not the preset; {use}")


@dataclass(kw_only=True)
class SampleConfig:
    """Options of decoding (see docs/sampling.md); which decoder runs is ``decoder``.

    Registry names (``decoder``, ``policy``, ``remasking``, ``confidence``, ``cache``) are
    checked where the registries live (``unmask.sampling``); the fixed modes here are checked
    on construction, each with a one-line ``UserError``.
    """

    decoder: str = "auto"
    """Decoder by registry name (``unmask.sampling.DECODERS``): ``auto`` (the checkpoint's own:
    ``llada`` for masked diffusion, ``bd3lm`` for block diffusion, ``sedd`` for SEDD, ``ar``
    for causal models, ``speculative`` for a causal model given a diffusion drafter, ``hybrid``
    for a model trained with objective ``hybrid``, ``embed-diffusion`` / ``latent-diffusion``
    for the continuous families), or one of those names; a decoder the checkpoint cannot run
    is refused."""
    gen_length: int = 64
    """Number of tokens to generate after the prompt."""
    steps: int = 64
    """Total denoising steps (split evenly across blocks); for the dynamic policies
    (threshold, factor, entropy), whose blocks run until no mask is left, the most forwards
    (each block at most its share, a step committing at least LLaDA's scheduled count). The
    commands and the server default it to ``gen_length`` (one token per step: then it never
    binds a dynamic policy); 64 is the Python default."""
    block_length: int | None = None
    """Semi-autoregressive block length; None = gen_length (pure diffusion)."""
    policy: str = "llada"
    """Commit policy of the ``llada`` and ``bd3lm`` decoders, by registry name: ``llada``
    (scheduled count per step) or the parallel ``threshold``, ``factor``, ``entropy``. The old
    spellings ``sedd-euler`` / ``sedd-analytic`` are aliases of ``decoder='sedd'`` with that
    ``sedd_sampler`` (they are rewritten on construction)."""
    sedd_sampler: Literal["analytic", "euler"] = "analytic"
    """Reverse step of the ``sedd`` decoder: ``analytic`` (Tweedie tau-leaping) or ``euler``."""
    prompt_masks: Literal["fill", "reference"] = "fill"
    """``fill``: a ``[MASK]`` in the prompt is filled too and counted in the schedule, so no
    mask is ever left in the output. ``reference``: LLaDA's reference loop exactly (prompt
    masks take budget counted for the generated part only, so masks can remain)."""
    remasking: str = "low_confidence"
    """``low_confidence`` (rank by the ``confidence`` measure) or ``random`` (LLaDA)."""
    confidence: str = "prob"
    """Confidence measure by registry name: ``prob`` (p of the proposal; LLaDA's
    low_confidence), ``margin`` (top-1 minus top-2 probability), ``neg_entropy`` (exp(-H))."""
    threshold: float = 0.9
    """Policy ``threshold``: commit every candidate with confidence >= this, in (0, 1]
    (Fast-dLLM)."""
    factor: float = 1.0
    """Policy ``factor``: the rank-r candidate commits if confidence >= 1 - factor/(r+2), > 0
    (Fast-dLLM)."""
    entropy_bound: float = 0.1
    """Policy ``entropy``: commit while sum(H) - max(H) over the committed set <= this, >= 0
    (EB-sampler)."""
    cache: str = "none"
    """KV cache: ``none``, ``prefix`` (reuse prompt + finished blocks) or ``dual`` (also the
    suffix after the block); approximate for bidirectional models (docs/sampling.md)."""
    skip_empty_steps: bool = False
    """Skip the model call of a step that commits nothing (llada with steps > tokens)."""
    temperature: float = 0.0
    """Gumbel-max temperature (0 = argmax; a tiny one, even subnormal, samples the argmax)."""
    cfg_scale: float = 0.0
    """Classifier-free guidance scale (0 = off)."""
    forbid_eos: bool = False
    """Never propose EOS (LLaDA's ``logits_eos_inf``)."""
    seed: int | None = None
    """Seed for temperature / random remasking; None = nondeterministic."""
    top_k: int | None = None
    """Autoregressive (causal) models only: sample among the k most likely tokens (and any
    tied with the k-th)."""
    top_p: float | None = None
    """Autoregressive (causal) models only: sample from the smallest set with probability >= p,
    in (0, 1]; 1.0 keeps every token: off (OpenAI's default), taken by any decoder."""
    repetition_penalty: float = 1.0
    """Divide the positive logits (multiply the negative ones) of every token already in the
    text, prompt included, by this (CTRL / Hugging Face / vLLM; > 0, 1 = off, 1.1-1.3 typical).
    Decoders ``llada``, ``bd3lm``, ``ar``, ``speculative``, ``hybrid``
    (``unmask.sampling.penalties``)."""
    presence_penalty: float = 0.0
    """Subtract this from the logit of every token the generated text holds (OpenAI; in
    [-2, 2], 0 = off). The same decoders."""
    frequency_penalty: float = 0.0
    """Subtract this times the number of times a token occurs in the generated text (OpenAI; in
    [-2, 2], 0 = off). The same decoders."""
    no_repeat_ngram_size: int = 0
    """Never write an n-gram of this many tokens that the text already holds, prompt included
    (Hugging Face's ``no_repeat_ngram_size``; 0 = off, 3-4 typical): the tokens that would
    complete one are forbidden. The same decoders; n-grams with a special token (EOS, padding,
    mask) never count."""
    exempt_ids: tuple[int, ...] = ()
    """Token ids the four penalties above never count nor penalise, besides the model's special
    tokens (EOS, padding, mask, ...): a chat template's end-of-turn tokens that are not the EOS
    (``<|eot_id|>``, ``<|im_end|>``; ``ChatTemplate.ends``), which every earlier turn holds, so
    that penalties never make the model less willing to end its reply. Chat sets it
    (``unmask.sampling.penalties.exempting``: ``api.chat``, ``api.generate`` with a template,
    ``unmask chat``, the server's chat); no command-line flag."""
    draft_length: int | None = None
    """Draft tokens per round (>= 1). Decoder ``speculative``: tokens the diffusion drafter
    proposes (None = 8, ``unmask.sampling.speculative.SPECULATIVE_DRAFT_LENGTH``). Decoder
    ``hybrid``: the first n positions of the checkpoint's draft block (None = all
    ``draft_block``; more is refused): fewer positions make each forward cheaper, and
    positions far past the prefix are rarely accepted by a small model (docs/sampling.md)."""
    guide_words: str | None = None
    """Decoders ``embed-diffusion`` / ``latent-diffusion``: words the text should contain,
    comma-separated; the continuous state is pushed toward them by the gradient of a
    bag-of-words constraint at every step (``unmask.sampling.continuous``)."""
    guide_scale: float = 0.02
    """Strength of ``guide_words`` guidance: the step on the continuous state, in units of the
    current noise's standard deviation (>= 0). Measured on a small embed-diffusion model
    (docs/sampling.md): 0.02 puts the words in every sample without repeating them
    everywhere; 0.2 and more fills the text with them. Refused without ``guide_words`` (0
    excepted: no guidance)."""
    edit_threshold: float | None = None
    """Decoder ``bd3lm``: LLaDA 2.1's token-to-token editing; a committed token of the current
    block whose argmax differs from it with probability > this is replaced (0.5 in the
    publisher's Quality mode with ``threshold`` 0.7; 0.0 in Speed mode with ``threshold`` 0.5);
    None = no editing (LLaDA 2.0, BD3-LM)."""
    max_post_steps: int = 16
    """Decoder ``bd3lm`` with ``edit_threshold``: edit-only steps at most once a block has no
    mask (a step that changes nothing ends the block earlier); refused without
    ``edit_threshold`` (0 excepted: none)."""
    draft_threshold: float = 0.0
    """Decoders ``speculative`` and ``hybrid``: adaptive draft length. A row's draft ends before
    the first token the drafter gives a probability below this (0 = always ``draft_length``
    tokens); a hybrid's next forward then lays out only the drafts kept."""
    draft_steps: int = 1
    """Decoder ``speculative``: denoising steps per draft (the draft block in this many
    left-to-right chunks, one drafter forward each; >= 1); refused on any other decoder."""
    draft_cache: str = "prefix"
    """Decoder ``speculative``: the drafter's KV cache of the committed prefix: ``prefix``
    (each committed token's keys/values computed once; exact for block-causal drafters,
    approximate for bidirectional ones) or ``none`` (the whole canvas every forward); refused
    on any other decoder."""
    predraft: str = "all"
    """Decoder ``hybrid``: which acceptance lengths get a pre-drafted block each forward:
    ``all`` (0 .. d, TiDAR: the next drafts always saw the whole accepted prefix) or ``ends``
    (0 and d only: fewer positions per forward, after a partial acceptance the drafts of block
    0 after it); other decoders refuse it."""
    segment_length: int | None = None
    """Generate in segments of this many tokens, each conditioned on the latest
    ``max_seq_len - segment_length`` tokens of prompt and text so far (a sliding window), so
    ``gen_length`` may exceed the model's context (``unmask.sampling.segments``); None = one
    canvas, refused when prompt + ``gen_length`` exceeds the context."""
    compile: str = "off"
    """``torch.compile`` the model for decoding (``unmask.parallel.compile_for_decoding``, once
    per loaded model; the first runs pay the compile): ``off`` (eager; on a CPU the compile
    took minutes for a 1.2-2.2x faster step, docs/sampling.md), ``inductor``,
    ``cuda-graphs`` (inductor + CUDA graphs, CUDA only) or ``aot_eager`` (traced only)."""

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.gen_length < 1:
            raise UserError(f"gen_length must be positive, got {self.gen_length}")
        if self.steps < 1:
            raise UserError(f"steps must be positive, got {self.steps}")
        if self.block_length is not None and self.block_length < 1:  # refused without torch
            raise UserError(f"block_length must be positive, got {self.block_length}")
        for name in ("temperature", "cfg_scale"):  # every decoder reads both; here, so a
            value = getattr(self, name)  # checkpoint's sample_defaults is checked on loading
            if not (value >= 0 and math.isfinite(value)):
                raise UserError(f"{name} must be a finite number >= 0, got {value}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"seed must be from 0 to 2**63 - 1, got {self.seed}")
        if self.top_k is not None and self.top_k < 1:
            raise UserError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_p == 1.0:
            self.top_p = None  # keeps every token: off, as the server's top_p 1.0
        if self.draft_length is not None and self.draft_length < 1:
            raise UserError(f"draft_length must be >= 1, got {self.draft_length}")
        check_penalties(self.repetition_penalty, self.presence_penalty, self.frequency_penalty,
                        self.no_repeat_ngram_size)
        ids = self.exempt_ids
        if not isinstance(ids, (list, tuple, set, frozenset)) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**63 for i in ids):
            raise UserError("exempt_ids must be a list of token ids (whole numbers from 0 to "
                            f"2**63 - 1), not {ids!r}")
        self.exempt_ids = tuple(sorted(set(ids)))  # a JSON list, a set: one form, hashable
        if not (self.guide_scale >= 0 and math.isfinite(self.guide_scale)):  # nan: no guidance
            raise UserError(f"guide_scale must be a finite number >= 0, got {self.guide_scale}")
        if self.edit_threshold is not None and not 0.0 <= self.edit_threshold < 1.0:
            raise UserError(f"edit_threshold must be in [0, 1), got {self.edit_threshold}")
        if self.max_post_steps < 0:
            raise UserError(f"max_post_steps must be >= 0, got {self.max_post_steps}")
        if self.segment_length is not None and self.segment_length < 1:
            raise UserError(f"segment_length must be >= 1, got {self.segment_length}")
        if self.draft_steps < 1:
            raise UserError(f"draft_steps must be >= 1, got {self.draft_steps}")
        if not 0.0 <= self.draft_threshold < 1.0:
            raise UserError(f"draft_threshold must be in [0, 1), got {self.draft_threshold}")
        if self.draft_cache not in DRAFT_CACHES:
            raise UserError(
                f"unknown draft_cache {self.draft_cache!r}; choose one of {', '.join(DRAFT_CACHES)}"
            )
        for name, allowed in (("sedd_sampler", SEDD_SAMPLERS), ("prompt_masks", PROMPT_MASKS),
                              ("compile", DECODE_COMPILES), ("predraft", PREDRAFTS)):
            value = getattr(self, name)
            if value not in allowed:
                raise UserError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        alias = SEDD_POLICY_ALIASES.get(self.policy)
        if alias is not None:  # the old spelling of the SEDD decoder
            if self.decoder not in ("auto", "sedd"):
                raise UserError(
                    f"policy {self.policy!r} selects decoder 'sedd', not {self.decoder!r}"
                )
            self.decoder, self.policy = "sedd", "llada"
            self.sedd_sampler = alias  # type: ignore[assignment]


def check_block_length(gen_length: int, block_length: int | None) -> None:
    """Refuse a ``block_length`` (None: one block, ``gen_length``) that is not positive or
    does not divide ``gen_length``, naming the nearest lengths that fit: the rule of every
    blockwise decode (``unmask.sampling.validate``), here without torch, so the command line
    checks it before torch loads."""
    from unmask.messages import divisors_near, nearest_multiples

    if block_length is None:
        block_length = gen_length
    if block_length <= 0:
        raise UserError(f"block_length must be positive, got {block_length}")
    if gen_length % block_length:
        raise UserError(
            f"gen_length ({gen_length}) must be a multiple of block_length ({block_length}); "
            f"try block_length {divisors_near(gen_length, block_length)} "
            f"or gen_length {nearest_multiples(gen_length, block_length)}"
        )


MAX_SEED = 2**63 - 1
"""Largest seed: torch's generators take a signed 64-bit one (CLI, API and server alike)."""

_SCALARS: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "bool": (bool,),
                                         "str": (str,)}


def _fits_float(n: int) -> bool:
    """Whether the integer ``n`` converts to a float (from about 1.8e308 up it does not)."""
    try:
        float(n)
    except OverflowError:
        return False
    return True


def check_field_types(obj: Any) -> None:
    """``UserError`` naming the first field of dataclass ``obj`` whose value is not of its
    declared scalar type (``int``, ``float``, ``bool``, ``str``, or one of them ``| None``):
    ``gen_length="16"`` or ``forbid_eos="no"`` failed deep inside the sampler, or silently
    counted as true. A bool is not an int here."""
    for f in dataclasses.fields(obj):
        kind = str(f.type).replace(" ", "")
        optional = kind.endswith("|None")
        allowed = _SCALARS.get(kind.removesuffix("|None"))
        if allowed is None:
            continue
        v = getattr(obj, f.name)
        if v is None and optional:
            continue
        if not isinstance(v, allowed) or (isinstance(v, bool) and bool not in allowed):
            want = kind.removesuffix("|None") + (" or None" if optional else "")
            raise UserError(f"{f.name} must be {want}, not {v!r}")
        if float in allowed and isinstance(v, int) and not _fits_float(v):  # 10**400 from a
            # JSON file: math.isfinite in the range checks raised an OverflowError traceback
            raise UserError(f"{f.name} must be a finite number, got an integer of "
                            f"{len(str(abs(v)))} digits")


def check_penalties(repetition: float, presence: float, frequency: float,
                    ngram: int = 0) -> None:
    """Refuse, in one line, penalties no decoder can use: ``repetition_penalty`` must be a
    finite number > 0; ``presence_penalty`` and ``frequency_penalty`` finite, in [-2, 2]
    (OpenAI's range); ``no_repeat_ngram_size`` a whole number >= 0."""
    if not (math.isfinite(repetition) and repetition > 0):
        raise UserError(f"repetition_penalty must be a finite number > 0, got {repetition}")
    for name, value in (("presence_penalty", presence), ("frequency_penalty", frequency)):
        if not (math.isfinite(value) and -2.0 <= value <= 2.0):
            raise UserError(f"{name} must be in [-2, 2], got {value}")
    if isinstance(ngram, bool) or not isinstance(ngram, int) or ngram < 0:
        raise UserError(f"no_repeat_ngram_size must be a whole number >= 0 (0 = off), got "
                        f"{ngram!r}")


POLICY_PARAMETERS: dict[str, tuple[float, bool, float]] = {
    "threshold": (0.0, True, 1.0), "factor": (0.0, True, math.inf),
    "entropy_bound": (0.0, False, math.inf),
}
"""The commit policies' parameters (``SampleConfig`` fields) and their ranges: (low, whether
``low`` is left out, high, included). Checked when a policy that reads one is made
(``unmask.sampling.policies``), and when a checkpoint's ``sample_defaults`` gives one."""


def check_parameter(name: str, value: float) -> float:
    """The one rule of the policies' parameters (``POLICY_PARAMETERS``): a finite number in its
    range, else one ``UserError`` line saying so. ``threshold`` (0, 1], ``factor`` > 0,
    ``entropy_bound`` >= 0; an infinite ``factor`` or ``entropy_bound`` (commit every
    candidate at once) is refused as NaN is."""
    low, open_low, high = POLICY_PARAMETERS[name]
    finite = isinstance(value, (int, float)) and math.isfinite(value)
    above = finite and (value > low if open_low else value >= low)
    if not (above and value <= high):
        where = f"in {'(' if open_low else '['}{low:g}, {high:g}]" if math.isfinite(high) else (
            f"{'>' if open_low else '>='} {low:g}")
        raise UserError(f"{name} must be a finite number {where}, got {value}")
    return float(value)


MAX_TOKEN_KEYS = ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
"""Other libraries' names for the token budget that is ``SampleConfig.gen_length``: lm-eval
reads a ``generate_until`` request's under these, in this order (where a request gives
several, the first wins; ``unmask.lm_eval``), and a sampling option given under one is told
``gen_length`` (``unmask.api.check_option_names``)."""
SEDD_SAMPLERS: tuple[str, ...] = ("analytic", "euler")
"""Values of ``SampleConfig.sedd_sampler``."""
PROMPT_MASKS: tuple[str, ...] = ("fill", "reference")
"""Values of ``SampleConfig.prompt_masks``."""
DRAFT_CACHES: tuple[str, ...] = ("prefix", "none")
"""Values of ``SampleConfig.draft_cache``."""
DECODER_NAMES: tuple[str, ...] = ("ar", "llada", "bd3lm", "sedd", "embed-diffusion",
                                  "latent-diffusion", "speculative", "hybrid")
"""The built-in decoders (``unmask.sampling.DECODERS``; ``SampleConfig.decoder`` also takes
``auto``). These tuples and ``OBJECTIVE_NAMES`` are the names the command line checks its
flags against without importing torch (``unmask.commands.sample_options``, ``unmask train
--objective``); the registries, in torch modules, must register exactly these
(``register_decoder`` refuses a built-in decoder not listed here;
tests/test_apiaudit_registry_names.py compares them all)."""
POLICY_NAMES: tuple[str, ...] = ("llada", "threshold", "factor", "entropy")
"""The built-in commit policies (``unmask.sampling.policies.POLICIES``)."""
REMASKING_NAMES: tuple[str, ...] = ("low_confidence", "random")
"""The built-in remasking scores (``unmask.sampling.policies.REMASKING``)."""
CONFIDENCE_NAMES: tuple[str, ...] = ("prob", "margin", "neg_entropy")
"""The built-in confidence scores (``unmask.sampling.policies.CONFIDENCES``)."""
CACHE_NAMES: tuple[str, ...] = ("none", "prefix", "dual")
"""The built-in KV-cache policies (``unmask.sampling.cache.CACHES``)."""
DECODE_COMPILES: tuple[str, ...] = ("off", "inductor", "cuda-graphs", "aot_eager")
"""Values of ``SampleConfig.compile``."""
DECODE_DTYPES: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
"""Values of the decoding commands' ``--dtype``: the weights' dtype while decoding
(``unmask.api.decode_dtype``; ``auto`` = 16-bit where that was measured faster)."""
DTYPE_ALIASES: dict[str, str] = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16",
                                 "float16": "fp16", "half": "fp16"}
"""Other spellings of ``DECODE_DTYPES`` (torch's names, vLLM's ``half`` and ``float``)."""
DTYPE_NAMES: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
"""``--dtype``'s names -> torch's: the one map from a dtype's name to a ``torch.dtype``
(``torch_dtype``) and back (``dtype_name``)."""


def torch_dtype(name: str, source: str = "dtype") -> torch.dtype:
    """The ``torch.dtype`` that ``name`` means: ``fp32`` / ``bf16`` / ``fp16``, an alias of
    ``DTYPE_ALIASES`` (torch's names, also as ``torch.bfloat16``), else a one-line error
    naming ``source`` (the flag or the ``config.json`` key it came from)."""
    import torch

    short = DTYPE_ALIASES.get(name.removeprefix("torch."), name)
    if short not in DTYPE_NAMES:
        raise UserError(f"{source} {name!r}: choose fp32, bf16 or fp16 "
                        f"(or {', '.join(DTYPE_ALIASES)})")
    return getattr(torch, DTYPE_NAMES[short])


def dtype_name(dtype: torch.dtype) -> str:
    """``dtype`` as ``--dtype`` spells it (``fp32``, ``bf16``, ``fp16``; another by torch's
    name, ``float64``)."""
    name = str(dtype).removeprefix("torch.")
    return next((short for short, full in DTYPE_NAMES.items() if full == name), name)


def dtype_choice(name: str | torch.dtype) -> str:
    """``name`` as one of ``DECODE_DTYPES`` (aliases resolved; torch's names also as
    ``torch.bfloat16``, text or the ``torch.dtype`` itself, as ``torch_dtype`` and
    ``unmask.load`` take them), else a one-line error. ``load_for_decoding(dtype=
    torch.bfloat16)`` was refused as "choose one of auto, fp32, bf16, fp16"."""
    spelled = name if isinstance(name, str) else str(name)  # a torch.dtype: "torch.float16"
    canon = DTYPE_ALIASES.get(spelled.removeprefix("torch."), spelled)
    if canon not in DECODE_DTYPES:
        raise UserError(f"dtype {name!r}: choose one of {', '.join(DECODE_DTYPES)} "
                        f"(or {', '.join(DTYPE_ALIASES)})")
    return canon


PREDRAFTS: tuple[str, ...] = ("all", "ends")
"""Values of ``SampleConfig.predraft``."""
SEDD_POLICY_ALIASES: dict[str, str] = {"sedd-analytic": "analytic", "sedd-euler": "euler"}
"""Old ``policy`` spellings of the SEDD decoder and the ``sedd_sampler`` each stands for."""


DEFAULT_MAX_LEN_TOKENS = 16
"""Default longest length, in tokens, of a gap whose constraint allows unbounded text
(``unmask.infill.template.DEFAULT_MAX_LEN``)."""


@dataclass(kw_only=True)
class InfillOptions:
    """How ``infill`` chooses the lengths of variable-length gaps."""

    max_candidates: int = 6
    """Lengths tried per variable gap: all if its range is this small, else this many evenly
    spaced (both ends kept)."""
    max_joint: int = 24
    """Try every combination of candidate lengths when there are at most this many; else one gap
    at a time."""
    elbo_samples: int = 16
    """Noisy copies per candidate in the ELBO estimate (the budget of masks)."""
    elbo_seed: int = 0
    """Seed of the ELBO noise (fixed, so candidates are compared on the same noise)."""
    default_max_len: int = DEFAULT_MAX_LEN_TOKENS
    """Longest length, in tokens, tried for a gap whose constraint allows unbounded text and no
    max_len is given (``unmask.infill.template.DEFAULT_MAX_LEN``)."""
    length_mode: str = "auto"
    """How variable-length gaps get their length: ``elbo`` (fill each candidate length, keep the
    lowest ELBO bound by ``length_score``; any model), ``empty`` (one pass at the longest
    length, unused trailing slots filled with [EMPTY] and dropped; models trained with
    --empty-rate), ``auto`` (empty when the model has an [EMPTY] token, else elbo)."""
    length_score: str = "total"
    """What the ``elbo`` mode compares between candidate lengths: ``total`` (the bound on -log p
    of the whole completed text, i.e. the model's probability of each complete text; leans
    short), ``per_token`` (that bound divided by the text's tokens; leans long) or ``context``
    (the bound's terms on the given text alone, the fill's own tokens not counted: which fill
    makes the text around it most likely). Measured in docs/infill.md, "Length choice"."""
    max_search_calls: int = 256
    """Most model calls the ``elbo`` length search of one template may make: a template whose
    plan needs more (``unmask.infill.fill.search_calls``) is refused before any model work,
    with a one-line error; a refill of a gap that broke its constraint is made only within
    what is left, else the gap is completed from its automaton. 0: no limit."""

    MAX_ELBO_SAMPLES = 1024  # a class constant, not a field (no annotation)
    """Most ``elbo_samples``: each candidate's noisy copies are scored in one model call,
    (elbo_samples, L, V) logits (``unmask.infill.fill.MAX_ELBO_SAMPLES``)."""
    MAX_LEN_TOKENS = 1 << 17
    """Longest gap in tokens, and so the most ``default_max_len``: longer than any model's
    context, bounded so that no automaton is sized for more
    (``unmask.infill.template.MAX_GAP_TOKENS``)."""

    def __post_init__(self) -> None:
        """Refuse, in one line each, values the length search cannot use: here, so that every
        way in (``infill``, ``fill_plan``, ``plan_template``, ``unmask.api``) refuses them
        alike; each message opens with its field, which the CLI names as its flag."""
        check_field_types(self)  # max_candidates="3" was a TypeError inside the length search
        for name in ("max_candidates", "max_joint", "elbo_samples", "default_max_len"):
            value = getattr(self, name)
            if value < 1:  # default_max_len 0 was "its constraint allows only empty text"
                raise UserError(f"{name} must be at least 1, got {value}")
        if self.max_search_calls < 0:
            raise UserError(f"max_search_calls must be 0 (no limit) or positive, got "
                            f"{self.max_search_calls}")
        if self.elbo_samples > self.MAX_ELBO_SAMPLES:  # one model call of that many copies:
            # 10**9 was killed for memory (the server takes at most 64)
            raise UserError(f"elbo_samples must be at most {self.MAX_ELBO_SAMPLES} (noisy "
                            f"copies of a candidate scored in one model call), got "
                            f"{self.elbo_samples:,}")
        if self.default_max_len > self.MAX_LEN_TOKENS:  # a (hi + 1,) array per gap: 10**11
            # was a 93 GiB MemoryError traceback
            raise UserError(f"default_max_len must be at most {self.MAX_LEN_TOKENS:,} tokens "
                            f"(longer than any model's context), got {self.default_max_len:,}")
        if not 0 <= self.elbo_seed < 2**63:  # torch's manual_seed: 10**23 was an
            # OverflowError traceback, -1 was taken as another seed
            raise UserError(f"elbo_seed must be from 0 to 2**63 - 1, got {self.elbo_seed}")


LENGTH_MODES = ("auto", "elbo", "empty")
"""How variable-length gaps get their length (``InfillOptions.length_mode``)."""
LENGTH_SCORES = ("total", "per_token", "context")
"""What the ELBO length search compares (``InfillOptions.length_score``)."""


def to_dict(obj: Any) -> dict[str, Any]:
    """The fields of dataclass ``obj`` as a dict (what ``save_json`` writes)."""
    return dataclasses.asdict(obj)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "None": (type(None),),
}  # fmt: skip
"""Python types a JSON value may have for a field annotated with each simple type name."""


def _type_error(name: str, annotation: str, value: Any) -> str | None:
    """Why ``value`` (read from JSON) cannot be field ``name`` of type ``annotation``, or None.

    Only simple annotations are checked (``int``, ``float | None``, a ``Literal`` alias as
    ``str``); the values of modes are checked by the dataclass itself.
    """
    accepted: list[type] = []
    for part in (a.strip() for a in annotation.split("|")):
        if part.startswith("dict["):
            accepted.append(dict)  # its entries are the dataclass's to check
        elif part in _JSON_TYPES:
            accepted.extend(_JSON_TYPES[part])
        elif part in _MODE_ALIASES:
            accepted.append(str)
        else:
            return None  # a container or an unknown alias: left to the dataclass
    ok = isinstance(value, tuple(accepted)) and not (
        isinstance(value, bool) and bool not in accepted  # True is an int to Python, not to us
    )
    return None if ok else f"{name}={value!r} should be {annotation}"


_MODE_ALIASES = (
    "AttentionMode", "Norm", "Mlp", "SigmaInput", "Output", "SeddGraph", "ScheduleName",
)


def from_dict(cls: type[T], data: dict[str, Any], *, source: str = "config") -> T:
    """Build a dataclass from a dict (a parsed JSON file), with one-line ``UserError``s that
    start with ``source``: unknown keys, values of the wrong type, and whatever the dataclass
    itself refuses (e.g. a mode that is not one of its allowed names)."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a JSON object, not {type(data).__name__}")
    types = {f.name: str(f.type) for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(types))
    if unknown:  # a hand-edited config.json: name the field a typo meant, as sample_defaults
        from unmask.names import closest

        meant = [f"{k} (did you mean {near}?)" if (near := closest(k, sorted(types))) else k
                 for k in unknown]
        raise UserError(f"{source}: unknown {cls.__name__} field(s): {', '.join(meant)}")
    for name, value in data.items():
        problem = _type_error(name, types[name], value)
        if problem:
            raise UserError(f"{source}: {problem}")
    try:
        return cls(**data)
    except UserError as e:
        raise UserError(f"{source}: {e}") from None


def save_json(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write a dataclass or dict as JSON, atomically."""
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    atomic_write_text(Path(path), json.dumps(data, indent=2, sort_keys=True) + "\n")


def load_json(cls: type[T], path: str | os.PathLike[str]) -> T:
    """The dataclass ``cls`` from the JSON file ``path`` (``save_json``'s), checked as
    ``from_dict`` checks it: one-line errors that name the file."""
    from unmask.files import read_json

    return from_dict(cls, read_json(path), source=str(path))


@functools.cache
def _top_level_classes(module: str, origin: str | None) -> dict[str, Any]:
    """Name -> ``ast.ClassDef`` of the classes at the top of a module's source, parsed once
    per module name and file (``origin``: two files imported under one name, as plugin folders
    or a reimport from another path, each get their own); empty where the source is not
    installed (a .pyc-only install, a zip of bytecode). The source comes through the module's
    loader, so a zipped package with sources has it too."""
    import ast
    import inspect

    try:
        source = inspect.getsource(sys.modules[module])
    except (KeyError, OSError, TypeError):
        return {}
    return {node.name: node for node in ast.parse(source).body
            if isinstance(node, ast.ClassDef)}


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string literal under each field); empty
    where its module's source is not installed (the compiler drops those strings, so the
    flags then have no description rather than ``unmask`` failing to start).

    Each module's source is parsed once: ``inspect.getsource`` of a class parses its whole
    module again on every call, and the CLI's parser asks for ten classes (~1 s of every
    ``unmask`` start, ``--help`` included)."""
    import ast
    import inspect
    import textwrap

    node = None
    if cls.__qualname__ == cls.__name__:
        spec = getattr(sys.modules.get(cls.__module__), "__spec__", None)
        origin = getattr(spec, "origin", None)
        node = _top_level_classes(cls.__module__, origin).get(cls.__name__)
    if node is None:  # nested or not found: the general (slow) path
        try:
            node = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
        except (OSError, TypeError):
            return {}
    body = node.body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, doc in zip(body, body[1:], strict=False):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(doc, ast.Expr)
            and isinstance(doc.value, ast.Constant)
            and isinstance(doc.value.value, str)
        ):
            docs[prev.target.id] = " ".join(doc.value.value.split())
    return docs


def resolve_device(name: str) -> Any:
    """``auto`` -> cuda if available else cpu; a clear error when CUDA is asked for but absent."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda[:i]") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"device {name!r} is not supported; use auto, cpu or cuda[:i]")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was asked for but torch sees no CUDA device")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"device {name!r}: torch sees {torch.cuda.device_count()} CUDA "
                        "device(s)")
    return dev


LOAD_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16", "float64")
"""The torch dtypes ``unmask.load`` materialises weights in (``load_target``)."""


def load_target(device: Any, dtype: Any) -> tuple[str, Any]:
    """``unmask.load``'s ``device`` and ``dtype`` checked before anything is read: the device
    as ``resolve_device`` takes it (``auto``, ``cpu``, ``cuda[:i]``, or a ``torch.device``), the
    dtype None (as stored), a floating ``torch.dtype`` of ``LOAD_DTYPES``, or a name: one
    ``--dtype`` takes (``fp32``, ``bf16``, ``fp16`` and ``DTYPE_ALIASES``) or float64's
    (``float64``, ``double``), torch's names also as ``torch.<name>``. Returns (device string,
    torch dtype or None); a one-line ``UserError`` otherwise (torch raised a TypeError or an
    AssertionError from deep inside the load)."""
    import torch

    dev = str(resolve_device(str(device)))
    if dtype is None:
        return dev, None
    if dtype == "auto":  # the decoding commands' --dtype: a choice load does not make
        raise UserError("dtype 'auto' is unmask.api.load_for_decoding's (--dtype auto); "
                        "unmask.load takes None (as stored), fp32, bf16, fp16 or float64")
    if isinstance(dtype, str):
        if dtype.removeprefix("torch.") in ("float64", "double"):  # not a --dtype name
            return dev, torch.float64
        try:
            return dev, torch_dtype(dtype)
        except UserError:
            raise UserError(f"dtype {dtype!r}: choose fp32, bf16, fp16 or float64 (or "
                            f"{', '.join(DTYPE_ALIASES)}, double; also as torch.<name>)") from None
    if not isinstance(dtype, torch.dtype) or str(dtype).removeprefix("torch.") not in LOAD_DTYPES:
        raise UserError(f"dtype {dtype!r}: the weights load as one of "
                        f"{', '.join(f'torch.{n}' for n in LOAD_DTYPES)} (or None: as stored)")
    return dev, dtype
