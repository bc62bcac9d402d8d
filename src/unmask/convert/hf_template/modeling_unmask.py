"""An unmask Transformer for Hugging Face ``transformers``: token ids -> logits.

Written into a model folder by ``unmask convert RUN OUT --to transformers`` (see unmask's
docs/models.md, "Export to transformers"). It needs only ``torch`` and ``transformers``
and computes the same forward pass as ``unmask.model.Transformer``: RMSNorm (or bias-free
LayerNorm) in float32, rotary embeddings (half-split layout), grouped-query attention
through ``scaled_dot_product_attention``, a SwiGLU (or GELU) MLP, optionally tied
embeddings, the attention modes ``bidirectional``, ``causal`` and ``block-causal``, and
for DiT-style models (MDLM, SEDD) adaLN-Zero conditioning on the noise level ``sigma``.

- ``UnmaskModel`` (``AutoModel``): the final-norm hidden states (B, L, D).
- ``UnmaskForMaskedLM`` (``AutoModelForMaskedLM``): logits (B, L, V) at every position; a
  masked-diffusion sampler puts ``config.mask_token_id`` where tokens are unknown and reads
  the logits there. With ``config.logit_shift`` the logits at position i predict token i+1.

``attention_mask`` (B, L), 1 = real token, keeps padded keys out of attention; a padded row
gives the same logits at its real positions as the row alone. ``sigma`` (B,) is the noise
level, read only when ``config.time_conditioning`` (see ``config.sigma_input``); with it the
output is what ``config.output`` says, without it always denoiser logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput

from .configuration_unmask import SIGMA_FREQ_DIM, UnmaskConfig

MASKED_FRACTION_EPS = 1e-3
"""The masked fraction is clamped to [eps, 1 - eps] before it becomes a noise level."""


class UnmaskRMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich 2019), computed in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).type_as(x)


class UnmaskLayerNorm(nn.Module):
    """LayerNorm with a weight and no bias (the DiT of MDLM/SEDD), computed in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = F.layer_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return (xf * self.weight.float()).type_as(x)


def make_norm(config: UnmaskConfig) -> nn.Module:
    cls = UnmaskLayerNorm if config.norm == "layer" else UnmaskRMSNorm
    return cls(config.d_model, config.norm_eps)


