"""Native checkpoints: save/load, atomic writes, resume state. Never unpickles.

A checkpoint is a folder:

    config.json          ModelConfig (vocabulary, special ids, shape, attention mode)
    model.safetensors    the weights used for inference (the EMA weights when EMA is on)
    tokenizer.json       the HF ``tokenizers`` file
    trainer.json         (training runs only) step, optimizer hyper-parameters, EMA flag
    trainer.safetensors  (training runs only) optimizer moments, raw weights under EMA
    sharded/             (FSDP runs only) weights and optimizer state as written by
                         ``torch.distributed.checkpoint``, one file per process; loads on any
                         number of processes (resharded on load)

A run directory keeps its latest checkpoint in ``RUN/checkpoint/``. Saving writes a
fresh folder beside it and swaps it in with renames, so a kill at any moment leaves
the last good checkpoint intact (``RUN/.checkpoint.old`` is picked up if the kill
landed between the two renames).

An FSDP run's checkpoint is still a native one (model.safetensors holds the gathered full
weights, so ``load``, ``generate`` and export never see shards); only its optimizer state lives
in ``sharded/`` instead of trainer.safetensors.

Inside: ``save_checkpoint``, ``save_sharded_checkpoint``, ``load_train_state``, ``is_sharded``,
``load_full_train_state`` / ``finish_full_train_state`` (native checkpoint into an FSDP run),
``checkpoint_dir`` (which also resolves the name ``demo``: ``shipped_model``), ``read_config`` /
``native_config`` (a checkpoint's ``ModelConfig`` without its weights), ``load`` (returning
``unmask.loaded.Loaded``; the weights through ``unmask.convert.stream``, the walk publisher
folders load through); atomic writes come from ``unmask.files``. ``load`` also accepts a
publisher's folder (LLaDA, Dream, MDLM, SEDD, our own transformers export), imported by
``unmask.convert``.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file
from torch import nn

from unmask.errors import UserError, refuse
from unmask.files import (  # noqa: F401  (moved there; kept importable)
    asset_path,
    atomic_write_text,
    file_digest,
    file_mode,
    set_mode,
    staging_dir,
)
from unmask.folders import dataset_given_for_model, is_dataset, missing_model
from unmask.loaded import Loaded
from unmask.names import SHIPPED_MODELS

if TYPE_CHECKING:
    from unmask.config import ModelConfig
    from unmask.tokenizer import Tokenizer

CKPT = "checkpoint"
SHARDED = "sharded"
OLD = ".checkpoint.old"
TMP_PREFIX = ".checkpoint.tmp"
BEST = "best"
"""Where a ``--keep-best`` run keeps its best checkpoint: ``RUN/best/checkpoint`` (training
writes it, loading points at it; ``unmask.train`` re-exports it)."""
BEST_RECORD = "best.json"
"""In ``RUN/best/checkpoint``: the ``{"step", "metric", "value"}`` of the validation whose
weights it holds, written with them (atomically), so a resume can tell them from the best its
checkpoint records."""
PREVIOUS_BEST = "previous"
"""``RUN/best/previous``: the best the run's last checkpoint records, kept (hard links) from
the first newer best until the next checkpoint records that one, so a resume after a hard
kill puts back the best of the step it resumes at."""


def _state_for_save(
    model: nn.Module, weights: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Weights (``model``'s, or ``weights`` gathered for it) as contiguous CPU tensors; tied
    weights stored once (under the embedding)."""
    sd = model.state_dict() if weights is None else weights
    out = {name: t.detach().to("cpu").contiguous() for name, t in sd.items()}
    cfg = getattr(model, "config", None)
    if cfg is not None and getattr(cfg, "tie_embeddings", False):
        out.pop("lm_head.weight", None)
    return out


