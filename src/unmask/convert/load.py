"""Reading a publisher folder: family detection, ``config.json`` -> ``ModelConfig``, the
tokenizer with the folder's special ids, and weights streamed shard by shard into a model
built on the meta device (``import_folder``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unmask.convert.families import (
    DTYPES,
    IMPORTERS,
    INDEX,
    REQUIRED,
    SINGLE,
    SPECIAL_KEYS,
    UNSUPPORTED,
    Importer,
)
from unmask.errors import UserError

if TYPE_CHECKING:
    import torch

    from unmask.config import ModelConfig
    from unmask.loaded import Loaded
    from unmask.tokenizer import Tokenizer


# -- detection --------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _native_fields() -> set[str]:
    from dataclasses import fields

    from unmask.config import ModelConfig

    return {f.name for f in fields(ModelConfig)}


def is_publisher_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder whose ``config.json`` is not a native unmask ``ModelConfig``
    (it has ``model_type`` / ``architectures``, or keys ``ModelConfig`` does not know)."""
    p = Path(path)
    cfg = p / "config.json"
    if not (p.is_dir() and cfg.is_file()):
        return False
    # shards and no model.safetensors: a publisher's weights, whatever config.json says (a
    # broken one is then reported by the importer, not as a folder without a checkpoint)
    shards = not (p / "model.safetensors").is_file() and any(p.glob("*.safetensors"))
    try:
        data = json.loads(cfg.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        return shards  # else the native loader reports it
    if not isinstance(data, dict) or not data:
        return shards
    return "model_type" in data or "architectures" in data or bool(set(data) - _native_fields())


def detect(hf: dict[str, Any], source: Path) -> Importer:
    """The importer for a publisher ``config.json`` (``hf``), or a one-line ``UserError``."""
    model_type = str(hf.get("model_type", "")).lower()
    if not model_type and {"graph", "noise"} <= set(hf):
        model_type = "sedd"  # SEDD's released config.json is its Hydra training config
    archs_value = hf.get("architectures") or []
    if isinstance(archs_value, str):  # one name where a list goes
        archs_value = [archs_value]
    if not isinstance(archs_value, list):
        raise UserError(f"{source}: architectures={archs_value!r} should be a list of names")
    archs = {str(a).lower() for a in archs_value}

    def writes_archs(imp: Importer) -> bool:
        return bool(archs & {str(a).lower() for a in imp.header.get("architectures", ())})

    if not model_type:
        for imp in sorted(IMPORTERS.values(), key=lambda imp: not writes_archs(imp)):
            if writes_archs(imp) or any(a.startswith(imp.name) for a in archs):
                return imp
    # Families sharing a model_type (LLaDA and LLaDA-MoE both say "llada") are told apart by
    # the architectures they write; otherwise the first registered one.
    candidates = [imp for imp in IMPORTERS.values() if model_type in imp.model_types]
    if candidates:
        return next((imp for imp in candidates if writes_archs(imp)), candidates[0])
    supported = ", ".join(IMPORTERS)
    if model_type in UNSUPPORTED:
        raise UserError(
            f"{source}: {model_type} is not supported: {UNSUPPORTED[model_type]} "
            f"(supported: {supported})"
        )
    if not model_type:
        unknown = ", ".join(sorted(set(hf) - _native_fields())[:3])
        why = f"unknown fields {unknown}" if unknown else "no fields"
        raise UserError(
            f"{source}: neither an unmask ModelConfig ({why}) nor a published "
            f"model's config (no model_type); supported families: {supported}"
        )
    raise UserError(
        f"{source}: model_type {hf.get('model_type')!r} is not supported "
        f"(supported families: {supported})"
    )


# -- config.json -> ModelConfig -----------------------------------------------------------


def _first_id(value: Any, key: str, source: Path) -> int | None:
    """A token id from config.json ``key``, where some publishers store a list of EOS ids; a
    value that is not a non-negative integer is a one-line error."""
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{source}: {key}={value!r} is not a token id (an integer >= 0)")
    return value


def _shape_fields(imp: Importer, hf: dict[str, Any], source: Path) -> dict[str, Any]:
    """``ModelConfig`` fields other than the special ids, from ``config.json``."""
    for key, allowed in imp.requires.items():
        if hf.get(key) not in allowed:
            want = " or ".join(repr(v) for v in allowed if v is not None) or "absent"
            raise UserError(
                f"{source}: {key}={hf.get(key)!r} is not supported for {imp.name} (needs {want})"
            )
    out: dict[str, Any] = {}
    for name, (keys, default) in imp.facts.items():
        value = next((hf[k] for k in keys if hf.get(k) is not None), default)
        if value is REQUIRED:
            raise UserError(f"{source}: missing {' or '.join(keys)} (needed for {imp.name})")
        out[name] = value
    _check_types(imp, hf, out, source)  # before derive computes with them
    out.update(imp.constants)
    if imp.derive is not None:
        try:
            imp.derive(hf, out)
        except (TypeError, ValueError, ArithmeticError, AttributeError, KeyError) as e:  # int("x")
            raise UserError(f"{source}: a value {imp.name} cannot use ({e})") from None
    _check_types(imp, hf, out, source)
    return out


def _tokenizer(folder: Path, hf: dict[str, Any], note: str = "") -> Tokenizer:
    """The folder's tokenizer with its special tokens taken from ``config.json`` ids (falling
    back to ``tokenizer_config.json`` strings, then to the loader's search by name); ``note``
    is added to the error when the folder has none."""
    from tokenizers import Tokenizer as HFTokenizer

    from unmask.tokenizer import load_tokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        note = note or "the publisher's tokenizer.json is needed next to config.json"
        raise UserError(f"{path}: missing ({note})")
    try:
        raw = HFTokenizer.from_file(str(path))
    except Exception as e:  # HF raises plain Exception for bad files
        raise UserError(
            f"{path}: not a valid tokenizer.json ({str(e).splitlines()[0] if str(e) else e})"
        ) from None
    tok_cfg_path = folder / "tokenizer_config.json"
    tok_cfg = _read_json(tok_cfg_path) if tok_cfg_path.is_file() else {}
    names: dict[str, str | None] = {}
    for fld, key in SPECIAL_KEYS.items():
        tid = _first_id(hf.get(key), key, folder / "config.json")
        if tid is not None:
            token = raw.id_to_token(tid)
            if token is None:
                raise UserError(f"{path}: no token with id {tid} (config.json {key})")
            names[fld] = token
            continue
        token = tok_cfg.get(key.replace("_id", ""))  # e.g. "pad_token": "<|endoftext|>"
        if isinstance(token, dict):
            token = token.get("content")
        names[fld] = (
            token if isinstance(token, str) and raw.token_to_id(token) is not None else None
        )
    return load_tokenizer(
        path,
        mask_token=names["mask_id"],
        pad_token=names["pad_id"],
        eos_token=names["eos_id"],
        bos_token=names["bos_id"],
    )


def chat_template(folder: Path) -> str | None:
    """The folder's chat template, as ``transformers`` finds it: ``chat_template.jinja``, else
    ``chat_template`` in ``chat_template.json``, else in ``tokenizer_config.json`` (a list of
    named templates gives its ``default``, ``unmask.chat.select_template``); None if none."""
    from unmask.chat import select_template

    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        try:
            return select_template(jinja.read_text(encoding="utf-8"), source=str(jinja))
        except UnicodeDecodeError:
            raise UserError(f"{jinja}: not UTF-8 text") from None
    for path in (folder / "chat_template.json", folder / "tokenizer_config.json"):
        if path.is_file():
            template = select_template(_read_json(path).get("chat_template"), source=str(path))
            if template is not None:
                return template
    return None


def model_config(folder: str | os.PathLike[str]) -> tuple[Importer, ModelConfig, Tokenizer]:
    """Detect the family of a publisher folder and read its facts into a ``ModelConfig``."""
    from unmask.config import ModelConfig

    p = Path(folder)
    source = p / "config.json"
    hf = _read_json(source)
    imp = detect(hf, source)
    shape = _shape_fields(imp, hf, source)
    tok = _tokenizer(p, hf, imp.tokenizer_note)
    if tok.vocab_size > int(shape["vocab_size"]):
        raise UserError(
            f"{p / 'tokenizer.json'}: tokenizer has {tok.vocab_size} tokens, "
            f"the model only {shape['vocab_size']}"
        )
    ids = tok.special_ids()
    for name, value in ids.items():  # ids the family fixes (MDLM/SEDD: [MASK] is the last row)
        if name in shape and shape[name] != value:
            raise UserError(
                f"{p / 'tokenizer.json'}: its {name.removesuffix('_id')} token has id {value}, "
                f"but {imp.name} puts it at id {shape[name]}"
            )
    try:
        config = ModelConfig(**{**ids, **shape}, chat_template=chat_template(p))
    except TypeError as e:  # a fact of the wrong type in config.json
        raise UserError(f"{source}: {e}") from None
    except UserError as e:
        raise UserError(f"{source}: {e}") from None
    return imp, config, tok


def _check_types(imp: Importer, hf: dict[str, Any], shape: dict[str, Any], source: Path) -> None:
    """A one-line ``UserError`` naming the ``config.json`` key whose value has the wrong JSON
    type for its ``ModelConfig`` field: a string where a flag goes (``"weight_tying": "yes"``
    was taken as true and reported as an unexpected output-head tensor), a list for a width."""
    from dataclasses import fields

    from unmask.config import ModelConfig, model_override_error

    kinds = {f.name: str(f.type) for f in fields(ModelConfig)}
    for name, value in shape.items():
        wrong = model_override_error(name, value) is not None
        if not wrong and not (name in POSITIVE and isinstance(value, int) and value < 1):
            continue
        keys = imp.facts.get(name, ((), None))[0]
        key = next((k for k in keys if hf.get(k) is not None), name)
        field = f" (unmask's {name})" if key != name else ""
        want = kinds[name] if wrong else "a whole number of at least 1"
        raise UserError(f"{source}: {key}={value!r} should be {want}{field}")


POSITIVE = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden",
            "max_seq_len")
