"""Family ``transformers``: unmask models as Hugging Face ``transformers`` folders.

``unmask convert RUN OUT --to transformers`` (``unmask.convert.export(..., family=
"transformers")``) writes a folder that ``transformers`` loads with
``trust_remote_code=True`` (``AutoModel``, ``AutoModelForMaskedLM``, ``AutoTokenizer``,
``AutoConfig``) and that ``unmask.load`` imports back:

    config.json              model_type "unmask", every ModelConfig fact, auto_map
    model.safetensors        weights under the modeling file's names (``model.`` + unmask's)
    tokenizer.json           unmask's tokenizer
    tokenizer_config.json    PreTrainedTokenizerFast with the special tokens (mask_token, ...)
    configuration_unmask.py  copied from ``hf_template/``: needs only torch and transformers
    modeling_unmask.py       the same forward pass as ``unmask.model.Transformer``

Declared as one ``Importer`` (``TRANSFORMERS``) like the publisher families, so export and
import share the weight map and the ``config.json`` facts. A ``ModelConfig`` option the
modeling file does not implement is refused at export with its name (``check_exportable``).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from importlib import resources
from typing import TYPE_CHECKING, Any

from unmask.convert.importer import REQUIRED, SPECIAL_KEYS, Importer, register
from unmask.errors import UserError

if TYPE_CHECKING:
    from unmask.config import ModelConfig
    from unmask.tokenizer import Tokenizer

TEMPLATE_FILES = ("configuration_unmask.py", "modeling_unmask.py")
"""Files of ``hf_template/`` copied verbatim into every exported folder."""

FACTS = (
    "vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden", "max_seq_len",
    "rope_theta", "norm_eps", "tie_embeddings", "qkv_bias", "norm", "mlp", "head_bias",
    "time_conditioning", "cond_dim", "sigma_input", "output", "attention", "block_size",
    "logit_shift", "init_std", "fim_prefix_id", "fim_suffix_id", "fim_middle_id", "empty_id",
    "objective", "schedule", "schedule_eps", "sample_defaults", "sedd_graph", "block_align",
    "prompt_bos_id",
)  # fmt: skip
"""``ModelConfig`` fields stored in ``config.json`` under the same name, as
``configuration_unmask.py`` takes them; the special ids travel as ``mask_token_id`` etc.
(``SPECIAL_KEYS``). ``objective``, ``schedule``, ``schedule_eps``, ``sample_defaults`` and
``sedd_graph`` (a model trained with objective ``sedd``: which samplers read its head),
``prompt_bos_id`` (the token a raw prompt begins with) and
``block_align`` (where block decoding puts the prompt; the mask counts blocks from 0) are facts
for samplers only (the modeling file keeps them as plain attributes), so an exported
model imports back with them."""

SUPPORTED = (*FACTS, "chat_template")
"""Fields an export may set; ``chat_template`` goes to ``tokenizer_config.json``, where
``transformers`` (and unmask's loader) look for it. Any other field must keep its default."""

_REQUIRED_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads")


def _field_defaults() -> dict[str, Any]:
    from unmask.config import ModelConfig

    out: dict[str, Any] = {}
    for f in fields(ModelConfig):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def check_exportable(config: ModelConfig) -> None:
    """A one-line ``UserError`` naming the first ``ModelConfig`` option that the modeling file
    does not implement (a field outside ``SUPPORTED`` and the special ids, set to a
    non-default value), so an export never silently computes a different function."""
    known = set(SUPPORTED) | set(SPECIAL_KEYS)
    defaults = _field_defaults()
    for f in fields(config):
        if f.name in known:
            continue
        value = getattr(config, f.name)
        if f.name not in defaults or value != defaults[f.name]:
            raise UserError(
                f"cannot export as transformers: the option {f.name}={value!r} is not supported by "
                f"its modeling file (modeling_unmask.py)"
            )


def _underive(config: ModelConfig) -> dict[str, Any]:
    check_exportable(config)
    return {"tie_word_embeddings": config.tie_embeddings, "use_cache": False}


def template_text(name: str) -> str:
    """The text of one ``hf_template/`` file shipped with the package."""
    return (
        resources.files("unmask.convert").joinpath("hf_template", name).read_text(encoding="utf-8")
    )


def tokenizer_config(config: ModelConfig, tokenizer: Tokenizer) -> dict[str, Any]:
    """``tokenizer_config.json``: ``AutoTokenizer`` builds a ``PreTrainedTokenizerFast`` over
    ``tokenizer.json`` with these special tokens (and the chat template, if any). Its
    ``bos_token`` is the one unmask renders a template's ``{{ bos_token }}`` as
    (``unmask.chat.template_bos_id``: the BOS a raw prompt begins with, ``prompt_bos_id``,
    where the model has one), as Dream's folder names ``<|beginoftext|>`` there while its
    ``config.json``'s ``bos_token_id`` is its EOS: a harness that adds ``tokenizer.bos_token``
    (Dream's evaluation, ``add_bos_token=true``) put the EOS before an exported Dream's
    prompts, and ``apply_chat_template`` rendered another BOS than unmask."""
    from unmask.chat import template_bos_id

    out: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": config.max_seq_len,
        "clean_up_tokenization_spaces": False,
    }
    for name, key in SPECIAL_KEYS.items():
        token_id = template_bos_id(config) if name == "bos_id" else getattr(config, name)
        token = tokenizer.id_to_token(token_id) if token_id is not None else None
        if token is not None:
            out[key.removesuffix("_id")] = token  # mask_token_id -> mask_token
    if config.chat_template is not None:
        out["chat_template"] = config.chat_template
    return out