def _optimizer_tensors(
    opt: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{pid}.{k}"] = torch.as_tensor(v).detach().to("cpu").contiguous()
    return tensors, {"param_groups": sd["param_groups"]}


def gathered_weights(model: nn.Module) -> dict[str, Any]:
    """The whole weights of an FSDP-sharded ``model``, on the CPU of rank 0 (a collective:
    every process calls it; the others get an empty dict): what a single-file checkpoint or
    ``best/`` is written from."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _quantized_tensor(tensors: dict[str, Any]) -> str | None:
    """The name of the first tensor of a state dict that torchao has quantised (one of its
    tensor subclasses, or a parameter wrapping one), None when none is: what a checkpoint
    cannot hold as plain tensors, whether a model's own or gathered for it (FSDP)."""
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and any(
            type(w).__module__.startswith("torchao") for w in (t, t.data)
        ):
            return name
    return None


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    *,
    model: nn.Module,
    tokenizer: Any,
    inference_model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    trainer_state: dict[str, Any] | None = None,
    weights: dict[str, torch.Tensor] | None = None,
    staging: Path | None = None,
) -> Path:
    """Write ``run_dir/checkpoint`` atomically and return its path; a write that fails (a full
    disk) raises ``OSError`` naming it and leaves the checkpoint there was intact.

    ``inference_model`` (e.g. the EMA copy) goes to model.safetensors when given; the raw
    ``model`` weights are then kept in trainer.safetensors for resuming. ``weights`` (a full
    state dict, as FSDP gathers it) replaces ``model``'s own state dict; ``staging`` is a
    folder from ``staging_dir`` that already holds parts written by other processes (the
    shards), swapped in with the rest.

    A model quantised at load (``--quantize``, ``quantize=``: torchao weights) is refused in
    one line before anything is written, by one check of the tensors to be written (a
    model's own or ``weights``): they are not a checkpoint's plain tensors (torchao's
    "Int8Tensor dispatch" traceback otherwise); save the unquantised model and quantise it
    when loading.
    """
    from unmask.config import to_dict
    from unmask.files import write_safetensors  # streamed: a real OSError when full

    run = Path(run_dir)
    infer = inference_model if inference_model is not None else model
    written = [weights if weights is not None else infer.state_dict()]  # model.safetensors
    if inference_model is not None and (optimizer is not None or trainer_state is not None):
        written.append(model.state_dict())  # the raw weights, in trainer.safetensors
    for tensors in written:  # one check, whichever path the weights come by (FSDP: gathered)
        name = _quantized_tensor(tensors)
        if name is not None:
            raise UserError(
                f"{run}: a quantised model is not saved ({name.removesuffix('.weight')} holds "
                "torchao weights); save the unquantised model and quantise when loading it "
                "(--quantize)"
            )
    run.mkdir(parents=True, exist_ok=True)
    tmp = staging if staging is not None else staging_dir(run, TMP_PREFIX)
    try:
        write_safetensors(_state_for_save(infer, weights), tmp / "model.safetensors")
        config_text = json.dumps(to_dict(model.config), indent=2, sort_keys=True) + "\n"
        (tmp / "config.json").write_text(config_text)
        tokenizer.save(tmp)
        if optimizer is not None or trainer_state is not None:
            tensors: dict[str, torch.Tensor] = {}
            meta: dict[str, Any] = dict(trainer_state or {})
            if optimizer is not None:
                opt_tensors, opt_meta = _optimizer_tensors(optimizer)
                tensors.update(opt_tensors)
                meta["optimizer"] = opt_meta
            if inference_model is not None:
                tensors.update({f"model.{k}": v for k, v in _state_for_save(model).items()})
            meta["has_raw_model"] = inference_model is not None
            write_safetensors(tensors, tmp / "trainer.safetensors")
            (tmp / "trainer.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        mode = file_mode()
        for f in tmp.rglob("*"):
            if f.is_dir():  # made by mkdir (DCP's shard folder): the umask's mode already
                continue
            set_mode(f, mode)  # safetensors writes 0600; checkpoint files follow the umask
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        final, old = run / CKPT, run / OLD
        if old.exists() and not final.exists():  # a kill between the renames left only it:
            os.replace(old, final)  # the last good checkpoint, kept until the new one is in
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return final
    except OSError as e:  # a full disk: one line naming the checkpoint, which stays as it was
        shutil.rmtree(tmp, ignore_errors=True)
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(run / CKPT)) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_sharded(ckpt: Path) -> bool:
    """Whether ``ckpt`` keeps its training state as ``torch.distributed.checkpoint`` shards."""
    return (ckpt / SHARDED).is_dir()