"""Sizes that must be at least 1, checked before a family's ``derive`` divides by them."""


# -- weights ------------------------------------------------------------------------------


def parse_dtype(name: str | None) -> torch.dtype | None:
    """``bf16`` / ``fp16`` / ``fp32`` (or the torch names) -> ``torch.dtype``; None stays None."""
    import torch

    if name is None:
        return None
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; choose bf16, fp16 or fp32")
    return getattr(torch, DTYPES[name])


def shard_files(folder: Path) -> list[Path]:
    """The folder's safetensors files: those named in the index, or ``model.safetensors``."""
    index = folder / INDEX
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise UserError(f"{index}: no weight_map")
        names = set(weight_map.values())
        bad = [f for f in names if not isinstance(f, str) or Path(f).name != f
               or f in ("", ".", "..")]  # fmt: skip
        if bad:  # a name, of a file in this folder (not ../x, not null)
            raise UserError(f"{index}: weight_map values must be shard file names in this "
                            f"folder, got {bad[0]!r}")
        files = [folder / f for f in sorted(names)]
        for f in files:
            if not f.is_file():
                raise UserError(f"{f}: shard listed in {INDEX} is missing")
        return files
    if (folder / SINGLE).is_file():
        return [folder / SINGLE]
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.pth")):
        raise UserError(
            f"{folder}: only pickled weights (*.bin/*.pt); unmask never unpickles: "
            "get the *.safetensors files"
        )
    raise UserError(f"{folder}: no {SINGLE} nor {INDEX}")


