"""A tiny LLaDA 2.x folder in the publisher's exact layout, and its forward re-implemented from
the published maths (``inclusionAI/LLaDA2.0-mini`` ``modeling_llada2_moe.py``), for the parity
tests of the ``llada2`` family (``test_llada2*.py``).

``write_llada2_folder`` writes ``config.json`` (the publisher's keys), ``tokenizer.json`` and the
weights as two safetensors shards with ``model.safetensors.index.json``; ``reference_logits``
runs those tensors through the reference maths (fused QKV split by heads, per-head q/k RMSNorm,
partial half-split RoPE, sigmoid router with expert bias and group-limited top-k, routed scaling,
shared experts, dense first layers), optionally under the publisher's block-diffusion mask.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from convert_helpers import word_tokenizer_json
from safetensors.torch import save_file

SPECIALS = ["<|endoftext|>", "<|mask|>", "<role>"]

TINY: dict[str, Any] = {
    "architectures": ["LLaDA2MoeModelLM"],
    "model_type": "llada2_moe",
    "vocab_size": 48,
    "hidden_size": 64,
    "intermediate_size": 48,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "hidden_act": "silu",
    "use_qkv_bias": False,
    "use_bias": False,
    "use_qk_norm": True,
    "norm_head": False,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "max_position_embeddings": 256,
    "rope_theta": 600000,
    "rope_scaling": None,
    "num_experts": 8,
    "num_shared_experts": 1,
    "num_experts_per_tok": 3,
    "n_group": 4,
    "topk_group": 2,
    "routed_scaling_factor": 2.5,
    "moe_intermediate_size": 16,
    "first_k_dense_replace": 1,
    "partial_rotary_factor": 0.5,
    "score_function": "sigmoid",
    "moe_router_enable_expert_bias": True,
    "norm_topk_prob": True,
    "router_dtype": "fp32",
    "torch_dtype": "float32",
    "use_cache": False,
}
"""A tiny config with every LLaDA 2.x option on (keys and values as in the published ones)."""


def random_tensors(cfg: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the publisher's tensor names for ``cfg``."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    d, V, hd = cfg["hidden_size"], cfg["vocab_size"], cfg["head_dim"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    E, fe = cfg["num_experts"], cfg["moe_intermediate_size"]
    t: dict[str, torch.Tensor] = {"model.word_embeddings.weight": r(V, d, scale=1.0)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + r(d, scale=0.1)
        t[p + "post_attention_layernorm.weight"] = 1 + r(d, scale=0.1)
        t[p + "attention.query_key_value.weight"] = r((H + 2 * Hkv) * hd, d)
        t[p + "attention.dense.weight"] = r(d, H * hd)
        t[p + "attention.query_layernorm.weight"] = 1 + r(hd, scale=0.1)
        t[p + "attention.key_layernorm.weight"] = 1 + r(hd, scale=0.1)
        if i < cfg["first_k_dense_replace"]:
            f = cfg["intermediate_size"]
            t[p + "mlp.gate_proj.weight"] = r(f, d)
            t[p + "mlp.up_proj.weight"] = r(f, d)
            t[p + "mlp.down_proj.weight"] = r(d, f)
            continue
        t[p + "mlp.gate.weight"] = r(E, d, scale=0.5)
        t[p + "mlp.gate.expert_bias"] = r(E, scale=0.3)
        for e in range(E):
            t[p + f"mlp.experts.{e}.gate_proj.weight"] = r(fe, d)
            t[p + f"mlp.experts.{e}.up_proj.weight"] = r(fe, d)
            t[p + f"mlp.experts.{e}.down_proj.weight"] = r(d, fe)
        fs = fe * cfg["num_shared_experts"]
        t[p + "mlp.shared_experts.gate_proj.weight"] = r(fs, d)
        t[p + "mlp.shared_experts.up_proj.weight"] = r(fs, d)
        t[p + "mlp.shared_experts.down_proj.weight"] = r(d, fs)
    t["model.norm.weight"] = 1 + r(d, scale=0.1)
    t["lm_head.weight"] = r(V, d)
    return t


def write_llada2_folder(
    path: Path,
    cfg: dict[str, Any] | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
    *,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Write a publisher-layout folder (two shards + index); returns (config, tensors)."""
    cfg = dict(TINY if cfg is None else cfg)
    path.mkdir(parents=True, exist_ok=True)
    vocab = word_tokenizer_json(path / "tokenizer.json", SPECIALS)
    cfg.setdefault("eos_token_id", vocab["<|endoftext|>"])
    cfg.setdefault("pad_token_id", vocab["<|endoftext|>"])
    tensors = random_tensors(cfg, seed) if tensors is None else tensors
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half],
              "model-00002-of-00002.safetensors": names[half:]}  # fmt: skip
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: tensors[k].contiguous() for k in keys}, str(path / shard))
        weight_map.update({k: shard for k in keys})
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    (path / "config.json").write_text(json.dumps(cfg))
    return cfg, tensors


