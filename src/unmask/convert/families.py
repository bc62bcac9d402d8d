"""Published families as data: ``Importer``, the ``llada`` and ``dream`` declarations (the DiT
families ``mdlm`` and ``sedd`` are declared in ``unmask.convert.dit``, ``llada-moe`` in
``unmask.convert.moe``), the ``IMPORTERS`` registry and the ``UNSUPPORTED`` families
(recognised but not runnable) with why."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from unmask.errors import UserError

if TYPE_CHECKING:
    import torch

    from unmask.config import ModelConfig
    from unmask.tokenizer import Tokenizer

REQUIRED = object()
"""Marker for a ``facts`` entry whose key must be in ``config.json`` (no default)."""

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
          "fp16": "float16", "float16": "float16"}  # fmt: skip
"""Accepted dtype names (``--dtype``) -> torch dtype attribute."""

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
    """Keys an exported ``config.json`` starts with (``model_type``, ``architectures``, ``auto_map``)."""
    underive: Callable[[ModelConfig], dict[str, Any]] | None = None
    """Inverse of ``derive`` for export: ``config.json`` keys from a ``ModelConfig``."""
    files: Callable[[ModelConfig, Tokenizer], dict[str, str]] | None = None
    """Extra text files an exported folder gets (name -> text), e.g. the modeling code that
    ``transformers`` loads with ``trust_remote_code=True`` (``unmask.convert.hf_export``)."""
    buffers: Mapping[str, Callable[[ModelConfig], torch.Tensor]] = field(default_factory=dict)
    """Source tensors that hold no weights but values the config implies (a saved RoPE
    ``inv_freq`` buffer) -> that value: optional in the folder, checked when present, not loaded."""
    tokenizer_note: str = ""
    """Added to the error when the folder has no ``tokenizer.json`` (where to get it)."""


def _llada_derive(hf: dict[str, Any], out: dict[str, Any]) -> None:
    # LLaDA's Llama block puts a bias on q/k/v when either flag is set (include_bias is
    # rejected by ``requires`` since attn_out / MLP biases have no place in our model).
    out["qkv_bias"] = bool(hf.get("include_bias") or hf.get("include_qkv_bias"))
    if out.get("ffn_hidden") is None and hf.get("mlp_ratio") is not None:
        out["ffn_hidden"] = int(hf["mlp_ratio"]) * int(out["d_model"])


def _dream_derive(hf: dict[str, Any], out: dict[str, Any]) -> None:
    head_dim = hf.get("head_dim")
    if head_dim is not None and int(head_dim) * int(out["n_heads"]) != int(out["d_model"]):
        raise UserError(
            f"config.json: head_dim={head_dim} differs from hidden_size/num_attention_heads; unmask cannot represent it"
        )


LLADA = Importer(
    name="llada",
    model_types=("llada",),
    facts={
        "d_model": (("d_model",), REQUIRED),
        "n_layers": (("n_layers",), REQUIRED),
        "n_heads": (("n_heads",), REQUIRED),
        "n_kv_heads": (("n_kv_heads",), None),
        "ffn_hidden": (("mlp_hidden_size",), None),
        "vocab_size": (("embedding_size", "vocab_size"), REQUIRED),  # embedding rows (padded)
        "max_seq_len": (("max_sequence_length",), 4096),
        "rope_theta": (("rope_theta",), 10000.0),
        "norm_eps": (("rms_norm_eps",), 1e-5),
        "tie_embeddings": (("weight_tying",), False),
    },
    constants={"attention": "bidirectional", "logit_shift": False},
    requires={
        "block_type": ("llama",),
        "layer_norm_type": ("rms",),
        "activation_type": ("silu",),
        "rope": (True,),
        "alibi": (False, None),
        "include_bias": (False, None),
        "bias_for_layer_norm": (False, None),
        "layer_norm_with_affine": (True, None),
        "attention_layer_norm": (False, None),
        "scale_logits": (False, None),
        "input_emb_norm": (False, None),
        "clip_qkv": (None,),
        "block_group_size": (1, None),
        "rope_scaling": (None,),
    },
    weights={
        "model.transformer.wte.weight": "embed.weight",
        "model.transformer.blocks.{i}.attn_norm.weight": "layers.{i}.attn_norm.weight",
        "model.transformer.blocks.{i}.q_proj.weight": "layers.{i}.attn.q_proj.weight",
        "model.transformer.blocks.{i}.k_proj.weight": "layers.{i}.attn.k_proj.weight",
        "model.transformer.blocks.{i}.v_proj.weight": "layers.{i}.attn.v_proj.weight",
        "model.transformer.blocks.{i}.q_proj.bias": "layers.{i}.attn.q_proj.bias",
        "model.transformer.blocks.{i}.k_proj.bias": "layers.{i}.attn.k_proj.bias",
        "model.transformer.blocks.{i}.v_proj.bias": "layers.{i}.attn.v_proj.bias",
        "model.transformer.blocks.{i}.attn_out.weight": "layers.{i}.attn.o_proj.weight",
        "model.transformer.blocks.{i}.ff_norm.weight": "layers.{i}.mlp_norm.weight",
        # LLaDA's MLP is ff_out(silu(ff_proj(x)) * up_proj(x)): ff_proj is the gate.
        "model.transformer.blocks.{i}.ff_proj.weight": "layers.{i}.mlp.gate_proj.weight",
        "model.transformer.blocks.{i}.up_proj.weight": "layers.{i}.mlp.up_proj.weight",
        "model.transformer.blocks.{i}.ff_out.weight": "layers.{i}.mlp.down_proj.weight",
        "model.transformer.ln_f.weight": "norm.weight",
        "model.transformer.ff_out.weight": "lm_head.weight",
    },
    derive=_llada_derive,
    reference="ML-GSAI/LLaDA modeling_llada.py (LLaDALlamaBlock), GSAI-ML/LLaDA-8B-Base config.json",
    header={
        "model_type": "llada",
        "architectures": ["LLaDAModelLM"],
        "auto_map": {
            "AutoConfig": "configuration_llada.LLaDAConfig",
            "AutoModel": "modeling_llada.LLaDAModelLM",
            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        },
        "rope_full_precision": True,
        "use_cache": False,
    },
    underive=lambda cfg: {"include_qkv_bias": cfg.qkv_bias},
)

DREAM = Importer(
    name="dream",
    model_types=("dream",),
    facts={
        "d_model": (("hidden_size",), REQUIRED),
        "n_layers": (("num_hidden_layers",), REQUIRED),
        "n_heads": (("num_attention_heads",), REQUIRED),
        "n_kv_heads": (("num_key_value_heads",), None),
        "ffn_hidden": (("intermediate_size",), REQUIRED),
        "vocab_size": (("vocab_size",), REQUIRED),
        "max_seq_len": (("max_position_embeddings",), 32768),
        "rope_theta": (("rope_theta",), 10000.0),
        "norm_eps": (("rms_norm_eps",), 1e-6),
        "tie_embeddings": (("tie_word_embeddings",), False),
    },
    # Qwen2 layout: bias on q/k/v only. Dream was adapted from an autoregressive model and
    # keeps its convention: the logits at position i predict token i+1.
    constants={"attention": "bidirectional", "logit_shift": True, "qkv_bias": True},
    requires={
        "hidden_act": ("silu", None),
        "rope_scaling": (None,),
        "use_sliding_window": (False, None),
        "use_mrope": (False, None),
    },
    weights={
        "model.embed_tokens.weight": "embed.weight",
        "model.layers.{i}.input_layernorm.weight": "layers.{i}.attn_norm.weight",
        "model.layers.{i}.self_attn.q_proj.weight": "layers.{i}.attn.q_proj.weight",
        "model.layers.{i}.self_attn.k_proj.weight": "layers.{i}.attn.k_proj.weight",
        "model.layers.{i}.self_attn.v_proj.weight": "layers.{i}.attn.v_proj.weight",
        "model.layers.{i}.self_attn.q_proj.bias": "layers.{i}.attn.q_proj.bias",
        "model.layers.{i}.self_attn.k_proj.bias": "layers.{i}.attn.k_proj.bias",
        "model.layers.{i}.self_attn.v_proj.bias": "layers.{i}.attn.v_proj.bias",
        "model.layers.{i}.self_attn.o_proj.weight": "layers.{i}.attn.o_proj.weight",
        "model.layers.{i}.post_attention_layernorm.weight": "layers.{i}.mlp_norm.weight",
        "model.layers.{i}.mlp.gate_proj.weight": "layers.{i}.mlp.gate_proj.weight",
        "model.layers.{i}.mlp.up_proj.weight": "layers.{i}.mlp.up_proj.weight",
        "model.layers.{i}.mlp.down_proj.weight": "layers.{i}.mlp.down_proj.weight",
        "model.norm.weight": "norm.weight",
        "lm_head.weight": "lm_head.weight",
    },
    derive=_dream_derive,
    reference="Dream-org/Dream-v0-Base-7B modeling_dream.py and config.json (Qwen2 layout)",
    header={
        "model_type": "Dream",
        "architectures": ["DreamModel"],
        "auto_map": {
            "AutoConfig": "configuration_dream.DreamConfig",
            "AutoModel": "modeling_dream.DreamModel",
        },
        "use_cache": False,
    },
)

IMPORTERS: dict[str, Importer] = {}
"""Supported families by registry name."""

UNSUPPORTED: dict[str, str] = {}
"""Families recognised by ``model_type`` but not runnable, with the reason (see docs/models.md)."""


def register(importer: Importer) -> Importer:
    """Add ``importer`` to ``IMPORTERS`` under its name."""
    IMPORTERS[importer.name] = importer
    return importer


register(LLADA)
register(DREAM)

# The DiT families (MDLM, SEDD) are declared in their own module, which imports Importer from here.
from unmask.convert.dit import MDLM, SEDD  # noqa: E402
from unmask.convert.moe import LLADA_MOE  # noqa: E402

register(MDLM)
register(SEDD)
register(LLADA_MOE)
