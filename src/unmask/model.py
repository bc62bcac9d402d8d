"""The one transformer: token ids -> logits. Nothing else.

RMSNorm, rotary position embeddings (RoPE), grouped-query attention through
``torch.nn.functional.scaled_dot_product_attention``, SwiGLU MLP, optional tied
embeddings. Attention is ``bidirectional`` (masked diffusion, LLaDA/MDLM),
``causal`` (the autoregressive baseline) or ``block-causal`` (bidirectional inside
a block of ``block_size`` tokens, causal across blocks; BD3-LM). A key-padding mask
(``attention_mask``, True = real token) keeps padded positions out of attention, so a
padded row gives the same logits at its real positions as the row alone (block-causal: a
left padding of whole blocks, as bd3lm pads; blocks count from the canvas start, so other
left paddings move the block boundaries).

Optional KV cache (``KVCache``): ``forward(tokens, cache=kv, start=s)`` runs only the
positions ``[s, s + l)``, writes their keys/values into ``kv`` and attends to every
position the cache holds. When to refresh a cache is the sampler's business
(``unmask.sampling.cache``, ``unmask.sampling.ar``), not the model's.

Explicit layouts: ``forward(tokens, positions=p, attn_bias=m)`` gives columns their own
RoPE positions and an explicit boolean attention mask, for objectives that run a sequence
twice in one pass (BD3-LM's ``[x_t ; x_0]``, ``unmask.objectives.bd3lm``; the hybrid's draft
blocks, ``unmask.objectives.hybrid``), also over a KV cache (new columns after the cached
prefix; ``unmask.sampling.hybrid``). A sparse explicit mask can be given as ``RowChunks``
(consecutive query rows attend only to the keys some row of theirs sees; the hybrid's training
pass), which CPU attention runs in a fraction of the dense masked work.

DiT options (MDLM/SEDD; ``ModelConfig.norm``, ``mlp``, ``head_bias``, ``time_conditioning``):
bias-free LayerNorm, a GELU(tanh) MLP with biases, and adaLN-Zero modulation of every block
and of the final norm by an embedding of the noise level ``forward(..., sigma=s)`` (Peebles &
Xie 2023). ``output='sedd_log_score'`` makes the head SEDD's log-score (``sedd_log_score``);
``denoiser_logits`` maps it back to logits, and ``masked_fraction_sigma`` reads a noise level
off a canvas for callers that pass none.

Mixture of experts (``ModelConfig.n_experts``; OLMoE, LLaDA-MoE): every block's MLP is a
``MoE`` of SwiGLU experts behind a softmax router (top-k, optionally renormalised, optional
shared expert); ``qk_norm`` adds a per-head RMSNorm on queries and keys before RoPE. Options for
Ling 2.0 / LLaDA 2.x: a sigmoid router with expert bias and group-limited top-k, routed scaling,
dense first blocks (``dense_layers``) and partial rotary embeddings (``rotary_dim``).

NaN watch: every forward in eval mode counts, on the device, whether its final hidden states
held NaN or infinity (``Transformer.nonfinite_forwards``) and keeps which rows did
(``nonfinite_rows``); a decoder notes the count when its run starts (``nonfinite_mark``) and
checks it (``check_finite``, which raises ``NonFiniteOutput``) when its result is taken and,
where a run has a step callback or view callback, before each call (one small device read a
step: a callback that reads nothing pays it too); a run without one reads it once. A forward
shared by several runs is handed out row by row (``take_nonfinite_rows``, its own thread's
forward: ``step_together`` in ``unmask.sampling.protocol``), as is a run of several requests'
rows (``DecoderRun.watch_rows``, the server's whole batch): one run's, or one request's, NaN
rows fail it only.

Losses, noise, sampling, checkpoint formats and parallelism live elsewhere.
"""

from __future__ import annotations

import contextlib
import math
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unmask.config import SIGMA_FREQ_DIM, ModelConfig
from unmask.errors import UserError
from unmask.messages import plural

# scaled_dot_product_attention(enable_gqa=) came with torch 2.5; on CPU it is 3-10x faster at
# decode shapes than repeating K/V per head (benchmarks/gqa_attention.py)
_SDPA_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)


@dataclass(frozen=True)
class RowChunks:
    """A boolean attention mask (B|1, 1, L, L) run as chunks of consecutive query rows, each
    over only the key columns some row of the chunk may see (``row_chunks``).

    Exact: a key the mask hides has weight 0 either way; only the order of the float sums
    differs from one dense masked attention. Why: CPU attention does the whole L×L work for
    any mask (causal included) at these lengths, so a sparse layout such as the hybrid's
    ``[x ; draft blocks]`` (``unmask.objectives.hybrid``) costs ~0.55× the dense one at
    L = 256 when chunked (``benchmarks/train_throughput.py --compare objectives``).
    """

    mask: Tensor
    """The whole mask (B|1, 1, L, L), True = may attend."""
    chunks: tuple[tuple[int, int, Tensor | None, Tensor], ...]
    """(first row, end row, key columns (n,) int64 or None = the first n, mask (B|1, 1, rows,
    n)) per chunk, covering rows 0 .. L - 1 in order."""

    def attend(self, q: Tensor, k: Tensor, v: Tensor, gqa: dict[str, bool]) -> Tensor:
        """SDPA of q (B, H, L, hd) over k, v (B, Hkv, L, hd), chunk by chunk -> (B, H, L, hd)."""
        out = []
        for r0, r1, keys, m in self.chunks:
            n = m.shape[-1]
            kk = k[:, :, :n] if keys is None else k.index_select(2, keys)  # (B, Hkv, n, hd)
            vv = v[:, :, :n] if keys is None else v.index_select(2, keys)
            out.append(F.scaled_dot_product_attention(q[:, :, r0:r1], kk, vv, attn_mask=m, **gqa))
        return torch.cat(out, dim=2)


def row_chunks(mask: Tensor, starts: list[int]) -> RowChunks:
    """``mask`` (B|1, 1, L, L) bool as ``RowChunks`` whose chunks begin at the rows ``starts``
    (ascending, from 0): each chunk attends to the keys any of its rows may see."""
    L = mask.shape[-1]
    if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[-2] != L:
        raise ValueError(f"mask must be a bool tensor (B|1, 1, L, L), got {tuple(mask.shape)}")
    steps = zip(starts, starts[1:], strict=False)
    if not starts or starts[0] != 0 or any(b <= a for a, b in steps):
        raise ValueError(f"starts must ascend from 0, got {starts}")
    if starts[-1] >= L:
        raise ValueError(f"starts {starts} must lie below the {L} rows")
    chunks = []
    for r0, r1 in zip(starts, [*starts[1:], L], strict=True):
        seen = mask[:, :, r0:r1].any(dim=2).flatten(0, 1).any(dim=0)  # (L,) keys of any row
        keys = seen.nonzero().flatten()  # (n,)
        n = keys.shape[0]
        prefix = bool(n == 0 or keys[-1] == n - 1)  # the first n columns: a view, no copy
        sub = mask[:, :, r0:r1][..., keys]  # (B|1, 1, rows, n)
        chunks.append((r0, r1, None if prefix else keys, sub))
    return RowChunks(mask=mask, chunks=tuple(chunks))


