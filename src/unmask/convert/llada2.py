"""The LLaDA 2.x family as data: ``llada2`` (LLaDA2.0-mini / -flash, LLaDA2.1; Ant Group 2025).

``inclusionAI/LLaDA2.0-mini`` publishes a Ling-2.0 (BailingMoeV2) shaped transformer
(``modeling_llada2_moe.py``, class ``LLaDA2MoeModelLM``, ``model_type`` ``llada2_moe``):
pre-norm RMSNorm blocks; one fused ``query_key_value`` projection (rows: the query heads, then
the key heads, then the value heads) and an output projection ``dense``, without biases; a
per-head RMSNorm on queries and keys (``use_qk_norm``) before RoPE that turns only the first
``head_dim * partial_rotary_factor`` dimensions of each head (half-split within them); the first
``first_k_dense_replace`` blocks with a dense SwiGLU MLP of width ``intermediate_size``, every
later block a mixture of ``num_experts`` SwiGLU experts (width ``moe_intermediate_size``) plus
``num_shared_experts`` always-on experts fused into one of width
``moe_intermediate_size * num_shared_experts``. The router (``mlp.gate``) is DeepSeek-V3's:
sigmoid scores in float32; the experts are chosen by score + ``expert_bias`` (a saved buffer)
among the ``topk_group`` best of ``n_group`` groups (a group ranks by the sum of its two best
biased scores); their unbiased scores are renormalised (whenever ``num_experts_per_tok`` > 1,
whatever ``norm_topk_prob`` says) and multiplied by ``routed_scaling_factor``. The output head is
untied; the logits at position i predict token i (no shift).

unmask's one Transformer holds it with ``router='sigmoid'``, ``router_groups``,
``router_topk_groups``, ``routed_scaling``, ``router_expert_bias``, ``dense_layers``,
``rotary_dim`` and ``qk_norm`` (``unmask.model.MoE``). The model was trained and is decoded with
block-causal attention between blocks of 32 counted from the first prompt token (the
publisher's ``generate``): the import says ``attention='block-causal'``, ``block_size=32``,
``block_align='absolute'``, so ``unmask generate`` decodes it with the ``bd3lm`` decoder as
published (threshold commits, LLaDA 2.1's editing as options; docs/large-models.md).

Refused with the option's name: a key this family does not know (``KNOWN``), attention or dense
biases, RoPE scaling, sliding windows, ``head_dim`` other than ``hidden_size /
num_attention_heads``, a router other than sigmoid, a rotary width that is not even (a release
quantised by its publisher, ``quantization_config``, is refused for every family by
``unmask.convert.load.model_config``: load the bf16 one with ``--quantize``).
"""

from __future__ import annotations

from typing import Any

from unmask.convert.importer import REQUIRED, Importer
from unmask.errors import UserError

BLOCK_SIZE = 32
"""Block length of LLaDA 2.x's block diffusion (``generate(block_length=32)``)."""

KNOWN = frozenset(
    {
        # transformers' generic config keys
        "architectures", "auto_map", "model_type", "torch_dtype", "dtype", "transformers_version",
        "_name_or_path", "use_cache", "bos_token_id", "eos_token_id", "pad_token_id",
        "mask_token_id", "initializer_range", "embedding_dropout", "attention_dropout",
        "output_dropout", "output_router_logits", "max_window_layers", "sliding_window",
        "quantization_config",  # null or absent only: refuse_prequantized refuses the rest
        "router_dtype", "norm_softmax", "norm_topk_prob", "moe_router_enable_expert_bias",
        "use_rmsnorm", "rotary_dim", "moe_shared_expert_intermediate_size",
        # shape and options (facts / requires below)
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act", "use_qkv_bias",
        "use_bias", "use_qk_norm", "norm_head", "rms_norm_eps", "tie_word_embeddings",
        "max_position_embeddings", "rope_theta", "rope_scaling", "use_sliding_window",
        "num_experts", "num_shared_experts", "num_experts_per_tok", "n_group", "topk_group",
        "routed_scaling_factor", "moe_intermediate_size", "first_k_dense_replace",
        "partial_rotary_factor", "score_function", "using_split_qkv_in_self_attention",
        "num_nextn_predict_layers",
    }
)  # fmt: skip
"""``config.json`` keys of LLaDA 2.x folders; any other key is refused by name (it may change
the maths)."""


