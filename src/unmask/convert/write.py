"""Writing: ``convert`` (publisher folder -> native checkpoint) and ``export`` (native
checkpoint -> a family's publisher layout), through ``unmask.files.write_safetensors``
(streamed, no second copy)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unmask.convert.families import IMPORTERS, SINGLE, SPECIAL_KEYS, Importer
from unmask.convert.load import (
    _shape_fields,
    checked_meta,
    detect,
    file_dtype,
    folder_parts,
    is_publisher_folder,
    read_config_json,
    streamed_weights,
    weight_map,
)
from unmask.errors import UserError
from unmask.files import (
    check_creatable,
    clear_stale_staging,
    staging_dir,
    staging_prefix,
    write_safetensors,
)

if TYPE_CHECKING:
    import torch

    from unmask.config import ModelConfig
    from unmask.convert.stream import StreamedWeights


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    dtype: torch.dtype | str | None = None,
) -> Path:
    """Write a native unmask checkpoint folder (config.json, model.safetensors, tokenizer.json)
    at ``dst`` from the publisher folder ``src`` (or from a native checkpoint, e.g. to store
    it in another dtype: the demo model ships in fp16); returns ``dst``.

    ``dst`` must not exist or be empty. Files are written into a temporary folder beside
    ``dst`` and renamed into place, so a failed conversion leaves nothing half-written. Each
    tensor is read (cast to ``dtype``, checked for NaN) as it is written, after the checks of
    a load: memory holds one tensor, not the model. ``dtype``: a floating ``torch.dtype`` or
    a name (``bf16``, ``fp16``, ``fp32``); default as stored.
    """
    from unmask.checkpoint import check_model_path
    from unmask.config import load_target, to_dict

    check_model_path(src)  # "" (an unset variable) is the working folder to pathlib
    out = Path(dst)
    check_destination(out, src)
    dtype = load_target("cpu", dtype)[1]  # a name (bf16) or a torch dtype, checked
    imp: Importer | None = None
    if is_publisher_folder(src):
        folder = Path(src)
        imp, config, tokenizer, dtype = folder_parts(folder, dtype)
    else:  # a native checkpoint or run directory (native_parts names what is wrong otherwise)
        folder, config, tokenizer, dtype = _native_parts(src, dtype)
    model = checked_meta(config, folder, dtype)  # a billion layers: one line, not a hang
    if imp is None:
        tensors, source = _streamed_native(model, folder), "unmask"
    else:
        tensors, source = streamed_weights(model, imp, folder), imp.name
    with tensors:  # each tensor read as it is written: one in memory, not the model
        return _write_folder(out, tensors, {"source": source}, to_dict(config), tokenizer,
                             like=tensors.params)


def _native_parts(
    src: str | os.PathLike[str], dtype: torch.dtype | None
) -> tuple[Path, ModelConfig, Any, torch.dtype]:
    """``native_parts`` of ``src`` and the dtype to write it in: ``dtype``, else as its
    weights are stored (``stored_dtype``), else float32."""
    import torch

    from unmask.checkpoint import native_parts

    folder, config, tokenizer = native_parts(src)
    return folder, config, tokenizer, dtype or stored_dtype(src) or torch.float32


def _streamed_native(model: Any, folder: Path) -> StreamedWeights:
    """The weights of the native checkpoint ``folder`` as ``model`` (on the meta device, in the
    dtype to write) holds them, read as they are asked for, after the checks of a load
    (``unmask.checkpoint.check_native_weights``)."""
    from unmask.checkpoint import check_native_weights
    from unmask.convert.stream import StreamedWeights

    return StreamedWeights(model, *check_native_weights(model, folder / SINGLE))


def check_destination(out: Path, src: str | os.PathLike[str] | None = None) -> None:
    """A one-line ``UserError`` before any work when ``out`` cannot become the new folder: it
    exists and is not an empty folder, it is the working folder (``.``), it is a link, its
    parent cannot be written, or it lies inside the model folder of ``src`` (a run's
    ``checkpoint/`` is replaced whole at the next save, which deleted a conversion written
    into it; a publisher folder is the download's)."""
    from unmask.checkpoint import checkpoint_dir

    if src is not None:
        try:
            model_dir = Path(src) if is_publisher_folder(src) else checkpoint_dir(src)
        except UserError:
            model_dir = None  # the load names what is wrong with it
        if model_dir is not None and out.resolve().is_relative_to(model_dir.resolve()):
            raise UserError(f"{out}: inside the model folder {model_dir}; write it elsewhere")
    if out.is_symlink():
        raise UserError(f"{out}: is a link; give the path of a new folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file; give the path of a new folder")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: already exists and is not empty")
    if out.is_dir() and out.resolve() == Path.cwd().resolve():
        # the result is a folder renamed into place: the working folder cannot be replaced
        # ("Invalid argument: ." after all the work)
        raise UserError(f"{out}: is the working folder; give the path of a new folder in it "
                        f"(e.g. {out / 'converted'})")
    if out.name in ("", ".."):  # "nosuch/.." converted, then failed (the rename's target)
        raise UserError(f"{out}: names a folder through '.' or '..'; give the path of a new "
                        "folder")
    check_creatable(out)


def _write_folder(
    out: Path,
    tensors: Mapping[str, torch.Tensor],
    metadata: dict[str, str],
    config: dict[str, Any],
    tokenizer: Any,
    files: Mapping[str, str] | None = None,
    *,
    like: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write model.safetensors + config.json + tokenizer.json (+ ``files``: name -> text) into a
    staging folder beside ``out`` and rename it into place, so a failure leaves nothing
    half-written; ``like``: as ``write_safetensors`` takes it (``tensors`` read as written).
    Folders above ``out`` that it creates are removed again when it fails (a NaN found in the
    last tensor left ``a/b/`` of ``a/b/out`` behind)."""
    # the folders mkdir makes: "x/.." of x/../y is one it passes, not one it makes (its
    # rmdir fails and stopped the removal, leaving x/); one made between this look and a
    # failure, by another process, is removed too when still empty
    made = [p for p in [*reversed(out.parent.parents), out.parent] if not p.exists()]
    made = [p for p in made if p.name != ".."]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clear_stale_staging(out)
        tmp = staging_dir(out.parent, staging_prefix(out))
    except OSError as e:
        _remove_empty(made)
        raise UserError(f"{out}: cannot be written ({e.strerror})") from None
    except BaseException:
        _remove_empty(made)
        raise
    try:
        write_safetensors(tensors, tmp / SINGLE, metadata=metadata, like=like)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        tokenizer.save(tmp)
        for name, text in (files or {}).items():  # UTF-8 whatever the locale (modeling code)
            (tmp / name).write_text(text, encoding="utf-8")
        for f in tmp.iterdir():  # on disk before the rename makes the folder the result
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except OSError as e:  # a full disk: one line naming the folder (a write names no file)
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(out)) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        raise
    return out


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (outermost first), deepest first, each only if still empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (another process wrote into it) or gone: leave those above


# -- export: native -> publisher layout ------------------------------------------------------


def stored_dtype(src: str | os.PathLike[str]) -> torch.dtype | None:
    """The floating dtype a native checkpoint's weights are stored in (``file_dtype`` of its
    ``model.safetensors``), so that converting or exporting it without ``--dtype`` keeps it:
    loading upcasts fp16 to fp32 on a CPU, which doubled the folder. None where it cannot be
    read (a publisher folder; ``load`` says what is wrong)."""
    from unmask.checkpoint import checkpoint_dir

    try:
        return file_dtype(checkpoint_dir(src) / SINGLE)
    except UserError:
        return None


def export_config(imp: Importer, config: ModelConfig, dtype: torch.dtype) -> dict[str, Any]:
    """The family's ``config.json`` for a native ``ModelConfig``: the inverse of ``facts``,
    ``constants``, ``requires`` and the special ids; a ``UserError`` if the family cannot
    hold this model (e.g. a causal model as LLaDA, or no logit shift as Dream)."""
    extra = imp.underive(config) if imp.underive is not None else {}  # import-only: refused
    for name, value in imp.constants.items():
        if getattr(config, name) != value:
            raise UserError(
                f"cannot export as {imp.name}: it needs {name}={value!r}, the checkpoint has "
                f"{getattr(config, name)!r}"
            )
    out: dict[str, Any] = dict(imp.header)
    for key, allowed in imp.requires.items():
        out[key] = allowed[0]
    for name, (keys, _default) in imp.facts.items():
        for key in keys:
            out[key] = getattr(config, name)
    out.update(extra)
    for name, key in SPECIAL_KEYS.items():
        out[key] = getattr(config, name)
    out["prompt_bos_id"] = config.prompt_bos_id  # read back as it is (load.prompt_bos_id)
    out["torch_dtype"] = str(dtype).removeprefix("torch.")
    _check_round_trip(imp, config, out)
    return out


SAMPLER_FACTS = frozenset({
    "objective", "schedule", "schedule_eps", "sample_defaults", "chat_template", "init_std",
    "empty_id", "fim_prefix_id", "fim_suffix_id", "fim_middle_id", "prompt_bos_id",
})
"""``ModelConfig`` fields a publisher's ``config.json`` has no place for that do not change
the network's function (how it is sampled or trained, token ids the tokenizer keeps): an
export drops them (docs/models.md), but for ``prompt_bos_id``, which it writes under its own
name, read back as it is. Any other field it would drop is refused."""


def _check_round_trip(imp: Importer, config: ModelConfig, header: dict[str, Any]) -> None:
    """Refuse, in one line, an export whose ``config.json`` would import back as another
    network: a field outside ``SAMPLER_FACTS`` that the family cannot hold (a SEDD graph, a
    latent autoencoder's sizes, time conditioning...) would otherwise be dropped silently and
    the folder decoded as a plain mask predictor."""
    from dataclasses import fields

    from unmask.config import ModelConfig

    back = _shape_fields(imp, header, Path("config.json"))
    defaults = ModelConfig(vocab_size=config.vocab_size)
    skip = SAMPLER_FACTS | set(SPECIAL_KEYS) | _unused_fields(config)
    for f in fields(config):
        if f.name in skip:
            continue
        got = back.get(f.name, getattr(defaults, f.name))
        if got != getattr(config, f.name):
            raise UserError(
                f"cannot export as {imp.name}: the option {f.name}={getattr(config, f.name)!r} "
                f"has no place in a {imp.name} folder (it would import back as "
                f"{f.name}={got!r}, another network)"
            )


def export(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    family: str,
    dtype: torch.dtype | str | None = None,
) -> Path:
    """Write a native checkpoint ``src`` as a folder in ``family``'s publisher layout at ``dst``
    (``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``,
    and for a publisher's layout ``generation_config.json``, and ``chat_template.jinja`` for a
    chat model); returns ``dst``.

    Tensor names are the inverse of the family's weight map, so ``unmask.load(dst)`` imports
    it back exactly. Family ``transformers`` writes its own modeling code and
    ``tokenizer_config.json`` instead (the importer's ``files``), so ``transformers`` loads the
    folder with ``trust_remote_code=True``; for a publisher's layout that needs the
    publisher's code copied into ``dst`` (unmask does not ship third-party code):
    ``configuration_llada.py`` / ``modeling_llada.py`` for ``llada``,
    ``configuration_lladamoe.py`` / ``modeling_lladamoe.py`` for ``llada-moe``, and
    ``configuration_dream.py`` / ``modeling_dream.py`` / ``generation_utils.py`` for
    ``dream`` (docs/models.md). ``dtype`` as for ``convert`` (default: as the checkpoint
    stores it).
    """
    from unmask.checkpoint import check_model_path
    from unmask.config import load_target

    check_model_path(src)  # "" (an unset variable) is the working folder to pathlib
    if family not in IMPORTERS:
        raise UserError(f"unknown family {family!r}; choose one of {', '.join(IMPORTERS)}")
    imp = IMPORTERS[family]
    out = Path(dst)
    check_destination(out, src)
    dtype = load_target("cpu", dtype)[1]
    # refusals before the weights are read (minutes for a large model): a publisher folder, a
    # model the family cannot hold
    if is_publisher_folder(src):  # one unmask cannot import: detect's refusal (convert fails)
        cfg = Path(src) / "config.json"  # an LFS pointer is the LFS line, as load says
        family = detect(read_config_json(cfg), cfg).name
        raise UserError(
            f"{src}: already a publisher folder ({family}); export "
            f"takes a native checkpoint: `unmask convert {src} NATIVE` first, then export NATIVE"
        )
    folder, config, tokenizer, dtype = _native_parts(src, dtype)
    model = checked_meta(config, folder, dtype)  # a billion layers: one line, not a hang
    params = {n for n, _ in model.named_parameters()}  # a tied output head once, as saved
    header, names = _checked_layout(imp, config, dtype, params)
    if imp.files is not None:  # transformers: tokenizer_config.json holds the template
        files = imp.files(config, tokenizer)
    else:  # the template also where transformers and the importer look first (an SFT
        # model stays chat-capable)
        template = config.chat_template
        files = {"chat_template.jinja": template} if template else {}
        files["tokenizer_config.json"] = _tokenizer_config(config, tokenizer)
        files["generation_config.json"] = _generation_config(config)
    with _streamed_native(model, folder) as tensors:  # one tensor in memory at a time
        renamed = _Renamed(tensors, names)
        like = {names[k]: p for k, p in tensors.params.items()}
        return _write_folder(out, renamed, {"format": "pt"}, header, tokenizer, files,
                             like=like)


class _Renamed(Mapping[str, "torch.Tensor"]):
    """``tensors`` under other names (``names``: old -> new), each read when asked for."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], names: Mapping[str, str]) -> None:
        self.tensors, self.old = tensors, {new: old for old, new in names.items()}

    def __contains__(self, name: object) -> bool:
        return name in self.old  # Mapping's would read the tensor

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[self.old[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.old)

    def __len__(self) -> int:
        return len(self.old)


def _tokenizer_config(config: ModelConfig, tokenizer: Any) -> str:
    """A publisher folder's ``tokenizer_config.json``, as LLaDA's and Dream's ship one: the
    tokenizer class and the special tokens by name, so ``AutoTokenizer`` over the folder knows
    its mask and end tokens (without it, it built a tokenizer with none), and the chat template,
    the one place ``transformers`` before 4.47 reads it: those versions, which the publishers'
    modeling code needs (LLaDA's fails under 5.x), read no ``chat_template.jinja`` (the
    export's only copy, so ``apply_chat_template`` had none); later versions read that file
    first, the same text."""
    from unmask.convert.hf_export import tokenizer_config

    return json.dumps(tokenizer_config(config, tokenizer), indent=2) + "\n"


def _generation_config(config: ModelConfig) -> str:
    """A publisher folder's ``generation_config.json``: the special ids (Dream's folder ships
    one with its BOS, EOS and pad ids). Dream's ``from_pretrained`` loads it (its
    ``DreamGenerationConfig``): without the file, the export did not load with the
    publisher's code. ``diffusion_generate`` then takes its ids, the mask's included, from
    ``config.json``."""
    ids = {key: getattr(config, name) for name, key in SPECIAL_KEYS.items()}
    return json.dumps({k: v for k, v in ids.items() if v is not None}, indent=2,
                      sort_keys=True) + "\n"


def _layout(
    imp: Importer, config: ModelConfig, dtype: torch.dtype, params: set[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """(config.json, parameter name -> tensor name) of ``config`` in ``imp``'s layout; a
    ``UserError`` when the family cannot hold the model."""
    header = export_config(imp, config, dtype)
    names = {v: k for k, v in weight_map(imp, config, params).items() if isinstance(v, str)}
    unmapped = sorted(params - set(names))
    if unmapped:
        raise UserError(
            f"cannot export as {imp.name}: no {imp.name} name for {', '.join(unmapped[:3])}"
        )
    return header, names


def _checked_layout(
    imp: Importer, config: ModelConfig, dtype: torch.dtype, params: set[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """``_layout``, its refusal naming the families that hold the model (a hint only where it
    is true)."""
    try:
        return _layout(imp, config, dtype, params)
    except UserError as e:
        others = [f"--to {n}" for n in _holders(config, dtype, params) if n != imp.name]
        raise UserError(f"{e}; {' or '.join(others)} holds it" if others else str(e)) from None


def _holders(config: ModelConfig, dtype: torch.dtype, params: set[str]) -> list[str]:
    """The families whose layout holds this model (``_layout`` succeeds)."""
    out = []
    for imp in IMPORTERS.values():
        try:
            _layout(imp, config, dtype, params)
        except UserError:
            continue
        out.append(imp.name)
    return out


def _unused_fields(config: ModelConfig) -> set[str]:
    """Fields this network does not read, whatever their value: the dense MLP's width when
    every layer is a mixture of experts, the experts' settings without experts, the noise
    embedding's without time conditioning, a block size without block-causal attention."""
    unused: set[str] = set()
    if config.n_experts and not config.dense_layers:
        unused.add("ffn_hidden")
    if not config.n_experts:
        unused |= {"expert_hidden", "experts_top_k", "norm_topk_prob", "routed_scaling",
                   "router", "router_expert_bias", "router_groups", "router_topk_groups",
                   "shared_expert_hidden", "dense_layers"}
    if not config.time_conditioning:
        unused |= {"cond_dim", "sigma_input"}
    if config.attention != "block-causal":
        unused.add("block_size")
    return unused