def save_sharded_checkpoint(
    run_dir: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    is_main: bool,
) -> None:
    """Every process of an FSDP run calls this together: each writes its shards of the weights
    and optimizer state (``torch.distributed.checkpoint``) into one staging folder, rank 0
    adds the gathered full weights as model.safetensors, config, tokenizer and trainer.json,
    and swaps the folder in atomically. The folder must be on a file system all processes see
    (one machine, or a shared mount across nodes)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    run = Path(run_dir)
    full = gathered_weights(model)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    name: list[str | None] = [None]
    if is_main:
        run.mkdir(parents=True, exist_ok=True)
        name = [str(staging_dir(run, TMP_PREFIX))]
    dist.broadcast_object_list(name, src=0)
    tmp = Path(str(name[0]))
    try:
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp / SHARDED)
        dist.barrier()
        if is_main:
            meta = {**trainer_state, "sharded": True, "world_size": dist.get_world_size()}
            save_checkpoint(
                run, model=model, tokenizer=tokenizer, trainer_state=meta, weights=full, staging=tmp
            )
    except BaseException:
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_sharded(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Weights and optimizer state from ``ckpt/sharded`` into ``model``/``optimizer``, whatever
    they are now: FSDP over any number of processes, DDP's replica, or one process (DCP
    reshards on load)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    import torch.distributed as dist

    with warnings.catch_warnings():  # one process reading shards is intended, not a mistake
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=ckpt / SHARDED, no_dist=not dist.is_initialized())
    optim = state["optim"]  # (the saved groups came back with the moments: this process's
    if isinstance(optim, dict):  # RUNS_ON, as the native path sets them)
        optim["param_groups"] = _this_process_groups(optim.get("param_groups"), optimizer)
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )


def load_full_train_state(
    ckpt: Path, *, model: nn.Module, optimizer_fn: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a native (unsharded) run checkpoint for an FSDP run, before the model is sharded:
    loads the weights into ``model`` and returns trainer.json with the optimizer state keyed by
    parameter name (``optimizer_fn(model)`` builds the optimizer the run uses), for
    ``finish_full_train_state`` once the model is sharded."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    scratch = optimizer_fn(model)
    meta = load_train_state(ckpt, model=model, optimizer=scratch, ema_model=None)
    full = get_optimizer_state_dict(model, scratch, options=StateDictOptions(full_state_dict=True))
    return meta, full


def finish_full_train_state(
    ckpt: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: tuple[dict[str, Any], dict[str, Any]],
) -> dict[str, Any]:
    """Shard the optimizer state read by ``load_full_train_state`` into the FSDP run's
    ``optimizer``; returns trainer.json."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    meta, full = state
    set_optimizer_state_dict(
        model, optimizer, optim_state_dict=full, options=StateDictOptions(full_state_dict=True)
    )
    return meta


def shipped_model(name: str) -> Path:
    """The folder of the model shipped as ``name`` (one of ``SHIPPED_MODELS``)."""
    if name not in SHIPPED_MODELS:
        shipped = ", ".join(SHIPPED_MODELS)
        raise UserError(f"{name}: no shipped model of that name (shipped: {shipped})")
    path = asset_path(name)
    if not (path / "model.safetensors").is_file():
        # "run unmask demo --train to train it" left --model demo missing after training
        raise UserError(
            f"the {name} checkpoint is not in this install (no {path / 'model.safetensors'}: "
            f"reinstall unmask); or train one: unmask demo --train, then --model runs/demo-train"
        )
    return path


def checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    """Resolve a run directory or a checkpoint folder to the folder holding config.json. A
    name of ``SHIPPED_MODELS`` (``demo``) that is not a path here is the shipped model."""
    p = Path(path)
    if not p.exists() and str(path) in SHIPPED_MODELS:
        p = shipped_model(str(path))
    refuse(missing_model(path))  # (torch-free: the command line checks it first)
    if not p.is_dir():
        inside = p.parent if (p.parent / "config.json").is_file() else None
        hint = f"; pass the folder that holds it, {inside}" if inside is not None else ""
        raise UserError(
            f"{path}: not a folder (expected a run directory or checkpoint folder){hint}"
        )
    for cand in (p, p / CKPT, p / OLD):
        if (cand / "config.json").is_file() and (cand / "model.safetensors").is_file():
            return cand
    if is_dataset(p):
        raise UserError(dataset_given_for_model(path))
    best = p / BEST / CKPT
    if (best / "config.json").is_file() and (best / "model.safetensors").is_file():
        raise UserError(
            f"{path}: no latest checkpoint (checkpoint/), only the best one: --model {p / BEST}"
        )
    raise UserError(
        f"{path}: not a checkpoint (no config.json + model.safetensors, nor a checkpoint/ folder)"
    )