def _derive(hf: dict[str, Any], out: dict[str, Any]) -> None:
    unknown = sorted(set(hf) - KNOWN)
    if unknown:
        raise UserError(
            f"config.json: unknown key {unknown[0]!r} for llada2"
            f"{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''}; "
            "unmask cannot tell whether it changes the model"
        )
    d, heads = int(out["d_model"]), int(out["n_heads"])
    head_dim = hf.get("head_dim")
    if head_dim is not None and int(head_dim) * heads != d:
        raise UserError(
            f"config.json: head_dim={head_dim} differs from hidden_size/num_attention_heads "
            f"({d // heads}); unmask cannot represent it"
        )
    if not out.get("n_kv_heads"):  # the publisher's default 0 / absent: one kv head per query
        out["n_kv_heads"] = heads
    factor = float(hf.get("partial_rotary_factor", 0.5))  # LLaDA2MoeConfig's default
    rotary = int((d // heads) * factor)
    if rotary <= 0 or rotary % 2:
        raise UserError(
            f"config.json: partial_rotary_factor={factor} gives {rotary} rotary dimensions "
            "per head; unmask needs an even, positive number"
        )
    if hf.get("rotary_dim") is not None and int(hf["rotary_dim"]) != rotary:
        raise UserError(
            f"config.json: rotary_dim={hf['rotary_dim']} differs from head_dim x "
            f"partial_rotary_factor ({rotary})"
        )
    out["rotary_dim"] = None if rotary == d // heads else rotary
    shared = hf.get("num_shared_experts")
    expert = int(out["expert_hidden"])
    out["shared_expert_hidden"] = expert * int(shared) if shared else 0
    fused = hf.get("moe_shared_expert_intermediate_size")
    if fused is not None and shared and int(fused) != out["shared_expert_hidden"]:
        raise UserError(
            f"config.json: moe_shared_expert_intermediate_size={fused} differs from "
            f"moe_intermediate_size x num_shared_experts ({out['shared_expert_hidden']})"
        )
    out["qk_norm"] = bool(out["qk_norm"])
    # LLaDA2MoeGate renormalises the chosen scores whenever top_k > 1, ignoring the key.
    out["norm_topk_prob"] = int(out["experts_top_k"]) > 1


def _underive(cfg: Any) -> dict[str, Any]:
    raise UserError(
        "cannot export as llada2: the family is import only (unmask loads LLaDA 2.x "
        "folders; it does not write them)"
    )


_L, _P = "model.layers.{i}.", "layers.{i}."

LLADA2 = Importer(
    name="llada2",
    model_types=("llada2_moe", "llada2"),
    facts={
        "d_model": (("hidden_size",), REQUIRED),
        "n_layers": (("num_hidden_layers",), REQUIRED),
        "n_heads": (("num_attention_heads",), REQUIRED),
        "n_kv_heads": (("num_key_value_heads",), None),
        "ffn_hidden": (("intermediate_size",), None),
        "vocab_size": (("vocab_size",), REQUIRED),
        "max_seq_len": (("max_position_embeddings",), 16384),
        "rope_theta": (("rope_theta",), 10000.0),
        "norm_eps": (("rms_norm_eps",), 1e-5),
        "tie_embeddings": (("tie_word_embeddings",), False),
        "n_experts": (("num_experts",), REQUIRED),
        "experts_top_k": (("num_experts_per_tok",), REQUIRED),
        "expert_hidden": (("moe_intermediate_size",), REQUIRED),
        "router_groups": (("n_group",), 8),  # LLaDA2MoeConfig's defaults
        "router_topk_groups": (("topk_group",), 4),
        "routed_scaling": (("routed_scaling_factor",), 2.5),
        "dense_layers": (("first_k_dense_replace",), 0),
        "qk_norm": (("use_qk_norm",), True),
    },
    constants={
        "attention": "block-causal",
        "block_size": BLOCK_SIZE,
        "block_align": "absolute",
        "logit_shift": False,
        "qkv_bias": False,
        "norm": "rms",
        "mlp": "swiglu",
        "router": "sigmoid",
        # LLaDA2MoeGate registers expert_bias as a buffer whatever the config says (saved).
        "router_expert_bias": True,
        # The publisher's generate: threshold commits at 0.95 (LLaDA 2.0); 2.1 adds editing.
        "sample_defaults": {"policy": "threshold", "threshold": 0.95},
    },
    requires={
        "hidden_act": ("silu", None),
        "use_qkv_bias": (False, None),
        "use_bias": (False,),  # LLaDA2MoeConfig defaults to True (a bias on the output proj)
        "norm_head": (False, None),
        "rope_scaling": (None,),
        "use_sliding_window": (False, None),
        "score_function": ("sigmoid", None),
        "using_split_qkv_in_self_attention": (False, None),
        "use_rmsnorm": (True, None),
        "num_nextn_predict_layers": (0, None),
    },
    weights={
        "model.word_embeddings.weight": "embed.weight",
        _L + "input_layernorm.weight": _P + "attn_norm.weight",
        _L + "attention.query_key_value.weight": (
            _P + "attn.q_proj.weight",
            _P + "attn.k_proj.weight",
            _P + "attn.v_proj.weight",
        ),
        _L + "attention.dense.weight": _P + "attn.o_proj.weight",
        _L + "attention.query_layernorm.weight": _P + "attn.q_norm.weight",
        _L + "attention.key_layernorm.weight": _P + "attn.k_norm.weight",
        _L + "post_attention_layernorm.weight": _P + "mlp_norm.weight",
        # dense first blocks (first_k_dense_replace); absent targets are dropped per layer
        **{
            _L + f"mlp.{n}.weight": _P + f"mlp.{n}.weight"
            for n in ("gate_proj", "up_proj", "down_proj")
        },
        _L + "mlp.gate.weight": _P + "mlp.router.weight",  # (n_experts, d_model)
        _L + "mlp.gate.expert_bias": _P + "mlp.expert_bias",  # (n_experts,)
        **{
            _L + f"mlp.experts.{{e}}.{n}.weight": _P + f"mlp.experts.{{e}}.{n}.weight"
            for n in ("gate_proj", "up_proj", "down_proj")
        },
        **{
            _L + f"mlp.shared_experts.{n}.weight": _P + f"mlp.shared_expert.{n}.weight"
            for n in ("gate_proj", "up_proj", "down_proj")
        },
        "model.norm.weight": "norm.weight",
        "lm_head.weight": "lm_head.weight",
    },
    derive=_derive,
    underive=_underive,
    reference=(
        "inclusionAI/LLaDA2.0-mini modeling_llada2_moe.py (LLaDA2MoeGate, LLaDA2MoeAttention, "
        "LLaDA2MoeSparseMoeBlock, LLaDA2MoeModelLM.generate) and configuration_llada2_moe.py"
    ),
    header={
        "model_type": "llada2_moe",
        "architectures": ["LLaDA2MoeModelLM"],
    },
    tokenizer_note="the publisher's tokenizer.json is needed next to config.json "
    "(the mask token is <|mask|>)",
)