def rope_tables(
    seq_len: int, head_dim: int, theta: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (L, hd) of rotary embeddings (Su et al. 2021), half-split layout as in Llama."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    )
    t = torch.arange(seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)  # (L, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (L, hd)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, L, hd) by position; cos/sin are (L, hd)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).type_as(x)


def attention_bias(
    config: UnmaskConfig, L: int, attention_mask: torch.Tensor | None, device: torch.device
) -> torch.Tensor | None:
    """Boolean SDPA mask (B|1, 1, L, L), True = may attend; None when plain full/causal suffices."""
    allowed = None
    if config.attention == "block-causal":
        blk = torch.arange(L, device=device) // config.block_size
        allowed = (blk[None, :] <= blk[:, None])[None, None]  # (1, 1, L, L)
    elif config.attention == "causal" and attention_mask is not None:
        allowed = torch.ones(L, L, dtype=torch.bool, device=device).tril()[None, None]
    if attention_mask is not None:
        keys = attention_mask[:, None, None, :].bool()  # (B, 1, 1, L)
        allowed = keys if allowed is None else allowed & keys
        # A padded query row that sees no key would give NaN; let it see itself.
        allowed = allowed | torch.eye(L, dtype=torch.bool, device=device)[None, None]
    return allowed


def masked_fraction_sigma(
    tokens: torch.Tensor, mask_id: int, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """(B,) total noise sigma = -log(1 - m) of an absorbing process whose rows have a fraction m
    of [MASK] among their real tokens."""
    masked = tokens == mask_id  # (B, L)
    if attention_mask is None:
        frac = masked.float().mean(dim=1)
    else:
        real = attention_mask.bool()
        frac = (masked & real).sum(dim=1).float() / real.sum(dim=1).clamp(min=1).float()
    frac = frac.clamp(MASKED_FRACTION_EPS, 1 - MASKED_FRACTION_EPS)
    return -torch.log1p(-frac)


def noise_level(
    config: UnmaskConfig,
    tokens: torch.Tensor,
    attention_mask: torch.Tensor | None,
    sigma: torch.Tensor | None,
) -> torch.Tensor | None:
    """The (B,) noise level the modulation reads, per ``config.sigma_input``; None without time
    conditioning."""
    if not config.time_conditioning:
        return None
    B = tokens.shape[0]
    if sigma is not None:
        if sigma.shape != (B,):
            raise ValueError(f"sigma must have shape ({B},), got {tuple(sigma.shape)}")
        sigma = sigma.to(tokens.device)
    if config.sigma_input == "zero":  # MDLM's released checkpoints: time conditioning was off
        return torch.zeros(B, device=tokens.device)
    if sigma is not None:
        return sigma
    if config.sigma_input == "given":
        raise ValueError("this model is conditioned on the noise level: pass sigma (B,) to forward")
    return masked_fraction_sigma(tokens, config.mask_token_id, attention_mask)


def log_expm1(x: torch.Tensor) -> torch.Tensor:
    """log(e^x - 1) for x > 0, finite at any x (``log(expm1(x))`` overflows from x = 89 in
    float32); equal to it below 50 (unmask.model.log_expm1: this file cannot import unmask)."""
    return torch.where(x < 50.0, torch.log(torch.expm1(x.clamp(max=50.0))), x)


def sedd_log_score(head: torch.Tensor, tokens: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """SEDD's absorbing-graph log concrete score (Lou et al. 2024) from the head output (B, L, V):
    head - log(e^sigma - 1) - log(V - 1), 0 at each position's own token."""
    V = head.shape[-1]
    esigm1_log = log_expm1(sigma.float()).to(head.dtype)[:, None, None]  # (B, 1, 1)
    score = head - esigm1_log - math.log(V - 1)
    return score.scatter(-1, tokens[..., None], torch.zeros_like(score[..., :1]))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x·(1 + scale) + shift, with shift/scale (B, 1, D) per row."""
    return x * (1 + scale) + shift


class UnmaskAttention(nn.Module):
    def __init__(self, config: UnmaskConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = config.n_heads, config.n_kv_heads
        self.head_dim = config.d_model // config.n_heads
        d, hd = config.d_model, self.head_dim
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=config.qkv_bias)
        self.k_proj = nn.Linear(d, self.n_kv_heads * hd, bias=config.qkv_bias)
        self.v_proj = nn.Linear(d, self.n_kv_heads * hd, bias=config.qkv_bias)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)
        self.o_proj.residual_out = True  # scaled init (_init_weights)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
    ) -> torch.Tensor:
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, L, hd)
        kv_shape = (B, L, self.n_kv_heads, self.head_dim)
        k = self.k_proj(x).view(kv_shape).transpose(1, 2)  # (B, Hkv, L, hd)
        v = self.v_proj(x).view(kv_shape).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.n_kv_heads != self.n_heads:
            rep = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(rep, dim=1)  # (B, H, L, hd)
            v = v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and mask is None
        )
        return self.o_proj(y.transpose(1, 2).reshape(B, L, -1))


class UnmaskSwiGLU(nn.Module):
    """Gated MLP (Shazeer 2020): down(silu(gate(x)) * up(x))."""

    def __init__(self, config: UnmaskConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.up_proj = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.down_proj = nn.Linear(config.ffn_hidden, config.d_model, bias=False)
        self.down_proj.residual_out = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class UnmaskGeluMLP(nn.Module):
    """down(gelu_tanh(up(x))) with biases (the DiT of MDLM/SEDD, GPT-2)."""

    def __init__(self, config: UnmaskConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(config.d_model, config.ffn_hidden, bias=True)
        self.down_proj = nn.Linear(config.ffn_hidden, config.d_model, bias=True)
        self.down_proj.residual_out = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))


class UnmaskSigmaEmbedding(nn.Module):
    """Noise level sigma (B,) -> (B, cond_dim): sinusoidal features ([cos, sin], max period
    10000) through Linear, SiLU, Linear, SiLU (the DiT timestep embedder of MDLM/SEDD)."""

    def __init__(self, config: UnmaskConfig) -> None:
        super().__init__()
        self.proj_in = nn.Linear(SIGMA_FREQ_DIM, config.cond_dim, bias=True)
        self.proj_out = nn.Linear(config.cond_dim, config.cond_dim, bias=True)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        half = SIGMA_FREQ_DIM // 2
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=sigma.device, dtype=torch.float32) / half
        )
        args = sigma.float()[:, None] * freqs[None]  # (B, half)
        feats = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.proj_in.weight.dtype)
        return F.silu(self.proj_out(F.silu(self.proj_in(feats))))  # (B, cond_dim)


class UnmaskBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then + mlp(norm(x)); with a conditioning vector,
    adaLN-Zero shifts, scales and gates both sublayers (Peebles & Xie 2023)."""

    def __init__(self, config: UnmaskConfig) -> None:
        super().__init__()
        self.attn_norm = make_norm(config)
        self.attn = UnmaskAttention(config)
        self.mlp_norm = make_norm(config)
        self.mlp = UnmaskGeluMLP(config) if config.mlp == "gelu" else UnmaskSwiGLU(config)
        if config.time_conditioning:
            self.modulation = nn.Linear(config.cond_dim, 6 * config.d_model, bias=True)
            self.modulation.zero_init = True

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        cond: torch.Tensor | None,
    ) -> torch.Tensor:
        if cond is None:
            x = x + self.attn(self.attn_norm(x), cos, sin, mask, is_causal)
            return x + self.mlp(self.mlp_norm(x))
        mod = self.modulation(cond)[:, None]  # (B, 1, 6·D)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)  # (B, 1, D)
        x = x + gate1 * self.attn(
            modulate(self.attn_norm(x), shift1, scale1), cos, sin, mask, is_causal
        )
        return x + gate2 * self.mlp(modulate(self.mlp_norm(x), shift2, scale2))


class UnmaskPreTrainedModel(PreTrainedModel):
    config_class = UnmaskConfig
    base_model_prefix = "model"
    _no_split_modules = ["UnmaskBlock"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """unmask's init: N(0, init_std), residual outputs (``o_proj``, ``down_proj``) scaled by
        1/sqrt(2·n_layers) (GPT-2), zero biases, unit norms, zero adaLN modulation."""
        std = self.config.init_std
        if isinstance(module, (UnmaskRMSNorm, UnmaskLayerNorm)):
            module.weight.fill_(1.0)
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
        elif isinstance(module, nn.Linear):
            scale = (
                math.sqrt(2 * self.config.n_layers)
                if getattr(module, "residual_out", False)
                else 1.0
            )
            module.weight.normal_(0.0, std / scale)
            if getattr(module, "zero_init", False):
                module.weight.zero_()
            if module.bias is not None:
                module.bias.zero_()


class UnmaskModel(UnmaskPreTrainedModel):
    """Embedding, blocks and final norm: token ids (B, L) -> hidden states (B, L, D)."""

    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]  # the head of UnmaskForMaskedLM

    def __init__(self, config: UnmaskConfig) -> None:
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(UnmaskBlock(config) for _ in range(config.n_layers))
        self.norm = make_norm(config)
        if config.time_conditioning:
            self.sigma_embed = UnmaskSigmaEmbedding(config)
            # shift, scale
            self.final_modulation = nn.Linear(config.cond_dim, 2 * config.d_model, bias=True)
            self.final_modulation.zero_init = True
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        sigma: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutput | tuple:
        """input_ids (B, L); attention_mask (B, L), 1 = real token; sigma (B,) the noise level
        (time-conditioned models) -> last_hidden_state (B, L, D), the input of the output head."""
        config = self.config
        output_hidden_states = (
            config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = config.return_dict if return_dict is None else return_dict
        B, L = input_ids.shape
        if L > config.max_seq_len:
            raise ValueError(f"sequence length {L} exceeds max_seq_len={config.max_seq_len}")
        cos, sin = rope_tables(
            L, config.d_model // config.n_heads, config.rope_theta, input_ids.device
        )
        mask = attention_bias(config, L, attention_mask, input_ids.device)
        is_causal = config.attention == "causal"
        level = noise_level(config, input_ids, attention_mask, sigma)  # (B,) or None
        cond = None if level is None else self.sigma_embed(level)  # (B, cond_dim)
        x = self.embed(input_ids)  # (B, L, D)
        states = [x] if output_hidden_states else None
        for layer in self.layers:
            x = layer(x, cos, sin, mask, is_causal, cond)
            if states is not None:
                states.append(x)
        x = self.norm(x)
        if cond is not None:
            shift, scale = self.final_modulation(cond)[:, None].chunk(2, dim=-1)  # (B, 1, D) each
            x = modulate(x, shift, scale)
        if not return_dict:
            return (x, tuple(states)) if states is not None else (x,)
        return BaseModelOutput(
            last_hidden_state=x, hidden_states=tuple(states) if states is not None else None
        )


class UnmaskForMaskedLM(UnmaskPreTrainedModel):
    """``UnmaskModel`` plus the output projection: token ids (B, L) -> logits (B, L, V)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed.weight"}

    def __init__(self, config: UnmaskConfig) -> None:
        super().__init__(config)
        self.model = UnmaskModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=config.head_bias)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        sigma: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskedLMOutput | tuple:
        """input_ids (B, L) -> logits (B, L, V). ``labels`` (B, L), -100 = ignored, gives the mean
        cross-entropy of the labelled positions (shifted by one when ``config.logit_shift``).
        With ``sigma`` a time-conditioned model returns ``config.output`` (logits or SEDD's
        log-score); without it, denoiser logits."""
        config = self.config
        return_dict = config.return_dict if return_dict is None else return_dict
        out = self.model(
            input_ids,
            attention_mask,
            sigma,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.lm_head(out.last_hidden_state)  # (B, L, V)
        if config.time_conditioning and config.output == "sedd_log_score":
            logits = sedd_log_score(
                logits, input_ids, noise_level(config, input_ids, attention_mask, sigma)
            )
            if sigma is None:  # denoiser logits: the [MASK] column holds no prediction
                logits = logits.index_fill(
                    -1, torch.tensor([config.mask_token_id], device=logits.device), float("-inf")
                )
        loss = None
        if labels is not None:
            pred, target = (
                (logits[:, :-1], labels[:, 1:]) if config.logit_shift else (logits, labels)
            )
            loss = F.cross_entropy(
                pred.float().reshape(-1, pred.shape[-1]), target.reshape(-1), ignore_index=-100
            )
        if not return_dict:
            rest = (logits, out.hidden_states) if out.hidden_states is not None else (logits,)
            return (loss, *rest) if loss is not None else rest
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


# save_pretrained copies this file (and configuration_unmask.py) into the folder it writes only
# for a class registered for an Auto class: transformers 4.x registered none of a model loaded
# from a local folder, so a saved fine-tune named modeling_unmask.py in auto_map without it.
UnmaskModel.register_for_auto_class("AutoModel")
UnmaskForMaskedLM.register_for_auto_class("AutoModelForMaskedLM")
