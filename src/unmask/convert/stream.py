"""The one way weights get into a model for inference: ``stream_weights`` fills a model built on
the meta device (``unmask.model.meta_model``) from safetensors files, module by module, for a
native checkpoint (``unmask.checkpoint.load``: names map to themselves) and a publisher folder
(``unmask.convert.load``: the family's weight map) alike.

Every name, shape and dtype (plain floating point: not integers, nor FP8 without its scales) is
checked before anything is read (one-line ``UserError`` naming the file); then each block,
then the embedding, final norm and head, is materialised on the device in the load dtype,
copied from the memory-mapped files that hold it, opened for that block only (``copy_``
casts), checked for values that are not finite, and quantised (``--quantize``) before the
next, so memory holds the model so far plus one block (and the mapped pages of its files).
Also ``module_groups`` (the walk's order) and ``quantizes`` (which groups a quantised load
quantises).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, KeysView, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unmask.errors import UserError

if TYPE_CHECKING:
    import torch

    from unmask.config import ModelConfig

Target = str | tuple[str, ...]
"""A source tensor's destination: a parameter name, or several for a fused tensor split along
dim 0 (LLaDA 2's ``query_key_value``)."""


def targets(dst: Target) -> tuple[str, ...]:
    """The parameter names a source tensor fills."""
    return (dst,) if isinstance(dst, str) else dst


def module_groups(model: Any) -> list[tuple[str, Any]]:
    """(prefix, module) in the order a load materialises them: every block, then the other
    top-level modules (embedding, final norm, head, ...)."""
    groups = [(f"layers.{i}", layer) for i, layer in enumerate(model.layers)]
    return groups + [(n, m) for n, m in model.named_children() if n != "layers"]


def quantizes(prefix: str, tied: bool) -> bool:
    """Whether a quantised load quantises the module group ``prefix``: every one (its linear
    layers, as ``quantize_model`` and ``estimate_bytes`` count them: the blocks, the head, a
    noise-level embedding, a final modulation, a self-conditioning map) except an output head
    that is the embedding matrix (``tie_embeddings``)."""
    return not (prefix == "lm_head" and tied)


def stream_weights(
    model: Any,
    names: Mapping[str, Target],
    files: list[Path],
    *,
    device: str | torch.device,
    quantize: str | None,
    folder: Path,
    unexpected: str,
    buffers: Mapping[str, Callable[[ModelConfig], torch.Tensor | None]] | None = None,
    ignore: frozenset[str] = frozenset(),
    why: Mapping[str, str] | None = None,
) -> None:
    """Fill ``model`` (on the meta device, or already materialised) from the safetensors
    ``files``: ``names`` maps each source tensor to the parameter(s) it fills, and must cover
    every parameter (an importer bug otherwise). ``buffers`` are stored tensors that are not
    loaded but must hold what the config implies (a rotary table; a function returning None
    accepts any value), ``ignore`` tensors that may be there and are skipped (a native
    checkpoint's tied output head). ``unexpected`` says, in the error, why a tensor outside
    ``names`` is one, ``why`` the reason for particular tensors (an output head the config
    ties).

    One-line ``UserError`` naming the file for a file that cannot be read, an unexpected
    tensor, one found twice, a shape that disagrees with config.json, a weight that is not
    floating point (integers or booleans: quantisation happens at load), a tensor missing (naming
    ``folder``), and a tensor holding NaN or infinity, or values the load dtype cannot hold:
    such a model's every output is NaN. Nothing is materialised for files that fail the name
    and shape checks."""
    where = check_sources(model, names, files, folder=folder, unexpected=unexpected,
                          buffers=buffers, ignore=ignore, why=why)
    source = {t: (k, j) for k, d in names.items() for j, t in enumerate(targets(d))}
    tied = bool(getattr(model.config, "tie_embeddings", False))
    for prefix, module in module_groups(model):
        if tied and prefix == "lm_head":  # the embedding (filled above); a bias is its own
            module.weight = model.embed.weight
        _fill_module(module, prefix, names, source, where, device)
        if quantize is not None and quantizes(prefix, tied):
            from unmask.quantize import quantize_module

            quantize_module(module, quantize, device)
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:  # a parameter outside every group: a bug of module_groups, not of the files
        raise RuntimeError(f"parameters left unloaded: {left[:3]}")


def check_sources(
    model: Any,
    names: Mapping[str, Target],
    files: list[Path],
    *,
    folder: Path,
    unexpected: str,
    buffers: Mapping[str, Callable[[ModelConfig], torch.Tensor | None]] | None = None,
    ignore: frozenset[str] = frozenset(),
    why: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """The checks ``stream_weights`` makes before reading anything (same arguments): every
    tensor of ``files`` expected, found once, of the shape ``model`` implies and stored in
    plain floating point, none missing; returns source tensor name -> the file holding it."""
    params = dict(model.named_parameters())  # tied weights appear once
    unmapped = sorted(set(params) - {t for d in names.values() for t in targets(d)})
    if unmapped:  # an importer bug, not a user error: the map must cover the model
        raise RuntimeError(f"the weight map has no source for {unmapped[:3]}")
    buffers = buffers or {}
    where: dict[str, Path] = {}  # source key -> its file
    for file in files:  # each file opened for its checks and closed: nothing stays mapped
        with contextlib.ExitStack() as stack:
            f = open_file(file, stack)
            for key in f.keys():  # noqa: SIM118 (safe_open handles are not mappings)
                if key in ignore:
                    continue
                if key not in names and key in buffers:
                    want = buffers[key](model.config)  # None: any value (nothing it implies)
                    if want is not None:
                        _check_buffer(f.get_tensor(key), want, key, file)
                    continue
                if key not in names:
                    reason = (why or {}).get(key, unexpected)
                    raise UserError(f"{file}: unexpected tensor {key} ({reason})")
                if key in where:
                    raise UserError(f"{file}: tensor {key} also in {where[key].name}")
                parts = [params[t] for t in targets(names[key])]
                want = (sum(p.shape[0] for p in parts), *parts[0].shape[1:])
                shape = tuple(f.get_slice(key).get_shape())
                if shape != want:
                    raise UserError(
                        f"{file}: tensor {key} has shape {shape}, config.json implies {want}"
                    )
                kind = f.get_slice(key).get_dtype()  # safetensors' name: F32, BF16, I64, ...
                _check_dtype(kind, key, file)
                where[key] = file
    missing = sorted(set(names) - set(where))
    if missing:
        raise UserError(
            f"{folder}: missing tensor(s) "
            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
        )
    return where


class StreamedWeights(Mapping[str, "torch.Tensor"]):
    """The parameters of ``model`` (on the meta device, in the dtype to write them in) read
    from the source files one at a time, when asked for, as ``stream_weights`` would fill
    them (``names`` and ``where``, from ``check_sources``): cast to the parameter's dtype and
    checked by ``_check_finite``. What ``unmask convert`` writes
    (``unmask.files.write_safetensors`` with ``like``), so memory holds one tensor and the
    mapped pages of one block's files, not the whole model; a context manager closing them."""

    def __init__(self, model: Any, names: Mapping[str, Target], where: Mapping[str, Path]
                 ) -> None:
        self.params = dict(model.named_parameters())  # a tied head appears once, as saved
        self.names, self.where = names, where
        self.source = {t: (k, j) for k, d in names.items() for j, t in enumerate(targets(d))}
        self.group = {f"{prefix}.{n}": prefix for prefix, module in module_groups(model)
                      for n, _ in module.named_parameters()}  # the walk's, as it opens files
        self._stack = contextlib.ExitStack()
        self._group: str | None = None  # the module group whose files are open
        self._handles: dict[Path, Any] = {}

    def __enter__(self) -> StreamedWeights:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def __len__(self) -> int:
        return len(self.params)

    def __iter__(self) -> Iterator[str]:
        return iter(self.params)

    def __contains__(self, name: object) -> bool:
        return name in self.params  # Mapping's would read the tensor

    def keys(self) -> KeysView[str]:
        return self.params.keys()

    def __getitem__(self, name: str) -> torch.Tensor:
        import torch

        param = self.params[name]
        key, part = self.source[name]
        file = self.where[key]
        # the files of one block open at a time, as stream_weights opens them: the pages read
        # through a handle count in memory until it is closed (a native checkpoint is one
        # file, the whole model)
        if self.group[name] != self._group:
            self._stack.close()
            self._group, self._handles = self.group[name], {}
        if file not in self._handles:
            self._handles[file] = open_file(file, self._stack)
        sizes = [self.params[t].shape[0] for t in targets(self.names[key])]
        stored = _read_part(self._handles[file], key, part, sizes)
        with torch.no_grad():
            out = stored.to(param.dtype).contiguous()
        _check_finite(out, stored, key, file)
        return out


WEIGHT_DTYPES = ("BF16", "F16", "F32", "F64")
"""safetensors dtypes a weight may be stored in: plain floating point, which ``copy_`` casts to
the load dtype exactly (up to its precision)."""


def _check_dtype(kind: str, key: str, file: Path) -> None:
    """Refuse, in one line, tensor ``key`` of ``file`` stored as ``kind`` (safetensors' name)
    unless it is one of ``WEIGHT_DTYPES``: integers or booleans (``copy_`` cast 0/1/...
    silently), and FP8 / FP6 / FP4 (``F8_E4M3``...), a publisher's quantised weights, which
    ``copy_`` upcast without their scales (stored beside them, or per block) into wrong
    weights, silently where ``config.json`` had lost its ``quantization_config``."""
    if kind in WEIGHT_DTYPES:
        return
    if kind.startswith(("F8", "F6", "F4")):
        from unmask.quantize import QUANTIZATIONS

        raise UserError(
            f"{file}: tensor {key} holds {kind} values, weights quantised by the publisher "
            "whose scales unmask does not read; load the unquantised (bf16, fp16, fp32) "
            f"release, with --quantize {' or '.join(QUANTIZATIONS)} to save memory"
        )
    raise UserError(
        f"{file}: tensor {key} holds {kind} values, not floating-point weights "
        "(a corrupt or foreign checkpoint?)"
    )


def open_file(file: Path, stack: contextlib.ExitStack) -> Any:
    """``safe_open(file)`` kept open by ``stack``; a one-line ``UserError`` for a file that is
    not a safetensors file (cut short by an interrupted copy, an HTML error page, ...)."""
    from safetensors import safe_open

    try:
        return stack.enter_context(safe_open(str(file), framework="pt", device="cpu"))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise unreadable(file, e) from None


def unreadable(file: Path, error: Exception) -> UserError:
    """The one-line error for a safetensors ``file`` that ``error`` kept from being read; a
    file cut short (an interrupted download or copy) is named so, with its size and the size
    its header promises, rather than as safetensors' "incomplete metadata, file not fully
    covered"."""
    if is_lfs_pointer(file):
        return lfs_error(file)
    short = _cut_short(file)
    if short is not None:
        return UserError(f"{file}: cut short ({short}: an interrupted download or copy?); "
                         "copy or download it again")
    return UserError(f"{file}: cannot read ({error})")


def is_lfs_pointer(file: Path) -> bool:
    """Whether ``file`` is a Git LFS pointer (a few lines of text) rather than its content
    (``sniff.lfs_pointer``; False when it cannot be read)."""
    from unmask.sniff import lfs_pointer

    try:
        with open(file, "rb") as fh:
            return lfs_pointer(fh.read(200)) is not None
    except OSError:
        return False


def lfs_error(file: Path) -> UserError:
    """The one-line error for a Git LFS pointer where ``file``'s content belongs."""
    from unmask.sniff import LFS_ADVICE

    return UserError(f"{file}: {LFS_ADVICE}")


def _cut_short(file: Path) -> str | None:
    """"N of M bytes" when ``file`` is shorter than its safetensors header says ("N bytes"
    when shorter than the header's length field), else None (not cut short, or not a
    safetensors file at all)."""
    import json

    try:
        size = file.stat().st_size
        if size < 8:  # not even the header's length: a download that never began (0 bytes)
            return f"{size:,} bytes"
        with open(file, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n > 100 * 2**20:  # not a header length: another format
                return None
            if size < 8 + n:
                return f"{size:,} bytes, its header alone {8 + n:,}"
            header = json.loads(fh.read(n))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None
    want = 8 + n + max(ends, default=0)
    return f"{size:,} of {want:,} bytes" if size < want else None


def _check_buffer(got: torch.Tensor, want: torch.Tensor, key: str, file: Path) -> None:
    """A stored buffer (not a weight) must hold what the config implies; it is not loaded."""
    import torch

    if got.shape != want.shape or not torch.allclose(
        got.float(), want.float(), rtol=1e-2, atol=1e-6
    ):
        raise UserError(
            f"{file}: tensor {key} differs from what config.json implies "
            "(not this family's model?)"
        )


def _fill_module(
    module: Any,
    prefix: str,
    names: Mapping[str, Target],
    source: dict[str, tuple[str, int]],
    where: dict[str, Path],
    device: str | torch.device,
) -> None:
    """Materialise ``module`` on ``device`` and copy its parameters from the files that hold
    them, opened for this module only (a file's pages stay mapped, and count in the process's
    memory, only while it is open: holding every shard open for the whole load kept the whole
    checkpoint resident beside the model); each parameter is read by ``_read_part`` (a fused
    source tensor: its rows only) and checked by ``_check_finite``."""
    import torch

    from unmask.model import materialise

    materialise(module, device)
    own = dict(module.named_parameters())
    keys = {source[f"{prefix}.{n}"][0] for n in own if f"{prefix}.{n}" in source}
    with torch.no_grad(), contextlib.ExitStack() as stack:
        handles = {file: open_file(file, stack) for file in sorted({where[k] for k in keys})}
        for name, param in own.items():
            if f"{prefix}.{name}" not in source:  # a tied head's weight: the embedding's
                continue
            key, part = source[f"{prefix}.{name}"]
            sizes = [own[t[len(prefix) + 1 :]].shape[0] for t in targets(names[key])]
            stored = _read_part(handles[where[key]], key, part, sizes)
            param.copy_(stored)
            _check_finite(param, stored, key, where[key])


def _read_part(handle: Any, key: str, part: int, sizes: list[int]) -> torch.Tensor:
    """Tensor ``key`` of the open safetensors file ``handle``, as stored; for a fused tensor
    (``sizes``: the rows, along dim 0, of each parameter it fills) the rows of its ``part``-th
    parameter only."""
    if len(sizes) == 1:
        return handle.get_tensor(key)
    start = sum(sizes[:part])
    return handle.get_slice(key)[start : start + sizes[part]]


CHUNK = 1 << 20
"""Elements counted at a time once a tensor is known to hold NaN or infinity."""


def _check_finite(param: torch.Tensor, stored: torch.Tensor, key: str, file: Path) -> None:
    """A one-line ``UserError`` when ``param`` (just filled from ``stored``) holds NaN or
    infinity: stored so (a run that diverged), or beyond the range of the load dtype (float32
    weights over 65504 loaded as float16). The test is the tensor's sum (NaN and infinity
    survive a sum), so it allocates nothing; a per-element count of 4 MB chunks, scratch the
    allocator kept, added a third to the resident memory of a float32 model."""
    import torch

    def bad(t: torch.Tensor) -> int:
        flat = t.detach().reshape(-1)
        return sum(int((~torch.isfinite(c)).sum()) for c in flat.split(CHUNK))

    if bool(torch.isfinite(param.sum())):
        return
    n = bad(param)  # the sum overflowed (float16), or the tensor holds NaN or infinity
    if n == 0:
        return
    if bad(stored) == 0:
        raise UserError(
            f"{file}: tensor {key} has {n} value(s) beyond the range of {_name(param.dtype)}; "
            f"load it in a wider dtype (--dtype fp32 or bf16)"
        )
    raise UserError(
        f"{file}: tensor {key} holds {n} NaN or infinite value(s) (a training run that "
        "diverged?); every output of this model would be NaN"
    )


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


__all__ = [
    "StreamedWeights", "Target", "check_sources", "is_lfs_pointer", "lfs_error",
    "module_groups", "open_file", "quantizes", "stream_weights", "targets", "unreadable",
]