def weight_map(
    imp: Importer, config: ModelConfig, targets: set[str]
) -> dict[str, str | tuple[str, ...]]:
    """Source tensor name -> unmask parameter name (a tuple for a fused tensor split along dim 0)
    for this config, ``{i}`` expanded over layers and ``{e}`` over experts; only entries whose
    targets all exist in the model (``targets``)."""

    def fmt(dst: str | tuple[str, ...], key: str, j: int) -> str | tuple[str, ...]:
        if isinstance(dst, str):
            return dst.replace(key, str(j))
        return tuple(d.replace(key, str(j)) for d in dst)

    out: dict[str, str | tuple[str, ...]] = {}
    for src, dst in imp.weights.items():
        pairs = [(src, dst)]
        for key, n in (("{i}", config.n_layers), ("{e}", config.n_experts)):
            if key in src:
                pairs = [
                    (s.replace(key, str(j)), fmt(d, key, j)) for s, d in pairs for j in range(n)
                ]
        out.update({s: d for s, d in pairs if set(_targets(d)) <= targets})
    return out


def _targets(dst: str | tuple[str, ...]) -> tuple[str, ...]:
    return (dst,) if isinstance(dst, str) else dst


def load_weights(model: Any, imp: Importer, folder: Path) -> None:
    """Fill every parameter of ``model`` (already materialised) from the folder's shards,
    one tensor at a time, casting to each parameter's dtype and device.

    Raises a one-line ``UserError`` naming the file on an unexpected tensor, a shape that
    disagrees with config.json, a tensor found twice, or a parameter left unfilled.
    """
    import torch
    from safetensors import safe_open

    params = dict(model.named_parameters())  # tied weights appear once
    names = weight_map(imp, model.config, set(params))
    unmapped = sorted(set(params) - {t for d in names.values() for t in _targets(d)})
    if unmapped:  # an importer bug, not a user error: the map must cover the model
        raise RuntimeError(f"{imp.name} weight map has no source for {unmapped[:3]}")
    filled: dict[str, Path] = {}
    for shard in shard_files(folder):
        try:
            handle = safe_open(str(shard), framework="pt", device="cpu")
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise UserError(f"{shard}: cannot read ({e})") from None
        with handle as f:
            for key in f.keys():  # noqa: SIM118 (safe_open handles are not mappings)
                target = names.get(key)
                if target is None and key in imp.buffers:
                    _check_buffer(f.get_tensor(key), imp.buffers[key](model.config), key, shard)
                    continue
                if target is None:
                    raise UserError(
                        f"{shard}: unexpected tensor {key} "
                        f"(not in the {imp.name} weight map for this config)"
                    )
                if key in filled:
                    raise UserError(f"{shard}: tensor {key} also in {filled[key].name}")
                parts = [params[t] for t in _targets(target)]
                sizes = [p.shape[0] for p in parts]
                want = (sum(sizes), *parts[0].shape[1:])  # a fused tensor stacks its parts on dim 0
                shape = tuple(f.get_slice(key).get_shape())
                if shape != want:
                    raise UserError(
                        f"{shard}: tensor {key} has shape {shape}, config.json implies {want}"
                    )
                with torch.no_grad():  # one tensor in RAM at a time; copy_ casts
                    for param, value in zip(parts, f.get_tensor(key).split(sizes), strict=True):
                        param.copy_(value)
                filled[key] = shard
    missing = sorted(set(names) - set(filled))
    if missing:
        raise UserError(
            f"{folder}: missing tensor(s) "
            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
        )


