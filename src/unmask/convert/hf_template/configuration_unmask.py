"""Configuration of an unmask Transformer for Hugging Face ``transformers``.

Written into a model folder by ``unmask convert RUN OUT --to transformers`` (see unmask's
docs/models.md, "Export to transformers"). It needs only ``torch`` and ``transformers``;
load with ``trust_remote_code=True``. The field names are unmask's
``ModelConfig`` names; ``attribute_map`` gives the usual transformers names as aliases.
"""

from __future__ import annotations

from transformers import PretrainedConfig

CHOICES = {
    "attention": ("bidirectional", "causal", "block-causal"),
    "norm": ("rms", "layer"),
    "mlp": ("swiglu", "gelu"),
    "sigma_input": ("given", "zero", "masked_fraction"),
    "output": ("logits", "sedd_log_score"),
}
SIGMA_FREQ_DIM = 256
"""Sinusoidal features of the noise level that feed the sigma-embedding MLP."""


class UnmaskConfig(PretrainedConfig):
    """Shape and facts of an unmask masked-diffusion (or autoregressive) Transformer.

    ``mask_token_id`` is the ``[MASK]`` id the model fills in; ``attention`` is
    ``bidirectional`` (masked diffusion), ``causal`` (autoregressive) or ``block-causal``
    (bidirectional inside blocks of ``block_size`` tokens, causal across blocks; BD3-LM);
    ``logit_shift`` says that the logits at position i predict token i+1 (Dream-style).
    DiT-style models (MDLM, SEDD) use ``norm="layer"``, ``mlp="gelu"``, ``head_bias`` and
    ``time_conditioning`` (adaLN-Zero on the noise level ``sigma``, width ``cond_dim``; where
    sigma comes from: ``sigma_input``; what a forward with sigma returns: ``output``).
    """

    model_type = "unmask"
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads",
        "num_key_value_heads": "n_kv_heads",
        "intermediate_size": "ffn_hidden",
        "max_position_embeddings": "max_seq_len",
        "rms_norm_eps": "norm_eps",
        "initializer_range": "init_std",
    }

    def __init__(
        self,
        vocab_size: int = 512,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        n_kv_heads: int | None = None,
        ffn_hidden: int | None = None,
        max_seq_len: int = 256,
        rope_theta: float = 10000.0,
        norm_eps: float = 1e-5,
        tie_embeddings: bool = True,
        qkv_bias: bool = False,
        norm: str = "rms",
        mlp: str = "swiglu",
        head_bias: bool = False,
        time_conditioning: bool = False,
        cond_dim: int = 128,
        sigma_input: str = "given",
        output: str = "logits",
        attention: str = "bidirectional",
        block_size: int | None = None,
        logit_shift: bool = False,
        init_std: float = 0.02,
        mask_token_id: int = 0,
        pad_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        bos_token_id: int | None = 3,
        fim_prefix_id: int | None = None,
        fim_suffix_id: int | None = None,
        fim_middle_id: int | None = None,
        empty_id: int | None = None,
        **kwargs,
    ) -> None:
        if n_kv_heads is None:
            n_kv_heads = n_heads
        if ffn_hidden is None:
            ffn_hidden = 4 * d_model if mlp == "gelu" else 64 * -(-(8 * d_model // 3) // 64)
        if d_model % n_heads or n_heads % n_kv_heads or (d_model // n_heads) % 2:
            raise ValueError(
                f"d_model={d_model}, n_heads={n_heads}, n_kv_heads={n_kv_heads}: "
                "need n_heads | d_model, "
                "n_kv_heads | n_heads and an even head dimension"
            )
        for name, value in (
            ("attention", attention),
            ("norm", norm),
            ("mlp", mlp),
            ("sigma_input", sigma_input),
            ("output", output),
        ):
            if value not in CHOICES[name]:
                raise ValueError(f"{name}={value!r}; choose one of {', '.join(CHOICES[name])}")
        if attention == "block-causal" and not block_size:
            raise ValueError("attention='block-causal' needs block_size")
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.ffn_hidden = ffn_hidden
        self.max_seq_len = max_seq_len
        self.rope_theta = rope_theta
        self.norm_eps = norm_eps
        self.tie_embeddings = tie_embeddings
        self.qkv_bias = qkv_bias
        self.norm = norm
        self.mlp = mlp
        self.head_bias = head_bias
        self.time_conditioning = time_conditioning
        self.cond_dim = cond_dim
        self.sigma_input = sigma_input
        self.output = output
        self.attention = attention
        self.block_size = block_size
        self.logit_shift = logit_shift
        self.init_std = init_std
        self.mask_token_id = mask_token_id
        self.fim_prefix_id = fim_prefix_id
        self.fim_suffix_id = fim_suffix_id
        self.fim_middle_id = fim_middle_id
        self.empty_id = empty_id
        kwargs.pop("tie_word_embeddings", None)  # tie_embeddings is the one source of truth
        kwargs.setdefault("use_cache", False)
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_embeddings,
            **kwargs,
        )
