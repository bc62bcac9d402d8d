"""Parallelism, precision, activation checkpointing and compilation, applied to an unchanged
``Transformer`` from outside (torchtitan's way: the model file stays only the model).

``unmask.train`` reads four ``TrainConfig`` fields and calls these functions:

- ``parallel``: ``ddp`` (a full replica per process, gradients all-reduced), ``fsdp`` (FSDP2's
  ``fully_shard`` on every block and the root: parameters, gradients and AdamW state sharded
  over the processes, gathered block by block), or ``auto`` (``choose_parallel``: FSDP once a
  replica's weights, gradients and AdamW moments would take more than a quarter of the memory a
  process has, DDP below that).
- ``precision``: ``fp32``, ``bf16`` (autocast: fp32 master weights, bf16 matmuls, fp32 loss),
  ``fp16`` (autocast + a gradient scaler, CUDA only) or ``auto`` (``resolve_precision``: bf16 on
  a GPU with bf16, fp16 on an older GPU, on CPU what ``CPU_AUTO_PRECISION`` says; chosen by
  measurement, docs/training.md).
- ``activation_checkpointing``: recompute each block's activations in backward
  (``torch.utils.checkpoint``) instead of keeping them.
- ``compile``: ``torch.compile`` of every block (training). Decoding has its own option,
  ``SampleConfig.compile``: ``compile_for_decoding`` gives the compiled model that
  ``unmask.api.start`` hands every decoder, made once per loaded model.

One line per refusal: ``said_once`` lets rank 0 alone print a user mistake that every process
of a ``torchrun`` run meets.

Throughput reporting: ``flops_per_token`` (PaLM's 6N + attention), ``device_peak_flops`` (a
table of dense bf16/fp16 and fp32 peaks of common GPUs; none for CPUs, so no MFU there) and
``peak_memory_bytes``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unmask.config import DECODE_COMPILES, PARALLEL_MODES, PRECISIONS, torch_dtype
from unmask.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from unmask.config import ModelConfig


CPU_AUTO_PRECISION = "fp32"
"""What ``precision=auto`` means on a CPU. Measured on this project's 2-core AMD EPYC (AVX2, no
native bf16): bf16 autocast made the demo model's training step 9× slower than fp32 (0.114×
the tokens/s), so CPUs stay on fp32 unless asked (``benchmarks/train_throughput.py --compare
precision``, docs/training.md)."""

FSDP_AUTO_FRACTION = 0.25
"""``parallel=auto`` shards (FSDP) once one replica's weights + gradients + AdamW moments (16
bytes a parameter) exceed this fraction of the memory a process has."""


def choose_parallel(mode: str, *, world: int, n_params: int, memory: int | None) -> str:
    """``none`` (one process), ``ddp`` or ``fsdp`` for ``mode`` (``auto``/``ddp``/``fsdp``).

    ``memory`` is the free memory one process has (None = unknown: DDP, the cheaper
    communication, unless asked for FSDP)."""
    if mode not in PARALLEL_MODES:
        raise UserError(f"parallel={mode!r}: choose one of {', '.join(PARALLEL_MODES)}")
    if world <= 1:
        return "none"
    if mode != "auto":
        return mode
    if memory is not None and 16 * n_params > FSDP_AUTO_FRACTION * memory:
        return "fsdp"
    return "ddp"


@dataclass(frozen=True)
class Precision:
    """A resolved precision: the autocast dtype (None = fp32) and whether gradients need a
    scaler (fp16's narrow exponent underflows small gradients without one)."""

    name: str
    autocast: torch.dtype | None
    scaled: bool = False

    def context(self, device_type: str) -> contextlib.AbstractContextManager[Any]:
        """Autocast for the forward pass and loss; a no-op for fp32."""
        import torch

        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=self.autocast)

    def scaler(self, device_type: str) -> torch.amp.GradScaler | None:
        """A ``GradScaler`` for fp16, else None."""
        import torch

        return torch.amp.GradScaler(device_type) if self.scaled else None


def resolve_precision(mode: str, device: torch.device) -> Precision:
    """The precision ``mode`` means on ``device``; refuses what the device cannot do."""
    import torch

    if mode not in PRECISIONS:
        raise UserError(f"precision={mode!r}: choose one of {', '.join(PRECISIONS)}")
    cuda = device.type == "cuda"
    bf16_ok = not cuda or torch.cuda.is_bf16_supported()
    if mode == "auto":
        mode = ("bf16" if bf16_ok else "fp16") if cuda else CPU_AUTO_PRECISION
    if mode == "fp16" and not cuda:
        raise UserError("precision=fp16 needs a CUDA GPU (its gradient scaler); use bf16 on CPU")
    if mode == "bf16" and not bf16_ok:
        raise UserError("precision=bf16: this GPU has no bf16; use fp16")
    dtype = None if mode == "fp32" else torch_dtype(mode)
    return Precision(name=mode, autocast=dtype, scaled=mode == "fp16")