def _check_buffer(got: torch.Tensor, want: torch.Tensor, key: str, shard: Path) -> None:
    """A stored buffer (not a weight) must hold what the config implies; it is not loaded."""
    import torch

    if got.shape != want.shape or not torch.allclose(
        got.float(), want.float(), rtol=1e-2, atol=1e-6
    ):
        raise UserError(
            f"{shard}: tensor {key} differs from what config.json implies "
            "(not this family's model?)"
        )


def _default_dtype(hf: dict[str, Any]) -> torch.dtype:
    """The dtype the publisher stored (``torch_dtype`` / ``dtype``), float32 if unknown."""
    import torch

    name = hf.get("torch_dtype") or hf.get("dtype")
    return getattr(torch, DTYPES.get(str(name), "float32"))


def build_meta(config: ModelConfig, source: Path) -> Any:
    """``unmask.model.meta_model(config)``, with torch's refusal of a shape no tensor can have
    (``hidden_dim`` 1000000000: "Storage size calculation overflowed") as a one-line
    ``UserError`` naming ``source``."""
    from unmask.model import meta_model

    try:
        return meta_model(config)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{source}: no model of this shape can be built ({first})") from None


def module_groups(model: Any) -> list[tuple[str, Any]]:
    """(prefix, module) in the order a lazy load materialises them: every block, then the
    other top-level modules (embedding, final norm, head, ...)."""
    groups = [(f"layers.{i}", layer) for i, layer in enumerate(model.layers)]
    return groups + [(n, m) for n, m in model.named_children() if n != "layers"]


