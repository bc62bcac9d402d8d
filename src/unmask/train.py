"""The training loop: single process or ``torchrun`` data parallel (DDP or FSDP2).

AdamW, linear warmup + cosine decay, gradient clipping, gradient accumulation,
``--precision`` (fp32, bf16 autocast, fp16 with a scaler), optional EMA of the weights,
periodic validation (ELBO perplexity bound, bits per byte), ``metrics.jsonl`` (with tokens/s,
MFU on known GPUs and peak memory), a live progress bar, atomic checkpoints (every N steps, on
SIGINT/SIGTERM, at the end) and exact resume. Parallelism (``--parallel``), activation
checkpointing and ``--compile`` are applied to the unchanged model by ``unmask.parallel``;
FSDP runs also write a sharded checkpoint (``torch.distributed.checkpoint``) beside the
native single-file weights, and resume on any number of processes.

Determinism: every optimizer step draws its batch and noise from generators seeded
by (seed, step, micro-batch), never from global RNG state. A global batch is cut
into ``world_size × grad_accum`` micro-batches; the result depends only on that
count, not on how the micro-batches are spread over processes, and a resumed run
repeats the uninterrupted one exactly. The noise times of the objectives that take them
(``t``) are drawn once for the whole batch with the batch (``_batch_times``: antithetic over
all its rows) and split across micro-batches and processes; the rest of the noise is drawn
per micro-batch.

The objective is a spec (``unmask.objectives``): it says the attention and block size the
model needs, which options apply, the tokens it adds to the tokenizer, what it stores in the
model config, and its batch kind. ``--init`` starts from a checkpoint's weights, config and
tokenizer; a ``prompt_response`` objective (SFT, which needs it) reads prompt/response JSONL
through ``unmask.sft.SFTData`` instead of token shards, and has no validation split. The
noise schedule is ``TrainConfig.schedule``, stored in the model config with the objective's
name, so samplers read both from the checkpoint.

The resume plan, the size checks made before anything big is allocated, and SIGINT/SIGTERM
handling live in ``unmask.train_guards``.

Inside: ``train`` (Python API), ``build_model_config``, ``lr_at``, ``lr_change``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import json
import math
import os
import shutil
import sys
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from unmask.checkpoint import (
    BEST,
    BEST_RECORD,
    CKPT,
    OLD,
    PREVIOUS_BEST,
    TMP_PREFIX,
    checkpoint_dir,
    finish_full_train_state,
    gathered_weights,
    is_sharded,
    load_full_train_state,
    load_inference_weights,
    load_train_state,
    save_checkpoint,
    save_sharded_checkpoint,
)
from unmask.config import (
    MODEL_PRESETS,
    ModelConfig,
    TrainConfig,
    check_objective_fields,
    from_dict,
    load_json,
    model_preset,
    resolve_device,
    save_json,
    to_dict,
)
from unmask.errors import UserError
from unmask.evaluate import evaluate_loss
from unmask.files import json_line, named, parse_json, staging_dir
from unmask.model import Transformer
from unmask.objectives import BATCH_EXTRA, OBJECTIVES, ObjectiveSpec, objective_spec
from unmask.parallel import (
    apply_activation_checkpointing,
    apply_fsdp,
    choose_parallel,
    compile_blocks,
    device_peak_flops,
    flops_per_token,
    gradient_sync,
    peak_memory_bytes,
    resolve_precision,
    said_once,
    share_refusal,
)
from unmask.progress import progress_bar, stderr_may_close
from unmask.run_checks import NO_OUT, check_batch_split, check_context, check_out
from unmask.schedules import schedule_of
from unmask.train_guards import (
    STOPPED_BY_TIME_LIMIT,
    VALIDATION_CUT,
    SettingNamer,
    StopFlag,
    TrainingStopped,
    available_memory,
    check_data_sizes,
    check_memory,
    check_model_size,
    describe_resume,
    device_change,
    estimate_memory,
    load_train_config,
    own_run,
    renew_time_limit,
    resume_plan,
    resumed_config,
    saved_progress,
    validation_batches,
    validation_changes,
    validation_settings,
)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, cosine to
    min_lr_ratio·lr. The training loop calls it once as each step starts (and nothing else
    does: tests take that call as the step's start)."""
    return _scheduled_lr(step, cfg)


def _scheduled_lr(step: int, cfg: TrainConfig) -> float:
    if cfg.warmup > 0 and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_change(step: int, saved: TrainConfig, plan: TrainConfig) -> str:
    """The resume line's clause for a changed plan under which the learning rate at the
    resumed ``step`` (``lr_at``) is not the saved plan's, or '': more ``--steps`` stretch the
    cosine decay, so a finished run extended trains on at several times its last rate (at its
    floor, ``min_lr_ratio``·lr, it goes back up the curve), which it did without a word."""
    then, now = _scheduled_lr(step, saved), _scheduled_lr(step, plan)  # (lr_at: the loop's)
    if math.isclose(then, now, rel_tol=0.01):
        return ""
    was = (f"{now / then:.2g}× the saved plan's {then:.3g}" if then > 0 and now > 0 else
           f"{'up' if now > then else 'down'} from {then:.3g} in the saved plan")  # (0× of 0)
    return f"; the learning rate at step {step} becomes {now:.3g} ({was})"


def warmup_note(cfg: TrainConfig, name: SettingNamer | None = None) -> str:
    """The note a run gets when its warmup (``lr_at``) is longer than its steps: the learning
    rate never reaches ``lr`` (at the last step: steps/warmup of it) and never decays, likely
    not what was meant (a short run with the default warmup of 100)."""
    name = name or (lambda k, v: f"{k}={v}")
    top = cfg.steps / cfg.warmup
    return (f"note: {name('warmup', cfg.warmup)} is longer than {name('steps', cfg.steps)}: "
            f"the learning rate only rises, to {top:.3g} of {name('lr', cfg.lr)} at the last "
            f"step, and never decays; give a shorter warmup")


def sft_cut_note(lengths: list[int], total: int, cfg: TrainConfig, max_seq_len: int,
                 name: SettingNamer | None = None) -> str:
    """The note an SFT run gets when ``lengths`` (``SFTData.cut_rows``), rows of its ``total``
    trained turns, are longer than ``seq_len``: their responses are cut, EOS included, so the
    model is not taught to stop after them (a chat reply then runs on to ``gen_length``);
    it was cut without a word."""
    name = name or (lambda k, v: f"{k}={v}")
    longest = max(lengths)
    if longest <= max_seq_len:
        fits = f"{name('seq_len', longest)} keeps them whole"
    else:  # the context holds some of them: say so, as for the rest
        held = sum(n <= max_seq_len for n in lengths)
        some = f"{name('seq_len', max_seq_len)} keeps {held:,} of them whole; " if held else ""
        fits = (f"{some}the model's max_seq_len ({max_seq_len}) cannot hold the longest "
                f"({longest} tokens): shorten those lines")
    return (f"note: {len(lengths):,} of the {total:,} trained turns are longer than "
            f"{name('seq_len', cfg.seq_len)} (prompt, response and EOS): their responses are "
            f"cut, EOS included, so those rows do not teach the model where to stop; {fits}")


def build_model_config(
    cfg: TrainConfig, vocab_size: int, special_ids: dict[str, int | None]
) -> ModelConfig:
    """ModelConfig from the preset, the tokenizer's facts, the objective's facts (attention,
    block size) and the overrides, in that order."""
    if cfg.preset not in MODEL_PRESETS:
        raise UserError(f"unknown preset {cfg.preset!r}; choose one of {', '.join(MODEL_PRESETS)}")
    base = dict(MODEL_PRESETS[cfg.preset])
    base["max_seq_len"] = max(base.get("max_seq_len", 0), cfg.seq_len)
    facts = objective_spec(cfg.objective).facts(cfg)
    fields = {**base, "vocab_size": vocab_size, **facts, **special_ids, **cfg.model_overrides}
    return model_preset(cfg.preset, **fields)


def _seed_for(seed: int, step: int, micro: int) -> int:
    # Distinct, well-spread seeds per (seed, step, micro-batch); fits in int64.
    return (seed * 1_000_003 + step * 10_007 + micro * 101 + 17) % (2**62)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _saved_best(record: Any, ckpt: Path) -> dict[str, Any]:
    """The ``--keep-best`` record of a checkpoint's trainer.json (``{"step", "metric",
    "value"}``, empty where none); a one-line ``UserError`` for one that is not (a hand-edited
    file: a text value failed with a traceback at the first validation)."""
    if not record:
        return {}
    ok = (isinstance(record, dict) and isinstance(record.get("step"), int)
          and record.get("metric") in ("val_bpb", "val_loss")
          and isinstance(record.get("value"), (int, float))
          and not isinstance(record.get("value"), bool))
    if not ok:
        raise UserError(
            f"{ckpt / 'trainer.json'}: its best record {json.dumps(record)[:120]} is not "
            '{"step": N, "metric": "val_bpb" or "val_loss", "value": X}; fix it, or remove '
            "it to start a new best"
        )
    return dict(record)


