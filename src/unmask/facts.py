"""What a checkpoint is, read once: ``ModelFacts`` and the default decoder of an objective.

Every choice about decoding (which decoder, which options make sense) depends on a few
facts of the checkpoint: the objective it was trained with, its attention, its block size,
its noise schedule, its SEDD graph, its special ids and chat template. They live in the
model config; ``ModelFacts.of(config_or_model)`` reads them into one small frozen object so
that no caller probes the config with ``getattr`` again (``unmask.sampling.choose_decoder``
takes these facts and the user's options and picks the decoder).

Two rules live here, so that every caller applies them the same way: which decoder a run
runs given the user's ``decoder`` option (``ModelFacts.decoder_for``: ``api.sample_config``,
``choose_decoder`` and the server's ``served_decoder``), and what a raw prompt's ids begin
with (``ModelFacts.prompt_ids``: a published model's BOS, ``prompt_bos_id``).

Inside: ``ModelFacts``, ``Attention``, ``infer_objective``, ``default_decoder``,
``layout_positions`` (a latent model's canvas limit needs it).

This module imports nothing heavy (no torch): it sits on the path of argument errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from unmask.config import layout_positions  # torch-free; objectives.latent uses it too

Attention = Literal["bidirectional", "block-causal", "causal"]
"""How positions see each other: all at once (masked diffusion), causal within the past
blocks and bidirectional inside a block (BD3-LM), or causal (autoregressive)."""

_ATTENTIONS: tuple[str, ...] = ("bidirectional", "block-causal", "causal")

_ATTENTION_DECODERS = {"bidirectional": "llada", "block-causal": "bd3lm", "causal": "ar"}
"""The decoder that runs a model of each attention whatever objective its config records."""

_DECODER_ATTENTION = {"llada": "bidirectional", "sedd": "bidirectional", "bd3lm": "block-causal",
                      "ar": "causal", "hybrid": "causal", "speculative": "causal"}
"""The attention each token decoder runs: an objective's own decoder is no way out for a
checkpoint whose recorded attention it cannot run (``attention_way_out``)."""

CAUSAL_DECODERS = ("ar", "hybrid", "speculative")
"""Decoders that write left to right from the prompt's last token: an empty prompt is given
a start token (``unmask.sampling.ar``, ``hybrid``, ``speculative``)."""

STARTED_DECODERS = (*CAUSAL_DECODERS, "llada", "bd3lm")
"""Decoders that give an empty prompt a start token (``ModelFacts.starts_empty_prompts``):
the causal ones, the commit loop and block diffusion."""


def infer_objective(attention: str, sedd_graph: str | None) -> str:
    """The objective of a checkpoint that does not record one (older checkpoints, imported
    models): causal attention is ``ar``, block-causal ``bd3lm``, a SEDD graph ``sedd``,
    anything else a masked-diffusion model (``mdlm``)."""
    if attention == "causal":
        return "ar"
    if attention == "block-causal":
        return "bd3lm"
    if sedd_graph is not None:
        return "sedd"
    return "mdlm"


def default_decoder(objective: str) -> str:
    """The decoder that samples ``objective`` when the user asks for ``decoder='auto'``: the
    ``decoder`` of its spec in ``unmask.objectives`` (an unknown objective, e.g. an imported
    family without a spec, falls back to ``llada``, the masked-diffusion loop that any mask
    predictor can run)."""
    from unmask.objectives import OBJECTIVES  # lazy: objectives imports torch

    spec = OBJECTIVES.get(objective)
    return spec.decoder if spec is not None else "llada"


@dataclass(frozen=True, kw_only=True)
class ModelFacts:
    """The facts of one checkpoint that decoding depends on (see the module docstring)."""

    objective: str
    """Training objective (``mdlm``, ``sft``, ``bd3lm``, ``sedd``, ``ar``, ...); inferred from
    the attention and the SEDD graph when the config does not record it."""
    attention: Attention
    """``bidirectional``, ``block-causal`` or ``causal``."""
    block_size: int | None
    """Block length of a block-causal model; None otherwise."""
    schedule: str
    """Noise schedule name (``linear`` for every checkpoint written before it was recorded)."""
    sedd_graph: str | None
    """SEDD forward graph (``absorbing`` / ``uniform``); None = not a SEDD model."""
    mask_id: int
    eos_id: int | None
    pad_id: int
    bos_id: int | None
    prompt_bos_id: int | None = None
    """The token a raw prompt begins with (``ModelConfig.prompt_bos_id``: a published model's
    BOS, recorded when its folder is read); None = prompts are decoded as encoded."""
    chat_template: str | None
    """Jinja chat template of a chat model; None = not fine-tuned for chat."""
    logit_shift: bool
    """Dream-style shifted logits (position i predicts token i + 1)."""
    max_seq_len: int | None
    """Longest canvas the model takes; None = unbounded (a test double)."""
    draft_block: int | None = None
    """Draft block length of a model trained with objective ``hybrid``; None otherwise."""
    has_kv_cache: bool = True
    """Whether the model takes ``cache=`` / ``start=`` (``unmask.model.Transformer`` does)."""
    sedd_score: bool = False
    """The head gives SEDD's absorbing log-score (``output='sedd_log_score'``: a published SEDD
    checkpoint imported, which records no objective, or a time-conditioned ``sedd`` run), so
    the ``sedd`` decoder runs it whatever objective is recorded or inferred."""
    needs_sigma: bool = False
    """The forward needs the noise level passed (``time_conditioning`` with ``sigma_input``
    ``given``: a time-conditioned ``sedd`` or ``embed-diffusion`` model), so a loop that calls
    it on token ids alone (the commit loop, the masked ELBO) cannot run it."""

    sample_defaults: dict[str, Any] = field(default_factory=dict, hash=False)
    """Sampling options recommended for the checkpoint (``ModelConfig.sample_defaults``)."""

    @property
    def default_decoder(self) -> str:
        """The decoder of ``decoder='auto'`` for this checkpoint (``default_decoder``)."""
        return default_decoder(self.objective)

    def decoder_for(self, asked: str | None) -> str:
        """The decoder a run runs for the user's ``decoder`` option ``asked`` (before
        ``unmask.sampling.choose_decoder`` checks it): ``asked``, ``auto`` being the
        checkpoint's own (``default_decoder``); where the user asked none (None), the one the
        checkpoint recommends (``sample_defaults``), else its own. The one rule of
        ``unmask.api.sample_config`` (which recommended options a run keeps) and of the
        server's ``served_decoder`` (what its requests, which name no decoder, run)."""
        name = str(self.sample_defaults.get("decoder", "auto")) if asked is None else asked
        return self.default_decoder if name == "auto" else name

    def prompt_ids(self, ids: Sequence[int]) -> list[int]:
        """The ids a raw (non-chat) prompt encoded as ``ids`` is decoded from: after
        ``prompt_bos_id`` where the checkpoint records one (the BOS a published model saw
        first in every training text), never twice (ids that begin with it, as a chat
        template writes it, are as they are); else ``ids``. What ``unmask.api.encode_prompt``
        gives every raw prompt of ``generate``, the CLI, the server and ``unmask eval``."""
        bos = self.prompt_bos_id
        if bos is None or (len(ids) > 0 and int(ids[0]) == bos):
            return list(ids)
        return [bos, *ids]

    @property
    def start_id(self) -> int:
        """The token a scored or evaluated text begins with, so that it starts a document as
        in training: ``prompt_bos_id`` where the checkpoint records one (a published model's
        BOS), else the EOS (the separator every document of unmask's training stream follows),
        else the pad id. What ``unmask eval``'s task prompts (``unmask.tasks.score``) and the
        lm-eval adapter's contexts begin with."""
        return self._start()[0]

    @property
    def start_name(self) -> str:
        """How messages name ``start_id``: ``BOS``, ``EOS`` or ``[PAD]``."""
        return self._start()[1]

    def _start(self) -> tuple[int, str]:
        for start, name in ((self.prompt_bos_id, "BOS"), (self.eos_id, "EOS")):
            if start is not None:
                return int(start), name
        return int(self.pad_id), "[PAD]"

    def starts_empty_prompts(self, decoder: str) -> bool:
        """Whether decoder ``decoder`` gives an empty prompt a start token, which takes a
        column of the canvas: the causal decoders (``ar``, ``hybrid``, ``speculative``) and
        the commit loop (``llada``) and ``bd3lm`` (``STARTED_DECODERS``;
        ``unmask.sampling.loop.start_empty_prompts``: ``start_id``, a published model's BOS,
        else the EOS, in unmask's training data the separator every document follows; on an
        all-[MASK] canvas every column of a RoPE model has the same hidden state, so the
        first greedy commit was an exact tie)."""
        return decoder in STARTED_DECODERS

    def attention_way_out(self, refused: str) -> str:
        """The end of decoder ``refused``'s refusal of this checkpoint's attention (after
        "this checkpoint is {attention} (objective {objective})"): ": use decoder" its own
        (``default_decoder``, from the recorded objective), or, where that is the refused
        decoder itself or one that cannot run this attention either, that the config
        contradicts itself (objective ``mdlm`` with attention ``causal``; ``ar`` with
        ``bidirectional``) and the decoder that runs the recorded attention."""
        own = self.default_decoder
        if own != refused and _DECODER_ATTENTION.get(own, self.attention) == self.attention:
            return f": use decoder {own!r}"
        runs = _ATTENTION_DECODERS[self.attention]
        return (f", which contradicts itself (objective {self.objective!r} is sampled by "
                f"decoder {own!r}); use decoder {runs!r}, which runs a {self.attention} model, "
                "or correct 'objective' or 'attention' in its config.json")

    def prompt_columns(self, prompt_len: int, decoder: str) -> int:
        """The canvas columns a prompt of ``prompt_len`` tokens takes under ``decoder``: an
        empty one counts 1 where the decoder gives it a start token
        (``starts_empty_prompts``). What every room check passes as the prompt's length
        (``unmask.sampling.blocks.room_after_prompt`` in ``unmask demo``, ``unmask chat`` and
        ``unmask eval``; ``plan_blocks`` in the server's block check)."""
        return max(1, prompt_len) if self.starts_empty_prompts(decoder) else prompt_len

    @classmethod
    def of(cls, config_or_model: Any) -> ModelFacts:
        """The facts of a model config, or of a model (its ``.config``; whether it supports a
        KV cache is then its ``supports_kv_cache`` attribute, which
        ``unmask.model.Transformer`` sets; a bare config is taken to be such a model's)."""
        config = getattr(config_or_model, "config", config_or_model)
        # unmask.model.Transformer declares the cache=/start= interface with this attribute
        # (unmask.sampling.cache.supports_kv_cache); a bare config is taken to be ours.
        has_cache = config is config_or_model or bool(
            getattr(config_or_model, "supports_kv_cache", False)
        )
        attention = str(getattr(config, "attention", "bidirectional") or "bidirectional")
        if attention not in _ATTENTIONS:
            from unmask.errors import UserError

            raise UserError(f"unknown attention {attention!r}; one of {', '.join(_ATTENTIONS)}")
        sedd_graph = getattr(config, "sedd_graph", None)
        objective = getattr(config, "objective", None) or infer_objective(attention, sedd_graph)
        return cls(
            objective=str(objective),
            attention=attention,  # type: ignore[arg-type]
            block_size=getattr(config, "block_size", None) if attention == "block-causal" else None,
            schedule=str(getattr(config, "schedule", "linear") or "linear"),
            sedd_graph=sedd_graph,
            mask_id=int(getattr(config, "mask_id", 0)),
            eos_id=getattr(config, "eos_id", None),
            pad_id=int(getattr(config, "pad_id", getattr(config, "eos_id", 0) or 0)),
            bos_id=getattr(config, "bos_id", None),
            prompt_bos_id=getattr(config, "prompt_bos_id", None),
            chat_template=getattr(config, "chat_template", None),
            logit_shift=bool(getattr(config, "logit_shift", False)),
            max_seq_len=_canvas_limit(config, str(objective)),
            draft_block=getattr(config, "draft_block", None),
            has_kv_cache=has_cache,
            sedd_score=getattr(config, "output", None) == "sedd_log_score",
            needs_sigma=bool(getattr(config, "time_conditioning", False))
            and getattr(config, "sigma_input", "given") == "given",
            sample_defaults=dict(getattr(config, "sample_defaults", None) or {}),
        )


__all__ = ["CAUSAL_DECODERS", "STARTED_DECODERS", "Attention", "ModelFacts", "default_decoder",
           "infer_objective", "layout_positions"]


def _canvas_limit(config: Any, objective: str) -> int | None:
    """The longest canvas (prompt + generation) the model takes: its ``max_seq_len``, less the
    rows a latent-diffusion denoiser adds after the text (``layout_positions``)."""
    limit = getattr(config, "max_seq_len", None)
    slots = getattr(config, "latent_len", None) or 0
    if limit is None or objective != "latent-diffusion" or not slots:
        return limit
    return int(limit) - layout_positions(
        slots, bool(getattr(config, "latent_self_condition", False))
    )
