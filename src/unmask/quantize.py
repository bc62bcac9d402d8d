"""Weight-only int8 / int4 quantisation at load time (torchao), and the memory check before
loading (will the weights fit in the RAM / VRAM that is free?).

Inside:

- ``QUANTIZATIONS``: ``int8``, ``int4``; ``check_quantize(name, device, dtype)`` refuses, with one
  line, what torchao or the device cannot do, before anything is loaded.
- ``quantize_module(module, name, device)``: the linear layers of ``module`` (a block, the head)
  quantised in place; the routers of mixtures of experts stay in full precision (a wrong expert
  costs more than the bytes saved), and so do layers narrower than ``MIN_IN_FEATURES`` inputs.
  ``quantize_model`` does a whole model; ``quantized_layer`` finds a layer already quantised
  (a second quantisation is refused in one line); ``refuse_prequantized`` refuses a publisher's
  own quantised release (``quantization_config``) for every family (``convert.load`` calls it
  once, after detecting the family).
- ``import_torchao()``, ``torchao_quiet()``: the import, without the warnings it logs about
  kernels we do not use.
- ``estimate_bytes(model, dtype, quantize, device)``: resident bytes of a model built on the
  meta device, per dtype / quantisation; ``free_bytes(device)`` (within a container's memory
  limit, ``cgroup_free_bytes``); ``check_fits`` compares them
  and refuses with the setting that fits (as Ollama's fit check does); ``check_size`` refuses
  from the parameter count, before building it, a config too large to build.

How each scheme is stored (torchao 0.18, measured in docs/large-models.md):

- ``int8``: ``Int8WeightOnlyConfig``, per-row scales, on CPU and CUDA: 1 byte a weight.
- ``int4`` on CUDA: ``Int4WeightOnlyConfig`` (group 128, tinygemm ``tile_packed_to_4d``,
  bfloat16 only): half a byte a weight.
- ``int4`` on CPU: ``IntxWeightOnlyConfig(int4, group 32)``: int4 values and accuracy, but
  torchao has no packed int4 kernel for x86 CPUs, so each value is stored in an int8, with a
  scale and a zero point a group: more than int8 (1.09 bytes a weight, 1.16 in a float32 load).
  Said in the docs and by ``estimate_bytes``, so the fit check is honest.

Nothing here is imported on the path of ``unmask --help``; torchao is imported when used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from unmask.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

QUANTIZATIONS: tuple[str, ...] = ("int8", "int4")
"""Accepted ``--quantize`` values."""

BYTES_PER_WEIGHT: dict[tuple[str, str], float] = {
    # int8 + a float32 scale and an int8 zero point per row (rows of >= 2048)
    ("int8", "cpu"): 1.0 + 5 / 2048,
    ("int8", "cuda"): 1.0 + 5 / 2048,
    # int4 values kept in int8 + a scale (bf16 / fp16) and an int8 zero point per group of 32
    ("int4", "cpu"): 1.0 + 3 / 32,
    ("int4", "cuda"): 0.5 + 4 / 128,  # packed int4 + bf16 scale and zero per 128
}
"""Bytes per quantised weight, by (scheme, device type), for a bfloat16 / float16 load (as
torchao 0.18 stores them, measured: tests/test_llada2_quantize.py); ``bytes_per_weight`` adds
the wider scales of a float32 load (int4 on CPU keeps its scales in the load's dtype)."""


def bytes_per_weight(quantize: str, device: str | torch.device, dtype: torch.dtype) -> float:
    """Bytes a weight quantised with ``quantize`` on ``device`` takes in a ``dtype`` load:
    ``BYTES_PER_WEIGHT``, plus 2 bytes a group of 32 more for int4's float32 scales on CPU."""
    import torch

    kind = _device_type(device)
    per = BYTES_PER_WEIGHT[(quantize, kind)]
    if quantize == "int4" and kind == "cpu" and torch.empty((), dtype=dtype).element_size() > 2:
        per += 2 / 32
    return per


OVERHEAD = 1.05
"""Working memory on top of the weights (activations, KV cache, allocator slack)."""
OVERHEAD_BYTES = 512 * 2**20
"""Fixed working memory on top of the weights (the interpreter, torch, the tokenizer)."""

SKIP_ENV = "UNMASK_NO_FIT_CHECK"
"""Set to 1 to load without the memory check (the estimate is an estimate)."""


def _device_type(device: str | torch.device) -> str:
    return str(device).split(":")[0]


IMPORT_NOISE = ("torchao", "torch.utils._pytree")
"""Loggers that ``import torchao`` fills with warnings which are not the user's business: its
prebuilt kernels compiled for another Python or a CUDA torch ("Failed to load .../_C_mxfp8...
.so"), and deprecation notes about how it registers its enums."""


@contextlib.contextmanager
def torchao_quiet() -> Iterator[None]:
    """Hold back, inside the block, the warnings that importing torchao (or its submodules)
    logs (``IMPORT_NOISE``); the loggers' levels come back afterwards."""
    import logging

    loggers = [logging.getLogger(n) for n in IMPORT_NOISE]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def import_torchao() -> Any:
    """``import torchao`` and ``torchao.quantization`` (ImportError when it is not installed)
    inside ``torchao_quiet``: the kernels unmask uses (weight-only int8/int4) do not need the
    extensions it fails to load. ``transformers`` imports it too (its quantizers, when the
    reference scorer loads; ``unmask.scoring`` loads it inside ``torchao_quiet``)."""
    with torchao_quiet():
        import torchao
        import torchao.quantization  # noqa: F401
    return torchao


TORCHAO_MIN = (0, 18)
"""The oldest torchao whose configs ``_config`` uses as it does (``int4_packing_format``,
``IntxWeightOnlyConfig``); pyproject's ``quantize`` extra asks for it. An older one installed
beside unmask imports, and its configs then fail (a missing name or argument) or quantise in
another layout than ``BYTES_PER_WEIGHT`` counts."""


def _version(text: str) -> tuple[int, int]:
    """(major, minor) of a version string such as ``0.18.0+cu128``; (0, 0) if unreadable."""
    import re

    m = re.match(r"(\d+)\.(\d+)", text)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def _broken_torchao(name: str, e: BaseException) -> NoReturn:
    """One line for a torchao that is installed but fails to import (built for another torch:
    "cannot import name ... from torch", an undefined symbol), which "needs torchao" misled."""
    first = str(e).splitlines()[0][:120] if str(e) else ""
    raise UserError(
        f"--quantize {name}: torchao is installed but fails to import ({type(e).__name__}"
        f"{': ' + first if first else ''}): pip install -U 'unmask[quantize]'"
    ) from None


def check_quantize(name: str | None, device: str | torch.device, dtype: Any = None) -> None:
    """Refuse, with one line, a quantisation that is unknown or that torchao / the device cannot
    do; None is no quantisation."""
    if name is None:
        return
    if name not in QUANTIZATIONS:
        raise UserError(f"unknown quantization {name!r}; choose {' or '.join(QUANTIZATIONS)}")
    kind = _device_type(device)
    if kind not in ("cpu", "cuda"):
        raise UserError(f"--quantize {name} runs on cpu or cuda, not {kind}")
    try:
        torchao = import_torchao()
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "torchao":  # torchao there, a module it needs not
            _broken_torchao(name, e)
        raise UserError(
            f"--quantize {name} needs torchao: pip install 'unmask[quantize]'"
        ) from None
    except Exception as e:  # noqa: BLE001 - a torchao built for another torch fails its own way
        _broken_torchao(name, e)
    found = str(getattr(torchao, "__version__", ""))
    if _version(found) < TORCHAO_MIN:  # its configs' names and arguments differ before
        raise UserError(
            f"--quantize {name} needs torchao >= {'.'.join(map(str, TORCHAO_MIN))}, found "
            f"{found or 'an unknown version'}: pip install -U 'unmask[quantize]'"
        )
    import torch

    if dtype is not None and dtype not in (torch.float32, torch.bfloat16, torch.float16):
        # torchao's weight-only kernels take these three; a float64 load was read and
        # materialised before torchao refused it ("Unsupported input dtype: torch.float64")
        raise UserError(
            f"--quantize {name} quantises float32, bfloat16 or float16 weights, not "
            f"{str(dtype).removeprefix('torch.')}: load them as one of those (dtype=torch.float32)"
        )
    if name == "int4" and kind == "cuda" and dtype is not None and dtype != torch.bfloat16:
        raise UserError(
            "--quantize int4 on CUDA needs bfloat16 weights (torchao's int4 kernel): "
            "add --dtype bf16 (dtype=torch.bfloat16)"
        )


def _config(name: str, device: str | torch.device) -> Any:
    """The torchao config of scheme ``name`` on ``device`` (see the module docstring)."""
    import torch
    from torchao.quantization import (
        Int4WeightOnlyConfig,
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
    )
    from torchao.quantization.granularity import PerGroup

    if name == "int8":
        return Int8WeightOnlyConfig()
    if _device_type(device) == "cuda":
        return Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d")
    return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))