def _score_best_again(
    run: Path,
    best: dict[str, Any],
    changed: str,
    measure: Callable[[nn.Module], dict[str, float]],
    build: Callable[[], nn.Module],
    *,
    log: Callable[[dict[str, Any]], None],
    is_main: bool,
    sharded: bool,
) -> None:
    """A resumed ``--keep-best`` run whose validation now measures otherwise (``changed``, in
    words): score ``OUT/best`` again as the run now validates, so later validations compare
    with a number measured their way (logged as a ``best`` event with ``"rescored": true``).
    Under FSDP (the model is sharded, no full copy to score with) or where ``OUT/best`` is
    gone, the best is forgotten instead: the next validation starts a new one. Says so in one
    line on stderr. ``build`` makes a plain (uncompiled) model of the run's config to score
    OUT/best with."""
    folder = run / BEST / CKPT
    old = f"{best['metric']} {best['value']:.4f} at step {best['step']}"
    if sharded or not (folder / "model.safetensors").is_file():
        best.clear()
        if is_main:
            print(f"--keep-best: validation now measures otherwise ({changed}); the best so "
                  f"far ({old}) compares with nothing, so the next validation starts a new best",
                  file=sys.stderr, flush=True)
        return
    if not is_main:  # (DDP: rank 0 alone keeps the best)
        return
    scratch = build()
    load_inference_weights(folder, scratch)
    value = measure(scratch).get(best["metric"])
    del scratch
    if value is None or not math.isfinite(value):
        best.clear()
        note = "scores no finite number now, so the next validation starts a new best"
    else:
        best["value"] = float(value)
        note = f"scored again: {best['metric']} {value:.4f}"
        log({"event": "best", **best, "rescored": True})
    print(f"--keep-best: validation now measures otherwise ({changed}); the best so far "
          f"({old}) {note}", file=sys.stderr, flush=True)


def _prepare_run_dir(cfg: TrainConfig, resume: bool, is_main: bool) -> Path:
    if not cfg.out:
        raise UserError(NO_OUT)
    run = Path(cfg.out)
    if resume:
        if not (run / CKPT).exists() and not (run / OLD).exists():
            from unmask.run_checks import kept_best, unfinished_run

            again = ("; it stopped before its first checkpoint: start it again without "
                     "--resume" if unfinished_run(run) else
                     f"; its best weights are in {run / BEST} (to start anew there, move them "
                     "elsewhere first, or choose another --out)" if kept_best(run) else "")
            raise UserError(f"{run}: nothing to resume (no checkpoint/ in it){again}")
        return run
    check_out(run)
    if run.exists() and any(run.iterdir()):
        from unmask.run_checks import not_empty

        raise not_empty(run)
    if is_main:
        check_out(run, make=True)
    return run



def val_text(record: dict[str, float]) -> str:
    """A validation record for the log line: bits per byte where the objective's loss bounds a
    likelihood, else its loss, named as such (``ObjectiveSpec.likelihood``)."""
    if "val_bpb" in record:
        return f"val_bpb {record['val_bpb']:.3f}"
    return f"val_loss {record['val_loss']:.3f}"

def train(
    config: TrainConfig | Mapping[str, Any],
    *,
    resume: bool = False,
    progress: bool = True,
    name_setting: SettingNamer | None = None,
) -> Path:
    """Train a model as ``config`` says and return the run directory.

    With ``resume=True`` the run in ``config.out`` continues from its checkpoint and
    follows the plan in its train_config.json; pass that plan (``load_train_config(RUN /
    "train_config.json")``) with the fields you want changed: every field of ``config``
    that differs from it (more ``steps``, another ``time_limit`` or ``lr``, ...) changes
    the plan and is saved with it, and one line on stderr says what changed (named by
    ``name_setting(field, value)``; the CLI passes flag names). ``device``, ``threads`` and
    ``out`` are always this call's.

    SIGINT/SIGTERM stop the run at the next step (a second signal at once), after an atomic
    checkpoint of the steps done, and raise ``TrainingStopped`` (a ``KeyboardInterrupt``).

    ``config`` may also be a mapping of TrainConfig fields (as a train_config.json holds
    them): with ``resume=True``, the fields it names over the plan saved in its ``out``
    (``{"out": RUN, "steps": 4000}`` trains RUN on to step 4000); anything else is a one-line
    ``UserError`` naming the argument.
    """
    config = _train_config(config, resume)
    rank = int(os.environ.get("RANK", "0"))
    with said_once(rank=rank, world=int(os.environ.get("WORLD_SIZE", "1"))):  # torchrun: once
        return _train_checked(config, resume=resume, progress=progress, name_setting=name_setting,
                              main_rank=rank == 0)


def _train_config(config: Any, resume: bool) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, Mapping):
        given = dict(config)
        out = given.get("out")
        plan = Path(out) / "train_config.json" if isinstance(out, str) and out else None
        if resume and plan is not None and plan.is_file():  # (else: the resume says what)
            # device and threads this call's (their defaults unless given), as on the CLI
            given = {**to_dict(resumed_config(load_saved_plan(plan), {})), **given}
        return from_dict(TrainConfig, given, source="config")
    raise UserError(f"config must be a TrainConfig or a mapping of its fields, not "
                    f"{type(config).__name__}")


def _train_checked(
    config: TrainConfig,
    *,
    resume: bool,
    progress: bool,
    name_setting: SettingNamer | None,
    main_rank: bool,
) -> Path:
    from unmask.run_checks import check_init_family, check_train_numbers

    check_train_numbers(config)
    check_out(config.out)
    if not resume:
        check_init_family(config.init, config.objective)
        check_objective_fields(config.model_overrides)  # (a saved run has them unapplied)
    device = _join_processes(config)  # torchrun: every process, before rank 0 holds the run
    # Only rank 0 holds the run (a run another process trains now: refused before anything in
    # it is read or cleared) and makes a new run's folder; one that fails before its first
    # checkpoint (a refusal, Ctrl-C) leaves none: one half made would make the next try fail
    # with "already exists". Its verdict is every process's (else they waited for it).
    with contextlib.ExitStack() as held:
        refusal = None
        try:
            held.enter_context(own_run(config.out, new=not resume, main=main_rank))
        except BaseException as e:  # (said by rank 0; the others leave with it)
            refusal = e
        share_refusal(refusal)
        with StopFlag(Path(config.out) if config.out else None) as flag, stderr_may_close():
            return _train(config, resume=resume, progress=progress, flag=flag,
                          name_setting=name_setting, device=device)


