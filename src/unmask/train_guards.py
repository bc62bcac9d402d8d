"""What keeps a training run honest before and while it runs.

- The resume plan: a resumed run continues the plan saved in its ``train_config.json``;
  settings changed on resume (more steps, another time limit, another learning rate)
  extend or shorten that plan, and the run says so in one line. Settings that define the
  model (preset, objective, ...) cannot change on resume.
- Size checks before anything big is allocated: ``seq_len`` and ``batch_size`` against the
  data, and a rough memory estimate (weights + optimizer state + activations) against the
  memory that is free (``/proc/meminfo``, the cgroup limit, or CUDA's free memory).
- One process trains a run at a time (``RunLock``, taken by ``own_run``): a second command
  on the same run folder is refused while the first runs.
- Stopping on SIGINT/SIGTERM: ``StopFlag`` turns the first signal into a stop at the next
  safe point (the training loop then saves an atomic checkpoint) and the second into an
  immediate ``KeyboardInterrupt``; ``train`` then raises ``TrainingStopped``, which the CLI
  turns into exit code 128 + signal (130 for Ctrl-C, 143 for SIGTERM).

Inside: ``load_train_config``, ``read_train_config``, ``resume_plan``, ``resumed_config``,
``run_above``, ``renew_time_limit``, ``time_limit_exit``, ``under_torchrun``,
``validation_batches``, ``validation_settings``, ``validation_changes``, ``saved_progress``,
``describe_resume``, ``device_change``, ``check_data_sizes``, ``estimate_memory``,
``available_memory``, ``check_memory``, ``RunLock``, ``own_run``, ``StopFlag``, ``TrainingStopped``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from shlex import quote
from typing import Any

from unmask.config import ModelConfig, TrainConfig, from_dict
from unmask.errors import UserError
from unmask.files import parse_json, read_json

FIXED_ON_RESUME = (
    "preset", "objective", "schedule", "model_overrides", "block_size", "sedd_graph", "init",
    "chat_template", "fim_rate", "empty_rate", "latent_len", "draft_block",
)
"""Settings that define the model or its vocabulary: a resumed run keeps its own."""
RUNTIME_FIELDS = ("out", "device", "threads")
"""How this process runs, not what the run is: taken from the resuming call, never a change."""

SettingNamer = Callable[[str, Any], str]
"""How a changed setting is named in the resume line: ``(field, value) -> text``."""


def _as_field(name: str, value: Any) -> str:
    return f"{name}={value!r}" if isinstance(value, str) else f"{name}={value}"


# ----------------------------------------------------------------------------- resume


def resume_plan(saved: TrainConfig, config: TrainConfig) -> dict[str, Any]:
    """The settings where ``config`` changes the ``saved`` plan of a resumed run.

    Every field of ``config`` that differs from ``saved`` (runtime fields aside) is a
    change of plan; a change to a field in ``FIXED_ON_RESUME`` is refused, since the
    checkpoint's weights and vocabulary were built for the saved value.
    """
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        new, old = getattr(config, f.name), getattr(saved, f.name)
        if f.name in RUNTIME_FIELDS or new == old:
            continue
        if f.name in FIXED_ON_RESUME and not _not_its_option(saved.objective, f.name):
            was = "none (its default)" if old in (None, "") else repr(old)  # (init: "")
            raise UserError(
                f"{f.name}={new!r} differs from the run's {was}: a resumed run keeps its "
                f"model; start a new run to change {f.name}"
            )
        changes[f.name] = new
    return changes


def resumed_config(plan: TrainConfig, given: dict[str, Any]) -> TrainConfig:
    """A saved run's ``plan`` as a resuming command continues it: the fields its command line
    ``given`` over the plan, and ``device`` and ``threads`` (``RUNTIME_FIELDS``: how this
    process runs) this command's, never the saved run's. Kept from the plan, a run begun with
    ``--threads 1`` or ``--device cpu`` resumed on them whatever the resuming command's own
    default (all cores, a GPU), though the resume line named no such setting."""
    runtime = {k: getattr(TrainConfig(), k) for k in RUNTIME_FIELDS if k != "out"}
    return dataclasses.replace(plan, **{**runtime, **given})


def load_train_config(path: str | os.PathLike[str]) -> TrainConfig:
    """A train_config.json (for ``--config``) as ``read_train_config`` reads it, where an
    option's former default in a plan that names an objective that never read it counts as no
    choice (every plan ``unmask train`` wrote before 2026-12-07 holds draft_block 8): read as
    unset, so that a ``--config`` of an ``ar`` plan given ``--objective hybrid --init HYBRID``
    trains the hybrid's own block. A settings file written by hand names no objective: its
    values are the user's, kept."""
    from unmask.objectives import OBJECTIVES
    from unmask.objectives.spec import FORMER_DEFAULTS

    data, p = _plan_data(path)
    config = from_dict(TrainConfig, data, source=str(p))
    spec = OBJECTIVES.get(config.objective) if "objective" in data else None
    unread = {name: getattr(TrainConfig(), name) for name, was in FORMER_DEFAULTS.items()
              if spec is not None and name not in spec.options and getattr(config, name) == was}
    return dataclasses.replace(config, **unread)


