"""The ``Importer`` declaration and its registry: one published family as data, ``IMPORTERS``
(supported families by name), ``UNSUPPORTED`` (recognised but not runnable) and ``register``.

The declarations themselves live above this module (``families``: LLaDA and Dream; ``dit``:
MDLM and SEDD; ``moe``: LLaDA-MoE; ``hf_export``: our own ``transformers`` layout), each
importing ``Importer`` from here, so no declaration module imports another back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from tokenizers import Tokenizer as HFTokenizer

    from unmask.config import ModelConfig
    from unmask.tokenizer import Tokenizer

REQUIRED = object()
"""Marker for a ``facts`` entry whose key must be in ``config.json`` (no default)."""

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
SPECIAL_KEYS = {
    "mask_id": "mask_token_id",
    "pad_id": "pad_token_id",
    "eos_id": "eos_token_id",
    "bos_id": "bos_token_id",
}
"""``ModelConfig`` special-id field -> the ``config.json`` key publishers store it under."""


@dataclass(frozen=True)
class Importer:
    """One published family, as data: recognition, facts, requirements and a weight-name map."""

    name: str
    """Registry name (``llada``, ``dream``)."""
    model_types: tuple[str, ...]
    """``config.json`` ``model_type`` values (compared lower-case) that select this importer."""
    facts: Mapping[str, tuple[tuple[str, ...], Any]]
    """``ModelConfig`` field -> (``config.json`` keys tried in order, default or ``REQUIRED``)."""
    constants: Mapping[str, Any]
    """``ModelConfig`` fields fixed for the whole family (e.g. Dream's ``logit_shift``)."""
    requires: Mapping[str, tuple[Any, ...]]
    """``config.json`` key -> values unmask can reproduce (None in the tuple = absent is fine)."""
    weights: Mapping[str, str | tuple[str, ...]]
    """Source tensor-name pattern -> unmask parameter name; ``{i}`` is the layer index, ``{e}``
    the expert index (``n_experts``). Entries whose target the model lacks (a QKV bias when
    ``qkv_bias`` is False, the output head when embeddings are tied) are dropped, so such a
    tensor in the folder is reported as unexpected.
    A tuple of names splits a fused source tensor along dim 0 into those parameters, in order
    (a fused QKV projection)."""
    derive: Callable[[dict[str, Any], dict[str, Any]], None] | None = None
    """Optional hook filling fields that need more than one key (hf config, fields so far)."""
    reference: str = ""
    """Where the formulas come from."""
    header: Mapping[str, Any] = field(default_factory=dict)
    """Keys an exported ``config.json`` starts with (``model_type``, ``architectures``,
    ``auto_map``)."""
    underive: Callable[[ModelConfig], dict[str, Any]] | None = None
    """Inverse of ``derive`` for export: ``config.json`` keys from a ``ModelConfig``."""
    files: Callable[[ModelConfig, Tokenizer], dict[str, str]] | None = None
    """Extra text files an exported folder gets (name -> text), e.g. the modeling code that
    ``transformers`` loads with ``trust_remote_code=True`` (``unmask.convert.hf_export``)."""
    buffers: Mapping[str, Callable[[ModelConfig], torch.Tensor | None]] = field(
        default_factory=dict)
    """Source tensors that hold no weights but values the config implies (a saved RoPE
    ``inv_freq`` buffer) -> that value: optional in the folder, checked when present, not loaded
    (a value of ``None``: any value is accepted, as BD3-LM's ``sampling_eps_*``)."""
    tokenizer_note: str = ""
    """Added to the error when the folder has no ``tokenizer.json`` (where to get it)."""
    prompt_bos: str | None = None
    """The token the family's reference puts in front of a raw prompt (its training texts began
    with it: LLaDA's ``<|startoftext|>``, Dream's ``<|beginoftext|>``), None for none; its id
    in the folder's tokenizer is recorded as ``ModelConfig.prompt_bos_id``
    (``unmask.convert.load.prompt_bos_id``, which also reads a publisher tokenizer that adds
    a BOS itself). Named, not the tokenizer's BOS: a folder whose tokenizer lacks the token
    (an unmask model exported ``--to llada``, whose ``[BOS]`` it never saw first) gets none."""
    slow_tokenizer: Callable[[Path], HFTokenizer | None] | None = None
    """Builds the tokenizer of a folder without ``tokenizer.json`` from the files the publisher
    ships instead (Dream: ``vocab.json`` + ``merges.txt``, ``unmask.convert.qwen2_tokenizer``);
    None when those are missing too."""


IMPORTERS: dict[str, Importer] = {}
"""Supported families by registry name."""

UNSUPPORTED: dict[str, str] = {}
"""Families recognised by ``model_type`` but not runnable, with the reason (see docs/models.md)."""


def register(importer: Importer) -> Importer:
    """Add ``importer`` to ``IMPORTERS`` under its name."""
    IMPORTERS[importer.name] = importer
    return importer