def load_weights_lazily(
    model: Any, imp: Importer, folder: Path, device: str | torch.device, quantize: str | None
) -> None:
    """Fill a model built on the meta device module by module: each block (then the embedding,
    norm and head) is materialised on ``device``, filled from the memory-mapped shards, and
    quantised (``quantize``, ``unmask.quantize``) before the next one, so RAM never holds more
    than the model so far plus one block in the load dtype.

    Every tensor's name and shape is checked against ``config.json`` before any is read, with
    the one-line errors of ``load_weights``; nothing is materialised for a folder that fails.
    """
    import contextlib

    from safetensors import safe_open

    from unmask.quantize import quantize_module

    params = dict(model.named_parameters())
    names = weight_map(imp, model.config, set(params))
    unmapped = sorted(set(params) - {t for d in names.values() for t in _targets(d)})
    if unmapped:  # an importer bug, not a user error: the map must cover the model
        raise RuntimeError(f"{imp.name} weight map has no source for {unmapped[:3]}")
    with contextlib.ExitStack() as stack:
        where: dict[str, Any] = {}  # source key -> open safetensors handle
        for shard in shard_files(folder):
            try:
                f = stack.enter_context(safe_open(str(shard), framework="pt", device="cpu"))
            except Exception as e:  # safetensors raises its own error types for corrupt files
                raise UserError(f"{shard}: cannot read ({e})") from None
            for key in f.keys():  # noqa: SIM118 (safe_open handles are not mappings)
                target = names.get(key)
                if target is None and key in imp.buffers:
                    continue
                if target is None:
                    raise UserError(
                        f"{shard}: unexpected tensor {key} "
                        f"(not in the {imp.name} weight map for this config)"
                    )
                if key in where:
                    raise UserError(f"{shard}: tensor {key} also in another shard")
                parts = [params[t] for t in _targets(target)]
                want = (sum(p.shape[0] for p in parts), *parts[0].shape[1:])
                shape = tuple(f.get_slice(key).get_shape())
                if shape != want:
                    raise UserError(
                        f"{shard}: tensor {key} has shape {shape}, config.json implies {want}"
                    )
                where[key] = f
        missing = sorted(set(names) - set(where))
        if missing:
            raise UserError(
                f"{folder}: missing tensor(s) "
                f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
            )
        source = {t: (k, j) for k, d in names.items() for j, t in enumerate(_targets(d))}
        tied = model.config.tie_embeddings
        for prefix, module in module_groups(model):
            if tied and prefix == "lm_head":  # the embedding (filled above); a bias is its own
                module.weight = model.embed.weight
            _fill_module(module, prefix, names, source, where, device)
            if quantize is not None and quantizes(prefix, tied):
                quantize_module(module, quantize, device)


def quantizes(prefix: str, tied: bool) -> bool:
    """Whether a block-by-block load quantises the module group ``prefix``: every one (its
    linear layers, as ``quantize_model`` and ``estimate_bytes`` count them: the blocks, the
    head, a noise-level embedding, a final modulation, a self-conditioning map) except an
    output head that is the embedding matrix (``tie_embeddings``)."""
    return not (prefix == "lm_head" and tied)


def _fill_module(
    module: Any,
    prefix: str,
    names: dict[str, str | tuple[str, ...]],
    source: dict[str, tuple[str, int]],
    where: dict[str, Any],
    device: str | torch.device,
) -> None:
    """Materialise ``module`` on ``device`` and copy its parameters from the open shards (a
    fused source tensor is read once and split)."""
    import torch

    from unmask.model import materialise

    materialise(module, device)
    read: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for name, param in module.named_parameters():
            if f"{prefix}.{name}" not in source:  # a tied head's weight: the embedding's
                continue
            key, part = source[f"{prefix}.{name}"]
            if key not in read:
                sizes = [p_.shape[0] for p_ in _target_params(module, prefix, names[key])]
                read[key] = list(where[key].get_tensor(key).split(sizes))
            param.copy_(read[key][part])


def _target_params(module: Any, prefix: str, dst: str | tuple[str, ...]) -> list[Any]:
    params = dict(module.named_parameters())
    return [params[t[len(prefix) + 1 :]] for t in _targets(dst)]


def import_folder(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    quantize: str | None = None,
) -> Loaded:
    """Load a publisher folder (LLaDA, Dream, MDLM, SEDD, LLaDA 2.x) as an unmask ``Transformer``
    in eval mode.

    The model is built on the meta device, its memory checked against what ``device`` has
    free (``unmask.quantize.check_fits``, a one-line refusal naming the setting that fits),
    materialised on ``device`` in ``dtype`` (default: the folder's ``torch_dtype``), and filled
    tensor by tensor from the shards. With ``quantize`` (``int8`` / ``int4``, torchao) the
    linear layers are quantised block by block as they are loaded (``load_weights_lazily``).
    """

    from unmask.config import load_target
    from unmask.loaded import Loaded
    from unmask.model import materialise
    from unmask.quantize import check_fits, check_quantize, check_size

    device, dtype = load_target(device, dtype)
    folder = Path(path)
    imp, config, tok = model_config(folder)
    dtype = dtype if dtype is not None else _default_dtype(_read_json(folder / "config.json"))
    check_quantize(quantize, device, dtype)
    check_size(config, dtype, device, source=str(folder))
    model = build_meta(config, folder / "config.json")
    model = model.to(dtype=dtype)
    check_fits(model, dtype, quantize, device, source=str(folder))
    if quantize is not None:
        model._rope = None
        load_weights_lazily(model, imp, folder, device, quantize)
        model.eval()
        return Loaded(model=model, tokenizer=tok, config=config, path=folder, family=imp.name)
    materialise(model, device)
    if config.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    model._rope = None
    load_weights(model, imp, folder)
    model.eval()
    return Loaded(model=model, tokenizer=tok, config=config, path=folder, family=imp.name)