@functools.cache
def cpu_bf16() -> str:
    """How torch multiplies bfloat16 matrices on this CPU (``"amx"``, ``"onednn"`` or
    ``"generic"``, fastest first): the one detection behind unmask's two CPU bf16 choices,
    which ask different questions.

    - ``"amx"``: Intel AMX (``amx_bf16`` among the flags of ``/proc/cpuinfo``) with oneDNN's
      bf16 kernels on. A bf16 product of 256 rows costs about what one of 1 row does, so bf16
      beats fp32 at decoding (benchmarks/precision.py). ``--dtype auto`` decodes in bf16 only
      here (``unmask.api.cpu_has_bf16_matmul``: "bf16 faster than fp32").
    - ``"onednn"``: oneDNN's bf16 kernels, no AMX (``torch.ops.mkldnn.
      _is_mkldnn_bf16_supported()``: oneDNN's instruction set is AVX-512 or later, or Arm's
      bf16; it follows ``ONEDNN_MAX_CPU_ISA``). With native bf16 instructions
      (``avx512_bf16``) bf16 was 3.9x faster than fp32; on AVX-512 without them (Skylake-like)
      1.3x slower: not fast, but near fp32. ``unmask eval`` keeps a bf16 run's bf16 from here
      up (``unmask.report.cpu_bf16_note``: "bf16 not pathologically slow"), so its bound is
      the one the run logged.
    - ``"generic"``: neither (AVX2 only, or a torch without oneDNN): torch's generic kernel,
      3.6x slower than fp32; 4.6x for the demo model's held-out bound. ``unmask eval``
      measures in fp32 there, with a note. An AMX CPU whose oneDNN is held below AVX-512
      (``ONEDNN_MAX_CPU_ISA=AVX2``) is ``"generic"`` too.

    Measured: a 512-2048-512 MLP over 2048 rows, fp32 against bf16 autocast, one thread,
    torch 2.13, a 2-core AMD EPYC with ``avx512_bf16`` (``ONEDNN_MAX_CPU_ISA=AVX512_CORE`` or
    ``AVX2`` standing in for the older CPUs)."""
    if not _onednn_bf16():
        return "generic"
    return "amx" if _has_cpu_flag("amx_bf16") else "onednn"