def _check_attention_mask(attention_mask: Tensor | None, B: int, keys: int) -> None:
    """Refuse an ``attention_mask`` that is not (B, keys) or (1, keys), ``keys`` the key count
    (L without a cache, the cached and new positions over one): else torch's broadcast or
    index error from deep inside the mask, at prefill and every decode step."""
    if attention_mask is not None and (
        attention_mask.dim() != 2 or attention_mask.shape[-1] != keys
        or (attention_mask.shape[0] != B and attention_mask.shape[0] != 1)
    ):
        raise ValueError(f"attention_mask must have shape ({B}, {keys}) (or (1, {keys})), "
                         f"got {tuple(attention_mask.shape)}")


def _hide_padding(
    allowed: Tensor | None, attention_mask: Tensor, L: int, start: int = 0
) -> Tensor:
    """The SDPA mask ``allowed`` (B|1, 1, L, Lk) (None: every key) less the keys that
    ``attention_mask`` (B|1, Lk) marks as padding, each query at slot ``start + i`` still seeing
    its own slot: a padded query row that sees no key would give NaN."""
    keys = attention_mask[:, None, None, :].bool()  # (B, 1, 1, Lk)
    allowed = keys if allowed is None else allowed & keys
    own = torch.eye(L, attention_mask.shape[-1] - start, dtype=torch.bool, device=keys.device)
    if start:  # (L, Lk): query i's own slot is start + i
        own = torch.cat([own.new_zeros(L, start), own], dim=1)
    return allowed | own[None, None]


def wide_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype ``at_least_fp32`` computes a tensor of ``dtype`` in: float64 for float64, else
    float32 (without touching the tensor)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def at_least_fp32(x: Tensor) -> Tensor:
    """``x`` in float32, or as it is when already wider (float64): the precision norms and
    rotary embeddings compute in, so half-precision models keep them in float32 and a float64
    model (the tests' exact comparisons) stays float64 throughout."""
    return x if x.dtype == torch.float64 else x.float()


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich 2019), computed in float32 (or wider)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = at_least_fp32(x)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.to(xf.dtype)).type_as(x)


class LayerNorm(nn.Module):
    """LayerNorm with a weight and no bias (the DiT of MDLM/SEDD), computed in float32 (or
    wider)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = F.layer_norm(at_least_fp32(x), (x.shape[-1],), eps=self.eps)
        return (xf * self.weight.to(xf.dtype)).type_as(x)


def make_norm(cfg: ModelConfig) -> nn.Module:
    """The norm ``cfg.norm`` names: ``RMSNorm`` or bias-free ``LayerNorm``."""
    return (
        LayerNorm(cfg.d_model, cfg.norm_eps)
        if cfg.norm == "layer"
        else RMSNorm(cfg.d_model, cfg.norm_eps)
    )


ROPE_ROWS = 4096
"""Positions the RoPE tables of a model start with (``Transformer._rope_tables``), doubled as
longer inputs come, up to ``max_seq_len``."""


def rope_cache(
    seq_len: int,
    head_dim: int,
    theta: float,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """cos/sin tables of rotary embeddings (Su et al. 2021), half-split layout as in Llama/HF,
    computed in ``dtype``: float32 as HF computes them, float64 for a float64 model."""
    dims = torch.arange(0, head_dim, 2, device=device, dtype=dtype)  # (hd/2,)
    inv_freq = 1.0 / (theta ** (dims / head_dim))
    t = torch.arange(seq_len, device=device, dtype=dtype)
    freqs = torch.outer(t, inv_freq)  # (L, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (L, hd)
    return emb.cos(), emb.sin()


def _rope_covers(
    rope: tuple[Tensor, Tensor] | None, n: int, device: torch.device, dtype: torch.dtype
) -> bool:
    """Whether ``rope`` (cos, sin) holds positions 0..n-1 on ``device`` in ``dtype``."""
    return rope is not None and rope[0].shape[0] >= n and rope[0].device == device and (
        rope[0].dtype == dtype
    )


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, L, hd) by position; cos/sin are (L, rd). With rd < hd (partial rotary
    embeddings, Ling 2.0 / LLaDA 2.x) only the first rd dimensions turn; the rest pass."""
    rd = cos.shape[-1]
    if rd < x.shape[-1]:
        return torch.cat([apply_rope(x[..., :rd], cos, sin), x[..., rd:]], dim=-1)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (at_least_fp32(x) * cos + at_least_fp32(rotated) * sin).type_as(x)