# -- the reference forward, from the published maths ----------------------------------------


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _mlp(x: torch.Tensor, t: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    gate = x @ t[p + "gate_proj.weight"].T
    return (F.silu(gate) * (x @ t[p + "up_proj.weight"].T)) @ t[p + "down_proj.weight"].T


def reference_route(
    h: torch.Tensor, t: dict[str, torch.Tensor], layer: int, cfg: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaDA2MoeGate: expert ids (N, k) and weights (N, k) for tokens h (N, D)."""
    p = f"model.layers.{layer}.mlp.gate."
    logits = F.linear(h.float(), t[p + "weight"].float())
    scores = torch.sigmoid(logits)
    routing = scores + t[p + "expert_bias"]
    N, E = routing.shape
    G, k = cfg["n_group"], cfg["num_experts_per_tok"]
    group_scores = routing.view(N, G, -1).topk(2, dim=-1)[0].sum(dim=-1)  # (N, G)
    group_idx = torch.topk(group_scores, k=cfg["topk_group"], dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(N, G, E // G).reshape(N, -1)
    masked = routing.masked_fill(~score_mask.bool(), float("-inf"))
    idx = torch.topk(masked, k=k, dim=-1)[1]
    w = torch.gather(scores, 1, idx)
    if k > 1:
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    return idx, w * cfg["routed_scaling_factor"]


def reference_logits(
    tokens: torch.Tensor,
    t: dict[str, torch.Tensor],
    cfg: dict[str, Any],
    *,
    block_length: int | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits (B, L, V) of the published forward for ``tokens`` (B, L), and the expert ids
    (B·L, k) chosen in every MoE layer. ``block_length``: the block-diffusion mask of the
    publisher's ``generate`` (block-causal from position 0); None: plain forward
    (bidirectional)."""
    B, L = tokens.shape
    d, hd = cfg["hidden_size"], cfg["head_dim"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    eps = cfg["rms_norm_eps"]
    rd = int(hd * cfg["partial_rotary_factor"])
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, rd, 2).float() / rd))
    freqs = torch.outer(torch.arange(L).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()  # (L, rd)
    bias = None
    if block_length is not None:
        nb = -(-L // block_length)
        blocks = torch.tril(torch.ones(nb, nb))
        full = blocks.repeat_interleave(block_length, 0).repeat_interleave(block_length, 1)
        bias = full[:L, :L].log()  # 0 where allowed, -inf elsewhere
    x = t["model.word_embeddings.weight"][tokens]
    chosen: list[torch.Tensor] = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = _rms(x, t[p + "input_layernorm.weight"], eps)
        qkv = (h @ t[p + "attention.query_key_value.weight"].T).view(B, L, H + 2 * Hkv, hd)
        q, k, v = (s.transpose(1, 2) for s in qkv.split([H, Hkv, Hkv], dim=-2))
        q = _rms(q, t[p + "attention.query_layernorm.weight"], eps)
        k = _rms(k, t[p + "attention.key_layernorm.weight"], eps)
        q = torch.cat([q[..., :rd] * cos + _rotate_half(q[..., :rd]) * sin, q[..., rd:]], -1)
        k = torch.cat([k[..., :rd] * cos + _rotate_half(k[..., :rd]) * sin, k[..., rd:]], -1)
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        att = (q @ k.transpose(2, 3)) / math.sqrt(hd)
        if bias is not None:
            att = att + bias
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, L, H * hd)
        x = x + y @ t[p + "attention.dense.weight"].T
        h = _rms(x, t[p + "post_attention_layernorm.weight"], eps)
        if i < cfg["first_k_dense_replace"]:
            x = x + _mlp(h, t, p + "mlp.")
            continue
        flat = h.reshape(-1, d)
        idx, w = reference_route(flat, t, i, cfg)
        chosen.append(idx)
        out = torch.zeros_like(flat)
        for slot in range(idx.shape[1]):
            for e in range(cfg["num_experts"]):
                rows = idx[:, slot] == e
                if rows.any():
                    expert = _mlp(flat[rows], t, p + f"mlp.experts.{e}.")
                    out[rows] += w[rows, slot, None] * expert
        out = out + _mlp(flat, t, p + "mlp.shared_experts.")
        x = x + out.view(B, L, d)
    x = _rms(x, t["model.norm.weight"], eps)
    return x @ t["lm_head.weight"].T, chosen
