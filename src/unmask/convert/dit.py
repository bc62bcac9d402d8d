"""The DiT families as data: ``mdlm`` (Sahoo et al. 2024), ``sedd`` (Lou et al. 2024) and
``bd3lm`` (block diffusion, Arriola et al. 2025).

Both publish the same diffusion transformer (``DDiT``): a bias-free LayerNorm, a fused QKV
projection without bias, half-split rotary embeddings with base 10000 on q and k, a
GELU(tanh) MLP of width 4·d with biases, adaLN-Zero modulation of every block and of the
final norm by SiLU(MLP(sinusoidal(sigma))), an untied embedding and an output layer with a
bias. unmask's Transformer holds it with ``norm='layer'``, ``mlp='gelu'``, ``head_bias`` and
``time_conditioning``; the fused QKV tensor is split into q/k/v on import.

- ``MDLM``: ``kuleshov-group/mdlm-owt`` (``model_type`` ``mdlm``; a ``transformers`` wrapper,
  so every tensor starts with ``backbone.``). Its ``config.json`` has ``time_conditioning``
  false: the model embeds sigma = 0 whatever the noise level (``sigma_input='zero'``); the
  head gives denoiser logits.
- ``SEDD``: ``louaaron/sedd-small`` / ``-medium`` (no ``model_type``: the ``config.json`` is the
  Hydra training config with ``graph``, ``noise``, ``model``, ``tokens``). Only the absorbing
  graph with ``scale_by_sigma`` is supported; the head gives SEDD's log-score
  (``output='sedd_log_score'``) and a sampler that passes no noise level gets it from the
  fraction of masks (``sigma_input='masked_fraction'``) and receives denoiser logits.

- ``BD3LM``: ``kuleshov-group/bd3lm-owt-block_size4`` / ``8`` / ``16`` (``model_type``
  ``bd3lm``; MDLM's wrapper and tensor names, plus the scalar buffers ``sampling_eps_min`` /
  ``sampling_eps_max`` of its clipped training schedule, not used to sample). Attention is
  block-causal over blocks of ``block_size`` counted from position 0: the ``x_0`` half of
  its training mask, which is the mask its sampler runs (``sample_mode``). ``time_conditioning``
  false as MDLM's: ``sigma_input='zero'`` (true is refused: its sigma is one block's noise).

In all three, the absorbing state [MASK] is the last embedding row (GPT-2's 50257 tokens + 1). The
folders ship no tokenizer: GPT-2's ``tokenizer.json`` must be put next to ``config.json``;
``[MASK]`` is then appended at id 50257 by the tokenizer loader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from unmask.convert.importer import REQUIRED, Importer
from unmask.errors import UserError

if TYPE_CHECKING:
    import torch

    from unmask.config import ModelConfig

TOKENIZER_NOTE = (
    "MDLM and SEDD checkpoints ship without one; both use GPT-2's tokenizer: put GPT-2's "
    "tokenizer.json next to config.json, e.g. `hf download gpt2 tokenizer.json "
    "--local-dir FOLDER`"
)

DIT_CONSTANTS: dict[str, Any] = {
    "attention": "bidirectional",
    "logit_shift": False,
    "norm": "layer",
    "norm_eps": 1e-5,  # F.layer_norm's default
    "mlp": "gelu",
    "head_bias": True,
    "qkv_bias": False,
    "tie_embeddings": False,
    "rope_theta": 10000.0,
    "time_conditioning": True,
}
"""``ModelConfig`` fields every DDiT checkpoint has (MDLM's and SEDD's ``model/`` code)."""

MLP_RATIO = 4
"""DDiTBlock's MLP width is ``mlp_ratio · hidden`` with ``mlp_ratio=4`` fixed in the code."""