@dataclass
class KVCache:
    """Keys and values of cached positions, one ``(k, v)`` pair per layer.

    Each tensor is (B, H_kv, capacity, hd), already rotated by RoPE; positions
    ``[0, length)`` are valid. ``Transformer.forward(..., cache=kv, start=s)`` overwrites the
    positions it runs and attends to all valid ones. An empty ``KVCache()`` is filled by the
    first forward (which must start at position 0).
    """

    layers: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    """Per layer (k, v), each (B, H_kv, capacity, hd)."""
    length: int = 0
    """Number of valid positions: the key length attention sees."""
    reserve: int = 0
    """The most slots growth by doubling allocates while a write fits in it (0: no cap): the
    final length of a sequence that grows to it (``unmask.sampling.blocks.BlockRun``), so a
    run that fills it holds exactly that many, not up to twice as many, and one that stops
    early (EOS) holds no more than it used would double to."""

    def update(self, layer: int, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k/v (B, H_kv, l, hd) at positions [start, start + l) of ``layer``; return the
        keys/values of the valid positions [0, length), (B, H_kv, length, hd) each."""
        end = start + k.shape[2]
        if self.layers and k.shape[0] != self.layers[0][0].shape[0]:  # else a broadcast error
            raise ValueError(f"the KV cache holds {self.layers[0][0].shape[0]} rows; this call "
                             f"has {k.shape[0]} (a cache serves the batch that filled it)")
        if layer == len(self.layers):
            if start != 0:
                raise ValueError(
                    f"KV cache layer {layer} is empty; the first write must start at 0"
                )
            self.layers.append((k, v))
        else:
            ck, cv = self.layers[layer]
            if end > ck.shape[2]:  # grow by doubling: token-by-token decoding stays linear
                size = max(end, 2 * ck.shape[2])
                if end <= self.reserve:  # never past the length the sequence ends at
                    size = min(size, self.reserve)
                extra = size - ck.shape[2]
                ck = torch.cat([ck, ck.new_zeros(*ck.shape[:2], extra, ck.shape[3])], dim=2)
                cv = torch.cat([cv, cv.new_zeros(*cv.shape[:2], extra, cv.shape[3])], dim=2)
                self.layers[layer] = (ck, cv)
            ck[:, :, start:end] = k
            cv[:, :, start:end] = v
        ck, cv = self.layers[layer]
        if ck.shape[2] == self.length:
            return ck, cv
        return ck[:, :, : self.length], cv[:, :, : self.length]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | RowChunks | None,
        is_causal: bool,
        cache: KVCache | None = None,
        layer: int = 0,
        start: int = 0,
    ) -> Tensor:
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, L, hd)
        kv_shape = (B, L, self.n_kv_heads, self.head_dim)
        k = self.k_proj(x).view(kv_shape).transpose(1, 2)  # (B, Hkv, L, hd)
        v = self.v_proj(x).view(kv_shape).transpose(1, 2)
        if hasattr(self, "q_norm"):  # per head, before the rotation (OLMoE / LLaDA-MoE)
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, start, k, v)  # (B, Hkv, Lk, hd): cached + new positions
        gqa: dict[str, bool] = {}
        if self.n_kv_heads != self.n_heads and _SDPA_GQA:
            gqa["enable_gqa"] = True  # shares K/V across head groups without copying them
        elif self.n_kv_heads != self.n_heads:  # torch < 2.5
            rep = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(rep, dim=1)  # (B, H, L, hd)
            v = v.repeat_interleave(rep, dim=1)
        if isinstance(mask, RowChunks):
            y = mask.attend(q, k, v, gqa)  # (B, H, L, hd)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal and mask is None, **gqa
            )
        # the width spelt out: -1 is ambiguous for an empty batch or row (B or L of 0)
        return self.o_proj(y.transpose(1, 2).reshape(B, L, self.n_heads * self.head_dim))


class SwiGLU(nn.Module):
    """Gated MLP of Shazeer (2020): down(silu(gate(x)) * up(x)); width ``hidden`` (default
    ``cfg.ffn_hidden``)."""

    def __init__(self, cfg: ModelConfig, hidden: int | None = None) -> None:
        super().__init__()
        hidden = cfg.ffn_hidden if hidden is None else hidden
        self.gate_proj = nn.Linear(cfg.d_model, hidden, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoE(nn.Module):
    """Sparse mixture of SwiGLU experts (Shazeer et al. 2017; OLMoE, Muennighoff et al. 2024;
    LLaDA-MoE, Zhu et al. 2025).

    p = softmax(router(x)) over ``n_experts`` (float32; float64 for a float64 model); the
    ``experts_top_k`` largest p_e are the token's experts, with weights p_e (renormalised to
    sum 1 if ``norm_topk_prob``); y = sum_e w_e * expert_e(x) (+ shared_expert(x)). Tokens are
    grouped by expert (a sort of the N·k assignments), so each expert runs once on the rows
    routed to it.

    ``router='sigmoid'`` (DeepSeek-V3, Ling 2.0, LLaDA 2.x): s = sigmoid(router(x)) in float32
    (float64 likewise); experts are chosen by s + ``expert_bias`` among the
    ``router_topk_groups`` best of ``router_groups`` groups (a group's rank: the sum of its two
    best biased scores), weighted by their s, renormalised when ``norm_topk_prob``, times
    ``routed_scaling``.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.top_k, self.norm_topk_prob = cfg.experts_top_k, cfg.norm_topk_prob
        self.kind, self.scaling = cfg.router, cfg.routed_scaling
        self.groups, self.topk_groups = cfg.router_groups, cfg.router_topk_groups
        self.router = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)
        if cfg.router_expert_bias:  # set by load balancing, not by gradients
            self.expert_bias = nn.Parameter(torch.zeros(cfg.n_experts), requires_grad=False)
        self.experts = nn.ModuleList(
            SwiGLU(cfg, cfg.moe_expert_hidden) for _ in range(cfg.n_experts)
        )
        if cfg.shared_expert_hidden:
            self.shared_expert = SwiGLU(cfg, cfg.shared_expert_hidden)

    def route(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Routing of tokens x (N, D): weights (N, k) in x's dtype and expert ids (N, k)."""
        if self.kind == "sigmoid":
            return self._route_sigmoid(x)
        # float32 for half precision; a float64 model stays float64 (routing in float32 moved
        # its outputs by ~1e-8, where every other layer keeps float64: at_least_fp32)
        probs = F.softmax(self.router(x), dim=-1, dtype=wide_dtype(x.dtype))  # (N, E)
        weights, chosen = probs.topk(self.top_k, dim=-1)  # (N, k) each
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights.to(x.dtype), chosen

    def _route_sigmoid(self, x: Tensor) -> tuple[Tensor, Tensor]:
        wide = wide_dtype(x.dtype)
        scores = torch.sigmoid(F.linear(x.to(wide), self.router.weight.to(wide)))  # (N, E)
        biased = scores + self.expert_bias.to(wide) if hasattr(self, "expert_bias") else scores
        if self.groups > 1:
            N, E = biased.shape
            grouped = biased.view(N, self.groups, E // self.groups)  # (N, G, E/G)
            group_score = grouped.topk(min(2, E // self.groups), dim=-1)[0].sum(dim=-1)  # (N, G)
            keep = group_score.topk(self.topk_groups, dim=-1)[1]  # (N, g)
            allowed = torch.zeros_like(group_score, dtype=torch.bool).scatter_(1, keep, True)
            allowed = allowed[:, :, None].expand_as(grouped).reshape(N, E)  # (N, E)
            biased = biased.masked_fill(~allowed, float("-inf"))
        chosen = biased.topk(self.top_k, dim=-1)[1]  # (N, k)
        weights = scores.gather(1, chosen)  # (N, k): unbiased scores
        if self.norm_topk_prob and self.top_k > 1:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return (weights * self.scaling).to(x.dtype), chosen

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, D)
        weights, chosen = self.route(x)
        flat = chosen.reshape(-1)  # (N·k,) assignment a = token·k + slot
        order = flat.argsort(stable=True)  # assignments grouped by expert
        counts = torch.bincount(flat, minlength=len(self.experts)).tolist()
        out = torch.zeros_like(x)
        for expert, part in zip(self.experts, order.split(counts), strict=True):
            if part.numel():
                rows = part // self.top_k  # (n,) token of each assignment
                out.index_add_(0, rows, expert(x[rows]) * weights.reshape(-1)[part, None])
        if hasattr(self, "shared_expert"):
            out = out + self.shared_expert(x)
        return out.reshape(shape)


class GeluMLP(nn.Module):
    """down(gelu_tanh(up(x))) with biases (the DiT of MDLM/SEDD, GPT-2)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=True)
        self.down_proj = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))


class SigmaEmbedding(nn.Module):
    """Noise level sigma (B,) -> conditioning vector (B, cond_dim): sinusoidal features of
    sigma (GLIDE/DiT timestep embedding, max period 10000, [cos, sin]) through Linear, SiLU,
    Linear, then SiLU (MDLM/SEDD apply it to the embedder's output)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.proj_in = nn.Linear(SIGMA_FREQ_DIM, cfg.cond_dim, bias=True)
        self.proj_out = nn.Linear(cfg.cond_dim, cfg.cond_dim, bias=True)

    def forward(self, sigma: Tensor) -> Tensor:
        half = SIGMA_FREQ_DIM // 2
        wide = wide_dtype(self.proj_in.weight.dtype)  # float64 for a float64 model
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=sigma.device, dtype=wide) / half
        )
        args = sigma.to(wide)[:, None] * freqs[None]  # (B, half)
        feats = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.proj_in.weight.dtype)
        return F.silu(self.proj_out(F.silu(self.proj_in(feats))))  # (B, cond_dim)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x·(1 + scale) + shift, with shift/scale (B, 1, D) per row."""
    return x * (1 + scale) + shift


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, index: int = 0) -> None:
        super().__init__()
        self.attn_norm = make_norm(cfg)
        self.attn = Attention(cfg)
        self.mlp_norm = make_norm(cfg)
        moe = cfg.n_experts and index >= cfg.dense_layers  # first_k_dense_replace: dense first
        self.mlp = MoE(cfg) if moe else GeluMLP(cfg) if cfg.mlp == "gelu" else SwiGLU(cfg)
        if cfg.time_conditioning:  # adaLN-Zero: shift, scale, gate of both sublayers
            self.modulation = nn.Linear(cfg.cond_dim, 6 * cfg.d_model, bias=True)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | RowChunks | None,
        is_causal: bool,
        cache: KVCache | None = None,
        layer: int = 0,
        start: int = 0,
        cond: Tensor | None = None,
    ) -> Tensor:
        if cond is None:
            x = x + self.attn(self.attn_norm(x), cos, sin, mask, is_causal, cache, layer, start)
            return x + self.mlp(self.mlp_norm(x))
        mod = self.modulation(cond)[:, None]  # (B, 1, 6·D)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)  # (B, 1, D) each
        h = modulate(self.attn_norm(x), shift1, scale1)
        x = x + gate1 * self.attn(h, cos, sin, mask, is_causal, cache, layer, start)
        return x + gate2 * self.mlp(modulate(self.mlp_norm(x), shift2, scale2))