def read_train_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read a train_config.json (for ``--config``; no torch), with one-line errors naming it
    (a pipe too: ``--config <(jq ...)``). A file that is not UTF-8 (a checkpoint's weights
    given by mistake) was refused as "input is not UTF-8 text", naming no file, and a run
    folder as "Is a directory"; a run folder now points at its train_config.json."""
    data, p = _plan_data(path)
    return from_dict(TrainConfig, data, source=str(p))


def _plan_data(path: str | os.PathLike[str]) -> tuple[Any, Path]:
    """The JSON of a train_config.json, and its path (``read_train_config``'s refusals)."""
    p = Path(path)
    if p.is_dir():  # a run, or a folder inside one (RUN/checkpoint): its train_config.json
        run = p if (p / "train_config.json").is_file() else run_above(p)
        where = f"; it is inside the run {run}" if run is not None and run != p else ""
        hint = (f"{where}; pass {run / 'train_config.json'} to start a new run with its settings "
                f"(`unmask train --resume --out {run}` continues that run)" if run else "")
        raise UserError(f"{p}: a folder, not a train_config.json file{hint}")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{p}: no such file") from None
    except UnicodeDecodeError:
        raise UserError(f"{p}: not UTF-8 text (a train_config.json is JSON)") from None
    return parse_json(text, p), p  # one line for a long integer or deep nesting too


def run_above(path: Path) -> Path | None:
    """The run a folder inside it belongs to (``RUN/checkpoint``, ``RUN/best``,
    ``RUN/best/checkpoint``: what ``--model`` takes, given where a run is asked for), or None.
    A run is a folder holding a ``train_config.json`` and a ``checkpoint/`` (a settings folder
    kept for ``--config`` is none). Named as the user can type it from here: a relative
    ``path`` gets the run relative to the working directory (``..`` from ``RUN/best`` given
    ``checkpoint``; working on ``path``'s own ``.`` named ``.`` as the run, a loop)."""
    here = Path(os.path.abspath(path))  # lexical: '.', '..' and the names the user gave
    ups = []
    if here.name in ("checkpoint", "best"):
        ups.append(here.parent)
    if here.name == "checkpoint" and here.parent.name == "best":
        ups.append(here.parent.parent)
    for run in ups:
        if (run / "train_config.json").is_file() and (run / "checkpoint").is_dir():
            return run if path.is_absolute() else Path(os.path.relpath(run))
    return None


def _not_its_option(objective: str, name: str) -> bool:
    """Whether ``name`` is an option of some objective but not of ``objective``: given on a
    resume it is refused by the objective's own check, which names the objectives it belongs
    to (a "differs from the run's" line would name a default the run never used)."""
    from unmask.objectives import OBJECTIVES

    spec = OBJECTIVES.get(objective)
    return spec is not None and name not in spec.options and any(
        name in s.options for s in OBJECTIVES.values())


VALIDATION_ROWS = 32
"""The most rows a validation batch holds (``validation_batches``)."""


def validation_batches(config: TrainConfig, world: int = 1,
                       batches: int | None = None) -> tuple[int, int | None]:
    """(rows, batches) of a run's validation on ``world`` processes: ``batches`` (default
    ``eval_batches``; 0: the whole split, None) batches of min(``batch_size``, 32) rows, the
    windows it reads, read in batches of no more rows than a training micro-batch
    (``batch_size`` / (``world`` × ``grad_accum``)): the largest divisor of min(``batch_size``,
    32) that fits, so the windows read stay the same. At min(``batch_size``, 32) rows a run
    given ``--grad-accum 8`` to fit its memory validated 8 times the rows it trained on, which
    the memory check never counted, and could run out of memory at its first validation,
    hours in. Like the training's result, it depends on the micro-batch count alone."""
    whole = max(1, min(config.batch_size, VALIDATION_ROWS))
    micro = max(1, config.batch_size // max(1, world * config.grad_accum))
    rows = max(d for d in range(1, whole + 1) if whole % d == 0 and d <= micro)
    n = config.eval_batches if batches is None else batches
    return rows, (n * (whole // rows) if n else None)


def validation_settings(config: TrainConfig, precision: str, world: int = 1) -> dict[str, Any]:
    """How a run's validation measures (``precision``: the resolved one, e.g. ``bf16``; over
    ``world`` processes): two scores compare only when measured the same way, so a
    ``--keep-best`` checkpoint records these with its score, and a resume that changes any of
    them scores the kept best again. ``eval_every`` is not among them: how often a run
    validates changes no score."""
    return {
        "data": str(Path(config.data).resolve()) if config.data else config.data,
        "seq_len": config.seq_len,
        "eval_batches": config.eval_batches,
        "batch_size": validation_batches(config, world)[0],  # the validation's batch size
        "eps": config.eps,
        "precision": precision,
    }


def validation_changes(
    then: dict[str, Any], now: dict[str, Any], name: SettingNamer | None = None
) -> str:
    """The settings of ``validation_settings`` that differ between ``then`` and ``now``, in
    words (``name`` names a setting as the CLI's flag), or "" where none does."""
    name = name or _as_field
    return ", ".join(
        f"{_validation_setting(k, now[k], name)}, was {then.get(k)}"
        for k in now if then.get(k) != now[k]
    )


def _validation_setting(key: str, value: Any, name: SettingNamer) -> str:
    """A setting of ``validation_settings`` in words: the validation's batch size is not the
    ``batch_size`` given (``validation_batches``), so it is not named as if it were."""
    if key != "batch_size":
        return name(key, value)
    size, accum = setting_name(name, "batch_size"), setting_name(name, "grad_accum")
    return (f"the validation batch size {value} (min({size}, {VALIDATION_ROWS}), or a divisor "
            f"of it as small as a micro-batch: {size} / (processes × {accum}))")


def setting_name(name: SettingNamer, key: str) -> str:
    """The setting ``key`` alone, as ``name`` names it with a value: ``--batch-size`` (the
    CLI's flag) or ``batch_size`` (the field), for advice that gives no value."""
    return re.sub(r"[ =]?1$", "", name(key, 1))


@dataclass(frozen=True)
class SavedProgress:
    """How far a run got: optimizer steps done and seconds spent training."""

    step: int
    train_seconds: float
    trajectories: dict[str, Any] | None = None
    """The ``Trajectories.stamp`` of the file the run trains on, as its checkpoint recorded it
    (None: no trajectory file, or a checkpoint written before runs recorded it)."""
    skipped: int = 0
    """Steps in a row skipped for a non-finite loss just before the checkpoint (a resume goes
    on counting them toward the stop, as the uninterrupted run would)."""
    timed_out: bool = False
    """The run stopped at its ``time_limit`` (``trainer.json``'s ``"stopped": "time_limit"``)
    short of its steps: ``unmask train`` exits ``TIME_LIMIT_EXIT``, and a plain ``--resume``
    trains on for another ``time_limit`` (``renew_time_limit``)."""
    has_ema: bool = False
    """The checkpoint holds EMA weights (its inference weights) besides the raw ones."""
    session_limit: float | None = None
    """Minutes the session its time limit stopped was allowed (its limit less the time trained
    before it): what a plain resume allows again (``renew_time_limit``)."""
    time_limit: float | None = None
    """The time limit (minutes, in all) the session that saved it trained to: ``trainer.json``'s
    ``train_config``. More than the plan's (``train_config.json``, the limit as the user gave
    it) once a plain resume renewed it; None: no limit, or no record of it."""
    validation_cut: bool = False
    """A signal stopped the validation of the checkpoint's step (``VALIDATION_CUT``)."""
    device: str | None = None
    """The device type (``cpu``, ``cuda``) the session that saved it trained on
    (``trainer.json``'s ``device``); None for a checkpoint written before runs recorded it."""


def saved_progress(ckpt: Path) -> SavedProgress:
    """Step and training time recorded in ``ckpt/trainer.json`` (0 s for older checkpoints);
    a one-line ``UserError`` when it is missing, not JSON, not UTF-8 (``read_json``'s lines:
    a trailing comma named as one) or holds no valid step."""
    path = ckpt / "trainer.json"
    if not path.is_file():
        raise UserError(f"{ckpt}: no trainer state to resume from (trainer.json missing)")
    meta = read_json(path)
    stamp = meta.get("trajectories")
    plan = meta.get("train_config")
    limit = _minutes(plan.get("time_limit")) if isinstance(plan, dict) else None
    try:
        return SavedProgress(int(meta["step"]), float(meta.get("train_seconds", 0.0)),
                             stamp if isinstance(stamp, dict) else None,
                             int(meta.get("skipped_in_a_row", 0)),
                             meta.get("stopped") == STOPPED_BY_TIME_LIMIT,
                             bool(meta.get("has_raw_model")),
                             _minutes(meta.get("session_limit")), limit,
                             meta.get(VALIDATION_CUT) == meta["step"],
                             meta["device"] if isinstance(meta.get("device"), str) else None)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise UserError(f"{path}: not a valid trainer state") from None


STOPPED_BY_TIME_LIMIT = "time_limit"
"""``trainer.json``'s ``stopped`` where the run's ``time_limit`` stopped it short of its steps."""

VALIDATION_CUT = "validation_cut"
"""``trainer.json``'s key for a checkpoint saved when a signal stopped the validation of its
step (``_StoppableSplit``): a resume validates that step first, so its log reads as the
uninterrupted run's (the last step's: a finished run resumes for that validation alone)."""

TIME_LIMIT_EXIT = 75
"""Exit code of ``unmask train`` / ``unmask distill`` when ``--time-limit`` stopped the run
short of its steps, its checkpoint saved (``EX_TEMPFAIL`` of sysexits.h: try again later);
``unmask train --resume --out RUN`` continues it. Under ``torchrun`` (``under_torchrun``:
one process or more) every process exits 0 instead: torchrun reports any other code as a
failed worker."""


EXIT_CODES = (
    "exit status: 0 the run finished its steps; 75 its --time-limit stopped it short, "
    "checkpoint saved (continue with --resume); 130 / 143 / 129 Ctrl-C / SIGTERM / SIGHUP "
    "(the terminal closed) stopped it, "
    "checkpoint saved; 2 refused (one line saying why)"
)
"""The ``epilog`` of ``unmask train --help`` and ``unmask distill --help``."""


def renew_time_limit(progress: SavedProgress, saved: TrainConfig, plan: TrainConfig,
                     changes: dict[str, Any]) -> float | None:
    """The total ``time_limit`` (minutes) a resume that gives no other limit trains to, or
    None where it is the plan's (``plan.time_limit``, as the user gave it).

    A run its time limit stopped trains on for the minutes used plus what the stopped
    session was allowed (``SavedProgress.session_limit``; the saved limit for a checkpoint
    without it), so each session of a scheduler's requeued ``--resume`` gets as long as the
    first; any other resume goes on to the limit its last session trained to
    (``SavedProgress.time_limit``: a renewed one, which a signal interrupted). The renewed
    total is recorded in ``trainer.json`` only, never in the plan: a requeued command that
    repeats the first one's ``--time-limit`` is then no change of plan and renews as a plain
    ``--resume`` does. None also where the resume gives a time limit of its own (the total)
    or the run has none."""
    if "time_limit" in changes or not plan.time_limit:
        return None
    total = max(plan.time_limit, progress.time_limit or 0.0)
    used = progress.train_seconds / 60
    if progress.timed_out and used >= total:
        return round(used + (progress.session_limit or saved.time_limit), 4)
    return total if total > plan.time_limit else None


def time_limit_exit(run: Path, command: str, *, say: bool) -> int:
    """The exit code of ``unmask COMMAND`` whose ``train`` returned ``run``: 0 for a finished
    run; ``TIME_LIMIT_EXIT`` (0 under torchrun) where its time limit stopped it, after one
    line on stderr (``say``) naming the step and how to continue."""
    import sys

    from unmask.checkpoint import CKPT

    try:
        done = saved_progress(run / CKPT)
        planned = read_json(run / "train_config.json")
        steps = int(planned["steps"])
        limit = done.time_limit or float(planned["time_limit"])  # a renewed one, if renewed
    except (UserError, OSError, ValueError, KeyError, TypeError):
        return 0
    if not done.timed_out or done.step >= steps:
        return 0
    if say:
        more = done.session_limit or limit
        print(f"unmask {command}: stopped by its time limit of {limit:g} min at step "
              f"{done.step} of {steps}, checkpoint saved in {run / CKPT}; continue it (another "
              f"{more:g} min) with: unmask {command} --resume --out {run}", file=sys.stderr)
    return 0 if under_torchrun() else TIME_LIMIT_EXIT


def under_torchrun() -> bool:
    """Whether this process is one of torchrun's workers: ``TORCHELASTIC_RUN_ID`` is set (also
    by ``torchrun --nproc-per-node 1``, whose ``WORLD_SIZE`` is 1) or ``WORLD_SIZE`` > 1."""
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return True
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def _minutes(value: Any) -> float | None:
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        return None
    return minutes if math.isfinite(minutes) and minutes > 0 else None


def describe_resume(
    progress: SavedProgress,
    saved: TrainConfig,
    plan: TrainConfig,
    changes: dict[str, Any],
    *,
    name: SettingNamer | None = None,
    renewed: bool = False,
) -> str:
    """The one line a resumed run prints, or a ``UserError`` if the plan leaves nothing to do.

    E.g. ``resuming at step 150 of 200; steps=400 given: the run now ends at 400``.
    ``renewed``: ``plan.time_limit`` was renewed (``renew_time_limit``; not in ``changes``).
    """
    name = name or _as_field
    step = progress.step
    if plan.steps < step:
        raise UserError(
            f"{name('steps', plan.steps)} is behind the run, which is already at step {step}"
        )
    used_min = progress.train_seconds / 60
    used = f"{used_min:.1f}" if used_min >= 1 else f"{used_min:.2g}"  # not "0.0 min trained"
    if plan.steps == step and progress.validation_cut:  # Ctrl-C in the final validation
        return f"resuming at step {step} of {step} for its final validation, which was stopped"
    if plan.steps == step:
        hint = "" if "steps" in changes else f"; give more steps ({name('steps', step * 2)})"
        raise UserError(f"the run already finished its {step} steps{hint}")
    if plan.time_limit and used_min >= plan.time_limit:
        raise UserError(
            f"the run used its time limit of {plan.time_limit:g} min "
            f"({used} min trained); give a longer one ({name('time_limit', 0.0)} = none)"
        )
    line = f"resuming at step {step} of {saved.steps}"
    limit_then = progress.time_limit or saved.time_limit  # a renewed one, if renewed
    if limit_then:
        line += f" ({used} of {limit_then:g} min used)"
    if renewed:
        more = progress.session_limit or saved.time_limit
        line += (f"; its time limit stopped it: this session trains up to {more:g} "
                 f"min more (a limit of {plan.time_limit:g} min in all)")
    if changes:
        given = ", ".join(name(k, v) for k, v in changes.items())
        end = f"the run now ends at {plan.steps}"
        if plan.time_limit:
            end += f" or after {plan.time_limit:g} min of training"
        line += f"; {given} given: {end}"
    if "ema" in changes:
        line += _ema_note(progress, plan, name)
    return line


def device_change(
    saved: TrainConfig, plan: TrainConfig, device: str, precision: str,
    name: SettingNamer | None = None, trained_on: str | None = None,
) -> str:
    """The resume line's clause for a run that trained on another device than this
    session's (``device``, its type: ``cpu``, ``cuda``), or ''. The device it trained on is
    the one its last session recorded in ``trainer.json`` (``trained_on``), else, for older
    checkpoints, the plan's ``--device`` (a plain resume does not rewrite the plan: compared
    with it, each later resume named a device the last sessions had not used, and a run that
    changed its plan saved ``auto`` and was silent from then on). ``device`` is how a process runs
    (``RUNTIME_FIELDS``): a plain resume of a ``--device cpu`` run runs where this command's
    default puts it, a GPU, and under ``--precision auto`` in bf16 (``precision``, resolved),
    not fp32: the run goes on otherwise than it would have, which it did without a word. A
    run saved with ``--device auto`` names no device to compare (''), nor does ``precision``
    change where the plan's is given, or changed (the line names that change)."""
    was = trained_on or saved.device
    then = was.split(":")[0]
    if was == "auto" or then == device:
        return ""
    name = name or _as_field
    note = f"; the run trained on {name('device', was)}, this session runs on {device}"
    if plan.precision == saved.precision == "auto":
        from unmask.parallel import CPU_AUTO_PRECISION

        auto = "bf16 or fp16" if then == "cuda" else CPU_AUTO_PRECISION
        if auto != precision:
            note += f" ({name('precision', 'auto')}: {precision} here, {auto} on {then})"
    return note + f"; give {name('device', was)} to keep it"


def _ema_note(progress: SavedProgress, plan: TrainConfig, name: SettingNamer) -> str:
    """What an ``ema`` changed on resume does to the run's weights, said with the resume line:
    ``--ema 0`` on a run with EMA weights drops them for good (the next checkpoint saves the
    raw weights for inference), which a run did without a word."""
    if plan.ema == 0 and progress.has_ema:
        return (f" ({name('ema', 0.0)} drops the run's EMA weights: it trains on from its raw "
                "weights, which are validated and saved for inference from now on)")
    if plan.ema == 0:
        return ""
    if not progress.has_ema:
        return f" (the EMA of {name('ema', plan.ema)} starts from the weights at this step)"
    return f" (the EMA weights go on with decay {plan.ema:g})"


# ----------------------------------------------------------------------------- sizes


def check_data_sizes(config: TrainConfig, train_ds: Any, val_ds: Any) -> None:
    """``seq_len`` and ``batch_size`` against the token splits (not SFT pairs), up front."""
    n = getattr(train_ds, "n_tokens", None)
    if n is None:
        return
    L = config.seq_len
    if n < L:
        raise UserError(f"seq_len={L} is longer than the train split ({n:,} tokens)")
    windows = n - L + 1
    if config.batch_size > windows:
        raise UserError(
            f"batch_size={config.batch_size} exceeds the {windows:,} distinct windows of "
            f"seq_len={L} in the train split ({n:,} tokens)"
        )
    if val_ds is not None and 0 < val_ds.n_tokens < L:
        raise UserError(
            f"seq_len={L} is longer than the validation split ({val_ds.n_tokens:,} tokens)"
        )


@dataclass(frozen=True)
class MemoryEstimate:
    """A rough lower estimate of what one training process holds at its peak, in bytes."""

    state: int
    """Weights, gradients, AdamW moments and the EMA copy (fp32)."""
    activations: int
    """Tensors kept for the backward pass of one micro-batch, and the batch itself."""

    @property
    def total(self) -> int:
        return self.state + self.activations


def estimate_memory(
    model_cfg: ModelConfig, config: TrainConfig, *, rows: int, cuda: bool, shards: int = 1
) -> MemoryEstimate:
    """Bytes a training process needs, roughly, from the configs alone (nothing allocated).

    Parameters are counted by ``ModelConfig.num_params``, the formula (the built model's
    count, tested, but for embed-diffusion's d_model² self-condition map): building anything,
    even on the meta device, is what this check runs before. Per parameter: fp32 weight,
    gradient and two AdamW moments (16 bytes), plus 4 for EMA, divided by ``shards`` under
    FSDP. Per token of a micro-batch of ``rows`` rows: about 16·d_model values per layer kept
    for backward (with activation checkpointing, d_model per layer plus one block's
    16·d_model recomputed), and logits, their softmax and gradient (3·V); 2 bytes a value
    under CUDA's bf16 autocast, 4 on CPU. A lower estimate: attention scores (L² per head
    when no fused kernel applies) are left out.
    """
    n_params = model_cfg.num_params()  # the formula: a meta-device copy of a model of
    # n_layers=100000 took two minutes to build before this check could refuse it
    per_param = (16 + (4 if config.ema > 0 else 0)) / max(1, shards)
    value = 2 if cuda else 4
    kept = (model_cfg.n_layers + 16) if config.activation_checkpointing else 16 * model_cfg.n_layers
    per_token = kept * model_cfg.d_model + 3 * model_cfg.vocab_size
    L = config.seq_len
    batch = 16 * config.batch_size * L  # int64 windows and the stacked copy
    return MemoryEstimate(
        state=int(per_param * n_params), activations=value * rows * L * per_token + batch
    )


def available_memory(device: Any) -> int | None:
    """Free bytes where training allocates: CUDA's free memory on a GPU, else the smaller of
    MemAvailable and the cgroup's room; None when it cannot be read."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    from unmask.quantize import free_bytes

    return free_bytes("cpu")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit in ("B", "KB") else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_model_size(model_cfg: ModelConfig, device: Any, world: int = 1) -> None:
    """Refuse at once, from the formula (``ModelConfig.num_params``), a model whose weights
    alone, at 2 bytes and split over ``world`` processes, exceed the free memory: building
    even its meta-device copy (``estimate_memory``) took minutes at ``n_layers=100000``."""
    available = available_memory(device)
    n_params = model_cfg.num_params()
    if available is None or 2 * n_params <= available * max(1, world):
        return
    raise UserError(
        f"the model has about {_count(n_params)} parameters: its weights alone need "
        f"{_size(2 * n_params)} per copy, more than the {_size(available)} available; "
        f"{SMALLER_MODEL}"
    )


SMALLER_MODEL = "choose a smaller model (--preset, --model-set d_model=/n_layers=)"
"""The advice of a refusal no batch setting can lift: the model itself does not fit."""


def _state_advice(
    state: int, available: int, config: TrainConfig, *, processes: int, world: int,
    shards: int, name: SettingNamer, resume: bool = False,
) -> str:
    """What makes a ``state`` (per process) too big for ``available`` fit: a smaller model, or
    each of these where it is enough. Without EMA (16 of its 20 bytes a parameter); under DDP
    on several processes, FSDP (each holds 1/``world`` of it; EMA is DDP-only); fewer processes
    sharing this memory, where each holds all of it (under FSDP on one node the processes
    share the one state: fewer of them, as it said, hold the same in all).

    FSDP is named only for a fresh run (not a ``resume``), and only where one full fp32 copy
    of the weights (4 of the 16 bytes a parameter) fits on each process too: every process
    builds the whole model before it is sharded, and a resume loads the full weights and
    AdamW moments on each (measured: an FSDP resume of a DDP run peaks above DDP's)."""
    fits = lambda per_process: per_process * processes <= available  # noqa: E731
    no_ema = state * 16 / 20 if config.ema > 0 else state
    ways = []
    if config.ema > 0 and fits(no_ema):
        ways.append(f"drop {setting_name(name, 'ema')}")
    elif (shards == 1 and world > 1 and not resume
          and fits(max(no_ema / world, no_ema * 4 / 16))):
        without = f" without {setting_name(name, 'ema')}" if config.ema > 0 else ""
        ways.append(f"use {name('parallel', 'fsdp')}{without}")
    if shards == 1 and processes > 1 and state <= available:
        ways.append("run fewer processes on this machine")
    return ", or ".join([*ways, SMALLER_MODEL])


def _count(n: float) -> str:
    return f"{n / 1e9:,.1f}B" if n >= 1e9 else f"{n / 1e6:,.1f}M"


def check_memory(
    estimate: MemoryEstimate, available: int | None, *, config: TrainConfig, rows: int,
    processes: int = 1, world: int = 1, shards: int = 1, name: SettingNamer | None = None,
    resume: bool = False,
) -> None:
    """Refuse a run whose estimate (times the processes sharing this machine) exceeds the free
    memory, with a one-line ``UserError`` that says what to lower, the settings of its advice
    named by ``name`` (the CLI: its flags, typed or not; it named ``grad_accum``, a field, to a
    user who had not typed ``--grad-accum``). Where the weights and optimizer state alone do
    not fit, the advice is a smaller model: lowering the batch, as it said, could not help
    (``_state_advice``: or what else makes the state fit, over ``world`` processes of which
    ``processes`` share this memory, the state split in ``shards`` by FSDP; FSDP is not
    named to a ``resume``)."""
    if available is None:
        return
    need = estimate.total * processes
    if need <= available:
        return
    alone = [setting_name(name or _as_field, k) for k in ("seq_len", "batch_size", "grad_accum")]
    who = f" × {processes} processes" if processes > 1 else ""
    if estimate.state * processes > available:  # no batch fits: lowering it was the advice
        ways = _state_advice(estimate.state, available, config, processes=processes,
                             world=world, shards=shards, name=name or _as_field,
                             resume=resume)
        advice = f"its weights and optimizer state alone do not fit; {ways}"
    else:
        advice = f"lower {alone[0]} or {alone[1]}, or raise {alone[2]}"
    raise UserError(
        f"this run needs about {_size(need)} of memory{who} (weights and optimizer state "
        f"{_size(estimate.state)}, activations of {rows} {'row' if rows == 1 else 'rows'} × "
        f"seq_len={config.seq_len} "
        f"{_size(estimate.activations)}), more than the {_size(available)} available; {advice}"
    )


# ----------------------------------------------------------------------------- one at a time


_HELD: set[str] = set()
"""Run folders this process holds (``RunLock``): a run that calls ``train`` inside another
lock of its own folder (``unmask distill``) holds it once."""


class RunLock:
    """The run folder held by the one process training in it: an exclusive ``flock`` of the
    folder itself (no file left in it), released when the process ends, however it ends.

    A second ``unmask train`` on the same ``--out`` while the first still ran (the same
    command typed twice, a scheduler's requeue of a job still running) took a live run
    before its first checkpoint for one killed (``run_checks.unfinished_run``) and deleted
    its plan and log, so both failed; given ``--resume``, the two trained into one folder,
    each replacing the other's checkpoints and interleaving their log lines. ``hold`` refuses
    it in one line instead. Where the file system takes no locks (NFS, Lustre: ``flock``
    fails there), nothing is held."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._key: str | None = None

    def hold(self, folder: str | os.PathLike[str] | None, *, make: bool = False) -> list[Path]:
        """Hold ``folder``, made first where ``make`` (a new run: two starts at the same moment
        on a folder not there yet meet here, and the one refused has made nothing of the
        other's), unless this lock holds one already; a one-line ``UserError`` if another
        process holds it. Returns the folders it made (``folder`` and missing parents,
        innermost first), to remove if the run ends with nothing saved."""
        from unmask.run_checks import missing_folders

        if self._fd is not None or not folder:
            return []
        made: list[Path] = []
        for _ in range(3):  # (the folder removed under us by a run just ended: made again)
            if make:
                made = made or missing_folders(Path(folder))
                with contextlib.suppress(OSError):  # (what is wrong: said by the run)
                    Path(folder).mkdir(parents=True, exist_ok=True)
            if not Path(folder).is_dir() or os.path.realpath(folder) in _HELD:
                return made
            fd = _lock(folder)
            if fd is None:
                if make and not Path(folder).is_dir():  # removed before it was opened (not
                    continue  # a file system without locks): made again, as above
                return made
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(folder))
            except OSError:
                same = False
            if same:
                self._fd, self._key = fd, os.path.realpath(folder)
                _HELD.add(self._key)
                return made
            os.close(fd)
        return made

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            _HELD.discard(self._key or "")
            self._fd = self._key = None


def _lock(folder: str | os.PathLike[str]) -> int | None:
    """An open descriptor of ``folder`` holding its exclusive ``flock``, or None where none can
    be held (Windows, a folder this process cannot open, a file system without locks: NFS
    gives EBADF for a folder, Lustre ENOSYS, others ENOLCK); a one-line ``UserError`` where
    another process holds it."""
    try:
        import fcntl
    except ImportError:  # (Windows)
        return None
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # (no read permission: what the run then meets says it)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(
            f"{folder}: another process is training this run now (unmask train or "
            f"distill); wait for it to end or stop it (Ctrl-C saves it), or choose "
            f"another --out"
        ) from None
    except OSError:  # no locks on this file system: train as before
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def own_run(out: str | None, *, new: bool, main: bool = True) -> Iterator[None]:
    """Inside: the run in ``out`` trained by this process (``main``: rank 0 of torchrun; the
    others hold nothing), held (``RunLock``) from before anything in it is read or cleared
    and, for a ``new`` run, made here (``RunLock.hold``) and removed again if it ends with no
    checkpoint (``run_checks.no_empty_run``). ``unmask train`` and ``unmask distill`` (from
    before it decodes its trajectories; the ``train`` inside holds it once) take it."""
    from unmask.run_checks import no_empty_run

    with RunLock() as lock:
        if not main:
            yield
            return
        made = lock.hold(out, make=new)
        with no_empty_run(out, made=made) if new and out else contextlib.nullcontext():
            yield


# ----------------------------------------------------------------------------- signals


class TrainingStopped(KeyboardInterrupt):
    """Raised by ``train`` when SIGINT/SIGTERM stopped it, after its checkpoint was saved.

    A ``KeyboardInterrupt``, so code that handles Ctrl-C handles it; ``exit_code`` is the
    shell's convention for death by that signal (130 for SIGINT, 143 for SIGTERM, 129 for
    SIGHUP).
    """

    def __init__(self, signum: int, step: int | None, run: Path, *, detail: str = "") -> None:
        self.signum = signum
        self.step = step
        self.run = run
        self.exit_code = 128 + signum
        if not detail:
            from unmask.checkpoint import CKPT  # loaded by then (training); torch-free here

            detail = f"at step {step}; checkpoint saved in {run / CKPT}"
        super().__init__(f"stopped by {signal.Signals(signum).name} {detail}")


def resume_hint(stopped: TrainingStopped, command: str, *, program: str = "unmask") -> str:
    """What to tell a user whose run ``stopped``: how to resume it, or, when the signal came
    after its last step (in the final validation or save), that nothing is left to do.
    ``program``: how the user types unmask (``unmask.commands.demo.invoked_as``)."""
    from unmask.checkpoint import CKPT

    if not (stopped.run / CKPT).is_dir():
        return ""
    try:
        planned = int(read_json(stopped.run / "train_config.json")["steps"])
    except (OSError, ValueError, KeyError, TypeError, UserError):
        planned = None
    if stopped.step is not None and planned is not None and stopped.step >= planned:
        return f"; all {planned} steps were done, the run is complete"
    return f"; resume with: {program} {command} --resume --out {quote(str(stopped.run))}"


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""The signals that stop a run and save it: Ctrl-C, ``kill``, and the terminal or ssh
session closing (SIGHUP, which killed a run outright and left a folder without a
checkpoint)."""


class StopFlag:
    """SIGINT/SIGTERM/SIGHUP handling for the whole of ``train``.

    Outside ``deferring()`` (set-up: reading data, building the model) a signal stops at
    once. Inside it (the training loop) the first signal only sets ``signum``, and the loop
    stops at the next step or micro-batch boundary (or between the batches of a periodic
    validation: ``unmask.train._StoppableSplit``) and saves; a second signal raises
    ``KeyboardInterrupt`` at once (the last complete checkpoint stays, saves are atomic).
    """

    def __init__(self, run: Path | None = None) -> None:
        self.signum: int | None = None
        self.run = run
        self._defer = False
        self._started = False  # the training loop was entered
        self._old: dict[int, Any] = {}

    @property
    def stop(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopFlag:
        for sig in STOP_SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals to the caller
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        run = self.run or Path(".")
        if not self._defer:
            self.signum = signum
            when = "after training (its checkpoint is saved)" if self._started else (
                "before training started")
            raise TrainingStopped(signum, None, run, detail=when)
        if self.signum is not None:  # the second signal: no more waiting for a save
            from unmask.checkpoint import CKPT, OLD  # loaded by then (training); torch-free here

            saved = (run / CKPT).is_dir() or (run / OLD).is_dir()
            kept = ("the last saved checkpoint is kept" if saved  # (.old: between the renames
                    else "no checkpoint had been saved yet")  # of a save, which resume takes)
            raise TrainingStopped(signum, None, run, detail=f"at once (second signal); {kept}")
        self.signum = signum

    @contextlib.contextmanager
    def deferring(self) -> Iterator[StopFlag]:
        """Inside: signals set the flag instead of raising (the first one)."""
        self._defer = self._started = True
        try:
            yield self
        finally:
            self._defer = False

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