def dit_weights(prefix: str) -> dict[str, str | tuple[str, ...]]:
    """DDiT tensor names (under ``prefix``) -> unmask parameter names."""
    b, layer = prefix + "blocks.{i}.", "layers.{i}."
    return {
        prefix + "vocab_embed.embedding": "embed.weight",
        prefix + "sigma_map.mlp.0.weight": "sigma_embed.proj_in.weight",
        prefix + "sigma_map.mlp.0.bias": "sigma_embed.proj_in.bias",
        prefix + "sigma_map.mlp.2.weight": "sigma_embed.proj_out.weight",
        prefix + "sigma_map.mlp.2.bias": "sigma_embed.proj_out.bias",
        b + "norm1.weight": layer + "attn_norm.weight",
        # 'b s (three h d)': the rows are q, then k, then v, each head after head.
        b + "attn_qkv.weight": tuple(layer + f"attn.{n}_proj.weight" for n in "qkv"),
        b + "attn_out.weight": layer + "attn.o_proj.weight",
        b + "norm2.weight": layer + "mlp_norm.weight",
        b + "mlp.0.weight": layer + "mlp.up_proj.weight",
        b + "mlp.0.bias": layer + "mlp.up_proj.bias",
        b + "mlp.2.weight": layer + "mlp.down_proj.weight",
        b + "mlp.2.bias": layer + "mlp.down_proj.bias",
        # chunk order: shift, scale, gate (attention), shift, scale, gate (MLP)
        b + "adaLN_modulation.weight": layer + "modulation.weight",
        b + "adaLN_modulation.bias": layer + "modulation.bias",
        prefix + "output_layer.norm_final.weight": "norm.weight",
        prefix + "output_layer.linear.weight": "lm_head.weight",
        prefix + "output_layer.linear.bias": "lm_head.bias",
        prefix + "output_layer.adaLN_modulation.weight": "final_modulation.weight",  # shift, scale
        prefix + "output_layer.adaLN_modulation.bias": "final_modulation.bias",
    }


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    """The ``inv_freq`` buffer DDiT's ``Rotary`` saves: theta^(-2j/hd), j < hd/2."""
    import torch

    hd = config.head_dim
    return 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))


def _mdlm_derive(hf: dict[str, Any], out: dict[str, Any]) -> None:
    out["ffn_hidden"] = MLP_RATIO * int(out["d_model"])
    # time_conditioning false (mdlm-owt, bd3lm-owt): DITBackbone zeroes sigma before embedding it.
    out["sigma_input"] = "masked_fraction" if hf.get("time_conditioning") else "zero"
    out["mask_id"] = int(out["vocab_size"]) - 1  # the mask is appended after GPT-2's tokens


def _section(hf: dict[str, Any], name: str) -> dict[str, Any]:
    value = hf.get(name)
    if not isinstance(value, dict):
        raise UserError(
            f"config.json: {name!r} must be an object (SEDD's Hydra config), got {value!r}"
        )
    return value


def _sedd_derive(hf: dict[str, Any], out: dict[str, Any]) -> None:
    graph, model = _section(hf, "graph"), _section(hf, "model")
    if graph.get("type") != "absorb":
        raise UserError(
            f"config.json: graph.type={graph.get('type')!r} is not supported for sedd (needs "
            "'absorb': only the absorbing graph has a [MASK] to unmask)"
        )
    if model.get("scale_by_sigma") is not True:
        raise UserError(
            f"config.json: model.scale_by_sigma={model.get('scale_by_sigma')!r} is not supported "
            "for sedd (needs true)"
        )
    if model.get("type", "ddit") != "ddit":
        raise UserError(
            f"config.json: model.type={model.get('type')!r} is not supported for sedd "
            "(needs 'ddit')"
        )
    keys = {
        "d_model": "hidden_size",
        "n_layers": "n_blocks",
        "n_heads": "n_heads",
        "cond_dim": "cond_dim",
    }
    for name, key in keys.items():
        if model.get(key) is None:
            raise UserError(f"config.json: missing model.{key} (needed for sedd)")
        out[name] = model[key]
    out["schedule"] = _sedd_schedule(hf)
    if hf.get("tokens") is None:
        raise UserError("config.json: missing tokens (needed for sedd)")
    tokens = int(hf["tokens"])
    out.update(
        vocab_size=tokens + 1,  # the absorbing state gets one more row
        mask_id=tokens,
        max_seq_len=model.get("length", 1024),
        ffn_hidden=MLP_RATIO * int(out["d_model"]),
    )