def _files(config: ModelConfig, tokenizer: Tokenizer) -> dict[str, str]:
    files = {name: template_text(name) for name in TEMPLATE_FILES}
    files["tokenizer_config.json"] = (
        json.dumps(tokenizer_config(config, tokenizer), indent=2) + "\n"
    )
    return files


# unmask parameter names; the modeling file nests them under ``model.`` (its base model),
# except the output head, which UnmaskForMaskedLM holds itself (absent when tied).
_PARAMS = (
    "embed.weight",
    "layers.{i}.attn_norm.weight",
    "layers.{i}.attn.q_proj.weight", "layers.{i}.attn.k_proj.weight",
    "layers.{i}.attn.v_proj.weight",
    "layers.{i}.attn.q_proj.bias", "layers.{i}.attn.k_proj.bias", "layers.{i}.attn.v_proj.bias",
    "layers.{i}.attn.o_proj.weight",
    "layers.{i}.mlp_norm.weight",
    "layers.{i}.mlp.gate_proj.weight", "layers.{i}.mlp.up_proj.weight",
    "layers.{i}.mlp.down_proj.weight",
    "layers.{i}.mlp.up_proj.bias", "layers.{i}.mlp.down_proj.bias",  # mlp="gelu"
    "layers.{i}.modulation.weight", "layers.{i}.modulation.bias",  # time_conditioning
    "sigma_embed.proj_in.weight", "sigma_embed.proj_in.bias",
    "sigma_embed.proj_out.weight", "sigma_embed.proj_out.bias",
    "final_modulation.weight", "final_modulation.bias",
    "norm.weight",
)  # fmt: skip

_DEFAULTS = _field_defaults()

TRANSFORMERS = register(
    Importer(
        name="transformers",
        model_types=("unmask",),
        facts={
            name: ((name,), REQUIRED if name in _REQUIRED_FIELDS else _DEFAULTS[name])
            for name in FACTS
        },
        constants={},
        requires={},
        weights={
            **{f"model.{p}": p for p in _PARAMS},
            "lm_head.weight": "lm_head.weight",
            "lm_head.bias": "lm_head.bias",
        },
        reference="unmask.model.Transformer; hf_template/modeling_unmask.py",
        header={
            "model_type": "unmask",
            "architectures": ["UnmaskForMaskedLM"],
            "auto_map": {
                "AutoConfig": "configuration_unmask.UnmaskConfig",
                "AutoModel": "modeling_unmask.UnmaskModel",
                "AutoModelForMaskedLM": "modeling_unmask.UnmaskForMaskedLM",
            },
        },
        underive=_underive,
        files=_files,
    )
)
"""The ``transformers`` family (``model_type`` ``unmask``), registered in ``IMPORTERS``."""
