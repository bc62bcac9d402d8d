"""The mixture-of-experts family as data: ``llada-moe`` (LLaDA-MoE, Zhu et al. 2025).

``inclusionAI/LLaDA-MoE-7B-A1B-Base`` / ``-Instruct`` publish an OLMoE-shaped bidirectional
transformer (``modeling_lladamoe.py``, class ``LLaDAMoEModelLM``): pre-norm RMSNorm blocks,
separate q/k/v/o projections without bias, a per-head RMSNorm on queries and keys before
half-split RoPE (``qk_layernorm``), and in every block a sparse MoE MLP: a bias-free router
``mlp.gate``, softmax over ``num_experts`` in float32, the ``num_experts_per_tok`` largest
probabilities kept as they are (the code fixes ``norm_topk_prob = False`` whatever the config
says), SwiGLU experts of width ``expert_intermediate_size``; an untied output head. unmask's
Transformer holds it with ``n_experts``, ``experts_top_k``, ``expert_hidden`` and ``qk_norm``.

Its ``config.json`` says ``model_type`` ``llada`` like the dense LLaDA; ``architectures``
``LLaDAMoEModelLM`` tells them apart (``unmask.convert.load.detect``; ``lladamoe``, the name
some fine-tuning code renames it to, is accepted too). The mask id is not in ``config.json``:
it is the tokenizer's ``<|mask|>`` (156895 in the published tokenizer).

Refused with the option's name (``requires`` / ``_derive``): dense layers (a 0 in
``moe_layer_freq``), a router expert bias (``moe_router_enable_expert_bias``), partial rotary
embeddings, RoPE scaling, attention biases, ``clip_qkv``, activations other than SiLU (a release
quantised by its publisher, ``quantization_config``, is refused for every family by
``unmask.convert.load.model_config``: load the bf16 one with ``--quantize``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unmask.convert.importer import REQUIRED, Importer
from unmask.errors import UserError

if TYPE_CHECKING:
    from unmask.config import ModelConfig


def _derive(hf: dict[str, Any], out: dict[str, Any]) -> None:
    n_layers = int(out["n_layers"])
    freq = hf.get("moe_layer_freq")
    if freq is not None:  # per layer: 0 = a dense MLP, else MoE
        if not isinstance(freq, list) or len(freq) < n_layers:
            raise UserError(
                f"config.json: moe_layer_freq={freq!r} needs one entry per layer ({n_layers})"
            )
        if 0 in freq[:n_layers]:
            raise UserError(
                f"config.json: moe_layer_freq={freq!r} has dense layers (0); unmask's llada-moe "
                "supports only every layer a mixture of experts"
            )
    if int(out["shared_expert_hidden"]) < 0:
        raise UserError(
            f"config.json: shared_expert_intermediate_size={out['shared_expert_hidden']} "
            "(null = no shared expert)"
        )
    if isinstance(out["n_experts"], int) and out["n_experts"] < 1:  # a dense model: not this
        raise UserError(  # family (its weight map has no dense MLP; it was a RuntimeError)
            f"config.json: num_experts={out['n_experts']} is not supported for llada-moe "
            "(needs at least 1 expert)"
        )
    out["qk_norm"] = bool(out["qk_norm"])


def _underive(cfg: ModelConfig) -> dict[str, Any]:
    if not cfg.n_experts:
        raise UserError("cannot export as llada-moe: the checkpoint has no experts (n_experts=0)")
    if cfg.dense_layers:  # refused here by name (it was refused as ffn_hidden, a symptom)
        raise UserError(
            f"cannot export as llada-moe: its first {cfg.dense_layers} block(s) have a dense MLP "
            f"(dense_layers={cfg.dense_layers}); llada-moe holds a mixture of experts in every "
            "layer"
        )
    return {
        "moe_layer_freq": [1] * cfg.n_layers,
        # The modeling code builds a shared expert whenever the key is not null.
        "shared_expert_intermediate_size": cfg.shared_expert_hidden or None,
        "use_cache": False,
    }


_L, _P = "model.layers.{i}.", "layers.{i}."

LLADA_MOE = Importer(
    name="llada-moe",
    model_types=("llada", "lladamoe"),
    facts={
        "d_model": (("hidden_size",), REQUIRED),
        "n_layers": (("num_hidden_layers",), REQUIRED),
        "n_heads": (("num_attention_heads",), REQUIRED),
        "n_kv_heads": (("num_key_value_heads",), None),
        "vocab_size": (("vocab_size",), REQUIRED),
        "max_seq_len": (("max_position_embeddings",), 4096),
        "rope_theta": (("rope_theta",), REQUIRED),
        "norm_eps": (("rms_norm_eps",), 1e-5),
        "tie_embeddings": (("tie_word_embeddings",), False),
        "n_experts": (("num_experts",), REQUIRED),
        "experts_top_k": (("num_experts_per_tok",), REQUIRED),
        "expert_hidden": (("expert_intermediate_size",), REQUIRED),
        "shared_expert_hidden": (("shared_expert_intermediate_size",), 0),
        "qk_norm": (("qk_layernorm",), False),
    },
    constants={
        "attention": "bidirectional",
        "logit_shift": False,
        "qkv_bias": False,
        "norm": "rms",
        "mlp": "swiglu",
        "norm_topk_prob": False,  # LLaDAMoESparseMoeBlock hard-codes it, ignoring config.json
    },
    requires={
        "hidden_act": ("silu", None),
        "attention_bias": (False, None),
        "clip_qkv": (None,),
        "rope_scaling": (None,),
        "partial_rotary_factor": (1.0, None),
        "moe_router_enable_expert_bias": (False, None),
    },
    weights={
        "model.embed_tokens.weight": "embed.weight",
        _L + "input_layernorm.weight": _P + "attn_norm.weight",
        _L + "self_attn.q_proj.weight": _P + "attn.q_proj.weight",
        _L + "self_attn.k_proj.weight": _P + "attn.k_proj.weight",
        _L + "self_attn.v_proj.weight": _P + "attn.v_proj.weight",
        _L + "self_attn.o_proj.weight": _P + "attn.o_proj.weight",
        _L + "self_attn.q_norm.weight": _P + "attn.q_norm.weight",
        _L + "self_attn.k_norm.weight": _P + "attn.k_norm.weight",
        _L + "post_attention_layernorm.weight": _P + "mlp_norm.weight",
        _L + "mlp.gate.weight": _P + "mlp.router.weight",  # (n_experts, d_model)
        **{
            _L + f"mlp.experts.{{e}}.{n}.weight": _P + f"mlp.experts.{{e}}.{n}.weight"
            for n in ("gate_proj", "up_proj", "down_proj")
        },
        # The shared expert hangs off the decoder layer, not its mlp, in modeling_lladamoe.py.
        **{
            _L + f"shared_expert.{n}.weight": _P + f"mlp.shared_expert.{n}.weight"
            for n in ("gate_proj", "up_proj", "down_proj")
        },
        "model.norm.weight": "norm.weight",
        "lm_head.weight": "lm_head.weight",
    },
    derive=_derive,
    reference=(
        "inclusionAI/LLaDA-MoE-7B-A1B-Base modeling_lladamoe.py (LLaDAMoESparseMoeBlock, "
        "LLaDAMoEAttention, LLaDAMoEDecoderLayer) and configuration_lladamoe.py"
    ),
    header={
        "model_type": "llada",
        "architectures": ["LLaDAMoEModelLM"],
        "auto_map": {
            "AutoConfig": "configuration_lladamoe.LLaDAConfig",
            "AutoModel": "modeling_lladamoe.LLaDAMoEModelLM",
            "AutoModelForCausalLM": "modeling_lladamoe.LLaDAMoEModelLM",
        },
    },
    underive=_underive,
)
