"""Reading a publisher folder: family detection, ``config.json`` -> ``ModelConfig``, the
tokenizer with the folder's special ids, and weights streamed shard by shard into a model
built on the meta device (``import_folder``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unmask.convert.families import (
    IMPORTERS,
    INDEX,
    REQUIRED,
    SINGLE,
    SPECIAL_KEYS,
    UNSUPPORTED,
    Importer,
)
from unmask.convert.stream import targets as _targets
from unmask.errors import UserError
from unmask.files import SAFETENSORS_DTYPES, plain_name, read_json

if TYPE_CHECKING:
    import torch

    from unmask.config import ModelConfig
    from unmask.convert.stream import StreamedWeights
    from unmask.loaded import Loaded
    from unmask.tokenizer import Tokenizer


# -- detection --------------------------------------------------------------------------


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
        data = read_json(cfg)
    except (UserError, OSError):  # not an object, too deep, a 5,000-digit integer too
        return shards  # else the native loader reports it
    if not data:
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


def read_config_json(path: Path) -> dict[str, Any]:
    """A model folder's ``config.json`` (``unmask.files.read_json``), native or a publisher's;
    a Git LFS pointer in its place (a clone without git-lfs) is the LFS line
    (``convert.stream.lfs_error``), not "not valid JSON"."""
    from unmask.convert.stream import is_lfs_pointer, lfs_error

    if is_lfs_pointer(path):
        raise lfs_error(path)
    return read_json(path)


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
    # before derive computes with them; a 0 of n_kv_heads is left to derive (LLaDA 2's config
    # means one per query head by it) and refused by the check after it where it stays 0
    _check_types(imp, hf, out, source, zero_ok=frozenset({"n_kv_heads"}))
    out.update(imp.constants)
    if imp.derive is not None:
        try:
            imp.derive(hf, out)
        except UserError as e:  # the family's own line about config.json: said once, of source
            raise UserError(f"{source}: {str(e).removeprefix('config.json: ')}") from None
        except (TypeError, ValueError, ArithmeticError, AttributeError, KeyError) as e:  # int("x")
            raise UserError(f"{source}: a value {imp.name} cannot use ({e})") from None
    _check_types(imp, hf, out, source)
    return out


def publisher_tokenizer(folder: str | os.PathLike[str]) -> Tokenizer:
    """The tokenizer of a publisher's folder (``is_publisher_folder``) as ``model_config``
    reads it (its special tokens from ``config.json``; Dream's ``vocab.json`` +
    ``merges.txt`` built as Qwen2's; a folder without the mask its family needs refused, as
    ``model_config`` refuses it, where its ``config.json`` has the model's facts), without the
    weights' or quantisation's checks: what
    ``unmask prepare --tokenizer FOLDER`` tokenizes a corpus with for that model."""
    p = Path(folder)
    source = p / "config.json"
    hf = read_config_json(source)
    imp = detect(hf, source)
    try:  # the model's rule where config.json tells it (MDLM/SEDD: [MASK] at the last row)
        mask_needed = "mask_id" not in _shape_fields(imp, hf, source)
    except UserError:  # a folder kept for its tokenizer, its config.json not a model's
        mask_needed = False
    return _tokenizer(p, hf, imp, mask_needed=mask_needed)


def _tokenizer(folder: Path, hf: dict[str, Any], imp: Importer, *,
               mask_needed: bool = False) -> Tokenizer:
    """The folder's tokenizer with its special tokens taken from ``config.json`` ids (falling
    back to ``tokenizer_config.json`` strings, then to the loader's search by name); without
    ``tokenizer.json``, the family's ``slow_tokenizer`` builds it from the files the publisher
    ships (Dream), else the error says where to get one (``tokenizer_note``). The added
    tokens of ``tokenizer_config.json`` that ``tokenizer.json`` lacks are added, as
    ``transformers`` adds them (``_config_added``).
    ``mask_needed``: the mask must be one of the folder's own tokens (``_with_specials``)."""
    import tempfile

    from tokenizers import Tokenizer as HFTokenizer

    path = folder / "tokenizer.json"
    shown = path
    if not path.is_file():
        raw = imp.slow_tokenizer(folder) if imp.slow_tokenizer is not None else None
        if raw is None:
            note = imp.tokenizer_note or "the publisher's tokenizer.json is needed next to " \
                "config.json"
            raise UserError(f"{path}: missing ({note})")
        shown = folder / "vocab.json"
    else:
        from unmask.convert.stream import is_lfs_pointer, lfs_error

        if is_lfs_pointer(path):  # tokenizer.json is big enough to be stored in LFS too
            raise lfs_error(path)
        try:
            raw = HFTokenizer.from_file(str(path))
        except Exception as e:  # HF raises plain Exception for bad files
            raise UserError(
                f"{path}: not a valid tokenizer.json ({str(e).splitlines()[0] if str(e) else e})"
            ) from None
        if not _config_added(folder, raw):
            return _with_specials(path, raw, folder, hf, mask_needed=mask_needed)
    with tempfile.TemporaryDirectory() as tmp:  # load_tokenizer reads a file
        raw.save(str(Path(tmp) / "tokenizer.json"))
        return _with_specials(Path(tmp) / "tokenizer.json", raw, folder, hf, shown=shown,
                              mask_needed=mask_needed)


def _config_added(folder: Path, raw: Any) -> bool:
    """Add to ``raw`` (the folder's ``tokenizer.json``) the added tokens its
    ``tokenizer_config.json`` gives (``added_tokens_decoder``) that it lacks, as
    ``transformers`` adds them, in id order, while each lands at the id the file gives it (a
    LLaDA-MoE folder whose ``<|mask|>`` is there alone); True if any was added. An entry
    whose id does not continue the vocabulary ends it: ``transformers`` would put that token
    at another id than the model learnt it at. A side file that is not readable adds none
    (``config_tokens`` reads it so too)."""
    from unmask.convert.qwen2_tokenizer import add_token, added_tokens

    try:
        entries = added_tokens(folder)
    except UserError:
        return False
    added = False
    for tid, fields in entries:
        if raw.token_to_id(fields["content"]) is not None:
            continue
        if raw.get_vocab_size(with_added_tokens=True) != tid:
            break
        add_token(raw, fields)
        added = True
    return added


def _with_specials(path: Path, raw: Any, folder: Path, hf: dict[str, Any], *,
                   shown: Path | None = None, mask_needed: bool = False) -> Tokenizer:
    """``load_tokenizer(path)`` with the special tokens ``config.json`` (``hf``) names by id, or
    ``tokenizer_config.json`` by string (its mask only where that is a token of its own,
    ``unmask.tokenizer.own_mask``, as ``load_tokenizer`` takes it); ``raw`` is the file's
    ``tokenizers.Tokenizer``, and errors name ``shown`` (the file it was built from) if given,
    else ``path``.

    ``mask_needed`` (a family whose mask is not fixed by its shape, as MDLM's and SEDD's last
    row is): a folder whose tokenizer has no mask token is refused, where the loader would
    append ``[MASK]`` at an id the model never learnt as its mask (a padded embedding row) and
    every output would be noise (LLaDA-MoE and LLaDA 2.x name theirs nowhere but in the
    tokenizer: ``<|mask|>``)."""
    from unmask.tokenizer import MASK_CANDIDATES, config_tokens, load_tokenizer, own_mask

    named = config_tokens(folder, raw)
    names: dict[str, str | None] = {}
    for fld, key in SPECIAL_KEYS.items():
        tid = _first_id(hf.get(key), key, folder / "config.json")
        if tid is not None:
            token = raw.id_to_token(tid) if tid < 2**32 else None  # tokenizers: u32 ids
            if token is None:
                raise UserError(f"{shown or path}: no token with id {tid} (config.json {key})")
            names[fld] = token
            continue
        # "pad_token": "<|endoftext|>"; the mask below, once the EOS and BOS are known
        names[fld] = None if fld == "mask_id" else named[key.removesuffix("_token_id")]
    if names["mask_id"] is None:  # a token of its own, as load_tokenizer takes it
        ends = (raw.token_to_id(names[f]) for f in ("eos_id", "bos_id") if names[f])
        names["mask_id"] = own_mask(raw, named, *ends)
    tok = load_tokenizer(
        path,
        mask_token=names["mask_id"],
        pad_token=names["pad_id"],
        eos_token=names["eos_id"],
        bos_token=names["bos_id"],
    )
    if mask_needed and raw.token_to_id(tok.id_to_token(tok.mask_id) or "") is None:
        raise UserError(
            f"{shown or path}: has no mask token (config.json names no "
            f"{SPECIAL_KEYS['mask_id']}, {_config_mask_note(folder, raw, named)}, and the "
            f"vocabulary holds none of {', '.join(MASK_CANDIDATES)}): the model was trained "
            "with its own; use the tokenizer of the publisher's folder"
        )
    return tok


def _config_mask_note(folder: Path, raw: Any, named: Mapping[str, str | None]) -> str:
    """What the folder's ``tokenizer_config.json`` says of the mask (``named``: its tokens
    as ``config_tokens`` takes them), for the refusal of a tokenizer without one: it names
    none, one the tokenizer lacks, or one that is not a token of its own (``own_mask``)."""
    from unmask.tokenizer import config_token_strings

    token = config_token_strings(folder)["mask"]
    if token is None:
        return "tokenizer_config.json no mask_token"
    if raw.token_to_id(token) is None:
        return f"tokenizer_config.json's mask_token {token!r} is not among its tokens"
    what = "another role's token" if named.get("mask") else "one ordinary character"
    return f"tokenizer_config.json's mask_token {token!r} is {what}, not a mask of its own"


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
            template = select_template(read_json(path).get("chat_template"), source=str(path))
            if template is not None:
                return template
    return None


def prompt_bos_id(imp: Importer, folder: Path, tok: Tokenizer,
                  hf: dict[str, Any]) -> int | None:
    """The id a raw prompt to this folder's model begins with (``ModelConfig.prompt_bos_id``):
    ``config.json``'s ``prompt_bos_id`` where it has one (unmask's export writes it, so a
    model goes and comes back with its own), else the token the publisher's tokenizer puts
    in front of every text itself (its ``tokenizer.json`` post-processor's template for one
    text starts with a special token, or ``tokenizer_config.json`` says ``add_bos_token``),
    else, for a family whose reference prompts begin with its own BOS
    (``Importer.prompt_bos``), that token where the folder's tokenizer has it (an unmask
    model exported ``--to llada`` before the export wrote the fact has not: none, as it was
    trained); None where the token is the EOS (the document separator, which stands in for
    a missing BOS: ``load_tokenizer``) or the family's prompts begin with no BOS."""
    if "prompt_bos_id" in hf:
        return _first_id(hf["prompt_bos_id"], "prompt_bos_id", folder / "config.json")
    path = folder / "tokenizer_config.json"
    tok_cfg = read_json(path) if path.is_file() else {}
    added = _template_start(tok.hf)
    if added is not None:
        return added
    if tok_cfg.get("add_bos_token") is True:
        named = tok_cfg.get("bos_token")
        named = named.get("content") if isinstance(named, dict) else named
        found = tok.token_to_id(named) if isinstance(named, str) else None
        found = tok.bos_id if found is None else found
    else:
        found = tok.token_to_id(imp.prompt_bos) if imp.prompt_bos else None
    return found if found != tok.eos_id else None  # the EOS: a document separator, no BOS


def _template_start(hf: Any) -> int | None:
    """The id of the special token a ``tokenizers`` post-processor puts in front of a single
    text (a ``TemplateProcessing``, alone or in a ``Sequence``), or None."""
    post = hf.post_processor
    if post is None:
        return None
    try:
        state = json.loads(post.__getstate__())
    except (TypeError, ValueError):
        return None
    steps = state.get("processors") if state.get("type") == "Sequence" else [state]
    for step in steps or []:
        if not isinstance(step, dict) or step.get("type") != "TemplateProcessing":
            continue
        first = (step.get("single") or [{}])[0]
        name = first.get("SpecialToken", {}).get("id") if isinstance(first, dict) else None
        if not isinstance(name, str):
            return None
        ids = (step.get("special_tokens") or {}).get(name, {}).get("ids") or []
        return int(ids[0]) if len(ids) == 1 else hf.token_to_id(name)
    return None


def model_config(folder: str | os.PathLike[str]) -> tuple[Importer, ModelConfig, Tokenizer]:
    """Detect the family of a publisher folder and read its facts into a ``ModelConfig``.

    A release its publisher quantised (``quantization_config``: FP8, GPTQ, AWQ,
    bitsandbytes...) is refused in one line, whatever the family
    (``unmask.quantize.refuse_prequantized``): its tensors are not the family's plain weights.
    """
    from unmask.config import ModelConfig
    from unmask.quantize import refuse_prequantized

    p = Path(folder)
    source = p / "config.json"
    hf = read_config_json(source)
    imp = detect(hf, source)
    try:  # every family, before its own checks of config.json's keys and of the tensors
        refuse_prequantized(hf, imp.name)
    except UserError as e:
        raise UserError(f"{source}: {e}") from None
    shape = _shape_fields(imp, hf, source)
    tok = _tokenizer(p, hf, imp, mask_needed="mask_id" not in shape)  # MDLM/SEDD: appended
    if tok.vocab_size > int(shape["vocab_size"]):
        raise UserError(
            f"{p / 'tokenizer.json'}: tokenizer has {tok.vocab_size} tokens, "
            f"the model only {shape['vocab_size']}"
        )
    ids = tok.special_ids()
    clash = [n.removesuffix("_id") for n in ("eos_id", "pad_id") if ids[n] == ids["mask_id"]]
    if clash:  # decoded, the EOS was never seen (every [MASK] is one) and the canvas pads masked
        raise UserError(
            f"{source}: the mask token (id {ids['mask_id']}) is also the {' and '.join(clash)} "
            f"token; {SPECIAL_KEYS['mask_id']} must name a token of its own"
        )
    # [EMPTY] (variable-length gaps): an export drops empty_id, as its tokenizer keeps it
    empty = tok.empty_ids()
    for name, value in ids.items():  # ids the family fixes (MDLM/SEDD: [MASK] is the last row)
        if name in shape and shape[name] != value:
            raise UserError(
                f"{p / 'tokenizer.json'}: its {name.removesuffix('_id')} token has id {value}, "
                f"but {imp.name} puts it at id {shape[name]}"
            )
    if "prompt_bos_id" not in shape:  # its errors name their own file (config.json or another)
        shape["prompt_bos_id"] = prompt_bos_id(imp, p, tok, hf)
    template = chat_template(p)  # its errors name their own file, not config.json
    try:
        config = ModelConfig(**{**ids, **empty, **shape}, chat_template=template)
    except TypeError as e:  # a fact of the wrong type in config.json
        raise UserError(f"{source}: {e}") from None
    except UserError as e:
        raise UserError(f"{source}: {e}") from None
    return imp, config, tok


def _check_types(imp: Importer, hf: dict[str, Any], shape: dict[str, Any], source: Path, *,
                 zero_ok: frozenset[str] = frozenset()) -> None:
    """A one-line ``UserError`` naming the ``config.json`` key whose value has the wrong JSON
    type for its ``ModelConfig`` field: a string where a flag goes (``"weight_tying": "yes"``
    was taken as true and reported as an unexpected output-head tensor), a list for a width."""
    from dataclasses import fields

    from unmask.config import ModelConfig, model_override_error

    kinds = {f.name: str(f.type) for f in fields(ModelConfig)}
    for name, value in shape.items():
        wrong = model_override_error(name, value) is not None
        small = name in POSITIVE and isinstance(value, int) and value < (name not in zero_ok)
        if not wrong and not small:
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
    """``bf16`` / ``fp16`` / ``fp32`` (or the torch names) -> ``torch.dtype``
    (``unmask.config.torch_dtype``); None stays None."""
    from unmask.config import torch_dtype

    return None if name is None else torch_dtype(name)


def shard_files(folder: Path) -> list[Path]:
    """The folder's safetensors files: those named in the index, or ``model.safetensors``.
    ``model.safetensors`` beside an index that lists a missing shard is read, as
    ``transformers`` reads it: its ``save_pretrained`` of an unsharded model into a folder
    that held shards deletes them but leaves their index behind. Beside an index whose every
    shard is there, it is refused in one line: the reverse save (sharded over unsharded)
    leaves the old single file (and some folders ship two copies on purpose), and which of
    the two is meant cannot be told. An index with no ``weight_map`` beside it is ignored."""
    index, single = folder / INDEX, folder / SINGLE
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if (not isinstance(weight_map, dict) or not weight_map) and single.is_file():
            return [single]  # an index that lists nothing is no rival to the single file
        if not isinstance(weight_map, dict) or not weight_map:
            raise UserError(f"{index}: no weight_map")
        bad = [f for f in weight_map.values() if not plain_name(f)]
        if bad:  # a name, of a file in this folder (not ../x, not null, not a list: unhashable)
            raise UserError(f"{index}: weight_map values must be shard file names in this "
                            f"folder, got {bad[0]!r}")
        names = set(weight_map.values())
        files = [folder / f for f in sorted(names)]
        missing = [f for f in files if not f.is_file()]
        if missing and single.is_file():  # a stale index: the shards it lists were deleted
            return [single]
        if missing:
            raise UserError(f"{missing[0]}: shard listed in {INDEX} is missing")
        if single.is_file() and single not in files:
            raise UserError(
                f"{folder}: holds both {SINGLE} and the shards {INDEX} lists (a save over an "
                "earlier one leaves the old files; some folders ship two copies, e.g. another "
                f"precision): move one aside (transformers reads {SINGLE})"
            )
        return files
    if single.is_file():
        return [single]
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


def load_weights(
    model: Any,
    imp: Importer,
    folder: Path,
    *,
    device: str | torch.device = "cpu",
    quantize: str | None = None,
) -> None:
    """Fill ``model`` (built on the meta device, or materialised) from the folder's shards
    through the family's weight map, block by block (``unmask.convert.stream.stream_weights``,
    the walk a native checkpoint loads through too): each block materialised on ``device``,
    filled from the memory-mapped shards and quantised (``quantize``) before the next.

    Every tensor's name and shape is checked against ``config.json`` before any is read; a
    one-line ``UserError`` names the file on an unexpected tensor, a shape that disagrees, a
    tensor found twice or missing, a stored buffer that disagrees with the config, and NaN or
    infinity in a weight.
    """
    from unmask.convert.stream import stream_weights

    names = _names(model, imp)
    stream_weights(model, names, shard_files(folder), device=device, quantize=quantize,
                   folder=folder, **_checks(model, imp, names))


def streamed_weights(model: Any, imp: Importer, folder: Path) -> StreamedWeights:
    """The weights of the folder's shards as ``model`` (built on the meta device, in the dtype
    to write) holds them, read one tensor at a time as they are asked for
    (``unmask.convert.stream.StreamedWeights``): what ``unmask convert`` writes, in the memory
    of one tensor rather than of the model. Every name, shape and dtype is checked first, as
    ``load_weights`` checks them; a value that is not finite is refused as it is read."""
    from unmask.convert.stream import StreamedWeights

    return StreamedWeights(model, *check_weights(model, imp, folder))


def check_weights(
    model: Any, imp: Importer, folder: Path
) -> tuple[dict[str, str | tuple[str, ...]], dict[str, Path]]:
    """The checks ``load_weights`` makes before reading any weight, from the shards' headers
    alone: the shards the index lists all there, every tensor's name, shape and dtype as
    ``model`` (built on the meta device) implies, none missing, no file cut short. Returns
    (the family's weight map, source tensor name -> the file holding it), as
    ``unmask.convert.stream.check_sources`` does; a ``UserError`` in one line otherwise."""
    from unmask.convert.stream import check_sources

    names = _names(model, imp)
    where = check_sources(model, names, shard_files(folder), folder=folder,
                          **_checks(model, imp, names))
    return names, where


def _names(model: Any, imp: Importer) -> dict[str, str | tuple[str, ...]]:
    """The family's weight map for ``model``'s parameters (``weight_map``)."""
    return weight_map(imp, model.config, {n for n, _ in model.named_parameters()})


def _checks(model: Any, imp: Importer, names: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords of ``check_sources`` / ``stream_weights`` for a publisher folder of family
    ``imp`` whose weight map is ``names``: why a tensor outside it is unexpected (an output
    head the config ties), the family's stored buffers."""
    targets = {n for n, _ in model.named_parameters()}
    why = {}
    tie = imp.facts.get("tie_embeddings", ((), None))[0]
    if model.config.tie_embeddings and tie:  # a head of its own under a config that ties it
        why = {k: f"an output head of its own, while config.json ties the head to the embedding "
                  f"({tie[0]} absent or true): set \"{tie[0]}\": false"
               for k in weight_map(imp, model.config, targets | {"lm_head.weight"})
               if k not in names}  # fmt: skip
    return {"unexpected": f"not in the {imp.name} weight map for this config",
            "buffers": imp.buffers, "why": why}


def _default_dtype(hf: dict[str, Any], source: Path) -> torch.dtype | None:
    """The dtype the publisher stored (``torch_dtype``, or ``dtype`` as newer ``transformers``
    write it), None where it says none; any name ``unmask.load`` takes (``load_target``: the
    float64 of an ``export(dtype=torch.float64)`` too, which its own import refused); a name
    unmask does not know is a one-line error (it was taken as float32 silently, doubling a
    bfloat16 model's memory)."""
    from unmask.config import LOAD_DTYPES, load_target

    key = "torch_dtype" if hf.get("torch_dtype") is not None else "dtype"
    name = hf.get(key)
    if name is None:
        return None
    if not isinstance(name, str):
        raise UserError(f"{source}: {key}={name!r} is not a dtype's name (e.g. \"bfloat16\")")
    try:
        return load_target("cpu", name)[1]
    except UserError:
        raise UserError(
            f"{source}: {key}={name!r} is not a dtype unmask loads ({', '.join(LOAD_DTYPES)}); "
            "pass the one to load in (dtype=, --dtype)"
        ) from None


def build_meta(config: ModelConfig, source: Path) -> Any:
    """``unmask.model.meta_model(config)``, with torch's refusal of a shape no tensor can have
    (``hidden_dim`` 1000000000: "Storage size calculation overflowed"; a size past 2**63,
    ``d_model`` 10**12: "Overflow when unpacking long long", a ``TypeError``) as a one-line
    ``UserError`` naming ``source``."""
    from unmask.model import meta_model

    try:
        return meta_model(config)
    except (RuntimeError, TypeError) as e:
        if isinstance(e, TypeError) and "Overflow" not in str(e):
            raise  # a bug, not a size
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{source}: no model of this shape can be built ({first})") from None


def checked_meta(
    config: ModelConfig, folder: Path, dtype: torch.dtype, device: str | torch.device = "cpu"
) -> Any:
    """``build_meta`` of the model folder ``folder``'s ``config``, in ``dtype``, after
    ``unmask.quantize.check_size`` for ``device``: a config.json of ``n_layers`` 1000000000 is
    a one-line refusal, not minutes and gigabytes building a billion meta layers. The model
    every load (``import_folder``, ``unmask.checkpoint.load``), ``unmask convert`` / ``export``
    and distill's check of a ``--student`` build before they read or check any weight."""
    from unmask.quantize import check_size

    check_size(config, dtype, device, source=str(folder))
    return build_meta(config, folder / "config.json").to(dtype=dtype)


def folder_parts(
    folder: Path, dtype: torch.dtype | None
) -> tuple[Importer, ModelConfig, Tokenizer, torch.dtype]:
    """``model_config`` of the publisher folder ``folder`` and the dtype to load or convert it
    in: ``dtype``, else the folder's ``torch_dtype``, else the dtype its first shard stores
    (SEDD's config.json, a Hydra training config, names none: a bfloat16 file was loaded and
    converted as float32, twice its size), else float32."""
    import torch

    imp, config, tok = model_config(folder)
    if dtype is None:
        dtype = _default_dtype(read_config_json(folder / "config.json"), folder / "config.json")
    if dtype is None:
        try:
            first = shard_files(folder)[0]
        except UserError:  # the weights' own checks say what is wrong, after the config's
            first = None
        dtype = (file_dtype(first) if first is not None else None) or torch.float32
    return imp, config, tok, dtype


_SAFETENSORS_FLOATS = {tag: name for name, tag in SAFETENSORS_DTYPES.items() if "float" in name}
"""safetensors tag -> torch dtype name, the floating ones."""


def file_dtype(path: Path) -> torch.dtype | None:
    """The floating dtype the safetensors file ``path`` stores its weights in (its first
    floating tensor, read from the header; the names sort, so a weight's); None where it
    cannot be read (a file cut short or not safetensors: the load says so, in one line) or
    holds no floating tensor."""
    import torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open handles are not mappings)
                name = _SAFETENSORS_FLOATS.get(f.get_slice(key).get_dtype())
                if name is not None:
                    return getattr(torch, name)
    except (OSError, ValueError, RuntimeError, SafetensorError):
        return None
    return None


def import_folder(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    quantize: str | None = None,
    weights: bool = True,
) -> Loaded:
    """Load a publisher folder (LLaDA, Dream, MDLM, SEDD, LLaDA 2.x) as an unmask ``Transformer``
    in eval mode.

    The model is built on the meta device, its memory checked against what ``device`` has
    free (``unmask.quantize.check_fits``, a one-line refusal naming the setting that fits),
    filled block by block from the shards in ``dtype`` (default: the folder's ``torch_dtype``)
    on ``device``, with ``quantize`` (``int8`` / ``int4``, torchao) quantising the linear layers
    of each block as it is loaded (``load_weights``). ``weights=False``: the model left on the
    meta device after the weights' checks from the shards' headers (``check_weights``), as
    ``unmask.checkpoint.load`` says.
    """
    from unmask.config import load_target
    from unmask.loaded import Loaded
    from unmask.quantize import check_fits, check_quantize

    device, dtype = load_target(device, dtype)
    folder = Path(path)
    imp, config, tok, dtype = folder_parts(folder, dtype)
    check_quantize(quantize, device, dtype)
    model = checked_meta(config, folder, dtype, device)
    if weights:
        check_fits(model, dtype, quantize, device, source=str(folder))
        model._rope = None
        load_weights(model, imp, folder, device=device, quantize=quantize)
    else:
        check_weights(model, imp, folder)
    model.eval()  # weights=False too: the model a load returns, but for the values
    return Loaded(model=model, tokenizer=tok, config=config, path=folder, family=imp.name,
                  name=os.fsdecode(path))