def _group(name: str | None, device: str | torch.device) -> int:
    """Input columns sharing one scale: int4 groups of 128 (CUDA) / 32 (CPU); int8 per row."""
    if name != "int4":
        return 1
    return 128 if _device_type(device) == "cuda" else 32


MIN_IN_FEATURES = 8
"""Narrowest input (weights a row) a quantised Linear has; a narrower one stays in full
precision, as torchao-style quantisers skip layers too small to matter: its per-row scale (4
bytes) eats most of the saving, and torchao's int8 path fails on a row of one weight (a
shared expert 1 wide: "shape '[32, 1]' is invalid")."""


def _quantizable(module: nn.Module, fqn: str, group: int = 1) -> bool:
    """Linear layers other than MoE routers (``...router``) whose input width is a multiple of
    the scheme's group and at least ``MIN_IN_FEATURES`` (others stay in full precision)."""
    from torch import nn

    return (
        isinstance(module, nn.Linear)
        and fqn.split(".")[-1] != "router"
        and module.in_features % group == 0
        and module.in_features >= MIN_IN_FEATURES
    )


def _tied_head(model: nn.Module) -> str | None:
    """``"lm_head"`` when ``model``'s output head is its embedding matrix (``tie_embeddings``):
    it stays that matrix, in full precision (quantising it would untie it into a second copy;
    the publisher-folder path, which quantises as it loads, never did); None otherwise."""
    tied = getattr(getattr(model, "config", None), "tie_embeddings", False)
    return "lm_head" if tied and hasattr(model, "lm_head") else None


