"""The one transformer: token ids -> logits. Nothing else.

RMSNorm, rotary position embeddings (RoPE), grouped-query attention through
``torch.nn.functional.scaled_dot_product_attention``, SwiGLU MLP, optional tied
embeddings. Attention is ``bidirectional`` (masked diffusion, LLaDA/MDLM),
``causal`` (the autoregressive baseline) or ``block-causal`` (bidirectional inside
a block of ``block_size`` tokens, causal across blocks; BD3-LM). A key-padding mask
(``attention_mask``, True = real token) keeps padded positions out of attention, so a
padded row gives the same logits at its real positions as the row alone.

Losses, noise, sampling, checkpoint formats and parallelism live elsewhere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unmask.config import ModelConfig


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich 2019), computed in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).type_as(x)


def rope_cache(seq_len: int, head_dim: int, theta: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos/sin tables of rotary embeddings (Su et al. 2021), half-split layout as in Llama/HF."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    t = torch.arange(seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)  # (L, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (L, hd)
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, L, hd) by position; cos/sin are (L, hd)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, is_causal: bool) -> Tensor:
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, L, hd)
        k = self.k_proj(x).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, L, hd)
        v = self.v_proj(x).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.n_kv_heads != self.n_heads:
            rep = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(rep, dim=1)  # (B, H, L, hd)
            v = v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None)
        return self.o_proj(y.transpose(1, 2).reshape(B, L, -1))


class SwiGLU(nn.Module):
    """Gated MLP of Shazeer (2020): down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, is_causal: bool) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, is_causal)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """Pre-norm transformer mapping token ids (B, L) to logits (B, L, V)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self._rope: tuple[Tensor, Tensor] | None = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Explicit init: N(0, init_std) for matrices, residual outputs scaled by 1/sqrt(2·n_layers)
        (GPT-2), zeros for biases, ones for norms."""
        std = self.config.init_std
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                p.normal_(0.0, std / math.sqrt(2 * self.config.n_layers))
            else:
                p.normal_(0.0, std)

    def _rope_tables(self, L: int, device: torch.device) -> tuple[Tensor, Tensor]:
        if self._rope is None or self._rope[0].shape[0] < L or self._rope[0].device != device:
            n = max(L, self.config.max_seq_len)
            self._rope = rope_cache(n, self.config.head_dim, self.config.rope_theta, device)
        cos, sin = self._rope
        return cos[:L], sin[:L]

    def attention_bias(self, L: int, attention_mask: Tensor | None, device: torch.device) -> Tensor | None:
        """Boolean SDPA mask (B|1, 1, L, L), True = may attend; None when plain full/causal suffices."""
        mode = self.config.attention
        allowed: Tensor | None = None
        if mode == "block-causal":
            blk = torch.arange(L, device=device) // self.config.block_size
            allowed = (blk[None, :] <= blk[:, None])[None, None]  # (1, 1, L, L)
        elif mode == "causal" and attention_mask is not None:
            allowed = torch.ones(L, L, dtype=torch.bool, device=device).tril()[None, None]
        if attention_mask is not None:
            keys = attention_mask[:, None, None, :].bool()  # (B, 1, 1, L)
            allowed = keys if allowed is None else allowed & keys
            # A padded query row that sees no key would give NaN; let it see itself.
            eye = torch.eye(L, dtype=torch.bool, device=device)[None, None]
            allowed = allowed | eye
        return allowed

    def forward(self, tokens: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """tokens (B, L) int64; attention_mask (B, L) bool/int, True/1 = real token. -> logits (B, L, V)."""
        B, L = tokens.shape
        if L > self.config.max_seq_len:
            raise ValueError(f"sequence length {L} exceeds max_seq_len={self.config.max_seq_len}")
        cos, sin = self._rope_tables(L, tokens.device)
        mask = self.attention_bias(L, attention_mask, tokens.device)
        is_causal = self.config.attention == "causal"
        x = self.embed(tokens)  # (B, L, D)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, is_causal)
        return self.lm_head(self.norm(x))  # (B, L, V)