def _onednn_bf16() -> bool:
    """Whether torch's oneDNN runs bf16 matrix products on this CPU."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def _has_cpu_flag(flag: str) -> bool:
    """Whether ``flag`` is among the CPU's flags in ``/proc/cpuinfo`` (False without it)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(line.startswith("flags") and flag in line.split() for line in text.splitlines())


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in backward instead of storing them: activation
    memory drops from every layer's intermediates to one block's input per layer, for about
    one extra forward of compute. The blocks' weights and state_dict keys are untouched (the
    wrapper is an instance ``forward``), so checkpoints stay the native format."""
    from torch.utils.checkpoint import checkpoint

    for block in _blocks(model):
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)


def compile_blocks(
    model: nn.Module, *, dynamic: bool | None = None, backend: str = "inductor"
) -> None:
    """``torch.compile`` every block in place (``nn.Module.compile``: same parameters and
    state_dict keys). Per block, as torchtitan does: one graph reused by all layers compiles
    once, and composes with FSDP2's per-block hooks and with activation checkpointing.
    ``backend`` is torch.compile's (``inductor`` generates kernels; on CPU it needs a C
    compiler; ``aot_eager`` only traces, for checks)."""
    for block in _blocks(model):
        block.compile(dynamic=dynamic, backend=backend)


_DECODE_CACHE = "_unmask_decode_compiled"
"""The attribute of a model that holds its compiled twins, one per mode (a plain dict, so
neither a submodule nor a state_dict entry)."""


def check_decode_compile(mode: str, model: Any) -> None:
    """Refuse in one line a ``compile`` mode that cannot run on ``model``."""
    if mode not in DECODE_COMPILES:
        raise UserError(f"compile={mode!r}: choose one of {', '.join(DECODE_COMPILES)}")
    if mode == "off":
        return
    from torch import nn

    if not isinstance(model, nn.Module):
        raise UserError(
            f"compile={mode!r} needs a torch module; this model is {type(model).__name__}"
        )
    if mode == "cuda-graphs":
        device = next(model.parameters()).device
        if device.type != "cuda":
            raise UserError(f"compile='cuda-graphs' needs a CUDA GPU; the model is on {device}")


def compile_for_decoding(model: nn.Module, mode: str = "inductor") -> nn.Module:
    """The model compiled for the samplers' calls (``forward(tokens, ...)`` and the cached
    step ``forward(..., cache=KVCache, start=s)``), made once per model and ``mode`` and kept
    on it: every later run (every server request) reuses the compiled graphs instead of
    paying the compile again. ``off`` returns ``model`` itself.

    A wrapper (``torch.compile``'s ``OptimizedModule``), not an in-place compile: it shares the
    parameters, reads every other attribute from ``model``, and leaves ``model`` eager for the
    runs that did not ask for compilation. Whole, not per block: a cached block call indexes
    the cache by its layer number, which would make every layer a separate compile.
    ``cuda-graphs`` is mode ``reduce-overhead``: CUDA graphs replay the whole step, removing
    the per-kernel launch cost that dominates a small decoding step."""
    check_decode_compile(mode, model)
    if mode == "off":
        return model
    import torch

    from unmask.model import Transformer

    if isinstance(model, Transformer):  # every position now: no compiled graph builds them
        model.full_rope_tables()
    twins = model.__dict__.setdefault(_DECODE_CACHE, {})
    if mode not in twins:
        if mode == "cuda-graphs":
            twins[mode] = torch.compile(model, mode="reduce-overhead", backend="inductor")
        else:
            twins[mode] = torch.compile(model, backend=mode)
    return twins[mode]


def apply_fsdp(model: nn.Module, *, reshard_after_forward: bool = True) -> None:
    """FSDP2: shard every block, then the root (embedding, final norm, head) over the default
    process group. Parameters become ``DTensor`` shards; the optimizer must be built after
    this. Gradients are reduce-scattered as an average over processes, as DDP averages them."""
    from torch.distributed.fsdp import fully_shard

    for block in _blocks(model):
        fully_shard(block, reshard_after_forward=reshard_after_forward)
    fully_shard(model, reshard_after_forward=reshard_after_forward)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, kind: str, sync: bool) -> Iterator[None]:
    """Skip the gradient all-reduce (DDP) / reduce-scatter (FSDP) on micro-batches before the
    last one of an accumulation, where the sum is all that is needed."""
    if kind == "ddp" and not sync:
        with model.no_sync():  # type: ignore[operator]
            yield
    elif kind == "fsdp":
        model.set_requires_gradient_sync(sync)  # type: ignore[operator]
        yield
    else:
        yield


FOLLOWER_ERROR_WAIT = 30.0
"""Seconds a process other than rank 0 holds back a user mistake (``said_once``), waiting for
torchrun to end it once rank 0 has said the same mistake and exited."""


@contextlib.contextmanager
def said_once(*, rank: int, world: int) -> Iterator[None]:
    """Under torchrun every process meets the same user mistake (a missing dataset, a batch
    the processes cannot split) and each printed its line: one per process. Here a
    ``UserError`` leaves rank 0 at once, to be said, while another rank holds it back
    (``hold_back_for_rank_0``)."""
    try:
        yield
    except UserError as e:
        hold_back_for_rank_0(e, rank=rank, world=world)
        raise


def holds_back(rank: int, world: int) -> bool:
    """Whether this process leaves the line of a user mistake or a signal to another: one of
    torchrun's workers (``TORCHELASTIC_RUN_ID`` set: its agent ends a machine's workers once
    one of them exits) other than its machine's first (``LOCAL_RANK`` 0 says it: rank 0, and on
    each other machine of a multi-node run its own first worker, since that machine's agent
    would end the others only when the rendezvous notices: one line a machine, no wait).
    ``RANK`` and ``WORLD_SIZE`` set by another launcher: no one would end a wait, so none."""
    if world <= 1 or rank == 0 or "TORCHELASTIC_RUN_ID" not in os.environ:
        return False
    try:
        return int(os.environ.get("LOCAL_RANK", str(rank))) != 0
    except ValueError:
        return False


def hold_back_for_rank_0(error: BaseException | None, *, rank: int, world: int) -> None:
    """Before a process says a user mistake: under torchrun a worker that ``holds_back`` waits
    instead, since every process met it and rank 0 says it; torchrun ends the others
    (SIGTERM) as soon as rank 0 exits, and this process then exits quietly with status 2. A
    mistake only this rank meets (rank 0 is not there to say it) is said after
    ``FOLLOWER_ERROR_WAIT`` seconds, so it is never lost. Rank 0, and one process alone,
    return at once. ``error`` is marked as held back, so that a caller further out (the CLI
    around ``unmask.train``) does not wait a second time."""
    if not holds_back(rank, world) or getattr(error, "held_back", False):
        return
    _wait_for_rank_0()
    if error is not None:
        error.held_back = True  # type: ignore[union-attr]


def share_refusal(error: BaseException | None) -> None:
    """Rank 0's verdict on a start that only rank 0 checks (the run folder held by another
    process: ``unmask.train_guards.own_run``) made every process's, ``error`` raised where
    given: under torchrun (a process group joined) it is sent to the others, which raise it
    too (a ``UserError``, then held back by ``said_once``); they went on to the next
    collective and waited there until torchrun killed them (30 s, then its traceback)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        said = [None if error is None else
                str(error) if isinstance(error, UserError) else "rank 0 could not start the run"]
        dist.broadcast_object_list(said, src=0)
        if error is None and said[0] is not None:
            error = UserError(said[0])
    if error is not None:
        raise error