def _sedd_schedule(hf: dict[str, Any]) -> str:
    """The schedule the SEDD decoder steps on for the config's ``noise``: ``linear`` for the
    log-linear noise (the published checkpoints'; the reference fixes its eps at 1e-3, as
    ``schedule_eps`` does), ``geometric`` for the geometric noise with the bounds unmask's
    ``GeometricSchedule`` has; any other noise is refused (it was imported as log-linear and
    sampled on a noise grid the model was not trained on)."""
    from unmask.schedules import GeometricSchedule

    noise = hf.get("noise")
    if isinstance(noise, str):  # the type alone (it read as log-linear, whatever it named)
        noise = {"type": noise}
    elif noise is None:
        noise = {}
    elif not isinstance(noise, dict):
        raise UserError(
            f"config.json: noise={noise!r} is not supported for sedd (needs a mapping with "
            "'type': 'loglinear' or 'geometric')"
        )
    kind = noise.get("type", "loglinear")
    if kind == "loglinear":
        return "linear"
    bounds = (GeometricSchedule.sigma_min, GeometricSchedule.sigma_max)
    got = (noise.get("sigma_min"), noise.get("sigma_max"))
    if kind == "geometric" and got == bounds:
        return "geometric"
    missing = [f"noise.{k}" for k in ("sigma_min", "sigma_max") if noise.get(k) is None]
    if kind == "geometric" and missing:  # SEDD's own defaults (1e-3, 1) are not unmask's
        raise UserError(
            f"config.json: missing {' and '.join(missing)} (geometric noise for sedd needs "
            f"sigma_min={bounds[0]!r}, sigma_max={bounds[1]!r})"
        )
    if kind == "geometric":
        raise UserError(
            f"config.json: noise sigma_min={got[0]!r}, sigma_max={got[1]!r} is not supported "
            f"for sedd (geometric noise needs sigma_min={bounds[0]!r}, sigma_max={bounds[1]!r})"
        )
    raise UserError(
        f"config.json: noise.type={kind!r} is not supported for sedd (needs 'loglinear' or "
        "'geometric')"
    )


def _import_only(name: str) -> Callable[[Any], dict[str, Any]]:
    def refuse(cfg: Any) -> dict[str, Any]:
        raise UserError(
            f"cannot export as {name}: the family is import only (unmask loads {name} folders; "
            "writing them would mean joining q, k and v into their fused tensor)"
        )

    return refuse


MDLM = Importer(
    name="mdlm",
    model_types=("mdlm",),
    facts={
        "d_model": (("hidden_dim",), REQUIRED),
        "n_layers": (("n_blocks",), REQUIRED),
        "n_heads": (("n_heads",), REQUIRED),
        "cond_dim": (("cond_dim",), REQUIRED),
        "vocab_size": (("vocab_size",), REQUIRED),  # GPT-2's 50257 + [MASK]
        "max_seq_len": (("model_length",), 1024),
    },
    constants={**DIT_CONSTANTS, "output": "logits"},
    requires={},
    weights=dit_weights("backbone."),
    derive=_mdlm_derive,
    underive=_import_only("mdlm"),
    reference=(
        "kuleshov-group/mdlm models/dit.py; kuleshov-group/mdlm-owt config.json, modeling_mdlm.py"
    ),
    buffers={"backbone.rotary_emb.inv_freq": rope_inv_freq},
    tokenizer_note=TOKENIZER_NOTE,
)

SEDD = Importer(
    name="sedd",
    model_types=("sedd",),
    facts={},  # the config is nested (model.hidden_size, ...): read by _sedd_derive
    constants={**DIT_CONSTANTS, "output": "sedd_log_score", "sigma_input": "masked_fraction"},
    requires={},
    weights=dit_weights(""),
    derive=_sedd_derive,
    underive=_import_only("sedd"),
    reference=(
        "louaaron/Score-Entropy-Discrete-Diffusion model/transformer.py; "
        "louaaron/sedd-small config.json"
    ),
    buffers={"rotary_emb.inv_freq": rope_inv_freq},
    tokenizer_note=TOKENIZER_NOTE,
)


def _unchecked(config: ModelConfig) -> None:
    """A stored buffer that is accepted as it is: not loaded, and nothing the config implies."""
    return None


BD3LM = Importer(
    name="bd3lm",
    model_types=("bd3lm",),
    facts={
        **MDLM.facts,
        "block_size": (("block_size",), REQUIRED),
    },
    constants={**DIT_CONSTANTS, "output": "logits", "attention": "block-causal"},
    # options of BD3LMConfig (some versions) that the published checkpoints leave at these;
    # with time conditioning its sigma is the current block's noise level, which a canvas-wide
    # count of masks (sigma_input='masked_fraction') is not; without cross_attn its backbone
    # builds no block mask and every position attends to all (a bidirectional model, which
    # imported as block-causal decoded with attention it was never trained with)
    requires={"adaln": (True, None), "causal": (False, None), "time_conditioning": (False, None),
              "cross_attn": (True, None)},
    weights=dit_weights("backbone."),
    derive=_mdlm_derive,
    underive=_import_only("bd3lm"),
    reference=(
        "kuleshov-group/bd3lms models/hf/modeling_bd3lm.py, configuration_bd3lm.py; "
        "kuleshov-group/bd3lm-owt-block_size4 config.json"
    ),
    buffers={
        "backbone.rotary_emb.inv_freq": rope_inv_freq,
        # var_min: the noise-schedule clipping bounds found in training (BD3LM.__init__)
        "sampling_eps_min": _unchecked,
        "sampling_eps_max": _unchecked,
    },
    tokenizer_note=TOKENIZER_NOTE,
)