def weights_stamp(
    path: str | os.PathLike[str], *, known: Any = None
) -> list[Any] | None:
    """[size, mtime_ns, sha256 (16 hex digits)] of the weights file (model.safetensors) of the
    checkpoint at ``path`` (``checkpoint_dir``), None where there is none: what tells a
    checkpoint rewritten in place from the one something was made with (``unmask distill``'s
    trajectory cache), while a copy or a ``touch`` of the same weights is no change
    (``same_weights``). ``known``: a stamp recorded earlier, returned as it is while the
    file's size and modification time still match it, so only a changed file is read (about
    a second per GB); an older stamp of [size, mtime_ns] alone is honoured the same way."""
    try:
        file = checkpoint_dir(path) / "model.safetensors"
        stat = file.stat()
    except (UserError, OSError):
        return None
    if isinstance(known, list) and known[:2] == [stat.st_size, stat.st_mtime_ns]:
        return known
    try:
        return [stat.st_size, stat.st_mtime_ns, file_digest(file)]
    except OSError:
        return None


def same_weights(then: Any, now: Any) -> bool:
    """Whether ``weights_stamp``s ``then`` and ``now`` (taken with ``known=then``) are of the
    same weights: equal, or of the same size and contents at another modification time (a
    copy, a ``touch``)."""
    if then == now:
        return True
    return (isinstance(then, list) and isinstance(now, list) and len(then) == len(now) == 3
            and then[0] == now[0] and then[2] == now[2])


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors file ``path``, with one-line errors for a file that is
    missing, cut short or not safetensors (safetensors' own exception was a traceback)."""
    from unmask.convert.stream import unreadable

    if not path.is_file():
        raise UserError(f"{path}: missing")
    try:
        return load_file(str(path))
    except MemoryError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise unreadable(path, e) from None


def _load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    if getattr(model.config, "tie_embeddings", False):
        head, embed = tensors.get("lm_head.weight"), tensors.get("embed.weight")
        if head is not None and embed is not None and not same_values(head, embed):
            raise _untied_head(source)  # as a load says (``check_tied_head``): not dropped
        tensors = {k: v for k, v in tensors.items() if k != "lm_head.weight"}
    tied = model.config.tie_embeddings
    expected = {k for k in model.state_dict() if not (tied and k == "lm_head.weight")}
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise UserError(
            f"{source}: weights do not match config.json (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    for k, v in tensors.items():
        want = model.state_dict()[k].shape
        if v.shape != want:
            raise UserError(
                f"{source}: tensor {k} has shape {tuple(v.shape)}, config says {tuple(want)}"
            )
    model.load_state_dict(tensors, strict=False)


def _stream_weights(
    model: nn.Module, path: Path, device: str, quantize: str | None
) -> None:
    """Fill ``model`` (built on the meta device, in the load dtype) from the native weights file
    ``path`` through the walk a publisher folder loads through
    (``unmask.convert.stream.stream_weights``), every tensor under its own name: names and
    shapes checked first, then module by module materialised on ``device``, copied from the
    memory-mapped file and, with ``quantize``, quantised before the next. A tied output head
    stored anyway is skipped."""
    from unmask.convert.stream import stream_weights

    check_tied_head(model, path)
    stream_weights(model, *native_sources(model, path), device=device, quantize=quantize,
                   **native_checks(model, path))


def check_tied_head(model: nn.Module, path: Path) -> None:
    """Refuse in one line a native weights file ``path`` that holds an output head of its own
    (``lm_head.weight``) other than its embedding while ``model``'s config ties the two: the
    head was skipped silently, so a config.json edited to ``tie_embeddings: true`` decoded
    with the embedding in place of the trained head. unmask never writes a tied head; a head
    stored anyway (a file made elsewhere) that equals the embedding is skipped as before
    (``same_values``: a lower-precision copy, NaN where the embedding's are, which the
    weights' check names). Reads the two tensors only where the head is there."""
    from unmask.convert.stream import open_file

    if not getattr(model.config, "tie_embeddings", False):
        return
    import contextlib

    with contextlib.ExitStack() as stack:
        f = open_file(path, stack)
        if "lm_head.weight" not in f.keys() or "embed.weight" not in f.keys():  # noqa: SIM118
            return  # no head (as unmask writes it), or no embedding: the checks name it
        head, embed = f.get_tensor("lm_head.weight"), f.get_tensor("embed.weight")
        if same_values(head, embed):
            return
    raise _untied_head(path)


def _untied_head(path: Path) -> UserError:
    """The one-line error for a weights file ``path`` holding a head of its own under a config
    that ties it (``check_tied_head``, ``_load_weights``)."""
    return UserError(
        f"{path}: holds an output head (lm_head.weight) of its own, other than the embedding, "
        "while config.json ties the head to the embedding (tie_embeddings true): set "
        '"tie_embeddings": false'
    )


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` hold the same values as stored: of one shape, and equal in the
    lower precision of their two dtypes (a bf16 copy of an fp32 tensor is the tensor), NaN
    counted equal to NaN (``torch.equal`` is False for a NaN in both). Compared a few million
    values at a time: an 8B model's head is 2 GB in float32, whose copies were as large."""
    if a.shape != b.shape:
        return False
    if not (a.is_floating_point() and b.is_floating_point()):
        return torch.equal(a.to(b.dtype), b)
    if a.dtype == b.dtype and torch.equal(a, b):  # the common case, at a copy's cost
        return True
    low = max(a.dtype, b.dtype, key=lambda d: torch.finfo(d).eps)  # a tie: a's
    for x, y in zip(a.reshape(-1).split(1 << 22), b.reshape(-1).split(1 << 22), strict=True):
        x, y = x.to(low), y.to(low)
        if not bool((x.eq(y) | (x.isnan() & y.isnan())).all()):
            return False
    return True


def native_sources(model: nn.Module, path: Path) -> tuple[dict[str, str], list[Path]]:
    """(every parameter under its own name, the file) of the native weights file ``path``, as
    ``unmask.convert.stream.stream_weights`` / ``check_sources`` take them."""
    return {name: name for name, _ in model.named_parameters()}, [path]


def native_checks(model: nn.Module, path: Path) -> dict[str, Any]:
    """The keywords of ``stream_weights`` / ``check_sources`` for the native weights file
    ``path``: a tied output head stored anyway is skipped, any other tensor is unexpected."""
    tied = bool(getattr(model.config, "tie_embeddings", False))
    return {"folder": path.parent,
            "unexpected": "not a parameter of the model config.json describes",
            "ignore": frozenset({"lm_head.weight"}) if tied else frozenset()}


def check_native_weights(
    model: nn.Module, path: Path
) -> tuple[dict[str, str], dict[str, Path]]:
    """The checks ``load`` makes of the native weights file ``path`` before reading any weight,
    from its header alone (``unmask.convert.stream.check_sources``): every tensor's name, shape
    and dtype as ``model`` (built on the meta device) implies, none missing, the file not cut
    short; and ``check_tied_head`` (which reads a head stored beside a tied one). Returns
    (every parameter under its own name, tensor name -> ``path``)."""
    from unmask.convert.stream import check_sources

    names, files = native_sources(model, path)
    where = check_sources(model, names, files, **native_checks(model, path))
    check_tied_head(model, path)
    return names, where


SIZE_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads")
"""The ``ModelConfig`` fields a native checkpoint's config.json must name (unmask writes every
field): without them the defaults of the ``tiny`` preset were taken silently and the weights
refused as the wrong shape. Other fields may be missing (a checkpoint older than the field)."""


def read_config(ckpt: Path) -> ModelConfig:
    """The ``ModelConfig`` of the native checkpoint folder ``ckpt`` (``checkpoint_dir``), with
    one-line errors: not JSON (a trailing comma), an unknown field, a value of the wrong type,
    a size of ``SIZE_FIELDS`` missing."""
    from unmask.config import ModelConfig, from_dict
    from unmask.convert.load import read_config_json

    path = ckpt / "config.json"
    data = read_config_json(path)  # a Git LFS pointer named so, not "not valid JSON"
    missing = [name for name in SIZE_FIELDS if name not in data]
    if missing:
        raise UserError(
            f"{path}: missing {', '.join(missing)} (a checkpoint's config.json names its "
            "model's sizes)"
        )
    return from_dict(ModelConfig, data, source=str(path))


def native_config(path: str | os.PathLike[str]) -> ModelConfig | None:
    """The ``ModelConfig`` of the native checkpoint at ``path`` (a run directory, a checkpoint
    folder, ``demo``), read without loading it; None for a publisher's folder or where
    ``load`` would refuse it (it says why then)."""
    from unmask.convert.load import is_publisher_folder

    if is_publisher_folder(path):
        return None
    try:
        return read_config(checkpoint_dir(path))
    except UserError:
        return None


def check_model_path(path: Any) -> None:
    """Refuse in one line a ``path`` argument that is no path (None, a number, a loaded model):
    pathlib's ``TypeError`` named no argument; or an empty one, which loaded the current
    folder (``: not a checkpoint``)."""
    if not isinstance(path, (str, os.PathLike)):
        raise UserError(
            f"path must be a model folder (str or os.PathLike), not {type(path).__name__}")
    if not os.fspath(path).strip():  # "" is the current folder to pathlib: an unset variable
        raise UserError("path is empty: give a run directory, a checkpoint folder or 'demo'")


def native_parts(path: str | os.PathLike[str]) -> tuple[Path, ModelConfig, Tokenizer]:
    """(folder, config, tokenizer) of the native checkpoint at ``path``, checked as ``load``
    checks them, its weights not read: a missing tokenizer.json, one larger than the model."""
    from unmask.tokenizer import load_tokenizer_with_ids

    check_model_path(path)  # "" is the working folder to pathlib (convert/export call this)
    ckpt = checkpoint_dir(path)
    config = read_config(ckpt)
    if not (ckpt / "tokenizer.json").is_file():
        raise UserError(
            f"{ckpt}: tokenizer.json is missing; copy the tokenizer the model was trained with"
        )
    ids = {k: getattr(config, k) for k in ("mask_id", "pad_id", "eos_id", "bos_id")}
    tokenizer = load_tokenizer_with_ids(ckpt / "tokenizer.json", ids)
    if tokenizer.vocab_size > config.vocab_size:
        raise UserError(
            f"{ckpt / 'tokenizer.json'}: tokenizer has {tokenizer.vocab_size} tokens, "
            f"model only {config.vocab_size}"
        )
    return ckpt, config, tokenizer


def load(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    quantize: str | None = None,
    weights: bool = True,
) -> Loaded:
    """Load a checkpoint for inference, in eval mode.

    ``path`` is a run directory, a native checkpoint folder, or a local folder in a
    publisher's format (LLaDA, Dream, MDLM, SEDD: ``config.json`` with ``model_type``, safetensors
    shards, ``tokenizer.json``), which is imported by ``unmask.convert.import_folder``
    straight into ``dtype`` (default: the folder's ``torch_dtype``; a native checkpoint's is
    float32, whatever its file stores: the demo's fp16 too). ``quantize`` (``int8`` /
    ``int4``) quantises the linear layers weight-only with torchao (``unmask.quantize``); a
    model whose estimated memory exceeds what ``device`` has free is refused with one line.
    ``device`` is ``cpu``, ``cuda[:i]`` or ``auto``; ``dtype`` a floating ``torch.dtype`` or a
    name (``bf16``, ``fp16``, ``fp32``): anything else is a one-line ``UserError``
    (``unmask.config.load_target``).

    ``weights=False`` reads everything but the weights' values: config, tokenizer and a model
    left on the meta device (in eval mode), after every check made before a weight is read
    (the config's size, the weights' names, shapes, dtypes and files from their headers,
    ``quantize``; not the memory ``device`` has free): what a caller needs to know of a
    model it does not run yet (``unmask distill``'s ``--student``), without reading a whole
    8B model for it. The only values it reads: an output head stored beside an embedding
    that the config ties to it (a file made elsewhere), both tensors, to check that the head
    is the embedding (``check_tied_head``).
    """
    from unmask.config import load_target
    from unmask.convert.load import checked_meta, import_folder, is_publisher_folder

    check_model_path(path)
    device, dtype = load_target(device, dtype)  # one line, not torch's error deep inside
    if is_publisher_folder(path):
        return import_folder(path, device=device, dtype=dtype, quantize=quantize,
                             weights=weights)
    from unmask.quantize import check_fits, check_quantize

    load_dtype = dtype if dtype is not None else torch.float32
    check_quantize(quantize, device, load_dtype)  # the dtype it loads in: int4 CUDA needs bf16
    ckpt, config, tokenizer = native_parts(path)
    model = checked_meta(config, ckpt, load_dtype, device)
    if weights:
        check_fits(model, load_dtype, quantize, device, source=str(ckpt))
        model._rope = None
        _stream_weights(model, ckpt / "model.safetensors", device, quantize)
    else:
        check_native_weights(model, ckpt / "model.safetensors")
    model.eval()  # weights=False too (free on the meta device)
    return Loaded(model=model, tokenizer=tokenizer, config=config, path=ckpt,
                  name=os.fsdecode(path))


def load_inference_weights(ckpt: Path, model: nn.Module) -> None:
    """Copy the inference weights of the native checkpoint folder ``ckpt``
    (``model.safetensors``) into ``model``, built with its config; one-line errors for a file
    that is missing, unreadable or of other shapes."""
    _load_weights(model, _read_tensors(ckpt / "model.safetensors"), ckpt / "model.safetensors")


def load_train_state(
    ckpt: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, ema_model: nn.Module | None
) -> dict[str, Any]:
    """Restore raw weights, optimizer moments and EMA weights from a run checkpoint; returns
    trainer.json."""
    meta_path = ckpt / "trainer.json"
    if not meta_path.is_file():
        raise UserError(f"{ckpt}: no trainer state to resume from (trainer.json missing)")
    from unmask.files import read_json

    meta = read_json(meta_path)
    if is_sharded(ckpt):
        _load_sharded(ckpt, model, optimizer)
        if ema_model is not None:  # FSDP runs keep no EMA: the weights are the inference ones
            _load_weights(ema_model, _read_tensors(ckpt / "model.safetensors"), ckpt)
        return meta
    tensors = _read_tensors(ckpt / "trainer.safetensors")
    inference = _read_tensors(ckpt / "model.safetensors")
    device = next(model.parameters()).device
    if meta.get("has_raw_model"):
        raw = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        _load_weights(model, raw, ckpt / "trainer.safetensors")
        if ema_model is not None:
            _load_weights(ema_model, inference, ckpt / "model.safetensors")
    else:
        _load_weights(model, inference, ckpt / "model.safetensors")
        if ema_model is not None:
            _load_weights(ema_model, inference, ckpt / "model.safetensors")
    try:
        sd: dict[str, Any] = {"state": {}, "param_groups": _this_process_groups(
            meta["optimizer"]["param_groups"], optimizer)}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, name = k.split(".", 2)
                sd["state"].setdefault(int(pid), {})[name] = v if name == "step" else v.to(device)
        _check_moments(optimizer, sd["state"])
        optimizer.load_state_dict(sd)
    except (KeyError, TypeError, ValueError, IndexError) as e:  # a hand-edited or mixed folder
        raise UserError(
            f"{ckpt}: its optimizer state (trainer.json, trainer.safetensors) does not fit the "
            f"model ({str(e).strip() or type(e).__name__}); restore the folder as it was "
            "saved, or start a new run from its weights with --init"
        ) from None
    return meta


RUNS_ON = ("fused", "foreach", "capturable")
"""The optimizer settings that say how its step runs on the device, not what it computes:
this process's (``optimizer.defaults``), never the checkpoint's. Loaded as saved, a run
begun on a CPU (``fused=False``) resumed on a GPU kept the slower unfused AdamW for good
(and a GPU run resumed on a CPU kept ``fused=True``)."""


def _this_process_groups(groups: Any, optimizer: torch.optim.Optimizer) -> Any:
    """The saved ``param_groups`` with ``RUNS_ON`` as ``optimizer`` was built with; anything
    that is not a list of dicts is left for ``load_state_dict`` to refuse."""
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        return groups
    own = {k: optimizer.defaults[k] for k in RUNS_ON if k in optimizer.defaults}
    return [{**group, **own} for group in groups]


def _check_moments(optimizer: torch.optim.Optimizer, state: dict[int, dict[str, Any]]) -> None:
    """``ValueError`` where a saved moment has another shape than its parameter (indices in
    the order of ``optimizer``'s groups, as ``state_dict`` numbers them): AdamW would fail
    with a shape traceback at the first step."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for pid, moments in state.items():
        if not 0 <= pid < len(params):
            raise ValueError(f"state of parameter {pid}, of {len(params)}")
        for name, v in moments.items():
            if name != "step" and tuple(v.shape) != tuple(params[pid].shape):
                raise ValueError(f"{name} of parameter {pid} has shape {tuple(v.shape)}, the "
                                 f"parameter {tuple(params[pid].shape)}")