class Transformer(nn.Module):
    """Pre-norm transformer mapping token ids (B, L) to logits (B, L, V)."""

    supports_kv_cache = True
    """``forward`` takes ``cache=KVCache`` and ``start`` (see there)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = make_norm(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=config.head_bias)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        if config.time_conditioning:
            self.sigma_embed = SigmaEmbedding(config)
            # shift, scale
            self.final_modulation = nn.Linear(config.cond_dim, 2 * config.d_model, bias=True)
        if config.embed_self_condition:  # embed-diffusion's previous x0 estimate, added to x_t
            self.self_condition = nn.Linear(config.d_model, config.d_model, bias=False)
        self._rope: tuple[Tensor, Tensor] | None = None
        self._nonfinite: Tensor | None = None  # () int64 on the device: ``nonfinite_forwards``
        self._nonfinite_rows: Tensor | None = None  # (B,) bool of the last forward
        self._nonfinite_eager: Tensor | None = None  # the same, of the last one not compiled
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Explicit init: N(0, init_std) for matrices, residual outputs scaled by 1/sqrt(2·n_layers)
        (GPT-2), zeros for biases, ones for norms, zeros for the adaLN modulation (adaLN-Zero:
        a fresh time-conditioned block starts as the identity; so does ``self_condition``: a fresh
        self-conditioned model ignores its previous estimate until training opens the path).

        Skipped on the meta device (a model built only to count parameters, or to be filled by
        a checkpoint): there is nothing to draw, and ``normal_`` on meta tensors goes through
        ``torch._refs``, whose first call imports TorchDynamo (~5 s on this CPU)."""
        if self.embed.weight.is_meta:
            return
        std = self.config.init_std
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("expert_bias"):
                p.zero_()
            elif name.endswith(".bias") or "modulation." in name or name == "self_condition.weight":
                p.zero_()
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                p.normal_(0.0, std / math.sqrt(2 * self.config.n_layers))
            else:
                p.normal_(0.0, std)

    def _positions_end(self, positions: Tensor | None, end: int) -> int:
        """One past the largest of ``positions`` (``end`` for the default ones, which need no
        device read), checked against ``max_seq_len``; a negative position is refused (it
        indexed the RoPE table from its end: another position's rotation, silently). Traced
        by torch.compile, given positions count as ``max_seq_len`` unread: ``.item()`` would
        break the graph, and the RoPE tables cover every position anyway (``_rope_tables``)."""
        if positions is not None and positions.numel():
            if torch.compiler.is_compiling():
                return self.config.max_seq_len
            low, high = torch.stack(torch.aminmax(positions)).tolist()  # one device read
            if low < 0:
                raise ValueError(f"position {low} is negative")
            end = high + 1
        if end > self.config.max_seq_len:
            raise ValueError(f"position {end - 1} exceeds max_seq_len={self.config.max_seq_len}")
        return end

    def _rope_tables(self, L: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """cos/sin (L, rd) of positions 0..L-1: float32, float64 for a float64 model.

        Sliced from the table this call read or built, never from ``self._rope`` read again:
        threads decoding with one model (docs/sampling.md, "Threads") each store what they
        build, and another thread's table, stored in between, can be shorter than ``L``."""
        dtype = wide_dtype(self.embed.weight.dtype)
        rope = self._rope
        if not _rope_covers(rope, L, device, dtype):
            # grown by doubling up to max_seq_len, not built for all of it at once: Dream's
            # 131072 positions took 128 MiB and over a second before a short prompt's first
            # forward. ``compile_for_decoding`` gives the compiled twin every position before
            # compiling (``full_rope_tables``), so its graphs read the table and never build
            # one; a traced build (the model moved to another device since) takes them all.
            rows = 0 if rope is None else rope[0].shape[0]
            full = self.config.max_seq_len
            grown = full if torch.compiler.is_compiling() else max(ROPE_ROWS, 2 * rows)
            rope = self._build_rope(max(L, min(grown, full)), device, dtype)
        cos, sin = rope
        return cos[:L], sin[:L]

    def _build_rope(
        self, n: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """The tables of positions 0..n-1, stored on the model unless the one stored there
        already covers as many (another thread's, built meanwhile): a smaller table would make
        the next long call build again. Callers slice the table returned, not the stored one."""
        rd = self.config.rotary_dim or self.config.head_dim
        rope = rope_cache(n, rd, self.config.rope_theta, device, dtype)
        if not _rope_covers(self._rope, n, device, dtype):
            self._rope = rope
        return rope

    def full_rope_tables(self) -> None:
        """Build the RoPE tables of every position (``max_seq_len``) now, on the device and in
        the dtype of the model's weights, unless the stored ones already cover them: what
        ``compile_for_decoding`` calls before compiling, so that no compiled graph builds the
        table or sees its size change (a recompile) as decoding passes the grown rows. The
        count of non-finite forwards (``nonfinite_forwards``) is made there now too: made by
        the first compiled forward, it was a second compile of every graph."""
        device = self.embed.weight.device
        dtype = wide_dtype(self.embed.weight.dtype)
        self._nonfinite_count(device)
        if not _rope_covers(self._rope, self.config.max_seq_len, device, dtype):
            self._build_rope(self.config.max_seq_len, device, dtype)

    def _position_rope(
        self,
        B: int,
        L: int,
        positions: Tensor | None,
        start: int,
        attn_bias: Tensor | RowChunks | None,
        device: torch.device,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """An explicit layout's ``positions`` on ``device`` (given: (L,), or (B, L) with an
        ``attn_bias``, each row its own; default ``start..start+L-1``) and their RoPE tables:
        (L, hd), or (B, 1, L, hd) per row (broadcast over heads)."""
        given = positions is not None
        if positions is None:
            positions = torch.arange(start, start + L, device=device)
        per_row = positions.dim() == 2  # (B, L): each row its own positions (ragged rows)
        if positions.shape != (L,) and not (per_row and positions.shape == (B, L)):
            raise ValueError(
                f"positions must have shape ({L},) or ({B}, {L}), got {tuple(positions.shape)}"
            )
        if per_row and attn_bias is None:
            raise ValueError("per-row positions (B, L) need an explicit attn_bias")
        if positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool:
            raise ValueError(f"positions must be whole numbers, got {positions.dtype}")
        positions = positions.to(device)
        n = self._positions_end(positions if given else None, start + L)
        cos, sin = self._rope_tables(n, device)
        cos, sin = cos[positions], sin[positions]  # (L, hd), or (B, L, hd) per row
        if per_row:
            cos, sin = cos[:, None], sin[:, None]
        return positions, cos, sin

    def _position_pattern(self, q: Tensor, k: Tensor) -> Tensor | None:
        """The attention mode's pattern between queries at positions ``q`` (L,) and keys at
        positions ``k`` (Lk,): (1, 1, L, Lk) bool, True = may attend (causal: k <= q;
        block-causal: k's block <= q's block); None for bidirectional attention (all keys).
        By position, not by column, so an explicit layout (``positions``) gets the same pattern
        with a cache and without one."""
        mode = self.config.attention
        if mode == "causal":
            return (k[None, :] <= q[:, None])[None, None]
        if mode == "block-causal":
            size = self.config.block_size
            return (k[None, :] // size <= q[:, None] // size)[None, None]
        return None

    def attention_bias(
        self, L: int, attention_mask: Tensor | None, device: torch.device
    ) -> Tensor | None:
        """Boolean SDPA mask (B|1, 1, L, L), True = may attend; None when plain full/causal
        suffices."""
        allowed: Tensor | None = None
        if self.config.attention == "block-causal" or attention_mask is not None:
            cols = torch.arange(L, device=device)
            allowed = self._position_pattern(cols, cols)  # (1, 1, L, L); None: bidirectional
        if attention_mask is not None:
            allowed = _hide_padding(allowed, attention_mask, L)
        return allowed

    def cached_attention_bias(
        self, start: int, L: int, kv_len: int, attention_mask: Tensor | None, device: torch.device
    ) -> Tensor | None:
        """Boolean SDPA mask (B|1, 1, L, kv_len) for queries at positions [start, start + L)
        over keys at [0, kv_len); ``attention_mask`` (B, kv_len) marks real key positions."""
        q = torch.arange(start, start + L, device=device)  # (L,)
        k = torch.arange(kv_len, device=device)  # (Lk,)
        allowed = self._position_pattern(q, k)  # (1, 1, L, Lk); None: bidirectional
        if attention_mask is not None:
            allowed = _hide_padding(allowed, attention_mask, L, start)
        return allowed

    def _explicit_layout(
        self,
        B: int,
        L: int,
        positions: Tensor | None,
        attn_bias: Tensor | RowChunks | None,
        attention_mask: Tensor | None,
        device: torch.device,
    ) -> tuple[Tensor, Tensor, Tensor | RowChunks | None]:
        """RoPE tables (L, hd) at ``positions`` ((B, 1, L, hd) for per-row positions (B, L), as
        over a cache) and the SDPA mask for an explicit ``attn_bias``."""
        positions, cos, sin = self._position_rope(B, L, positions, 0, attn_bias, device)
        if attn_bias is None:  # the mode's pattern by position, as over a cache
            mask = self._position_pattern(positions, positions)  # (1, 1, L, L); None: all
            if attention_mask is not None:
                mask = _hide_padding(mask, attention_mask, L)
            return cos, sin, mask
        if isinstance(attn_bias, RowChunks):  # a sparse layout by row chunks (no padding)
            if attn_bias.mask.shape[-2:] != (L, L) or attention_mask is not None:
                raise ValueError(
                    f"RowChunks must cover ({L}, {L}) without an attention_mask, got "
                    f"{tuple(attn_bias.mask.shape)}"
                )
            return cos, sin, attn_bias
        if attn_bias.dtype != torch.bool or attn_bias.shape[-2:] != (L, L) or attn_bias.dim() != 4:
            raise ValueError(
                f"attn_bias must be a bool tensor (B|1, 1, {L}, {L}), "
                f"got {attn_bias.dtype} {tuple(attn_bias.shape)}"
            )
        mask = attn_bias.to(device)
        if attention_mask is not None:
            mask = _hide_padding(mask, attention_mask, L)
        return cos, sin, mask

    def forward(
        self,
        tokens: Tensor,
        attention_mask: Tensor | None = None,
        *,
        sigma: Tensor | None = None,
        cache: KVCache | None = None,
        start: int = 0,
        positions: Tensor | None = None,
        attn_bias: Tensor | RowChunks | None = None,
        inputs_embeds: Tensor | None = None,
        return_hidden: bool = False,
    ) -> Tensor:
        """tokens (B, L) int64; attention_mask (B, L) bool/int, True/1 = real token.
        -> logits (B, L, V).

        ``sigma`` (B,) is the noise level of each row, read only by ``time_conditioning`` models
        (how they get it without one: ``config.sigma_input``). With ``sigma`` given the output is
        what ``config.output`` says (logits, or SEDD's log-score); without it (samplers and
        evaluators, which know no noise level) it is always denoiser logits (``denoiser_logits``).
        The modulation is per row, so ``cache`` works with a given (or zero) noise level; reading
        it off the canvas (``masked_fraction``) needs the whole canvas and refuses a cache.

        ``positions`` (L,) int64 gives each column its RoPE position (default ``0..L-1``; (B, L)
        with ``attn_bias``: each row its own, cached or not) and
        ``attn_bias`` (B|1, 1, L, L) bool, True = may attend, replaces the attention mode's
        pattern (``attention_mask`` still removes padded keys); without ``attn_bias`` the mode's
        pattern holds between the given positions, as over a cache. Both serve objectives that run
        one sequence twice in a pass, as BD3-LM's ``[x_t ; x_0]`` (``unmask.objectives.bd3lm``).
        With ``cache`` they describe the new columns only: the cache is cut back to ``start``
        slots, the columns go to slots ``[start, start + L)`` and ``attn_bias`` is
        (B|1, 1, L, start + L) over all slots or (B|1, 1, L, L) over the new ones with every
        cached slot visible (``_cached_explicit_layout``; the hybrid decoder verifies and drafts
        in one such forward). ``attn_bias`` may also be a ``RowChunks`` (no cache, no
        ``attention_mask``): such a mask run chunk by chunk over the keys each chunk uses.

        ``inputs_embeds`` (B, L, D) replaces ``embed(tokens)`` as the input vectors, for the
        continuous families (noisy embeddings, latents; ``unmask.objectives.continuous``);
        ``tokens`` still give the shape. ``return_hidden`` returns the final normed hidden
        states (B, L, D) instead of the head's output (an encoder's or denoiser's vectors).

        With ``cache``, ``tokens`` are the positions ``[start, start + L)`` of a longer sequence:
        their keys/values are written into the cache (an empty cache needs ``start == 0``) and
        they attend to every valid cached position ``[0, Lk)``, ``Lk = max(cache.length,
        start + L)``; ``attention_mask`` is then (B, Lk) over those key positions. A cached
        forward of a whole sequence from an empty cache gives the same logits as no cache.
        """
        if tokens.dim() != 2:  # one row as (L,) was "not enough values to unpack"
            raise ValueError(f"tokens must be (B, L) ids, got shape {tuple(tokens.shape)}")
        B, L = tokens.shape
        if cache is None:
            if start:
                raise ValueError("start > 0 needs a cache holding the positions before it")
            _check_attention_mask(attention_mask, B, L)
            if positions is not None or attn_bias is not None:
                cos, sin, mask = self._explicit_layout(
                    B, L, positions, attn_bias, attention_mask, tokens.device
                )
                is_causal = False
            else:
                if L > self.config.max_seq_len:
                    raise ValueError(
                        f"sequence length {L} exceeds max_seq_len={self.config.max_seq_len}"
                    )
                cos, sin = self._rope_tables(L, tokens.device)
                mask = self.attention_bias(L, attention_mask, tokens.device)
                is_causal = self.config.attention == "causal"
        else:
            if isinstance(attn_bias, RowChunks):
                raise ValueError("RowChunks layouts run without a KV cache")
            cos, sin, mask, is_causal = self._cached_layout(
                tokens, attention_mask, cache, start, positions, attn_bias
            )
        level = self._noise_level(tokens, attention_mask, sigma, cache)  # (B,) or None
        cond = None if level is None else self.sigma_embed(level)  # (B, cond_dim)
        if inputs_embeds is not None and inputs_embeds.shape != (B, L, self.config.d_model):
            raise ValueError(
                f"inputs_embeds must have shape ({B}, {L}, {self.config.d_model}), "
                f"got {tuple(inputs_embeds.shape)}"
            )
        # (B, L, D); given vectors (a continuous decoder's, in float32) take the weights' dtype
        dtype = self.embed.weight.dtype
        x = self.embed(tokens) if inputs_embeds is None else inputs_embeds.to(dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, is_causal, cache, i, start, cond)
        if not self.training:
            self._count_nonfinite(x)
        if cond is None:
            return self.norm(x) if return_hidden else self.lm_head(self.norm(x))  # (B, L, V|D)
        shift, scale = self.final_modulation(cond)[:, None].chunk(2, dim=-1)  # (B, 1, D) each
        h = modulate(self.norm(x), shift, scale)  # (B, L, D)
        if return_hidden:
            return h
        out = self.lm_head(h)  # (B, L, V)
        if self.config.output == "sedd_log_score":
            out = sedd_log_score(out, tokens, level, in_place=True)  # (B, L, V), the head's
            if sigma is None:
                out = denoiser_logits(out, self.config, in_place=True)  # the head's own
        return out

    def _count_nonfinite(self, x: Tensor) -> None:
        """Count this forward in ``nonfinite_forwards`` when its final hidden states x (B, L, D)
        hold NaN or infinity (then so do the logits, the norm and head after them), and keep
        which rows did (``nonfinite_rows``), on the device: a few fused reductions, no device
        read, so a decoding step keeps its pace; the decoder reads the count once, when its run
        ends (``check_finite``). The sums are taken in float32: a float16 sum of finite states
        can overflow. ``s - s`` is NaN for a NaN or infinite sum and 0 for any other: two
        kernels where ``isfinite`` and ``logical_not`` were five on a CPU."""
        s = x.sum(dim=(1, 2), dtype=torch.float32)  # (B,)
        rows = (s - s).ne(0)  # (B,) bool
        self._nonfinite_count(x.device).add_(rows.any())
        self._nonfinite_rows = rows
        if not torch.compiler.is_compiling():  # a compiled forward cannot tell its thread
            self._nonfinite_eager = rows
            _THREAD_ROWS.rows[self] = rows

    def _nonfinite_count(self, device: torch.device) -> Tensor:
        """The () int64 count of ``nonfinite_forwards`` on ``device``, made (from 0) when there
        is none there yet (the model's first forward, or its first since it moved). Made as a
        normal tensor even under ``torch.inference_mode``: one made there refused every later
        in-place count outside it ("Inplace update to inference tensor")."""
        count = self._nonfinite
        if count is None or count.device != device:
            with torch.inference_mode(False):
                count = self._nonfinite = torch.zeros((), dtype=torch.long, device=device)
        return count

    @property
    def nonfinite_forwards(self) -> Tensor | None:
        """() int64 on the model's device: how many forwards in eval mode gave NaN or
        infinite outputs so far (None before the first run or forward), less those a caller
        handed out row by row to the runs that shared them (``take_nonfinite_rows``); a device
        tensor, so reading it is a sync. Decoders compare it before and after a run
        (``nonfinite_mark``, ``check_finite``). Training forwards are not counted
        (``unmask.train_guards`` watches the loss)."""
        return self._nonfinite

    @property
    def nonfinite_rows(self) -> Tensor | None:
        """(B,) bool on the device: the rows of the last forward in eval mode whose outputs
        held NaN or infinity (None before the first), whichever thread ran it. A new tensor
        each forward; a caller that splits one forward among runs
        (``unmask.sampling.protocol.step_together``) takes its own thread's
        (``take_nonfinite_rows``)."""
        return self._nonfinite_rows

    def _noise_level(
        self,
        tokens: Tensor,
        attention_mask: Tensor | None,
        sigma: Tensor | None,
        cache: KVCache | None,
    ) -> Tensor | None:
        """The (B,) noise level the modulation reads, per ``config.sigma_input``; None when the
        model has no time conditioning."""
        cfg = self.config
        if not cfg.time_conditioning:
            return None
        B = tokens.shape[0]
        if sigma is not None:
            if sigma.shape != (B,):
                raise ValueError(f"sigma must have shape ({B},), got {tuple(sigma.shape)}")
            sigma = sigma.to(tokens.device)
        if cfg.sigma_input == "zero":  # MDLM's released checkpoints: time conditioning was off
            return torch.zeros(B, device=tokens.device)
        if sigma is not None:
            return sigma
        if cfg.sigma_input == "given":
            raise UserError(
                "this model is conditioned on the noise level: pass sigma (B,) to forward"
            )
        if cache is not None:
            raise UserError(
                "this model reads its noise level off the whole canvas, which a KV-cached call "
                "does not see; call it without a KV cache (the sampler's cache 'none')"
            )
        wide = wide_dtype(self.embed.weight.dtype)  # float64 for a float64 model
        return masked_fraction_sigma(tokens, cfg.mask_id, attention_mask, dtype=wide)

    def _cached_layout(
        self,
        tokens: Tensor,
        attention_mask: Tensor | None,
        cache: KVCache,
        start: int,
        positions: Tensor | None,
        attn_bias: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor | None, bool]:
        """RoPE tables and attention mask for positions [start, start + L) over the cached keys;
        advances ``cache.length``."""
        L = tokens.shape[1]
        if positions is not None or attn_bias is not None:
            return self._cached_explicit_layout(
                tokens, attention_mask, cache, start, positions, attn_bias
            )
        if not 0 <= start <= cache.length:
            raise ValueError(
                f"start={start} leaves a gap after the {cache.length} cached positions"
            )
        kv_len = max(cache.length, start + L)
        if kv_len > self.config.max_seq_len:
            raise ValueError(
                f"sequence length {kv_len} exceeds max_seq_len={self.config.max_seq_len}"
            )
        _check_attention_mask(attention_mask, tokens.shape[0], kv_len)
        cache.length = kv_len
        cos, sin = self._rope_tables(start + L, tokens.device)
        cos, sin = cos[start:], sin[start:]  # (L, hd): the rotations of positions start..start+L-1
        if start == 0 and kv_len == L:  # the whole sequence: exactly the uncached computation
            return (
                cos,
                sin,
                self.attention_bias(L, attention_mask, tokens.device),
                self.config.attention == "causal",
            )
        return (
            cos,
            sin,
            self.cached_attention_bias(start, L, kv_len, attention_mask, tokens.device),
            False,
        )

    def _cached_explicit_layout(
        self,
        tokens: Tensor,
        attention_mask: Tensor | None,
        cache: KVCache,
        start: int,
        positions: Tensor | None,
        attn_bias: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor | None, bool]:
        """An explicit layout over a cache: the cache is cut back to its first ``start`` slots
        (slot j holds position j), the L new columns are written to slots [start, start + L)
        with their RoPE ``positions``, and their queries see the keys of slots [0, start + L)
        as ``attn_bias`` says: (B|1, 1, L, start + L), or (B|1, 1, L, L) over the new keys with
        every cached slot visible; None = the attention mode's pattern by position. Serves
        decoders that verify and draft in one forward (``unmask.sampling.hybrid``).
        ``positions`` may be (B, L), one row of positions per batch row (with ``attn_bias``):
        rows whose committed lengths differ share one cache (``unmask.sampling.ragged``)."""
        B, L, device = tokens.shape[0], tokens.shape[1], tokens.device
        if not 0 <= start <= cache.length:
            raise ValueError(
                f"start={start} leaves a gap after the {cache.length} cached positions"
            )
        positions, cos, sin = self._position_rope(B, L, positions, start, attn_bias, device)
        kv_len = start + L
        if attn_bias is None:
            kpos = torch.cat([torch.arange(start, device=device), positions])  # (Lk,)
            pattern = self._position_pattern(positions, kpos)  # (1, 1, L, Lk)
            mask = pattern if pattern is not None else torch.ones(
                1, 1, L, kv_len, dtype=torch.bool, device=device)
        else:
            if (
                attn_bias.dtype != torch.bool
                or attn_bias.dim() != 4
                or attn_bias.shape[-2] != L
                # two comparisons, not ``in (L, kv_len)``: traced by torch.compile, the tuple
                # test of symbolic sizes refused a valid (1, 1, 1, 1) mask (--draft --compile)
                or (attn_bias.shape[-1] != L and attn_bias.shape[-1] != kv_len)
            ):
                raise ValueError(
                    f"attn_bias must be a bool tensor (B|1, 1, {L}, {kv_len} or {L}), "
                    f"got {attn_bias.dtype} {tuple(attn_bias.shape)}"
                )
            mask = attn_bias.to(device)
            if mask.shape[-1] != kv_len:  # every cached slot visible
                mask = torch.cat([mask.new_ones(*mask.shape[:-1], start), mask], dim=-1)
        _check_attention_mask(attention_mask, B, kv_len)
        if attention_mask is not None:
            mask = _hide_padding(mask, attention_mask, L, start)
        cache.length = kv_len
        return cos, sin, mask, False


class NonFiniteOutput(UserError):
    """A decoding run whose model gave NaN or infinite outputs (``check_finite``): its tokens
    are garbage (every proposal's score is NaN), so the run refuses to return them."""


def _counting(model: Any) -> Transformer | None:
    """The ``Transformer`` that counts ``model``'s non-finite forwards: ``model`` itself, the
    module a compiled twin wraps (``_orig_mod``) or the model a score function wraps
    (``__wrapped__``); None for any other predictor (a test double, a Hugging Face model)."""
    for _ in range(4):
        if isinstance(model, Transformer):
            return model
        model = getattr(model, "_orig_mod", None) or getattr(model, "__wrapped__", None)
    return None


def nonfinite_mark(model: Any) -> Tensor | None:
    """Where ``model``'s count of non-finite forwards stands now (``nonfinite_forwards``), for
    ``check_finite`` after a run: a copy on the device (no device read; the count is made
    there, from 0, before the model's first forward); None for a predictor that does not
    count them."""
    counting = _counting(model)
    if counting is None:
        return None
    count = counting.nonfinite_forwards
    if count is None:  # made where the forward's last hidden states will be
        last = next(counting.norm.parameters(), counting.embed.weight)
        count = counting._nonfinite_count(last.device)
    return count.clone()


class _ThreadRows(threading.local):
    """Per thread, each model's flags of the last forward that thread ran (not compiled):
    what ``take_nonfinite_rows`` hands out, so that a forward another thread runs on the
    same model in between cannot be taken for this thread's (its NaN then went unseen)."""

    def __init__(self) -> None:
        self.rows: weakref.WeakKeyDictionary[Transformer, Tensor] = weakref.WeakKeyDictionary()


_THREAD_ROWS = _ThreadRows()


def nonfinite_rows_mark(model: Any) -> tuple[Tensor | None, Tensor | None] | None:
    """Where ``model``'s row flags stand now, for ``take_nonfinite_rows`` after a forward: an
    opaque pair (this thread's last flags, the model's last: ``Transformer.nonfinite_rows``);
    None for a predictor that does not count them."""
    counting = _counting(model)
    if counting is None:
        return None
    return _THREAD_ROWS.rows.get(counting), counting.nonfinite_rows


def take_nonfinite_rows(model: Any, before: tuple[Tensor | None, Tensor | None] | None,
                        batch: int) -> Tensor | None:
    """The (batch,) bool flags of the forward ``model`` made since ``nonfinite_rows_mark``
    returned ``before``, taken off its count (``nonfinite_forwards``; on the device, no read): for a
    caller that splits one forward among runs and hands each run its own rows
    (``unmask.sampling.protocol.step_together``), so that one run's NaN rows count against
    that run only. The forward is this thread's own: a forward that another thread ran on
    the model since is never taken (a compiled forward cannot tell its thread: the model's
    last is taken, so threads sharing a compiled twin can still take each other's). None when
    no such forward flagged anything (a predictor that does not count, a forward in training
    mode, a forward of another batch, another thread's forward)."""
    counting = _counting(model)
    count = None if counting is None else counting.nonfinite_forwards
    if counting is None or count is None:
        return None
    mine_before, last_before = (None, None) if before is None else before
    rows = _THREAD_ROWS.rows.get(counting)
    if rows is None or rows is mine_before:  # none run here since: a compiled forward?
        rows = counting.nonfinite_rows
        if rows is last_before or rows is counting._nonfinite_eager:  # none, or another's
            return None
    if rows is None or rows.shape[0] != batch:
        return None
    count.add_(rows.any(), alpha=-1)  # (a bool is refused by sub_)
    return rows


def check_finite(model: Any, mark: Tensor | int | None) -> None:
    """Raise ``NonFiniteOutput`` (one line) when ``model`` gave NaN or infinite outputs since
    ``nonfinite_mark`` returned ``mark``: one device read (at a run's result, and before each
    callback it calls). Without it such a run ended quietly with garbage (the commit loop took
    the first allowed id at every position; a causal run, its first allowed token)."""
    counting = _counting(model)
    count = None if counting is None else counting.nonfinite_forwards
    if count is None or mark is None:
        return
    n = int(count - mark)  # a model moved to another device since starts again from 0: n < 0
    if n > 0:
        raise nonfinite_error(counting, n)


def nonfinite_error(model: Any, n: int) -> NonFiniteOutput:
    """The one-line ``NonFiniteOutput`` of a run whose ``model`` gave NaN or infinite outputs
    in ``n`` of its forward passes (``check_finite``; the server's whole-batch run, for the
    requests whose rows were flagged)."""
    counting = _counting(model)
    hint = (
        "float16 overflows: load the model in bf16 or fp32, --dtype bf16"
        if counting is not None and counting.embed.weight.dtype == torch.float16
        else "broken weights, or activations beyond the range of the dtype"
    )
    return NonFiniteOutput(
        f"the model gave NaN or infinite outputs in {plural(n, 'forward pass', 'forward passes')}"
        f" of this run ({hint}): its tokens would be garbage, so none are returned"
    )


MASKED_FRACTION_EPS = 1e-3
"""The masked fraction is clamped to [eps, 1 - eps] before it becomes a noise level (sigma in
[0.001, 6.9]: SEDD's log-linear schedule with eps = 1e-3 spans the same range)."""


# The weight initialisers ``nn.Linear`` / ``nn.Embedding`` call from their constructors.
_INIT_FUNCTIONS = tuple(
    "uniform_ normal_ trunc_normal_ constant_ zeros_ ones_ xavier_uniform_ xavier_normal_ "
    "kaiming_uniform_ kaiming_normal_".split()
)


@contextlib.contextmanager
def _initialisers_off() -> Iterator[None]:
    """``torch.nn.init``'s functions as no-ops for the duration (what Hugging Face's
    ``no_init_weights`` does): on meta tensors they only cost time."""
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    try:
        for name in _INIT_FUNCTIONS:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def meta_model(config: ModelConfig) -> Transformer:
    """The model for ``config`` on the meta device, weights neither allocated nor drawn: to
    count parameters, estimate memory, or ``materialise`` and fill from a checkpoint. Drawing
    init values on meta tensors goes through ``torch._refs``, whose first call imports
    TorchDynamo: 6-8 s of every command's start-up on a 2-core CPU."""
    with torch.device("meta"), _initialisers_off():
        return Transformer(config)


def materialise(module: nn.Module, device: str | torch.device) -> None:
    """Give every meta parameter and buffer of ``module`` uninitialised storage on ``device``,
    in place, keeping shared (tied) parameters shared. ``Module.to_empty`` does the same via
    ``empty_like`` on the meta tensors, whose reference implementation imports SymPy on first
    use (2-3 s of start-up); the weights are overwritten from a checkpoint right after."""
    made: dict[int, Tensor] = {}  # id of a meta tensor -> its replacement (ties stay tied)
    for sub in module.modules():
        for table in (sub._parameters, sub._buffers):
            for name, t in table.items():
                if t is None or not t.is_meta:
                    continue
                if id(t) not in made:
                    new = torch.empty(t.shape, dtype=t.dtype, device=device)
                    if isinstance(t, nn.Parameter):
                        new = nn.Parameter(new, requires_grad=t.requires_grad)
                    made[id(t)] = new
                table[name] = made[id(t)]


def masked_fraction_sigma(
    tokens: Tensor, mask_id: int, attention_mask: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(B,) total noise sigma = -log(1 - m) of an absorbing process whose rows have a fraction m of
    [MASK] among their real tokens (P(masked) = 1 - e^-sigma, as in SEDD's and MDLM's forward
    process); the noise level a sampler that passes none most likely means. In ``dtype``
    (float64 for a float64 model)."""
    masked = tokens == mask_id  # (B, L)
    if attention_mask is None:
        frac = masked.to(dtype).mean(dim=1)
    else:
        real = attention_mask.bool()
        frac = (masked & real).sum(dim=1).to(dtype) / real.sum(dim=1).clamp(min=1).to(dtype)
    frac = frac.clamp(MASKED_FRACTION_EPS, 1 - MASKED_FRACTION_EPS)
    return -torch.log1p(-frac)  # (B,)


def log_expm1(x: Tensor) -> Tensor:
    """log(e^x - 1) for x > 0, finite at any x (``log(expm1(x))`` overflows to inf from x = 89
    in float32). Below 50 it is ``log(expm1(x))`` bit for bit; from 50 on it is x, which that
    rounds to in float64 too (x + log(1 - e^-x): e^-50 is 2e-22, below half an ulp of 50)."""
    return torch.where(x < 50.0, torch.log(torch.expm1(x.clamp(max=50.0))), x)


def sedd_log_score(
    head: Tensor, tokens: Tensor, sigma: Tensor, *, in_place: bool = False
) -> Tensor:
    """SEDD's log concrete score from the head output (B, L, V) for the absorbing graph (Lou et al.
    2024, ``scale_by_sigma``): head - log(e^sigma - 1) - log(V - 1), then 0 at each position's own
    token (the ratio p(x)/p(x) = 1). At a masked position the entry of token y is
    log p(x0 = y | xt) - log(e^sigma - 1) up to the network's error, so it is the denoiser's logits
    up to a per-row constant. ``in_place``: written into ``head`` (the forward's own fresh
    output, which nothing else reads; the head's backward does not need it)."""
    V = head.shape[-1]
    wide = wide_dtype(head.dtype)  # float64 for a float64 model
    # (B, 1, 1); log(expm1) overflowed from sigma 89 on (float32): every score -inf
    esigm1_log = log_expm1(sigma.to(wide)).to(head.dtype)[:, None, None]
    # in place after the first difference (or from the start): the same values, at most one
    # (B, L, V) tensor written where three were (at a 50k vocabulary each was ~0.2 s of a
    # 1,024-token step)
    score = head.sub_(esigm1_log) if in_place else head - esigm1_log
    score.sub_(math.log(V - 1))
    return score.scatter_(-1, tokens[..., None], 0.0)  # (B, L, V)


def denoiser_logits(output: Tensor, config: ModelConfig, *, in_place: bool = False) -> Tensor:
    """Denoiser logits (B, L, V) from a model's output (B, L, V) with ``sigma`` given.

    ``logits``: unchanged. ``sedd_log_score``: the log-score with the [MASK] column at -inf
    (there it holds the ratio of a masked position to itself, 0, not a prediction); at a masked
    position its softmax is p(x0 | xt), because SEDD's score of unmasking to y is
    p(x0 = y | xt) / (e^sigma - 1) (Ou et al. 2024, Thm. 1). Unmasked positions carry no
    prediction in either case. ``in_place``: written into ``output`` (the forward's own).
    """
    if config.output == "logits":
        return output
    column = torch.tensor([config.mask_id], device=output.device)
    fill = output.index_fill_ if in_place else output.index_fill
    return fill(-1, column, float("-inf"))