def _quiet_exit(signum: int, frame: Any) -> None:
    for stream in (sys.stdout, sys.stderr):  # each on its own: one closed (or None, as
        with contextlib.suppress(OSError, ValueError, AttributeError):  # under pythonw) must
            stream.flush()  # neither skip the other nor raise in this handler
    os._exit(2)  # the user-mistake status; rank 0 said why, the interpreter's exit is skipped


def _wait_for_rank_0() -> None:
    try:
        old = signal.signal(signal.SIGTERM, _quiet_exit)
    except ValueError:  # not the main thread: no handler to wait with; say it here
        return
    try:
        time.sleep(FOLLOWER_ERROR_WAIT)
    finally:
        signal.signal(signal.SIGTERM, old)


def _blocks(model: nn.Module) -> list[nn.Module]:
    layers = getattr(model, "layers", None)
    if layers is None:
        raise TypeError(f"{type(model).__name__} has no .layers to apply per-block options to")
    return list(layers)


# ----------------------------------------------------------------------------- throughput


def flops_per_token(config: ModelConfig, n_params: int, seq_len: int) -> float:
    """Training FLOPs per token, forward + backward: 6·N for the matmuls of the N non-embedding
    parameters (the head included) plus 12·n_layers·d_model·seq_len for attention's scores and
    values (PaLM, Chowdhery et al. 2022, appendix B). ``n_params`` counts a tied head once, as
    the embedding: its matrix is then the head's, a matmul, and stays in N (only an untied
    model's input embedding, a lookup, is left out). MoE models count every expert, not the
    active ones."""
    embedding = 0 if config.tie_embeddings else config.vocab_size * config.d_model
    return 6.0 * (n_params - embedding) + 12.0 * config.n_layers * config.d_model * seq_len


# Dense (no sparsity) tensor-core peaks in FLOP/s: (bf16/fp16, fp32), from the vendors' sheets.
_PEAKS: tuple[tuple[str, float, float], ...] = (
    ("h200", 989e12, 67e12),
    ("gh200", 989e12, 67e12),
    ("h100 pcie", 756e12, 51e12),
    ("h100", 989e12, 67e12),
    ("h800", 989e12, 67e12),
    ("b200", 2250e12, 80e12),
    ("a100", 312e12, 19.5e12),
    ("a800", 312e12, 19.5e12),
    ("l40s", 362e12, 91.6e12),
    ("l40", 181e12, 90.5e12),
    ("l4", 121e12, 30.3e12),
    ("a10g", 70e12, 31.2e12),
    ("a10", 125e12, 31.2e12),
    ("rtx 4090", 165e12, 82.6e12),
    ("rtx 3090", 71e12, 35.6e12),
    ("v100", 125e12, 15.7e12),
    ("t4", 65e12, 8.1e12),
)


def device_peak_flops(name: str, precision: str) -> float | None:
    """Peak FLOP/s of the device called ``name`` (``torch.cuda.get_device_name``) at
    ``precision``, or None for a device not in the table (CPUs: no MFU is reported)."""
    low = name.lower()
    for key, half, single in _PEAKS:
        if re.search(rf"\b{re.escape(key)}\b", low):
            return single if precision == "fp32" else half
    return None


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this process so far: CUDA's peak allocation on a GPU, else the peak
    resident set size (Linux reports it in KiB)."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