def quantized_layer(module: nn.Module) -> str | None:
    """The name of the first layer of ``module`` whose weight torchao has quantised (``""`` for
    ``module`` itself), None when none has: a quantised weight is one of torchao's tensor
    subclasses."""
    import torch

    for fqn, m in module.named_modules():
        weight = getattr(m, "weight", None)
        if isinstance(weight, torch.Tensor) and any(
            type(w).__module__.startswith("torchao") for w in (weight, weight.data)
        ):
            return fqn
    return None


def quantize_module(module: nn.Module, name: str | None, device: str | torch.device) -> None:
    """Quantise the linear layers of ``module`` in place (weight-only ``name``), routers kept.

    A module that is itself a Linear is quantised too; ``name`` None quantises nothing. A
    scheme, device or dtype ``check_quantize`` refuses is refused here too, and so is a module
    already quantised (``quantized_layer``): torchao cannot quantise its own weights again.
    Errors of torchao (a shape its kernel cannot take, a missing kernel) become
    one-line ``UserError``s naming the scheme.
    """
    import warnings

    from torch import nn

    if name is None:  # as load(quantize=None); it quantised as int4
        return  # (and needs no torchao: it imported it first, a traceback without it)
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
    check_quantize(name, device, dtype)  # "int3", "mps": it quantised them as int4 / on cpu
    from torchao.quantization import quantize_  # installed: check_quantize said so

    root_linear = isinstance(module, nn.Linear)
    group = _group(name, device)
    tied = _tied_head(module)
    done = quantized_layer(module)
    if done is not None:  # torchao's own error was "Int8Tensor dispatch: ... aten.view"
        raise UserError(
            f"--quantize {name}: the model is already quantised ({done or 'the layer'} holds "
            "torchao weights); load it again with the quantisation wanted, once"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            quantize_(
                module,
                _config(name, device),
                filter_fn=lambda m, fqn: (
                    _quantizable(m, fqn or "", group) and (bool(fqn) or root_linear)
                    and fqn != tied
                ),
            )
        except (RuntimeError, NotImplementedError, AssertionError, ImportError, ValueError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(
                f"--quantize {name} failed on {_device_type(device)}: {first[:160]}"
            ) from None


def quantize_model(
    model: nn.Module, name: str | None, device: str | torch.device
) -> nn.Module:
    """Quantise every block and the output head of ``model`` in place (a head tied to the
    embeddings stays them, ``_tied_head``); returns it (as it was for ``name`` None). What
    ``check_quantize`` refuses, a model already quantised and one with no layer to quantise
    (``check_quantizable``) are one-line ``UserError``s."""
    if name is not None:
        check_quantize(name, device)
        check_quantizable(model, name, device, source="quantize_model")
    quantize_module(model, name, device)
    return model


def refuse_prequantized(hf: Mapping[str, Any], family: str) -> None:
    """Refuse, with one line, a publisher folder whose ``config.json`` has a
    ``quantization_config`` (an FP8, GPTQ, AWQ, bitsandbytes... release): its tensors are not
    the plain weights of ``family`` (it failed on the first ``weight_scale_inv`` or
    ``qweight``, as an unexpected tensor, or loaded the config without a word)."""
    qc = hf.get("quantization_config")
    if qc is None:
        return
    method = qc.get("quant_method") if isinstance(qc, Mapping) else None
    raise UserError(
        f"quantization_config: this {family} release was quantised by its publisher"
        f"{f' ({method})' if isinstance(method, str) else ''}; unmask loads unquantised "
        "(bf16, fp16, fp32) weights and quantises them itself: use the unquantised release "
        f"with --quantize {' or '.join(QUANTIZATIONS)}"
    )


# -- memory ------------------------------------------------------------------------------------


def estimate_bytes(
    model: nn.Module, dtype: torch.dtype, quantize: str | None, device: str | torch.device
) -> int:
    """Resident bytes of ``model`` (built on the meta device) loaded in ``dtype`` and quantised
    with ``quantize``, weights plus working memory (``OVERHEAD``, ``OVERHEAD_BYTES``); a
    quantised load also holds the layers it quantises of one module group (a block, or the
    output head: ``unmask.convert.stream.module_groups``) in ``dtype`` while quantising them,
    the largest such group counts (the peak of ``unmask.convert.stream.stream_weights``; a
    dense model's head outweighs its blocks: LLaDA-8B's by 2.4x)."""
    import torch

    item = torch.empty((), dtype=dtype).element_size()
    per_q = float(item) if quantize is None else bytes_per_weight(quantize, device, dtype)
    by_group: dict[str, int] = {}  # quantised weights per module group
    if quantize is not None:
        tied = _tied_head(model)
        for fqn, m in model.named_modules():
            if _quantizable(m, fqn, _group(quantize, device)) and fqn != tied:
                parts = fqn.split(".")
                key = ".".join(parts[:2] if parts[0] == "layers" else parts[:1])
                by_group[key] = by_group.get(key, 0) + m.weight.numel()
    quantized = sum(by_group.values())
    total = sum(p.numel() for p in model.parameters())
    weights = (total - quantized) * item + quantized * per_q
    transient = max(by_group.values(), default=0) * item
    return int(weights * OVERHEAD + OVERHEAD_BYTES + transient)


CGROUP_ROOT = "/sys/fs/cgroup"
"""Where the control groups are mounted: a container's memory limit (Docker ``--memory``, a
Kubernetes pod's limit) is there, while ``/proc/meminfo`` shows the host's memory."""

_UNLIMITED = 2**60
"""A cgroup v1 limit at or above this is none (the kernel writes 2^63 rounded to a page)."""


def _read_int(path: str, key: str | None = None) -> int | None:
    """The number in ``path`` (or on its line ``key <n>``); None when absent, unreadable or
    ``max`` (no limit)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    if key is not None:
        line = next((ln for ln in text.splitlines() if ln.split()[:1] == [key]), None)
        text = line.split()[1] if line else ""
    text = text.strip()
    return int(text) if text.isdigit() else None


PROC_SELF_CGROUP = "/proc/self/cgroup"
"""Where the kernel names this process's cgroup (v2: the line ``0::/its/path``)."""


def _own_cgroups(root: str) -> list[str]:
    """This process's cgroup v2 folder under ``root`` and every folder above it, innermost
    first (a limit set on a parent, as Slurm and ``systemd-run -p MemoryMax`` set it, binds
    too); just ``root`` where ``/proc/self/cgroup`` names no v2 path inside it."""
    try:
        with open(PROC_SELF_CGROUP) as f:
            line = next((ln for ln in f.read().splitlines() if ln.startswith("0::")), "")
    except OSError:
        line = ""
    parts = [p for p in line[3:].strip().split("/") if p and p != ".."]
    found = [root]
    for i in range(1, len(parts) + 1):
        path = "/".join([root, *parts[:i]])
        if os.path.isdir(path):
            found.append(path)
    return found[::-1]


def cgroup_free_bytes(root: str | None = None) -> int | None:
    """Memory this process's control groups may still take: the least, over its cgroup and
    those above it, of the limit less what is used, the file cache the kernel drops before
    it kills (``active_file`` and ``inactive_file``) not counted as used; None without a
    limit. cgroup v2 (``memory.max``) or v1 (``memory/``)."""
    root = CGROUP_ROOT if root is None else root
    free: list[int] = []
    for folder in _own_cgroups(root):
        for limit_file, used_file, stat_file, caches in (
            ("memory.max", "memory.current", "memory.stat", ("active_file", "inactive_file")),
            ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes",
             "memory/memory.stat", ("total_active_file", "total_inactive_file")),
        ):  # fmt: skip
            limit = _read_int(f"{folder}/{limit_file}")
            used = _read_int(f"{folder}/{used_file}")
            if limit is None or used is None or limit >= _UNLIMITED:
                continue
            cache = sum(_read_int(f"{folder}/{stat_file}", key) or 0 for key in caches)
            free.append(max(limit - (used - min(used, cache)), 0))
            break
    return min(free) if free else None


def free_bytes(device: str | torch.device) -> int | None:
    """Memory free for a model on ``device``: CUDA's free memory, or the system's available RAM
    (``MemAvailable``), no more than a container's memory limit leaves (``cgroup_free_bytes``:
    inside one, ``MemAvailable`` is the host's); None where it cannot be read."""
    import torch

    if _device_type(device) == "cuda":
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    system = _read_int("/proc/meminfo", "MemAvailable:")
    if system is not None:
        system *= 1024
    else:
        try:
            import psutil

            system = int(psutil.virtual_memory().available)
        except ImportError:
            system = None
    group = cgroup_free_bytes()
    return group if system is None else system if group is None else min(system, group)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def memory_refusal(subject: str, need: int, free: int, device: str | torch.device, hint: str,
                   *, bound: str = "about", setting: str | None = None) -> UserError:
    """The one line that refuses what does not fit ``device``'s free memory (``check_fits``,
    ``unmask generate``'s rows): ``"{subject}: needs {bound} 3.0 GB of RAM[ with {setting}],
    1.0 GB free: {hint} (or UNMASK_NO_FIT_CHECK=1 to try anyway)"`` (GPU memory on CUDA);
    ``bound``: "about" an estimate, "at least" a lower bound."""
    where = "GPU memory" if _device_type(device) == "cuda" else "RAM"
    how = f" with {setting}" if setting else ""
    return UserError(f"{subject}: needs {bound} {_gb(need)} of {where}{how}, {_gb(free)} free: "
                     f"{hint} (or {SKIP_ENV}=1 to try anyway)")


def check_fits(
    model: nn.Module,
    dtype: torch.dtype,
    quantize: str | None,
    device: str | torch.device,
    *,
    source: str,
    free: int | None = None,
) -> int:
    """Refuse, with one line and the setting that would fit, a model whose estimated memory
    (``estimate_bytes``) exceeds what ``device`` has free; returns the estimate. ``free``
    overrides the measurement (tests). ``UNMASK_NO_FIT_CHECK=1`` skips the refusal."""
    check_quantizable(model, quantize, device, source=source)
    need = estimate_bytes(model, dtype, quantize, device)
    free = free_bytes(device) if free is None else free
    if free is None or need <= free or os.environ.get(SKIP_ENV) == "1":
        return need
    setting = _dtype_name(dtype) + (f" + --quantize {quantize}" if quantize else "")
    fits = [
        (flags, size) for flags, size in _settings(model, dtype, quantize, device) if size <= free
    ]
    hint = (
        f"use {fits[0][0]} ({_gb(fits[0][1])})"
        if fits
        else "no setting fits this device; free memory or use a larger machine"
    )
    raise memory_refusal(source, need, free, device, hint, setting=setting)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _settings(
    model: nn.Module, dtype: torch.dtype, quantize: str | None, device: str | torch.device
) -> Iterator[tuple[str, int]]:
    """The settings other than (``dtype``, ``quantize``) that lose no less than it, least lossy
    first, as the flags that change to them and their ``estimate_bytes``: a float32 load also
    in bfloat16 (a ``--dtype bf16`` halves what is not quantised, and loses less than int8),
    then each scheme at least as coarse as ``quantize`` that quantises some layer, in ``dtype``
    and then, from float32, in bfloat16; int4 on CUDA always in bfloat16 (its kernel's)."""
    import torch

    schemes: list[str | None] = [None, *QUANTIZATIONS]
    dtypes = [dtype, torch.bfloat16] if dtype == torch.float32 else [dtype]
    seen = {(dtype, quantize)}
    for q in schemes[schemes.index(quantize):]:
        if q is not None and not _quantizes_any(model, q, device):
            continue
        for dt in dtypes:
            if q == "int4" and _device_type(device) == "cuda":
                dt = torch.bfloat16
            if (dt, q) in seen:
                continue
            seen.add((dt, q))
            flags = ["--dtype bf16"] if dt != dtype else []
            flags += [f"--quantize {q}"] if q != quantize else []
            yield " ".join(flags), estimate_bytes(model, dt, q, device)


def _quantizes_any(model: nn.Module, quantize: str, device: str | torch.device) -> bool:
    """Whether ``quantize`` on ``device`` quantises some layer of ``model`` (``_quantizable``,
    the tied head excepted)."""
    group = _group(quantize, device)
    tied = _tied_head(model)
    return any(_quantizable(m, fqn, group) and fqn != tied for fqn, m in model.named_modules())


def check_quantizable(
    model: nn.Module, quantize: str | None, device: str | torch.device, *, source: str
) -> None:
    """Refuse, with one line, a ``quantize`` that would quantise no layer of ``model`` (built on
    the meta device): int4 takes only layers whose input width is a multiple of its group (32
    on CPU, 128 on CUDA), and a model of other widths loaded in full precision as if quantised,
    without a word."""
    if quantize is None or _quantizes_any(model, quantize, device):
        return
    group = _group(quantize, device)  # int8's is 1: "a multiple of 1" said nothing
    multiple = f" and a multiple of {group} (int4's group on this device)" if group > 1 else ""
    other = [q for q in QUANTIZATIONS if q != quantize and _quantizes_any(model, q, device)]
    way = f"use --quantize {other[0]} or none" if other else "load it without --quantize"
    raise UserError(
        f"{source}: --quantize {quantize} would quantise no layer: no linear layer is at least "
        f"{MIN_IN_FEATURES} inputs wide{multiple}; {way}"
    )


MAX_META_MODULES = 100_000
"""Blocks x (1 + experts) above which ``check_size`` judges a config from its parameter count
before building it: LLaDA2.0-flash, the largest published shape, has 32 x 257."""


def check_size(
    config: Any, dtype: torch.dtype, device: str | torch.device, *, source: str,
    free: int | None = None,
) -> None:
    """Refuse, before the model is even built on the meta device, a ``config`` of more than
    ``MAX_META_MODULES`` blocks x experts whose parameters (``ModelConfig.num_params``) could
    not fit in what ``device`` has free at the fewest bytes a weight of any setting (``dtype`` or
    a quantisation): a ``config.json`` saying ``n_layers`` 1000000000 spent minutes and
    gigabytes building a billion meta layers for ``check_fits`` to measure. Smaller models (all
    published ones) are built and get ``check_fits``'s estimate and hint.
    ``UNMASK_NO_FIT_CHECK=1`` skips it, as it does ``check_fits``."""
    import torch

    modules = config.n_layers * (1 + config.n_experts)
    if os.environ.get(SKIP_ENV) == "1" or modules <= MAX_META_MODULES:
        return
    free = free_bytes(device) if free is None else free
    if free is None:
        return
    kind = _device_type(device)
    per = [float(torch.empty((), dtype=dtype).element_size())]
    per += [b for (_, k), b in BYTES_PER_WEIGHT.items() if k == kind]
    n = config.num_params()
    if n * min(per) <= free:
        return
    where = "GPU memory" if kind == "cuda" else "RAM"
    raise UserError(
        f"{source}: {n:,} parameters need at least {_gb(n * min(per))} of {where}, "
        f"{_gb(free)} free: no setting fits this device (or {SKIP_ENV}=1 to try anyway)"
    )


__all__ = [
    "BYTES_PER_WEIGHT",
    "bytes_per_weight",
    "cgroup_free_bytes",
    "QUANTIZATIONS",
    "check_fits",
    "check_quantizable",
    "check_quantize",
    "check_size",
    "estimate_bytes",
    "free_bytes",
    "quantize_model",
    "quantize_module",
    "quantized_layer",
    "refuse_prequantized",
]