def _join_processes(config: TrainConfig) -> torch.device:
    """The device this process trains on; under torchrun (``WORLD_SIZE`` > 1) the process
    group joined, on the process's own GPU where the device is CUDA."""
    device = resolve_device(config.device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def _train(
    config: TrainConfig,
    *,
    resume: bool,
    progress: bool,
    flag: StopFlag,
    name_setting: SettingNamer | None,
    device: torch.device,
) -> Path:
    from unmask.data import TokenDataset

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    distributed = world > 1
    is_main = rank == 0
    if config.threads > 0:
        torch.set_num_threads(config.threads)

    run = _prepare_run_dir(config, resume, is_main)
    prior_seconds = 0.0  # training time of earlier sessions, against time_limit
    prior_skipped = 0  # steps in a row skipped for a non-finite loss when the checkpoint was saved
    changes: dict[str, Any] = {}
    resumed_rows = None  # a resumed run's trajectory file, checked before the resume line
    resume_line = ""
    saved: TrainConfig | None = None  # a resumed run's plan before this call's changes
    plan_limit = config.time_limit  # what train_config.json keeps: the user's time limit
    if resume:
        saved = load_saved_plan(run / "train_config.json")
        if config.draft_block is None:  # not given (a TrainConfig's default): the block the
            config = replace(config, draft_block=saved.draft_block)  # run trains, its plan's
        changes = resume_plan(saved, config)
        if "data" not in changes:
            _check_saved_data(run, config.data)
        done = saved_progress(checkpoint_dir(run))
        renewed = renew_time_limit(done, saved, config, changes)
        if renewed is not None:  # its time limit stopped it: another go (or a renewed limit
            config = replace(config, time_limit=renewed)  # a signal interrupted goes on)
        if objective_spec(config.objective).batch_for(config.data) == "trajectory":
            from unmask.objectives.distill import TrajectoryData

            resumed_rows = TrajectoryData(config.data, seq_len=config.seq_len,
                                          started_on=done.trajectories)
        prior_seconds = done.train_seconds
        prior_skipped = done.skipped
        # said once the resume is accepted: a refusal below is then the one line printed
        another_go = done.timed_out and renewed not in (None, done.time_limit)
        resume_line = describe_resume(done, saved, config, changes, name=name_setting,
                                      renewed=another_go) + lr_change(done.step, saved, config)
    check_batch_split(config, world)
    spec = objective_spec(config.objective)
    spec.validate(config)  # options that do not apply to it, block size, rates
    objective = spec.loss
    batch = spec.batch_for(config.data)  # a trajectory file, for an objective that takes one
    pairs = batch != "tokens"  # SFT pairs, distillation trajectories: no validation split
    asks_best = config.keep_best and (not resume or "keep_best" in changes)  # (older runs
    # saved it where it does nothing: they resume; given now, it is refused as on a new run)
    # --eval-every given now (its default is every run's, asked or not); 0: not asked
    given_every = "eval_every" in changes if resume else config.eval_every != TrainConfig.eval_every
    asks_every = config.eval_every if given_every else 0
    if pairs:
        _refuse_validation(f"objective {spec.name!r} trains on {config.data}, which has no "
                           f"validation split", keep_best=asks_best, eval_every=asks_every)
    if batch == "tokens" and str(config.data).endswith(".safetensors"):
        takes = [s.name for s in OBJECTIVES.values() if s.batch == "trajectory" or s.trajectories]
        raise UserError(
            f"{config.data}: a trajectory file trains objective {' or '.join(takes)}, not "
            f"{spec.name!r} (which trains on a prepared corpus from unmask prepare)"
        )
    if pairs and not config.init and not resume:
        raise UserError(
            f"objective {spec.name!r} fine-tunes a pretrained model: give --init RUN_DIR"
        )

    init = None
    if config.init and not resume:
        from unmask.checkpoint import load

        init = load(config.init, device="cpu")
        init = replace(init, config=_init_model_config(init.config, config))
    train_ds: Any
    val_ds: Any = None
    if batch == "trajectory":  # a teacher's trajectories (unmask distill); init = teacher
        from unmask.objectives.distill import TrajectoryData, check_student_tokenizer

        tokenizer = init.tokenizer if init is not None else load_checkpoint_tokenizer(run)
        if resume:
            model_cfg = load_json(ModelConfig, checkpoint_dir(run) / "config.json")
        else:
            model_cfg = init.config
        train_ds = resumed_rows if resumed_rows is not None else TrajectoryData(
            config.data, seq_len=config.seq_len
        )
        if init is not None:  # ids of another tokenizer of the same size fit, silently wrong
            check_student_tokenizer(train_ds, init.tokenizer, f"--init {config.init}")
    elif pairs:  # SFT pairs are text; the tokenizer and template come with the model
        from unmask.chat import template_bos_id
        from unmask.sft import SFTData, read_sft_jsonl

        tokenizer = init.tokenizer if init is not None else load_checkpoint_tokenizer(run)
        if resume:
            model_cfg = load_json(ModelConfig, checkpoint_dir(run) / "config.json")
            origin = f"chat template of {run}"
        else:
            given = None
            # a built-in name, a Jinja or JSON file, or Jinja text; "" (a --config file's) is
            # refused as the flag is, not read as unset
            if config.chat_template is not None:
                from unmask.chat import template_arg

                try:
                    given = template_arg(config.chat_template)
                except UserError as e:  # (it names --template: chat's flag)
                    said = str(e).replace("--template", "--chat-template")
                    if not config.chat_template.strip():  # not the flag's (refused as read)
                        said = f"chat_template (a --config file's or TrainConfig's): {said}"
                    raise UserError(said) from None
                origin = given.origin.replace("--template", "--chat-template")
            elif init.config.chat_template:
                origin = f"chat template of --init {config.init}"
            else:
                origin = "built-in chat template 'default'"
            template = (given.source if given else None) or init.config.chat_template
            model_cfg = replace(init.config, chat_template=template or _default_template())
        train_ds = SFTData(read_sft_jsonl(config.data), tokenizer, eos_id=model_cfg.eos_id,
                           chat_template=model_cfg.chat_template, origin=origin,
                           bos_id=template_bos_id(model_cfg))  # as unmask chat renders it
        train_ds.check_fits(config.seq_len)
    else:
        train_ds = TokenDataset(config.data, "train")
        val_ds = TokenDataset(config.data, "val")
        if val_ds.n_tokens == 0:
            _refuse_validation(f"{config.data} has no validation split (prepared with "
                               f"--val-fraction 0)", keep_best=asks_best, eval_every=asks_every)
        # tokens the objective adds (FIM sentinels, [EMPTY]) are saved with every checkpoint
        if resume:  # the run's own tokenizer: an --init's may hold more tokens than the data's
            model_cfg = load_json(ModelConfig, checkpoint_dir(run) / "config.json")
            tokenizer = load_checkpoint_tokenizer(run)
            _check_data_tokenizer(tokenizer, train_ds.tokenizer(),
                                  f"--data {config.data}: its tokenizer differs from the run's "
                                  f"({run}); resume with the run's dataset")
        elif init is not None:
            tokenizer, model_cfg = _init_vocabulary(spec, init, train_ds.tokenizer(), config)
            _check_init(spec, model_cfg, config)
        else:
            tokenizer = spec.prepare_tokenizer(train_ds.tokenizer(), config)
            ids = {**tokenizer.special_ids(), **tokenizer.fim_ids(), **tokenizer.empty_ids()}
            model_cfg = build_model_config(config, tokenizer.vocab_size, ids)
    if init is not None and pairs:
        _check_init(spec, model_cfg, config)
    # the objective's facts (SEDD's graph), its name and the schedule go into every checkpoint
    model_cfg = spec.configure(model_cfg, config)
    if config.draft_block is None and "draft_block" in spec.options:  # the plan names the
        config = replace(config, draft_block=model_cfg.draft_block)  # block it trains (a resume
        # compares a --draft-block with it), the --init hybrid's own or the default
    if model_cfg.vocab_size < tokenizer.vocab_size:  # e.g. --model-set vocab_size=10
        raise UserError(f"vocab_size={model_cfg.vocab_size} is smaller than the tokenizer's "
                        f"{tokenizer.vocab_size} tokens")
    check_context(config.seq_len, model_cfg.max_seq_len)
    precision = resolve_precision(config.precision, device)
    if saved is not None:  # a resume on another device than the run's: said in its line
        resume_line += device_change(saved, config, device.type, precision.name, name_setting,
                                     trained_on=done.device)
    check_model_size(model_cfg, device, world)  # before building even a meta-device copy
    kind = _parallel_kind(config, model_cfg, device, world)
    _check_sizes(config, model_cfg, train_ds, val_ds, device, world, kind, name_setting,
                 resume=resume)
    if val_ds is not None and val_ds.n_tokens == 0:  # prepared with val_fraction 0
        val_ds = None

    torch.manual_seed(config.seed)
    model = Transformer(model_cfg)
    if init is not None:
        model.load_state_dict(_init_state(model, init, spec, config))
    model = model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    ema_model = copy.deepcopy(model).requires_grad_(False) if config.ema > 0 else None
    ckpt = checkpoint_dir(run) if resume else None
    full_optim = None  # an FSDP run resumed from a native checkpoint: full optimizer state
    if ckpt is not None and kind == "fsdp" and not is_sharded(ckpt):
        full_optim = load_full_train_state(ckpt, model=model, optimizer_fn=lambda m: _adamw(
            m, config, device))
    if config.activation_checkpointing:
        apply_activation_checkpointing(model)
    if config.compile:
        compile_blocks(model)
    if kind == "fsdp":
        apply_fsdp(model)  # before the optimizer: it must hold the sharded parameters
    optimizer = _adamw(model, config, device)
    scaler = precision.scaler(device.type)
    start_step = 0
    was_cut = False  # a signal cut the validation of the checkpoint's step short
    validated = False  # the log holds the checkpoint's step's validation
    validate_first = False  # ... and the plan validates that step: the resume does, first
    prior_best: dict[str, Any] = {}
    prior_measured: dict[str, Any] | None = None  # how prior_best's score was measured
    if ckpt is not None:
        if full_optim is not None:
            meta = finish_full_train_state(ckpt, model=model, optimizer=optimizer,
                                           state=full_optim)
        else:
            meta = load_train_state(ckpt, model=model, optimizer=optimizer, ema_model=ema_model)
        _plan_hyperparameters(optimizer, config)  # the saved state holds the saved plan's
        start_step = int(meta["step"])
        was_cut = meta.get(VALIDATION_CUT) == start_step
        # validated first where the plan resumed now validates that step (--eval-every 0 or
        # another cadence given on this resume: not at all)
        validate_first = was_cut and _validates_after(config, start_step)
        # the plan's, the final one, or a time-limit stop's (which validates where it stops):
        # a time limit reached at once does not validate that step again (logged twice)
        # under the plan the checkpoint was saved with (trainer.json's: a later resume may
        # have rewritten train_config.json with another plan, then died before it saved)
        then = saved
        plan = meta.get("train_config")
        if saved is not None and isinstance(plan, dict):
            steps, every = plan.get("steps"), plan.get("eval_every")
            if isinstance(steps, int) and isinstance(every, int):
                then = dataclasses.replace(saved, steps=steps, eval_every=every)
        validated = not was_cut and then is not None and (
            done.timed_out or start_step >= then.steps or _validates_after(then, start_step))
        prior_best = _saved_best(meta.get("best"), ckpt)
        if isinstance(meta.get("best_measured"), dict):
            prior_measured = dict(meta["best_measured"])
        if scaler is not None and "grad_scaler" in meta:
            scaler.load_state_dict(meta["grad_scaler"])
        if is_main:
            print(resume_line, file=sys.stderr, flush=True)
        if is_main and changes:  # the next resume continues the changed plan, saved only
            # now that all of it was accepted; a renewed time limit only in trainer.json (a
            # requeued command repeating its --time-limit is then no change: renew_time_limit)
            save_json(replace(config, time_limit=plan_limit), run / "train_config.json")
        if is_main:
            _tidy_resumed_run(run, start_step, redo_validation=was_cut)
            _restore_best(run, prior_best, start_step)
    elif is_main:
        save_json(config, run / "train_config.json")

    ddp_model: nn.Module = model
    if kind == "ddp":
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    schedule = schedule_of(model_cfg)  # the checkpoint says which schedule it was trained with
    options = spec.options_for(config, schedule)
    if batch == "trajectory" and spec.trajectories:  # the teacher the causal part learns from
        options = replace(options, teacher=_trajectory_teacher(train_ds, model_cfg, device))
    autocast_dtype = precision.autocast
    peak = device_peak_flops(_device_name(device), precision.name)
    flops_tok = flops_per_token(model_cfg, n_params, config.seq_len)
    n_micro = world * config.grad_accum
    rows = config.batch_size // n_micro
    nominal = float(config.batch_size * config.seq_len)
    metrics_path = run / "metrics.jsonl"

    def log(record: dict[str, Any]) -> None:
        if is_main:  # strict JSON: a skipped step's NaN loss is null (files.json_line)
            try:
                with open(metrics_path, "a") as f:
                    f.write(json_line(record))
            except OSError as e:  # a full disk: one line naming the log, not just "No space"
                raise named(e, metrics_path) from None

    paused = [0.0]  # seconds spent validating and saving: not training, kept out of tok/s

    cut_short = [-1]  # the step whose validation a signal cut short: the resume runs it first

    def evaluate(step: int, stoppable: bool = False) -> dict[str, float]:
        """The validation of ``step``; with ``stoppable`` a signal stops it between its batches
        (``_StoppableSplit``): {} is returned, and the checkpoint records the step
        (``VALIDATION_CUT``) for the resume to validate first."""
        if val_ds is None:  # SFT pairs have no validation split
            return {}
        began = time.perf_counter()
        target = ema_model if ema_model is not None else model
        was = target.training
        try:
            return _evaluate(step, _StoppableSplit(val_ds, flag) if stoppable else val_ds)
        except _ValidationCut:
            target.train(was)
            cut_short[0] = step
            return {}
        finally:
            paused[0] += time.perf_counter() - began

    # no more rows than a training micro-batch; None: the whole split, as unmask eval reads
    val_rows, val_batches = validation_batches(config, world)

    def measure(target: nn.Module, split: Any = None) -> dict[str, float]:
        res = evaluate_loss(
            target, val_ds if split is None else split, objective=config.objective,
            seq_len=config.seq_len, batch_size=val_rows, max_batches=val_batches,
            eps=config.eps, device=device, autocast_dtype=autocast_dtype,
        )
        return res.as_dict()

    def _evaluate(step: int, split: Any) -> dict[str, float]:
        target = ema_model if ema_model is not None else model
        rec = {"step": step, **measure(target, split)}
        log(rec)
        keep_if_best(rec)
        return rec

    best: dict[str, Any] = dict(prior_best)  # {"step", "metric", "value"} of OUT/best
    recorded_best = [prior_best.get("step")]  # the best's step the run's checkpoint records

    def keep_if_best(rec: dict[str, Any]) -> None:
        """Write OUT/best (atomically: ``save_checkpoint``) when ``rec`` beats it. Under FSDP
        every process takes part (rank 0 decides, all gather the full weights, rank 0 writes)."""
        if not config.keep_best or (kind != "fsdp" and not is_main):
            return
        metric = "val_bpb" if "val_bpb" in rec else "val_loss"
        value = rec.get(metric)
        # a NaN beats nothing (it compares false with everything: taken as best, every later
        # validation would have replaced it)
        better = [value is not None and math.isfinite(value)
                  and not (best and value >= best["value"])]
        weights = None
        if kind == "fsdp":
            dist.broadcast_object_list(better, src=0)  # one verdict: rank 0's numbers
            if better[0]:
                weights = gathered_weights(model)  # collective: rank 0 receives them
        if not better[0]:
            return
        record = {"step": rec["step"], "metric": metric, "value": float(value)}
        if is_main:
            _write_best(run, {**record, "world_size": world}, recorded_best[0], model=model,
                        tokenizer=tokenizer, inference_model=ema_model, weights=weights)
        best.update(record)
        log({"event": "best", **best})

    measured = validation_settings(config, precision.name, world)  # how validations measure now
    # how the kept best was scored: as now with --keep-best (scored again below where that
    # differs); a run resumed without it keeps the best's record as it was
    best_measured = measured if config.keep_best else prior_measured
    if best and config.keep_best and val_ds is not None and saved is not None:
        then = prior_measured or validation_settings(
            saved, precision.name if saved.precision == config.precision else saved.precision,
            world)
        changed = validation_changes(then, measured, name_setting)
        if changed:  # a score measured another way compares with nothing measured now
            _score_best_again(run, best, changed, measure,
                              lambda: Transformer(model_cfg).to(device), log=log,
                              is_main=is_main, sharded=kind == "fsdp")

    saved_at = [start_step if ckpt is not None else -1]  # the step the checkpoint holds
    skipped = prior_skipped  # steps in a row skipped for a non-finite loss or gradient

    def checkpoint(step: int) -> None:
        began = time.perf_counter()
        try:
            _checkpoint(step)
        finally:
            paused[0] += time.perf_counter() - began

    def _checkpoint(step: int) -> None:
        state = {
            "step": step,
            "objective": config.objective,
            "train_config": to_dict(config),
            "train_seconds": prior_seconds + time.perf_counter() - t0,
            "world_size": world,  # its validations' batches: unmask eval reads as they did
            "device": device.type,  # where it trained: a resume elsewhere says so
        }
        if skipped:  # a stop inside a run of non-finite steps: the resume goes on counting
            state["skipped_in_a_row"] = skipped
        if cut_short[0] == step:
            state[VALIDATION_CUT] = step
        if timed_out and step < config.steps:  # the CLI's exit code; a plain resume renews it
            state["stopped"] = STOPPED_BY_TIME_LIMIT
            state["session_limit"] = round(config.time_limit - prior_seconds / 60, 4)
        if best:
            state["best"] = dict(best)
            if best_measured is not None:
                state["best_measured"] = best_measured
        if batch == "trajectory":  # what a resume checks it trains on (TrajectoryData)
            state["trajectories"] = train_ds.stamp
        if scaler is not None:
            state["grad_scaler"] = scaler.state_dict()
        if kind == "fsdp":  # every process writes its shards; rank 0 the native files
            save_sharded_checkpoint(run, model=model, optimizer=optimizer, tokenizer=tokenizer,
                                    trainer_state=state, is_main=is_main)
        elif is_main:
            save_checkpoint(
                run,
                model=model,
                tokenizer=tokenizer,
                inference_model=ema_model,
                optimizer=optimizer,
                trainer_state=state,
            )
        if distributed:
            dist.barrier()
        saved_at[0] = step
        recorded_best[0] = best.get("step")
        if is_main:  # the checkpoint records OUT/best as it is: the one before it is no longer
            shutil.rmtree(run / BEST / PREVIOUS_BEST, ignore_errors=True)  # needed

    if is_main and not resume:
        log(
            {"event": "start", "params": n_params, "model": to_dict(model_cfg), "world_size": world,
             "parallel": kind, "precision": precision.name}
        )

    if is_main and progress and config.warmup > config.steps:  # (once the run is accepted)
        print(warmup_note(config, name_setting), file=sys.stderr, flush=True)
    cut = train_ds.cut_rows(config.seq_len) if batch == "prompt_response" else []
    if is_main and progress and cut:
        print(sft_cut_note(cut, len(train_ds.rows), config, model_cfg.max_seq_len,
                           name_setting), file=sys.stderr, flush=True)
    bar, plain = progress_bar("train", config.steps, initial=start_step, label="step",
                              enabled=is_main and progress)
    if plain is not None:  # stderr is not a terminal: plain lines instead of the bar
        plain.start(f"steps {start_step} to {config.steps}, {config.batch_size}×{config.seq_len} "
                    f"tokens each; metrics in {metrics_path}")
    last_val: dict[str, float] = {}
    # the step last validated (a time-limit stop there does not validate again)
    val_step = start_step if validated else -1
    tokens_seen = 0
    t0 = time.perf_counter()
    step = start_step
    with flag.deferring():
        model.train()
        timed_out = False
        if validate_first:
            last_val = evaluate(step, stoppable=not distributed)  # as the uninterrupted run did
            val_step = step
            if plain is not None and last_val:  # the line the uninterrupted run printed
                plain.line(step, val_text(last_val))
        if was_cut and cut_short[0] != step:  # the checkpoint still says validation_cut: any
            saved_at[0] = -1  # stop saves again (Ctrl-C in a first step dropped, a time limit)
        while step < config.steps:
            trained_s = prior_seconds + time.perf_counter() - t0
            timed_out = bool(config.time_limit) and trained_s > 60 * config.time_limit
            stop = torch.tensor([float(flag.signum or 0), float(timed_out)], device=device)
            if distributed:  # every process stops at the same step, or collectives would hang;
                # and each agrees why: a time limit that only one process's clock had reached
                # left the others without the final validation (a collective under FSDP), a
                # signal to one process left rank 0 to end as a finished run, saying nothing
                dist.all_reduce(stop, op=dist.ReduceOp.MAX)
                timed_out = bool(stop[1] > 0)
                if flag.signum is None and stop[0] > 0:
                    flag.signum = int(stop[0])
            if bool(stop.max() > 0):
                if timed_out and is_main:
                    print(
                        f"time limit of {config.time_limit:g} min reached at step {step}",
                        file=sys.stderr,
                    )
                break
            lr = lr_at(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            n_tok = torch.zeros((), device=device)
            part_sums: dict[str, torch.Tensor] = {}  # named parts of the loss (LossParts)
            gen_batch = torch.Generator().manual_seed(_seed_for(config.seed, step, 10**6))
            x_global = train_ds.sample(config.batch_size, config.seq_len, gen_batch)  # (B, L)
            extra_global: dict[str, torch.Tensor] = {}
            if pairs:  # (x0, prompt_mask) or (x0, commit_step): BATCH_EXTRA names the second
                x_global, extra_global[BATCH_EXTRA[batch]] = x_global
            times = _batch_times(spec, options, config, model_cfg, gen_batch)  # CPU, or None
            dropped = False  # a signal between micro-batches drops the step; resume redoes it
            for a in range(config.grad_accum):
                if a and flag.stop and not distributed:
                    dropped = True
                    break
                micro = rank * config.grad_accum + a
                x0 = x_global[micro * rows : (micro + 1) * rows].to(device)
                extra = {
                    k: v[micro * rows : (micro + 1) * rows].to(device)
                    for k, v in extra_global.items()
                }
                if times is not None:  # the batch's times: its micro-batches share one grid
                    extra["t"] = times[micro * rows : (micro + 1) * rows]
                gen = torch.Generator().manual_seed(_seed_for(config.seed, step, micro))
                sync = not distributed or a == config.grad_accum - 1
                with gradient_sync(ddp_model, kind, sync):
                    with precision.context(device.type):  # extra: the batch kind's tensors
                        parts = objective(
                            ddp_model, model_cfg, x0, attention_mask=None, generator=gen,
                            options=options, **extra,
                        )  # fmt: skip
                    micro_loss = parts.loss_sum.float() / nominal  # fp32 loss under autocast
                    (scaler.scale(micro_loss) if scaler is not None else micro_loss).backward()
                loss_sum += parts.loss_sum.detach()
                n_tok += parts.n_tokens
                for name, value in (parts.parts or {}).items():
                    part_sums[name] = part_sums.get(name, 0) + value.float()
            if dropped:
                optimizer.zero_grad(set_to_none=True)
                break
            totals = torch.stack([loss_sum, n_tok.float(), *part_sums.values()])
            if distributed:
                dist.all_reduce(totals)
            # Gradients hold sum-of-losses / nominal (averaged over processes by DDP);
            # rescale to the mean over the real token count of the global batch.
            scale = nominal * world / float(totals[1])
            if scaler is not None:
                scaler.unscale_(optimizer)
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.mul_(scale)
            gnorm = _float(
                nn.utils.clip_grad_norm_(
                    model.parameters(), config.grad_clip if config.grad_clip > 0 else float("inf")
                )
            )
            loss = float(totals[0] / totals[1])
            # A NaN or infinite loss or gradient would make every weight NaN from this step on
            # (and the checkpoints after it): the step is skipped. fp16's scaler skips steps
            # with overflowed gradients itself (and lowers its scale), so only the loss counts.
            finite = math.isfinite(loss) and (scaler is not None or math.isfinite(gnorm))
            if scaler is not None:  # skips the step on inf/NaN gradients, adapts the scale
                scaler.step(optimizer)
                scaler.update()
            elif finite:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema_model is not None and finite:
                # Warm the decay up so early weights (the random init) fade out fast.
                decay = min(config.ema, (1 + step) / (10 + step))
                with torch.no_grad():
                    for pe, pm in zip(ema_model.parameters(), model.parameters(), strict=True):
                        pe.lerp_(pm, 1.0 - decay)
            step += 1
            skipped = 0 if finite else skipped + 1
            if skipped:
                if skipped >= NON_FINITE_STOP and bar is not None:
                    bar.close()  # the refusal that follows on a line of its own
                _non_finite(step, skipped, loss, gnorm, run, is_main)
            # the named parts in one transfer (a float() each was a device sync each)
            parts = (totals[2:] / totals[1].clamp_min(1)).tolist() if part_sums else []
            loss_parts = dict(zip(part_sums, parts, strict=True))
            tokens_seen += config.batch_size * config.seq_len
            elapsed = time.perf_counter() - t0
            tps = tokens_seen / max(elapsed - paused[0], 1e-9)  # training's, not validation's
            speed = _throughput(tps, flops_tok, peak, world, device)
            if (config.log_every and step % config.log_every == 0) or step == config.steps or (
                    skipped and config.log_every):  # every skipped step has its line
                log(
                    {
                        "step": step,
                        "loss": loss,
                        **loss_parts,
                        "lr": lr,
                        "grad_norm": gnorm,
                        "tokens_per_s": tps,
                        "elapsed_s": prior_seconds + elapsed,  # the whole run, across resumes
                        **speed,
                        **({"skipped": True} if skipped else {}),
                    }
                )
            val_now: dict[str, float] = {}
            if _validates_after(config, step):
                # one process: Ctrl-C stops a long validation too (processes would disagree)
                last_val = val_now = evaluate(step, stoppable=not distributed)
                val_step = step
            logged = not config.log_every or step % config.log_every == 0 or step == config.steps
            if plain is not None and (val_now or (logged and plain.due(step))):
                val = f" {val_text(val_now)}" if val_now else ""
                shown = f"loss {loss:.3f}{_parts_text(loss_parts)}{val}"
                plain.line(step, f"{shown} {tps:,.0f} tok/s")
            if bar is not None:
                post = {"loss": f"{loss:.3f}",
                        **{_short(name): f"{value:.3f}" for name, value in loss_parts.items()},
                        "tok/s": f"{tps:,.0f}", "mem": f"{speed['peak_mem_gib']:.2f}G"}
                if "mfu" in speed:
                    post["mfu"] = f"{100 * speed['mfu']:.1f}%"
                if last_val:
                    key = "val_bpb" if "val_bpb" in last_val else "val_loss"
                    post[key] = f"{last_val[key]:.3f}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
            if (config.save_every and step % config.save_every == 0 and step < config.steps
                    and not skipped):  # the last checkpoint stays the one before a NaN streak
                checkpoint(step)
        if bar is not None:
            bar.close()
        final_eval = step >= config.steps or (timed_out and val_step != step)
        if final_eval:  # Ctrl-C stops it too: saved as cut, the resume runs it (and no more)
            final = evaluate(step, stoppable=not distributed)
            if is_main and progress and final:
                if "val_bpb" in final:
                    text = f"val bpb {final['val_bpb']:.4f}, ppl bound {final['val_ppl']:.2f}"
                else:
                    text = f"val loss {final['val_loss']:.4f} (not a likelihood bound)"
                print(f"step {step}: {text}", file=sys.stderr)
        # (a signal during a save: that one holds it; a time limit reached during the
        # validation of a step just saved: saved again, to record it stopped, exit 75)
        if final_eval or saved_at[0] != step or timed_out:
            checkpoint(step)
    if distributed:  # a signal to one process during the final validation or save: every
        # process ends the same way (rank 1 ended stopped, 143, while rank 0 ended finished)
        agreed = torch.tensor([float(flag.signum or 0)], device=device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        if flag.signum is None and agreed[0] > 0:
            flag.signum = int(agreed[0])
        dist.destroy_process_group()
    if flag.signum is not None:
        raise TrainingStopped(flag.signum, step, run)
    return run


def _refuse_validation(why: str, *, keep_best: bool, eval_every: int) -> None:
    """Refuse, in one line saying ``why`` (the data has no validation split), ``--keep-best``
    or ``--eval-every N`` (N > 0; 0: not asked) asked of a run: on a new run (the default
    cadence is every run's, asked or not) or as a change on ``--resume``. Both validated
    nothing without a word (a resume even announced and saved them as a change of plan), from
    the CLI and from Python alike. ``--eval-every 0`` says what such a run does anyway."""
    if keep_best:
        raise UserError(f"--keep-best keeps the checkpoint of the best validation score; {why}")
    if eval_every > 0:
        raise UserError(f"--eval-every {eval_every} validates a run; {why}; give --eval-every 0")


def _validates_after(config: TrainConfig, step: int) -> bool:
    """Whether the plan ``config`` validates after step ``step`` (every ``eval_every`` steps;
    the last step's validation is the final one, run whatever the plan)."""
    return bool(config.eval_every) and step % config.eval_every == 0 and step < config.steps




class _ValidationCut(Exception):
    """A signal arrived while a periodic validation read its batches."""


class _StoppableSplit:
    """A validation split whose ``windows`` end with ``_ValidationCut`` once ``flag`` holds a
    signal: Ctrl-C during a long validation (``--eval-batches 0`` of a large held-out split)
    waited for all of it. Everything else is the split's own."""

    def __init__(self, split: Any, flag: StopFlag) -> None:
        self._split = split
        self._flag = flag

    def __getattr__(self, name: str) -> Any:
        return getattr(self._split, name)

    def windows(self, seq_len: int) -> Any:
        for window in self._split.windows(seq_len):
            if self._flag.stop:
                raise _ValidationCut
            yield window


NON_FINITE_STOP = 5
"""Steps in a row with a non-finite loss or gradient norm (each skipped) that stop a run as
diverged: one such step is skipped and training goes on; this many mean the weights give NaN."""


def _non_finite(step: int, skipped: int, loss: float, gnorm: float, run: Path,
                is_main: bool) -> None:
    """Say that step ``step`` (1-based) was skipped for a non-finite loss or gradient norm, the
    ``skipped``-th such step in a row; at ``NON_FINITE_STOP`` of them refuse to go on (one
    line; the last checkpoint saved stays as it was)."""
    what = f"loss {loss:g}, gradient norm {gnorm:g}"
    if skipped < NON_FINITE_STOP:
        if is_main and skipped == 1:
            print(f"step {step}: {what}: the step is skipped (the weights stay as they were)",
                  file=sys.stderr, flush=True)
        return
    from unmask.checkpoint import checkpoint_dir

    try:
        ckpt = checkpoint_dir(run)
        kept = f"its last checkpoint ({ckpt}, step {saved_progress(ckpt).step}) is kept"
    except UserError:
        kept = "no checkpoint was saved"
    raise UserError(
        f"training diverged: the loss or gradients were not finite for {skipped} steps in a "
        f"row (steps {step - skipped + 1} to {step}, each skipped; at the last {what}); "
        f"lower --lr or raise --warmup; {kept}"
    )


def _short(name: str) -> str:
    """A part of the loss as the progress line names it: ``loss_ce`` is ``ce``."""
    return name.removeprefix("loss_").removeprefix("frac_")


def _parts_text(parts: dict[str, float]) -> str:
    """`` (ce 2.104, certainty 0.512, correct 0.631)``: the named parts of a loss, or ''."""
    if not parts:
        return ""
    return " (" + ", ".join(f"{_short(k)} {v:.3f}" for k, v in parts.items()) + ")"


def _trajectory_teacher(data: Any, model_cfg: ModelConfig, device: torch.device) -> nn.Module:
    """The frozen teacher named by a trajectory file (``TrajectoryData``), on ``device``, for
    an objective that learns its distributions; one line if it is gone, does not fit, or its
    weights file is not the one that made the trajectories (by contents, a copy or a touch
    is no change: ``unmask.checkpoint.weights_stamp``)."""
    from unmask.checkpoint import load, same_weights, weights_stamp

    meta = data.trajectories.meta
    path = meta.get("teacher")
    if not path:
        raise UserError(f"{data.path}: the trajectory file does not name its teacher")
    try:
        teacher = load(path, device=str(device))
    except UserError as e:
        raise UserError(f"{data.path}: its teacher cannot be loaded ({e})") from None
    then = meta.get("teacher_weights")
    if then is not None and not same_weights(then, weights_stamp(path, known=then)):
        raise UserError(
            f"{data.path}: its teacher's weights ({path}) changed since the trajectories were "
            "made; make them again (unmask distill with this teacher and another "
            "--trajectory-file)"
        )
    if teacher.config.vocab_size != model_cfg.vocab_size:
        raise UserError(
            f"{data.path}: its teacher ({path}) has {teacher.config.vocab_size} tokens, the "
            f"model {model_cfg.vocab_size}; the causal part learns the teacher's distributions"
        )
    return teacher.model.eval().requires_grad_(False)


def _init_model_config(model_cfg: ModelConfig, config: TrainConfig) -> ModelConfig:
    """The ``--init`` model's config as this run continues it. ``--preset`` and ``--model-set``
    cannot change the model (they are refused where they differ from it, as on resume; ones
    that describe it pass), except ``max_seq_len``, on which no weight depends: it sets the
    context the model is trained and used for (rotary positions extend to any length)."""
    where = f"--init {config.init}"
    if config.preset != TrainConfig().preset:  # the default is no choice of the user's
        shape = {k: v for k, v in MODEL_PRESETS.get(config.preset, {}).items()
                 if k != "max_seq_len"}
        for k, v in shape.items():
            if getattr(model_cfg, k) != v:
                raise UserError(
                    f"{where}: --preset {config.preset} is another model ({k} {v}, the --init "
                    f"model's {getattr(model_cfg, k)}); the run continues the --init model, "
                    f"leave --preset out"
                )
    for k, v in config.model_overrides.items():
        if k != "max_seq_len" and getattr(model_cfg, k) != v:
            raise UserError(
                f"{where}: --model-set {k}={v} cannot change the --init model (its {k} is "
                f"{getattr(model_cfg, k)}); of its fields only max_seq_len can be set"
            )
    if "max_seq_len" in config.model_overrides:
        model_cfg = replace(model_cfg, max_seq_len=config.model_overrides["max_seq_len"])
    return model_cfg


def _check_init(spec: ObjectiveSpec, model_cfg: ModelConfig, config: TrainConfig) -> None:
    """Refuse an ``init`` model the objective cannot continue (it would fail at the first step)."""
    why = spec.mismatch(model_cfg, config)
    if why is not None:
        raise UserError(f"--init {config.init}: {why}{_continue_hint(model_cfg, config)}")


def _continue_hint(model_cfg: ModelConfig, config: TrainConfig) -> str:
    """The flags that continue an ``--init`` model as it was trained, for a refusal of the
    objective or block size given (``--init BD3LM_RUN`` alone trains ``mdlm``, the default,
    and was refused without saying which objective the model has)."""
    theirs = getattr(model_cfg, "objective", None)
    flags = [f"--objective {theirs}"] if theirs and theirs != config.objective else []
    if model_cfg.attention == "block-causal" and model_cfg.block_size != config.block_size:
        flags.append(f"--block-size {model_cfg.block_size}")
    return f"; it was trained as {theirs}: continue it with {' '.join(flags)}" if flags else ""


def _check_saved_data(run: Path, data: str) -> None:
    """Refuse, in one line, a resume whose saved ``data`` (the run's plan) is no longer there:
    moved or deleted, or a relative path and the resume runs from another folder. The
    dataset's own refusal ("not a prepared dataset; run `unmask prepare` first") told the
    user to prepare data they had; ``--data`` points the run at where it is now."""
    if not data or Path(data).exists():
        return
    where = (f" (a path relative to the folder the run started in; this is {Path.cwd()})"
             if not Path(data).is_absolute() else "")
    raise UserError(  # (unmask distill --resume takes no --data; unmask train's resumes it)
        f"{run}: the data it trains on, {data}, is not there{where}; resume with `unmask "
        f"train --resume --out {run} --data PATH` where it is now"
    )


def _tidy_resumed_run(run: Path, step: int, redo_validation: bool = False) -> None:
    """A run resumed at checkpoint ``step`` after a hard kill (SIGKILL, out of memory, power):
    the log's lines past ``step`` are dropped (those steps run again, so the log reads as an
    uninterrupted run's) and a checkpoint staged but never finished is removed, the run's or
    ``--keep-best``'s (``OUT/best``: a kill while it was written left its staging folder, a
    partial copy of the weights, there for good). With ``redo_validation`` (the checkpoint
    says a signal cut ``step``'s validation short: ``VALIDATION_CUT``) its validation and
    ``best`` lines go too: the cut run logged neither, so they are an earlier resume's, one
    stopped before it saved again, and this resume validates the step again (or, under
    another plan, not at all); they were logged twice."""
    from unmask.checkpoint import TMP_PREFIX
    from unmask.files import atomic_write_text

    for stale in (*run.glob(f"{TMP_PREFIX}*"), *(run / BEST).glob(f"{TMP_PREFIX}*")):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    path = run / "metrics.jsonl"
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = []
    for n, line in enumerate(lines, 1):
        try:
            record = parse_json(line, path, line=n)
        except UserError:  # a line cut short by the kill (or a hand-edited one)
            continue
        if redo_validation and isinstance(record, dict) and record.get("step") == step and (
                "val_loss" in record or record.get("event") == "best"):
            continue
        if not isinstance(record, dict) or int(record.get("step", 0)) <= step:
            keep.append(line if line.endswith("\n") else line + "\n")
    if len(keep) != len(lines) or (lines and not lines[-1].endswith("\n")):
        atomic_write_text(path, "".join(keep))


def _best_step(folder: Path) -> int | None:
    """The step whose weights the best folder ``folder`` holds (its ``BEST_RECORD``); None
    where it has none (gone, or written before runs recorded it) or it cannot be read."""
    try:
        record = parse_json((folder / BEST_RECORD).read_text(), folder / BEST_RECORD)
    except (OSError, ValueError, UserError):  # not UTF-8; not JSON (nested too deep too)
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def _write_best(run: Path, record: dict[str, Any], recorded: int | None, *, model: nn.Module,
                tokenizer: Any, inference_model: nn.Module | None,
                weights: dict[str, Any] | None) -> None:
    """Write ``OUT/best`` (``save_checkpoint``: atomic) with ``record`` (``BEST_RECORD``).
    The first best after a checkpoint keeps the one that checkpoint records (step
    ``recorded``) as ``PREVIOUS_BEST`` (hard links, no copy of the weights) until the next
    checkpoint: after a hard kill the resume puts it back (``_restore_best``). Without it the
    killed session's best stayed, the weights of steps the resume runs again, which under a
    changed plan (another ``--lr``, ``--eval-every``, ``--no-keep-best``) it may never reach:
    ``OUT/best`` then held weights no record of the run describes."""
    folder = run / BEST
    folder.mkdir(parents=True, exist_ok=True)
    previous = folder / PREVIOUS_BEST
    if recorded is not None and not previous.exists() and _best_step(folder / CKPT) == recorded:
        staged = staging_dir(folder, TMP_PREFIX)
        try:
            for file in (folder / CKPT).iterdir():  # (flat: weights, config, tokenizer, record)
                _link_or_copy(file, staged / file.name)
            os.replace(staged, previous)
        except BaseException as e:
            shutil.rmtree(staged, ignore_errors=True)
            if isinstance(e, OSError):  # a full disk where no hard links: one line naming it
                raise named(e, previous) from None
            raise
    staged = staging_dir(folder, TMP_PREFIX)
    try:
        (staged / BEST_RECORD).write_text(json.dumps(record, sort_keys=True) + "\n")
    except BaseException as e:
        shutil.rmtree(staged, ignore_errors=True)
        if isinstance(e, OSError):
            raise named(e, folder / CKPT) from None
        raise
    save_checkpoint(folder, model=model, tokenizer=tokenizer, inference_model=inference_model,
                    weights=weights, staging=staged)


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link of ``src`` at ``dst`` (checkpoint files are replaced, never rewritten in
    place, so the link keeps the contents), a copy where the file system has no links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _restore_best(run: Path, recorded: dict[str, Any], step: int) -> None:
    """A run resumed at checkpoint ``step``: ``OUT/best`` as that checkpoint records it
    (``recorded``: its best, empty where none). A best written by a session that died before
    it saved again is replaced by the recorded one, which ``_write_best`` kept as
    ``PREVIOUS_BEST`` (so that one's presence says the best was written after the checkpoint,
    whatever its step: a resume that validates the checkpoint's own step again, a cut
    validation, writes a best of that step), or, where the checkpoint records none, removed
    when it is of a step past the checkpoint, with one line on stderr; the resumed run
    validates those steps again (or, under another plan, not) and keeps its own best. Any
    other best stays, recorded or not (a best the run forgot, ``_score_best_again``, is still
    the user's weights)."""
    folder = run / BEST
    current, previous = folder / CKPT, folder / PREVIOUS_BEST
    want, there = recorded.get("step"), _best_step(current)
    past = there is not None and there > step  # the killed session's
    done = ""
    if want is not None and there != want and _best_step(previous) == want:
        shutil.rmtree(current, ignore_errors=True)  # (a kill here: the next resume ends this)
        os.replace(previous, current)
        done = f"put back the best of step {want} it records"
    elif want is None and past:
        shutil.rmtree(current, ignore_errors=True)
        done = "removed it (the checkpoint records no best)"
    shutil.rmtree(previous, ignore_errors=True)
    if done:
        held = f"the best of step {there}" if there is not None else "no whole best"
        print(f"--keep-best: {folder} held {held}, written after the checkpoint of step {step} "
              f"by a session stopped before it saved again; {done}", file=sys.stderr,
              flush=True)


def _init_vocabulary(spec: ObjectiveSpec, init: Any, data_tokenizer: Any,
                     config: TrainConfig) -> tuple[Any, ModelConfig]:
    """(tokenizer, model config) of a run continued from ``init`` on token data: ``init``'s
    tokenizer with the tokens the objective adds (``--fim-rate``'s sentinels, ``--empty-rate``'s
    ``[EMPTY]``) appended when it lacks them, its vocabulary grown to hold them (their rows
    are new: ``_init_state``). Data tokenized by another tokenizer is refused in one line."""
    theirs = init.tokenizer
    _check_data_tokenizer(theirs, data_tokenizer, f"--init {config.init}: its tokenizer "
                          f"differs from the dataset's ({config.data})")
    tokenizer = spec.prepare_tokenizer(theirs, config)
    model_cfg = init.config
    if tokenizer is not theirs:  # tokens appended: ids at or past the old vocabulary's end
        model_cfg = replace(model_cfg, vocab_size=max(model_cfg.vocab_size, tokenizer.vocab_size),
                            **tokenizer.fim_ids(), **tokenizer.empty_ids())
    return tokenizer, model_cfg


def _check_data_tokenizer(model_tokenizer: Any, data_tokenizer: Any, refusal: str) -> None:
    """Refuse (``refusal``, one line) token data a model of ``model_tokenizer`` would misread:
    the data's ids must mean the same tokens (``unmask.tokenizer.reads_ids_of``; the model's
    may have FIM sentinels or ``[EMPTY]`` appended)."""
    from unmask.tokenizer import reads_ids_of

    if not reads_ids_of(model_tokenizer, data_tokenizer):
        raise UserError(refusal)


def _init_state(model: nn.Module, init: Any, spec: ObjectiveSpec,
                config: TrainConfig) -> dict[str, Any]:
    """``init``'s weights for ``model``: where the vocabulary grew (``_init_vocabulary``), the
    rows of the appended tokens keep ``model``'s fresh initialisation. Weights that do not fit
    the model the objective builds (an mdlm checkpoint for ``embed-diffusion``, whose blocks
    are time-conditioned) are refused in one line instead of load_state_dict's traceback."""
    ours, theirs = model.state_dict(), dict(init.model.state_dict())
    old_v, new_v = init.config.vocab_size, getattr(model, "config", init.config).vocab_size
    for k in set(ours) & set(theirs):
        a, b = ours[k], theirs[k]
        if (new_v > old_v and a.dim() == b.dim() and a.shape[1:] == b.shape[1:]
                and (a.shape[0], b.shape[0]) == (new_v, old_v)):
            grown = a.clone()
            grown[:old_v] = b.to(a.dtype)
            theirs[k] = grown
    _check_init_weights(ours, theirs, spec, config)
    return theirs


def _check_init_weights(ours: dict[str, Any], theirs: dict[str, Any], spec: ObjectiveSpec,
                        config: TrainConfig) -> None:
    """Refuse in one line weights ``theirs`` that do not fit the state ``ours``."""
    missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    shapes = sorted(k for k in set(ours) & set(theirs) if ours[k].shape != theirs[k].shape)
    if missing or extra or shapes:
        what = (f"lacks {missing[0]}" if missing else f"has {extra[0]} besides" if extra
                else f"has another shape of {shapes[0]}")
        raise UserError(
            f"--init {config.init}: its weights do not fit a model of objective "
            f"{spec.name!r} (it {what}); start from a checkpoint of that objective"
        )


def _adamw(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        _param_groups(model, config.weight_decay), lr=config.lr, betas=(config.beta1, config.beta2),
        fused=device.type == "cuda",
    )


def _plan_hyperparameters(optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
    """Set ``config``'s betas and weight decay on a resumed optimizer. Loading its state
    restores the hyper-parameters saved with it, so a ``--weight-decay`` or ``--beta2`` given on
    resume was announced as a change of plan but ignored. The groups are ``_param_groups``'
    (decayed, then not decayed); the learning rate is set at every step (``lr_at``)."""
    for group, decay in zip(optimizer.param_groups, (config.weight_decay, 0.0), strict=True):
        group["betas"] = (config.beta1, config.beta2)
        group["weight_decay"] = decay


def _batch_times(
    spec: ObjectiveSpec,
    options: Any,
    config: TrainConfig,
    model_cfg: ModelConfig,
    generator: torch.Generator,
) -> torch.Tensor | None:
    """The noise times (``t``) of a step's whole batch for an objective whose loss takes them,
    else None: (batch_size,), or (batch_size, blocks per row) for a ``blocks`` objective (the
    layout ``bd3lm`` draws itself), from the step's batch ``generator``, which every process
    shares. Drawn per micro-batch, the antithetic grid (one offset plus i/n) spread only each
    micro-batch's rows, and one row per micro-batch was plain i.i.d. sampling."""
    if "t" not in inspect.signature(spec.loss).parameters:
        return None
    per_row = config.seq_len // model_cfg.block_size if spec.blocks else 1
    n = config.batch_size * per_row
    t = options.schedule.sample_t(n, generator, antithetic=options.antithetic)
    return t.view(config.batch_size, per_row) if spec.blocks else t


def _parallel_kind(
    config: TrainConfig, model_cfg: ModelConfig, device: torch.device, world: int
) -> str:
    """``none``, ``ddp`` or ``fsdp``; rank 0 decides ``auto`` (free memory differs a little
    between processes, and all of them must wrap the model alike)."""
    if config.ema > 0 and config.parallel == "fsdp" and world > 1:
        raise UserError("--ema is not supported with --parallel fsdp yet; use --parallel ddp")
    n_params = model_cfg.num_params()  # no model built: n_layers=100000 took ~2 min here
    memory = available_memory(device)
    if memory is not None:  # the processes of a node share its RAM
        memory //= _sharing(device)
    if config.ema > 0:  # EMA keeps a full replica per process: DDP
        memory = None
    kind = [choose_parallel(config.parallel, world=world, n_params=n_params, memory=memory)]
    if world > 1:
        dist.broadcast_object_list(kind, src=0)
    return kind[0]


def _float(x: torch.Tensor) -> float:
    """A scalar tensor as a float; FSDP's gradient norm is a replicated ``DTensor``."""
    full = getattr(x, "full_tensor", None)
    return float(full() if full is not None else x)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _throughput(
    tps: float, flops_tok: float, peak: float | None, world: int, device: torch.device
) -> dict[str, float]:
    """Peak memory of this process, and the model FLOPs utilisation where the device's peak is
    known (``unmask.parallel.device_peak_flops``; not on CPUs)."""
    out = {"peak_mem_gib": peak_memory_bytes(device) / 2**30}
    if peak:
        out["mfu"] = tps * flops_tok / (peak * world)
    return out


def _check_sizes(
    config: TrainConfig, model_cfg: ModelConfig, train_ds: Any, val_ds: Any,
    device: torch.device, world: int, kind: str = "none", name: SettingNamer | None = None,
    *, resume: bool = False,
) -> None:
    """Sizes against the data and the free memory, before anything big is allocated; the
    memory refusal's advice names the settings by ``name`` (the CLI's flags), FSDP not to a
    ``resume``."""
    check_data_sizes(config, train_ds, val_ds)
    rows = config.batch_size // (world * config.grad_accum)
    shards = world if kind == "fsdp" else 1
    estimate = estimate_memory(model_cfg, config, rows=rows, cuda=device.type == "cuda",
                               shards=shards)
    check_memory(estimate, available_memory(device), config=config, rows=rows,
                 processes=_sharing(device), world=world, shards=shards, name=name,
                 resume=resume)


def _sharing(device: torch.device) -> int:
    """The processes that share ``device``'s memory: a GPU is one process's; the RAM of a CPU
    node is shared by all of torchrun's processes on it (``LOCAL_WORLD_SIZE``)."""
    if device.type == "cuda":
        return 1
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def _default_template() -> str:
    from unmask.sft import DEFAULT_CHAT_TEMPLATE

    return DEFAULT_CHAT_TEMPLATE


def load_checkpoint_tokenizer(run: Path) -> Any:
    """The tokenizer saved in ``run``'s checkpoint (resuming a run without a dataset tokenizer)."""
    from unmask.checkpoint import native_parts  # the special ids config.json names, as load

    return native_parts(run)[2]


def load_saved_plan(path: str | os.PathLike[str]) -> TrainConfig:
    """A run's saved ``train_config.json`` as a resume continues it: ``eps`` and
    ``random_length_frac`` that its objective never read (a run saved before they were refused
    for it, e.g. an ``ar`` run given ``--eps``) back to their defaults, as the run trained;
    kept, they would make the objective's check refuse the resume."""
    config = load_train_config(path)
    spec = OBJECTIVES.get(config.objective)
    if spec is None or spec.continues:  # a continuation keeps what its start saved
        return config
    defaults = TrainConfig()
    unread = {}
    if "eps" not in spec.options:
        unread["eps"] = defaults.eps
    if not spec.random_length:
        unread["random_length_frac"] = defaults.random_length_frac
    return replace(config, **unread)


class _CallableModule(types.ModuleType):
    """This module, callable as ``train``: importing ``unmask.train`` (any ``from unmask.train
    import ...``) sets the package's attribute ``unmask.train`` to the module, over the
    function ``unmask.train`` of the README's API; calling the module calls the function.
    ``inspect.signature`` sees the function's (``__signature__``) and ``help`` starts with
    its usage and docstring (the module's docstring, below)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return train(*args, **kwargs)


def _entry_doc() -> str:
    usage = f"unmask.train{__signature__}".replace("'", "")  # annotations are strings
    return f"{usage}\n\n{inspect.getdoc(train)}\n\n{inspect.cleandoc(__doc__ or '')}"


sys.modules[__name__].__class__ = _CallableModule
__signature__ = inspect.signature(train)  # what the function itself shows
__doc__ = _entry_doc()
