"""Published families as data: the ``llada`` and ``dream`` declarations here, the DiT families
``mdlm``, ``sedd`` and ``bd3lm`` from ``unmask.convert.dit``, ``llada-moe`` from
``unmask.convert.moe``, all registered in ``IMPORTERS``. ``Importer``, the registry and the
shared constants are defined in ``unmask.convert.importer`` (below every declaration module)
and re-exported here."""

from __future__ import annotations

from typing import Any

from unmask.convert.dit import BD3LM, MDLM, SEDD
from unmask.convert.importer import (
    IMPORTERS,
    INDEX,
    REQUIRED,
    SINGLE,
    SPECIAL_KEYS,
    UNSUPPORTED,
    Importer,
    register,
)
from unmask.convert.llada2 import LLADA2
from unmask.convert.moe import LLADA_MOE
from unmask.convert.qwen2_tokenizer import qwen2_tokenizer
from unmask.errors import UserError


def _llada_derive(hf: dict[str, Any], out: dict[str, Any]) -> None:
    # LLaDA's Llama block puts a bias on q/k/v when either flag is set (include_bias is
    # rejected by ``requires`` since attn_out / MLP biases have no place in our model).
    out["qkv_bias"] = bool(hf.get("include_bias") or hf.get("include_qkv_bias"))
    if out.get("ffn_hidden") is None:  # LLaDA's block: mlp_ratio · d_model, mlp_ratio 4 absent
        ratio = hf.get("mlp_ratio")
        out["ffn_hidden"] = int(4 if ratio is None else ratio) * int(out["d_model"])
    # OLMo's deprecated flag, as LLaDA's ModelConfig.effective_n_kv_heads reads it: true means
    # one key/value head, false as many as query heads; it must agree with n_kv_heads if both.
    mqa = hf.get("multi_query_attention")
    if mqa is None:
        return
    if not isinstance(mqa, bool):
        raise UserError(f"config.json: multi_query_attention={mqa!r} should be true or false")
    heads = 1 if mqa else int(out["n_heads"])
    if out.get("n_kv_heads") is not None and out["n_kv_heads"] != heads:
        raise UserError(
            f"config.json: n_kv_heads={out['n_kv_heads']!r} disagrees with "
            f"multi_query_attention={mqa!r} (which means {heads}); LLaDA refuses both set so"
        )
    out["n_kv_heads"] = heads


def _dream_derive(hf: dict[str, Any], out: dict[str, Any]) -> None:
    head_dim = hf.get("head_dim")
    if head_dim is not None and int(head_dim) * int(out["n_heads"]) != int(out["d_model"]):
        raise UserError(
            f"config.json: head_dim={head_dim} differs from hidden_size/num_attention_heads; "
            "unmask cannot represent it"
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
        # LLaDA's ModelConfig ties by default (the released configs say false)
        "tie_embeddings": (("weight_tying",), True),
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
    reference=(
        "ML-GSAI/LLaDA modeling_llada.py (LLaDALlamaBlock), GSAI-ML/LLaDA-8B-Base config.json"
    ),
    # LLaDA's texts begin with <|startoftext|>: its chat template writes bos_token first and
    # GUIDELINES.md's SFT layout starts with <BOS>; a raw prompt gets it as well
    prompt_bos="<|startoftext|>",
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
    # Dream's evaluation of its base model prepends tokenizer.bos_token (<|beginoftext|>, named
    # in tokenizer_config.json, not config.json's bos_token_id): eval/ add_bos_token=true
    prompt_bos="<|beginoftext|>",
    # the published folders ship Qwen2's slow tokenizer files, no tokenizer.json
    slow_tokenizer=qwen2_tokenizer,
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

register(LLADA)
register(DREAM)
register(MDLM)
register(SEDD)
register(BD3LM)
register(LLADA_MOE)
register(LLADA2)

__all__ = [
    "DREAM",
    "IMPORTERS",
    "INDEX",
    "LLADA",
    "LLADA2",
    "REQUIRED",
    "SINGLE",
    "SPECIAL_KEYS",
    "UNSUPPORTED",
    "Importer",
    "register",
]
