"""``unmask distill``: certainty-forcing trajectory distillation (dParallel) of a diffusion model.

1. **Trajectories.** Prompts are windows of a prepared corpus (``unmask prepare``); the
   teacher decodes them one token per step with its low-confidence sampler through the one
   decoding path (``unmask.api.start``), and every step's view records when each position was
   committed. Rows are decoded in batches, each batch with its own seed, and cached on disk
   (``unmask.objectives.distill.Trajectories``, safetensors, atomic), so ``replay`` can decode
   any row again and a later run with the same settings reuses (or extends) the file.
2. **Training.** ``unmask.train.train`` with objective ``distill`` (batch kind
   ``trajectory``) and ``init`` = the teacher: the student starts as the teacher and learns
   from states along the trajectories, with the training loop's progress bar, metrics,
   atomic checkpoints, exact resume and ``torchrun`` (rank 0 decodes the trajectories, the
   other processes wait for the file).

**Drafters.** An autoregressive teacher (objective ``ar``) decodes left to right, so its
trajectories are its own continuations; with ``student`` = a diffusion checkpoint of the same
tokenizer and ``distill_window`` = k, that student learns to draft the teacher's next k tokens
in one forward: the drafter of two-model speculative decoding (``unmask.sampling.speculative``).
With ``student`` = a causal checkpoint of the teacher's tokenizer (the teacher itself, or a
``hybrid`` run of it), the student becomes a one-model hybrid (objective ``hybrid`` on the
trajectory rows, ``ObjectiveSpec.trajectories``): its draft block learns the teacher's own
continuations, the ones its greedy decoding verifies (``unmask.sampling.hybrid``).

Inside: ``TrajectoryConfig``, ``DISTILL_DEFAULTS``, ``trajectory_sample_config``,
``make_trajectories``, ``replay``, ``refresh_trajectories``, ``default_cache``, ``distill``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unmask.config import ModelConfig, SampleConfig, TrainConfig
from unmask.errors import UserError
from unmask.files import check_creatable
from unmask.progress import progress_bar
from unmask.run_checks import NO_OUT, check_out, not_empty
from unmask.trajectory_settings import (
    TOKENIZER_KEY,
    WHOLE_BATCHES,
    as_json,
    as_now,
    corpus_stamp,
    older_stamp,
    same_settings,
)

if TYPE_CHECKING:
    from unmask.checkpoint import Loaded
    from unmask.objectives.distill import Trajectories


@dataclass(kw_only=True)
class TrajectoryConfig:
    """How ``unmask distill`` makes the teacher's trajectories."""

    trajectories: int = 256
    """Number of trajectories (prompts decoded by the teacher) trained on; a cache with the same
    settings is reused (its first this many rows, those a fresh cache of this many holds) or
    extended."""
    prompt_length: int = 32
    """Tokens per prompt, a window of the corpus' train split (a multiple of a bd3lm teacher's
    block size)."""
    gen_length: int = 128
    """Tokens the teacher generates per prompt, one per step."""
    traj_batch: int = 16
    """Prompts the teacher decodes together (one decoder seed per batch)."""
    traj_seed: int = 0
    """Seed of the prompts drawn and of the teacher's sampling."""
    traj_temperature: float | None = None
    """Teacher's sampling temperature; None = a diffusion teacher's recommended one
    (``sample_defaults``), greedy (0) for an autoregressive teacher."""
    traj_block_length: int | None = None
    """Teacher's semi-autoregressive block length (llada decoder); None = the teacher's
    recommended one."""
    traj_repetition_penalty: float | None = None
    """Teacher's repetition penalty (> 0, 1 = off; docs/sampling.md); None = the teacher's
    recommended one. A causal teacher's trajectories are what its students' drafts will be
    verified against, so keep the penalty you will decode with."""
    traj_no_repeat_ngram_size: int | None = None
    """Teacher's n-gram ban (0 = off; docs/sampling.md); None = the teacher's recommended one,
    for the same reason."""
    traj_cache: str | None = None
    """Teacher's KV cache while it decodes (``none``, ``prefix``, ``dual``); None = the
    teacher's recommended one. ``dual`` with small blocks makes the trajectories several times
    cheaper on a CPU at a small cost in quality (docs/sampling.md)."""


DISTILL_DEFAULTS = TrainConfig(
    objective="distill", steps=500, lr=3e-4, warmup=20, batch_size=16, eval_every=0,
    save_every=100, log_every=10,
)  # fmt: skip
"""The training settings ``unmask distill`` starts from (a short fine-tune of the teacher)."""


def trajectory_sample_config(teacher: Loaded, cfg: TrajectoryConfig, seed: int) -> SampleConfig:
    """The teacher's one-token-per-step, low-confidence sampler: ``gen_length`` steps for
    ``gen_length`` tokens, the ``llada`` policy, and the teacher's recommended options
    (``unmask.api.sample_config``: its repetition penalty among them) where ``cfg`` leaves
    them unset; an autoregressive teacher decodes greedily unless ``traj_temperature`` says
    otherwise (its students draft for greedy verification, which keeps the teacher's
    argmax, whatever temperature it recommends)."""
    from unmask.api import sample_config

    given: dict[str, Any] = {
        "gen_length": cfg.gen_length, "steps": cfg.gen_length, "policy": "llada",
        "remasking": "low_confidence", "seed": seed,
    }  # fmt: skip
    if cfg.traj_temperature is not None:
        given["temperature"] = cfg.traj_temperature
    elif is_causal_teacher(teacher.config):
        given["temperature"] = 0.0
    if cfg.traj_block_length is not None:
        given["block_length"] = cfg.traj_block_length
    if cfg.traj_repetition_penalty is not None:
        given["repetition_penalty"] = cfg.traj_repetition_penalty
    if cfg.traj_no_repeat_ngram_size is not None:
        given["no_repeat_ngram_size"] = cfg.traj_no_repeat_ngram_size
    if cfg.traj_cache is not None:
        given["cache"] = cfg.traj_cache
    try:
        return sample_config(teacher, given)
    except UserError as e:  # named as the sampler names them: say which option of ours
        raise UserError(_as_trajectory_options(str(e))) from None


_TRAJECTORY_OPTIONS = {
    "temperature": "traj_temperature", "block_length": "traj_block_length",
    "repetition_penalty": "traj_repetition_penalty",
    "no_repeat_ngram_size": "traj_no_repeat_ngram_size",
}  # fmt: skip
"""The sampling options ``TrajectoryConfig`` sets, by their ``SampleConfig`` names."""


def _as_trajectory_options(message: str) -> str:
    """A sampler's refusal of a trajectory option with the option named as ``unmask distill``
    takes it (``temperature must be ...`` -> ``traj_temperature must be ...``, which the
    command line shows as ``--traj-temperature``): ``temperature`` alone was ambiguous next
    to the student's ``--distill-temperature``."""
    import re

    for name, ours in _TRAJECTORY_OPTIONS.items():
        message = re.sub(rf"(?<![\w-]){name}\b", ours, message)
    # ``cache`` only where it names the option (a "KV cache" stays one): opening the message
    # or its list of fields (``cache does not apply to decoder 'ar'``, which told the user to
    # leave out a ``cache`` they never typed: ``--cache`` is --trajectory-file's old spelling)
    # and in the advice ``use cache 'none'``
    message = re.sub(r"^(unknown )?((?:\w+, )*)cache\b", r"\1\2traj_cache", message)
    return re.sub(r"\buse cache '", "use traj_cache '", message)


def is_causal_teacher(config: ModelConfig) -> bool:
    """Whether a teacher of ``config`` is autoregressive (objective ``ar``): it teaches a
    separate diffusion student (a drafter) rather than itself."""
    from unmask.objectives.spec import objective_of

    return objective_of(config).name == "ar"


def _check_counts(cfg: TrajectoryConfig) -> None:
    """Refuse, in one line, a count of ``cfg`` below 1 (``trajectories``, ``prompt_length``,
    ``gen_length``, ``traj_batch``): checked before anything compares them (a
    ``--gen-length -3`` was refused as shorter than ``--distill-window`` 0, which is off)."""
    if cfg.trajectories < 1:
        raise UserError(
            f"trajectories={cfg.trajectories} must be at least 1: the prompt set is empty"
        )
    for name in ("prompt_length", "gen_length", "traj_batch"):
        if getattr(cfg, name) < 1:
            raise UserError(f"{name}={getattr(cfg, name)} must be at least 1")


def _check(teacher: Loaded, cfg: TrajectoryConfig) -> None:
    from unmask.objectives.distill import TEACHER_OBJECTIVES, teacher_problem
    from unmask.objectives.spec import objective_of

    if not is_causal_teacher(teacher.config) and teacher_problem(teacher.config) is not None:
        raise UserError(
            f"a distillation teacher is a masked-diffusion model ({', '.join(TEACHER_OBJECTIVES)})"
            f" or, with a student, an autoregressive one (ar); not objective "
            f"{objective_of(teacher.config).name!r}"
        )
    _check_counts(cfg)
    bs = teacher.config.block_size if teacher.config.attention == "block-causal" else None
    if bs and (cfg.prompt_length % bs or cfg.gen_length % bs):
        raise UserError(
            f"prompt_length and gen_length must be multiples of the teacher's "
            f"block_size={bs}, got {cfg.prompt_length} and {cfg.gen_length}"
        )
    total = cfg.prompt_length + cfg.gen_length
    if total > teacher.config.max_seq_len:
        raise UserError(
            f"prompt_length + gen_length = {total} exceeds the teacher's "
            f"max_seq_len={teacher.config.max_seq_len}"
            f"{_shorter(cfg.prompt_length, cfg.gen_length, teacher.config.max_seq_len, bs)}"
        )


def _shorter(prompt: int, gen: int, context: int, unit: int | None = None) -> str:
    """The advice of a refusal of ``prompt`` + ``gen`` tokens over a ``context``: the longest
    generation, or prompt, that fits next to the other (multiples of a block ``unit``), worded
    as ``use gen_length <= N or prompt_length <= M`` so the command line names its flags
    (``--gen-length``) whether or not they were typed: with the defaults, the refusal named
    no flag to change."""
    step = unit or 1
    fits = [f"{name} <= {(context - other) // step * step}"
            for name, other in (("gen_length", prompt), ("prompt_length", gen))
            if (context - other) // step * step >= 1]
    if not fits:
        return f"; use a prompt_length and gen_length that add up to at most {context}"
    return "; use " + " or ".join(fits)


def _settings(
    teacher: Loaded,
    teacher_path: str | None,
    data: str,
    cfg: TrajectoryConfig,
    vocab: int | None = None,
    known: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What makes trajectories: a cache with other settings is not reused. ``known``: the
    settings of a file there, whose teacher's weights stamp stands while the weights file's
    size and time still match it (``weights_stamp``: only a changed file is read)."""
    from unmask.checkpoint import weights_stamp
    from unmask.objectives.distill import tokenizer_stamp

    sample = as_json(trajectory_sample_config(teacher, cfg, seed=0))
    del sample["seed"]  # per batch, stored with every row
    extra = {} if vocab is None else {"vocab": vocab}
    named = _teacher_named(teacher, teacher_path) if teacher_path else None
    recorded = (known or {}).get("teacher")
    if named and isinstance(recorded, str) and _same_checkpoint(recorded, named):
        named = recorded  # the run directory then, its checkpoint folder now: one teacher
    # the file's stamp stands for this teacher's weights only if it is of this teacher: another
    # weights file of the same size and time (touch -r, rsync -t) took the first one's hash
    then = (known or {}).get("teacher_weights") if recorded == named else None
    return extra | {
        "teacher": named,
        "teacher_weights": weights_stamp(teacher_path, known=then) if teacher_path else None,
        TOKENIZER_KEY: tokenizer_stamp(teacher.tokenizer),
        "data": str(Path(data).resolve()),
        "data_files": corpus_stamp(data),
        "prompt_length": cfg.prompt_length,
        "gen_length": cfg.gen_length,
        "batch": cfg.traj_batch,
        "seed": cfg.traj_seed,
        "sample": sample,
        WHOLE_BATCHES: True,
    }


def _teacher_named(teacher: Loaded, teacher_path: str) -> str:
    """The teacher as a trajectory file records it: its path made absolute, or for a shipped
    model's name (``demo``, no such path here) the folder it was loaded from; resolving the
    name against the working folder recorded a path that does not exist, which a run from
    another folder took for another teacher (and decoded again)."""
    if Path(teacher_path).exists():
        return str(Path(teacher_path).resolve())
    return str(Path(teacher.path).resolve())


def _same_checkpoint(a: str, b: str) -> bool:
    """Whether the teacher paths ``a`` and ``b`` (``_teacher_named``) are one checkpoint
    folder (``checkpoint_dir``): a run directory and its ``checkpoint`` folder, or a link to
    it. A file made with ``--teacher runs/mine`` was taken for another teacher's when the
    next run named ``runs/mine/checkpoint``: decoded again (hours), or a named file refused;
    its weights are still compared (``teacher_weights``)."""
    from unmask.checkpoint import checkpoint_dir

    if a == b:
        return True
    try:
        return checkpoint_dir(a).resolve() == checkpoint_dir(b).resolve()
    except (UserError, OSError):  # one of them gone or no checkpoint: not the same
        return False


_SETTING_NAMES = {
    "teacher": "teacher", "teacher_weights": "teacher's weights", "data": "corpus",
    "data_files": "corpus contents", "vocab": "student's vocabulary",
    "tokenizer": "teacher's tokenizer", "seed": "traj_seed", "batch": "traj_batch",
}  # fmt: skip
"""How the settings of ``_settings`` are named when a cache is made again for them (the
options of ``TrajectoryConfig`` by their names, which the command line shows as flags)."""

_VALUED = ("teacher", "data", "vocab", "prompt_length", "gen_length", "seed", "batch")
"""Settings whose values a difference shows (the others are stamps: hashes, sizes)."""

_STAMPS = ("teacher_weights", "data_files", "tokenizer")
"""Settings that are stamps of files (the teacher's weights and tokenizer, the corpus): no
flag gives them, so a file differing only in these can only be decoded again."""

_FOLLOWS_GEN_LENGTH = ("gen_length", "steps")
"""Sampling options that ``trajectory_sample_config`` sets from ``gen_length``."""


def _what_differs(stored: dict[str, Any], settings: dict[str, Any]) -> str:
    """The settings in which a trajectory file differs from those asked for, in words: each
    named as ``TrajectoryConfig`` names it (a sampling option as its ``traj_`` option, one
    the teacher recommends as the teacher's), with the file's value and the one asked for
    where it is a value (``traj_seed 0 in the file, 5 now``)."""
    stored = as_now(stored, settings)  # what an older file lacks is no difference
    names = []
    for key in _differing(stored, settings):
        then, now = stored.get(key), settings.get(key)
        if key == "data_files" and then is None:
            names.append("corpus contents (not recorded by this older file)")
        elif key in ("teacher_weights", "data_files") and older_stamp(key, then):
            names.append(f"{_SETTING_NAMES[key]}, by size or time (this older file records "
                         "no hash of them: a copy or a touch counts too)")
        elif key == "sample" and isinstance(then, dict) and isinstance(now, dict):
            follows = stored.get("gen_length") != settings.get("gen_length")
            names += _sampling_differs(then, now, gen_length=follows)
        elif key in _VALUED:
            names.append(f"{_SETTING_NAMES.get(key, key)} {_shown(then)} in the file, "
                         f"{_shown(now)} now")
        else:
            names.append(_SETTING_NAMES.get(key, key.replace("_", " ")))
    return "; ".join(names) or "settings"


def _differing(stored: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The keys in which ``stored`` settings (``as_now``) differ from ``settings``, those
    ``_SETTING_NAMES`` names first."""
    keys = sorted(set(stored) | set(settings), key=lambda k: (k not in _SETTING_NAMES, k))
    return [k for k in keys if stored.get(k) != settings.get(k)]


def _only_stamps_differ(stored: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Whether ``stored`` settings differ from ``settings`` in stamps of files alone
    (``_STAMPS``): nothing a flag can give again."""
    keys = _differing(as_now(stored, settings), settings)
    return bool(keys) and all(k in _STAMPS for k in keys)


def _sampling_differs(then: dict[str, Any], now: dict[str, Any], *, gen_length: bool
                      ) -> list[str]:
    """``_what_differs`` of the teacher's sampling options (``trajectory_sample_config``)."""
    options = {**_TRAJECTORY_OPTIONS, "cache": "traj_cache"}
    out = []
    for key in sorted(set(then) | set(now)):
        if then.get(key) == now.get(key) or key == "seed":
            continue
        if key in _FOLLOWS_GEN_LENGTH:
            if not gen_length:  # a file made by hand or by another version: say it anyway
                out.append(f"teacher's {key} {_shown(then.get(key))} in the file, "
                           f"{_shown(now.get(key))} now")
            continue
        name = options.get(key, f"teacher's sampling option {key}")
        out.append(f"{name} {_shown(then.get(key))} in the file, {_shown(now.get(key))} now")
    return out


def _shown(value: Any) -> str:
    """A setting's value in ``_what_differs``: None (not recorded, or no such limit) as
    ``unset``."""
    return "unset" if value is None else str(value)


def _batch_seed(seed: int, batch: int) -> int:
    return (seed * 1_000_003 + batch * 7_919 + 11) % (2**62)


def _prompts(data: str, cfg: TrajectoryConfig, batch: int, rows: int) -> Any:
    """(rows, prompt_length) prompts of batch ``batch``: random windows of the train split."""
    import torch

    ds = _prompt_source(data, cfg.prompt_length)
    gen = torch.Generator().manual_seed(_batch_seed(cfg.traj_seed, batch) + 1)
    return ds.sample(rows, cfg.prompt_length, gen)  # (rows, P)


def _prompt_source(data: str, prompt_length: int, split: Any = None) -> Any:
    """The train split of the prepared corpus ``data`` (``TokenDataset``; ``split``: it,
    opened already), refused in one line where it holds not one prompt of ``prompt_length``
    tokens."""
    from unmask.data import TokenDataset

    ds = TokenDataset(data, "train") if split is None else split
    if ds.n_tokens < prompt_length:
        raise UserError(
            f"{data}: the train split has {ds.n_tokens} tokens, not one prompt of "
            f"{prompt_length}: the prompt set is empty"
        )
    return ds


def decode_batch(
    teacher: Loaded, prompts: Any, config: SampleConfig, vocab: int | None = None
) -> tuple[Any, Any]:
    """The teacher's final tokens (B, P + G) and commit steps (B, P + G) for ``prompts``
    (B, P), decoded by ``unmask.api.start`` under ``config``; steps are counted by the run's
    views (one per step), -1 on the prompt, G where nothing was committed: a position the
    run left masked, or (a diffusion teacher's) one after the row's first generated EOS:
    filler, which the commit loop writes at once when a row has ended, not the teacher's.
    With ``vocab`` (a student's smaller vocabulary: the teacher's tokenizer with special
    tokens appended), a row is cut at the first id >= ``vocab`` as if it stopped there."""
    import torch

    from unmask.api import facts_of, start

    facts = facts_of(teacher)
    B, P = prompts.shape
    G = config.gen_length
    first = torch.full((B, G), -1, dtype=torch.long)  # step at which each position was committed
    count = [0]

    def on_view(step: int, view: Any) -> None:  # view: (B, G), mask_id where undecided
        new = (view.cpu() != facts.mask_id) & (first < 0)
        first[new] = count[0]
        count[0] += 1

    run = start(teacher, prompts.tolist(), config, step_callback=on_view)
    result = run.run()
    lo, hi = result.region
    gen = result.tokens[:, lo:hi].cpu()  # (B, <= G)
    final = torch.full((B, G), facts.mask_id, dtype=torch.long)  # (B, G)
    final[:, : gen.shape[1]] = gen
    undecided = (first < 0) | (final == facts.mask_id)  # a block decoder stopped at EOS
    if facts.eos_id is not None and facts.attention != "causal":
        # after a row's first EOS: the commit loop fills the rest with EOS at once, filler the
        # teacher did not choose (as a block decoder leaves it masked, above)
        eos = final == facts.eos_id
        undecided |= (eos.cumsum(dim=1) - eos.long()) > 0
    if vocab is not None:
        undecided |= (final >= vocab).cumsum(dim=1) > 0  # an id the student does not have
    final[undecided] = facts.eos_id if facts.eos_id is not None else facts.pad_id
    first[undecided] = G  # past every commit (at most G steps): masked in every state
    tokens = torch.cat([prompts, final], dim=1)  # (B, P + G)
    steps = torch.cat([torch.full((B, P), -1, dtype=torch.long), first], dim=1)  # (B, P + G)
    return tokens, steps


def make_trajectories(
    teacher: Loaded,
    data: str,
    cfg: TrajectoryConfig,
    *,
    settings: dict[str, Any] | None = None,
    have: Trajectories | None = None,
    save_to: str | os.PathLike[str] | None = None,
    progress: bool = True,
    vocab: int | None = None,
) -> Trajectories:
    """``cfg.trajectories`` trajectories of ``teacher`` on prompts of the prepared corpus
    ``data``, continuing ``have`` (rows of earlier batches, same settings). Every batch is
    decoded whole (``traj_batch`` rows, its own seed and prompts) and the rows past
    ``cfg.trajectories`` dropped, so the first n rows of any file are those a run of n makes.
    With ``save_to`` the file is written (atomically) after the first batch, then every
    ``SAVE_EVERY_S`` of decoding, at the end and when the run stops, so an interrupted run
    keeps what it decoded. ``vocab``: cut rows at ids a student lacks
    (``decode_batch``)."""
    import torch

    from unmask.objectives.distill import Trajectories

    _check(teacher, cfg)
    meta = settings if settings is not None else _settings(teacher, None, data, cfg, vocab)
    out = have if have is not None else Trajectories(
        torch.empty(0, cfg.prompt_length + cfg.gen_length, dtype=torch.long),
        torch.empty(0, cfg.prompt_length + cfg.gen_length, dtype=torch.long),
        torch.empty(0, dtype=torch.long), meta,
    )  # fmt: skip
    cut = len(out) % cfg.traj_batch
    older = not out.meta.get(WHOLE_BATCHES)  # its cut batch was decoded at its own size
    if cut and (len(out) < cfg.trajectories or older and len(out) - cut < cfg.trajectories):
        keep = len(out) - cut  # the last batch was cut short: decode it whole, as a fresh
        out = Trajectories(out.tokens[:keep], out.commit_step[:keep], out.seed[:keep], meta)
    if len(out) > cfg.trajectories:  # the rows asked for: what a fresh run of them holds
        n = cfg.trajectories
        return Trajectories(out.tokens[:n], out.commit_step[:n], out.seed[:n], meta)
    bar, plain = progress_bar("trajectories", cfg.trajectories, initial=len(out), unit="traj",
                              enabled=progress and len(out) < cfg.trajectories)
    if plain is not None:  # stderr is not a terminal: plain lines instead of the bar
        plain.start(f"decoding {cfg.trajectories - len(out):,} with the teacher in batches of "
                    f"{cfg.traj_batch} ({cfg.prompt_length} prompt + {cfg.gen_length} tokens)")
    try:
        out = _decode_batches(teacher, data, cfg, out, meta, save_to, vocab, bar, plain)
    except BaseException as e:
        if save_to is not None and not isinstance(e, Exception):  # Ctrl-C, SIGTERM
            if bar is not None:
                bar.close()  # the line below starts on a line of its own
            _say_kept(Path(save_to), cfg.trajectories, meta)
        raise
    if bar is not None:
        bar.close()
    return out


def _say_kept(path: Path, asked: int, settings: dict[str, Any]) -> None:
    """The stop line of a run interrupted while its teacher decodes: what the file kept of
    the trajectories of ``settings`` and how to continue (the run has not started training,
    so there is nothing to --resume). A file still made with other settings (this run was
    to decode it again) keeps none: the next run decodes it again too."""
    from unmask.objectives.distill import Trajectories

    try:
        have = Trajectories.load(path) if path.is_file() else None
    except UserError:
        have = None
    kept = len(have) if have is not None and same_settings(have.meta, settings) else 0
    if kept == 0:  # stopped inside the first batch: nothing was written
        print(f"{path}: no batch of trajectories finished; nothing kept", file=sys.stderr)
        return
    print(f"{path}: {kept:,} of {asked:,} trajectories kept; run the same command again to "
          "continue from them (--resume continues a run once it trains)", file=sys.stderr)


SAVE_EVERY_S = 30.0
"""Seconds of decoding between two writes of the trajectory file (``make_trajectories``): it
is written after the first batch, then at most this often, and when the run ends or stops
(Ctrl-C, an error), so a run of thousands of batches no longer rewrites its growing file
after every one (O(N²) bytes: 16,384 rows of 160 tokens in batches of 16 spent 89 s in
writes, 1.7 s now); a process killed outright (SIGKILL) loses at most this much decoding."""


def _decode_batches(
    teacher: Loaded,
    data: str,
    cfg: TrajectoryConfig,
    out: Trajectories,
    meta: dict[str, Any],
    save_to: str | os.PathLike[str] | None,
    vocab: int | None,
    bar: Any,
    plain: Any,
) -> Trajectories:
    """The batches ``make_trajectories`` still needs, appended to ``out`` and written to
    ``save_to`` as ``SAVE_EVERY_S`` says."""
    import torch

    from unmask.objectives.distill import Trajectories

    pieces: list[tuple[Any, Any, Any]] = []  # (tokens, steps, seeds) of batches not in ``out``
    done, unsaved, saved_at = len(out), False, None

    def joined() -> Trajectories:
        nonlocal out, pieces
        if pieces:
            tokens, steps, seeds = zip(*pieces, strict=True)
            out = Trajectories(torch.cat([out.tokens, *tokens]),
                               torch.cat([out.commit_step, *steps]),
                               torch.cat([out.seed, *seeds]), meta)
            pieces = []
        return out

    try:
        while done < cfg.trajectories:
            batch = done // cfg.traj_batch
            rows = min(cfg.traj_batch, cfg.trajectories - done)
            seed = _batch_seed(cfg.traj_seed, batch)
            config = trajectory_sample_config(teacher, cfg, seed)
            prompts = _prompts(data, cfg, batch, cfg.traj_batch)
            try:
                whole = decode_batch(teacher, prompts, config, vocab)
            except UserError as e:  # the sampler's checks (before its first step) name its
                raise UserError(_as_trajectory_options(str(e))) from None  # fields
            pieces.append((whole[0][:rows], whole[1][:rows],
                           torch.full((rows,), seed, dtype=torch.long)))
            done, unsaved = done + rows, True
            if save_to is not None and (saved_at is None or done >= cfg.trajectories
                                        or time.monotonic() - saved_at >= SAVE_EVERY_S):
                joined().save(save_to)
                unsaved, saved_at = False, time.monotonic()
            if bar is not None:
                bar.update(rows)
            if plain is not None and plain.due(done):
                plain.line(done)
    except BaseException:
        if save_to is not None and unsaved:  # keep the batches decoded since the last write
            with contextlib.suppress(OSError):  # what stopped the run is what to say
                joined().save(save_to)
        raise
    return joined()


def replay(teacher: Loaded, trajectories: Trajectories, index: int) -> tuple[Any, Any]:
    """Decode row ``index`` of ``trajectories`` again: its batch (the rows with its seed, in
    file order) through the same sampler with the same seed. Returns (tokens (L,), commit
    steps (L,)), equal to the stored row for the teacher that made it.

    A last batch the file holds only part of was decoded whole (``WHOLE_BATCHES``: its
    ``traj_batch`` prompts, then cut), and a sampler's noise depends on the batch it draws
    for, so its missing prompts are drawn again from the corpus the file names (a one-line
    ``UserError`` when that corpus no longer gives the stored ones)."""
    import torch

    seed = int(trajectories.seed[index])
    rows = (trajectories.seed == seed).nonzero().flatten()  # (b,)
    meta = trajectories.meta
    P = int(meta["prompt_length"])
    prompts = trajectories.tokens[rows, :P]  # (b, P)
    whole = int(meta.get("batch", len(rows)))
    if meta.get(WHOLE_BATCHES) and len(rows) < whole:  # a cut batch: decode all of it
        cfg = TrajectoryConfig(prompt_length=P, traj_seed=int(meta["seed"]))
        drawn = _prompts(str(meta["data"]), cfg, int(rows[0]) // whole, whole)  # (whole, P)
        if not torch.equal(drawn[: len(rows)], prompts):
            raise UserError(
                f"{meta['data']}: its prompts are not those row {index}'s batch was decoded "
                "with (the corpus changed since): that row cannot be decoded again"
            )
        prompts = drawn
    config = SampleConfig(**{**meta["sample"], "seed": seed})
    tokens, steps = decode_batch(teacher, prompts, config, meta.get("vocab"))
    at = int((rows == index).nonzero()[0, 0])
    return tokens[at], steps[at]


def default_cache(out: str | os.PathLike[str]) -> Path:
    """Where ``unmask distill`` caches trajectories for run ``out``: next to it (the run
    directory itself must start empty), ``OUT.trajectories.safetensors``. A run directory
    named by ``.`` or ``..`` (``--out .`` in an empty folder) is named by its own name (it has
    none as typed: ``with_name`` raised a ValueError, a traceback); the root folder, which has
    no name (and is never an empty folder), is a one-line ``UserError``."""
    p = Path(out)
    if p.name in ("", ".", ".."):
        p = Path(os.path.abspath(p))
    if not p.name:
        raise UserError(f"--out {out}: the root folder cannot be a run directory; give a new "
                        "or empty folder")
    return p.with_name(p.name + ".trajectories.safetensors")


def _check_cache_path(given: str | os.PathLike[str]) -> None:
    """A one-line ``UserError`` when the trajectory file ``given`` cannot be written: a folder
    there, or named as one however spelled (``cache/`` and ``cache/.``: ``Path`` drops the
    slash and the dot, and a file ``cache`` was made; ``cache/..`` failed after the first
    batch was decoded), or no writable folder to put it in (it failed after the first batch
    was decoded, naming a hidden staging file)."""
    path = Path(given)
    last = os.path.basename(os.fspath(given))  # as given: "" after a slash, "." or ".."
    if path.is_dir() or last in ("", ".", ".."):
        what = ("is a folder" if path.is_dir() else "names a folder (it ends in "
                + (f"{os.sep}{last})" if last else "a slash)"))
        raise UserError(f"{given}: {what}; --trajectory-file names a file (.safetensors)")
    check_creatable(path)


def refresh_trajectories(
    teacher_path: str,
    data: str,
    cache: str | os.PathLike[str],
    cfg: TrajectoryConfig,
    *,
    device: str = "cpu",
    progress: bool = True,
    student: str | None = None,
    replace_other: bool = True,
) -> Path:
    """Make sure ``cache`` holds at least ``cfg.trajectories`` trajectories of the teacher at
    ``teacher_path`` with these settings: reuse it, extend it, or (made with other settings,
    said on stderr) make it again; with ``replace_other`` False (a file the user named) a
    file made with other settings is refused in one line naming them, not decoded over.
    Returns the file to train on: ``cache``, or where it holds more rows than asked for,
    ``first_rows_path(cache, n)`` with its first n rows (those a fresh cache of n holds; the
    cache keeps the rest for runs that ask for more). ``student``: the checkpoint that will
    learn from them, checked against the teacher (``student_vocab``; rows are cut at ids it
    lacks)."""
    from unmask.checkpoint import load
    from unmask.data import TokenDataset
    from unmask.objectives.distill import Trajectories

    _check_cache_path(cache)  # before the teacher decodes anything
    # no prepared corpus (mistyped, a text file): said before the teacher is loaded, not after
    # all of a large model's weights were read (index.json and the shards' sizes, no tokens)
    split = TokenDataset(data, "train")
    # its config and tokenizer (a meta-device model): everything below but the decoding reads
    # only those, so a file reused (or refused) no longer waits for the weights to be read
    plan = load(teacher_path, weights=False)
    vocab = student_vocab(plan, student) if student else None
    _check(plan, cfg)  # first: a prompt longer than the teacher's context is said as such
    _prompt_source(data, cfg.prompt_length, split)  # not one prompt: before the weights are read
    check_corpus_tokenizer(plan.tokenizer, data, Path(plan.path) / "tokenizer.json")
    path = Path(cache)
    n = cfg.trajectories
    first = int(os.environ.get("RANK", "0")) == 0
    with _unreadable_cache(path):
        old = Trajectories.load(path) if first and path.is_file() else None
        stored = old.meta if old is not None else (  # torchrun's other ranks: its header alone
            Trajectories.settings_of(path) if path.is_file() else None)
    settings = _settings(plan, teacher_path, data, cfg, vocab, known=stored)
    if stored is not None and not replace_other and not same_settings(stored, settings):
        raise UserError(  # every rank says it: none waits for a file rank 0 will not write
            f"--trajectory-file {path}: made with other settings "
            f"({_what_differs(stored, settings)}); it is not decoded over: "
            + ("those files changed since, and no flag gives them back: remove it, or pass "
               "another --trajectory-file, to decode again" if _only_stamps_differ(
                   stored, settings) else
               "give the settings it was made with, or another --trajectory-file (or remove "
               "this one)")
        )
    if not first:  # torchrun: rank 0 decodes, the others wait
        return _wait_for(path, settings, cfg)
    have = None
    if old is not None:
        if same_settings(old.meta, settings):
            if _holds(old, cfg):
                if len(old) == n:
                    print(f"{path}: reusing its {n:,} trajectories (same teacher, corpus and "
                          "settings)", file=sys.stderr)
                    return path
                first = first_rows_path(path, n)
                Trajectories(old.tokens[:n], old.commit_step[:n], old.seed[:n],
                             old.meta).save(first)
                print(f"{path}: reusing the first {n:,} of its {len(old):,} trajectories (same "
                      f"teacher, corpus and settings; the rows a fresh cache of {n:,} holds), "
                      f"trained on from {first.name}", file=sys.stderr)
                return first
            have = old
        else:
            print(
                f"{path}: made with other settings ({_what_differs(old.meta, settings)}); "
                "decoding the trajectories again",
                file=sys.stderr,
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    make_trajectories(
        load(teacher_path, device=device), data, cfg, settings=settings, have=have,
        save_to=path, progress=progress, vocab=vocab,
    )  # fmt: skip
    return path


@contextlib.contextmanager
def _unreadable_cache(path: Path) -> Iterator[None]:
    """A trajectory file there that cannot be read (cut short by a copy, another file at its
    name) refused in one line that says how to go on: it is not decoded over (it may be
    something else of yours), and the refusal alone named no way out."""
    try:
        yield
    except UserError as e:  # "remove it" alone would be bad advice for a model's weights named
        raise UserError(f"{e}; pass another --trajectory-file, or remove this one if it is a "
                        "trajectory file cut short, to decode the trajectories again") from None


def check_corpus_tokenizer(teacher_tokenizer: Any, data: str, tokenizer_file: Path) -> None:
    """Refuse, in one line, a prepared corpus whose token ids are not ``teacher_tokenizer``'s
    (the teacher's may append special tokens): its prompts would index past the teacher's
    embedding, or mean other text. ``tokenizer_file``: the teacher's, named in the hint
    (``unmask prepare --tokenizer``). A corpus that is not prepared is refused by
    ``TokenDataset``."""
    from unmask.data import TokenDataset

    hint = f"prepare the corpus with the teacher's tokenizer (unmask prepare --tokenizer " \
           f"{tokenizer_file})"
    _refuse_other_tokenizer(TokenDataset(data, "train").tokenizer(), teacher_tokenizer,
                            f"--data {data}", appended_ok=True, fix=hint, fix_ids=f"; {hint}")


def _refuse_other_tokenizer(theirs: Any, teacher: Any, who: str, *, appended_ok: bool, fix: str,
                            fix_ids: str) -> None:
    """Refuse, in one line opening with ``who``, a tokenizer ``theirs`` that is not the
    teacher's: more tokens (any other count unless ``appended_ok``: the teacher's may append
    special tokens), then ``fix``; or an id meaning another token, then ``fix_ids``."""
    n, m = theirs.vocab_size, teacher.vocab_size
    if n > m or (n != m and not appended_ok):
        raise UserError(f"{who}: its tokenizer has {n} tokens, the teacher's {m}; {fix}")
    _refuse_other_ids(theirs, teacher, who, fix_ids)


def _refuse_other_ids(theirs: Any, teacher: Any, who: str, fix_ids: str) -> None:
    """Refuse, in one line opening with ``who``, a tokenizer ``theirs`` in which an id below
    both vocabularies means another token than in the ``teacher``'s, then ``fix_ids``."""
    from unmask.tokenizer import first_difference

    i = first_difference(theirs, teacher)
    if i is not None:
        raise UserError(
            f"{who}: its tokenizer differs from the teacher's (id {i} is "
            f"{theirs.id_to_token(i)!r} there, {teacher.id_to_token(i)!r} in the teacher)"
            f"{fix_ids}"
        )


def first_rows_path(cache: str | os.PathLike[str], n: int) -> Path:
    """Where a run of ``n`` trajectories trains on the first ``n`` rows of a ``cache`` that
    holds more: ``NAME.first-N.safetensors`` next to it."""
    p = Path(cache)
    stem = p.name.removesuffix(".safetensors")
    return p.with_name(f"{stem}.first-{n}.safetensors")


def _holds(have: Trajectories, cfg: TrajectoryConfig) -> bool:
    """Whether ``have`` (same settings) holds the first ``cfg.trajectories`` rows as a fresh
    file of them would: enough rows, none of them from a batch an older file cut short."""
    cut = len(have) % cfg.traj_batch
    older = cut and not have.meta.get(WHOLE_BATCHES)
    return len(have) - (cut if older else 0) >= cfg.trajectories


def _wait_for(
    path: Path, settings: dict[str, Any], cfg: TrajectoryConfig, poll_s: float = 2.0
) -> Path:
    """Block until ``path`` holds the ``cfg.trajectories`` trajectories made with ``settings``
    (another process of a ``torchrun`` job writes it; the file is replaced atomically, so a
    read is whole, and its new version has a new inode); returns the file to train on
    (``refresh_trajectories``). A file is read again only when it changed (inode, size,
    modification time): rank 0 rewrites it as it decodes (``SAVE_EVERY_S``), for minutes to
    hours, so reading it at every poll would read the whole file thousands of times."""
    from unmask.objectives.distill import Trajectories

    n = cfg.trajectories
    first = first_rows_path(path, n)
    seen: dict[Path, tuple[int, int, int]] = {}  # the file version each path was read at
    while True:
        for p in (path, first):
            try:
                st = p.stat()
            except OSError:  # not written yet
                continue
            version = (st.st_ino, st.st_size, st.st_mtime_ns)
            if seen.get(p) == version:  # read already and not the rows asked for: a file
                continue  # of thousands of rows is not read again every poll until it changes
            seen[p] = version
            have = Trajectories.load(p)
            if same_settings(have.meta, settings) and _holds(have, cfg) and len(have) == n:
                return p
        time.sleep(poll_s)


def student_vocab(teacher: Loaded, student_path: str) -> int | None:
    """Check that the checkpoint at ``student_path`` can learn from ``teacher``'s trajectories
    and draft for it: a masked-diffusion model (mdlm, sft, bd3lm) of the teacher's tokenizer,
    up to special tokens the teacher appends (``check_drafter``), or a causal model (a
    hybrid to be) of exactly the teacher's tokenizer. Returns the student's vocabulary size
    when it is the smaller one (rows are cut at ids beyond it), else None."""
    from unmask.api import facts_of
    from unmask.checkpoint import load
    from unmask.objectives.distill import teacher_problem
    from unmask.sampling.speculative import check_drafter

    # config, tokenizer and a meta-device model, its weights' values not read: training reads
    # them once (init); reading them here too read a native 8B student twice (32 GB)
    student = load(student_path, weights=False)
    if student.config.attention == "causal":  # a one-model hybrid: the teacher's own tokenizer
        _same_tokenizer(teacher, student, student_path)
        return None
    why = teacher_problem(student.config)
    if why is not None:
        raise UserError(f"--student {student_path}: {why.replace('teacher', 'student')}")
    shared = None
    if student.tokenizer is not None and teacher.tokenizer is not None:  # said as a student:
        # shared_vocabulary says "the drafter's tokenizer differs from the model's" and
        # "speculative decoding", which a diffusion teacher's student is not about
        _refuse_other_ids(student.tokenizer, teacher.tokenizer, f"--student {student_path}",
                          "; it would learn the teacher's ids as other text: a student needs "
                          "the teacher's tokenizer")
        # the ids they share, as shared_vocabulary gives them once no id differs (it compared
        # the whole vocabulary again: 150k id_to_token calls for a Qwen-size tokenizer)
        shared = min(int(student.tokenizer.vocab_size), int(teacher.tokenizer.vocab_size))
    check_drafter(teacher.model, student.model, facts_of(student), shared)
    if shared is not None and shared < teacher.config.vocab_size:
        return int(shared)
    return None


def _same_tokenizer(teacher: Loaded, student: Loaded, student_path: str) -> None:
    """Refuse, in one line, a causal student whose tokenizer is not the teacher's: it learns
    the teacher's token ids as its own text."""
    _refuse_other_tokenizer(student.tokenizer, teacher.tokenizer, f"--student {student_path}",
                            appended_ok=False,
                            fix="a causal student needs the teacher's tokenizer", fix_ids="")


def distill(
    teacher: str,
    data: str,
    out: str,
    *,
    student: str | None = None,
    trajectories: TrajectoryConfig | None = None,
    train_config: TrainConfig | None = None,
    cache: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """Distill the checkpoint ``teacher`` into a student in run directory ``out``: refresh the
    trajectory ``cache`` (default ``default_cache(out)``) from prompts of the prepared corpus
    ``data`` (a ``cache`` given, other than the default, that holds trajectories made with
    other settings is refused in one line, not decoded over), then train on it
    (``unmask.train.train``, objective ``distill``, ``init`` = ``student`` or the teacher,
    ``seq_len`` = prompt + generation: a refusal of it names ``prompt_length +
    gen_length``, ``rows_named``). ``train_config`` (default
    ``DISTILL_DEFAULTS``) gives the optimiser, steps and loss weights. Returns the run
    directory; the student's checkpoint is ``out/checkpoint``, sampled like the teacher.

    An autoregressive teacher needs ``student``: a diffusion checkpoint of its tokenizer,
    which learns to draft its continuations (with ``train_config.distill_window`` = the draft
    length: ``unmask generate --model TEACHER --draft OUT``), or a causal one (the teacher
    itself, or a hybrid of it), which is trained as a ``hybrid`` with draft blocks of
    ``train_config.draft_block`` on the teacher's rows (``unmask generate --model OUT``).

    Under torchrun a refusal is said once, by rank 0 (``unmask.parallel.said_once``)."""
    from unmask.parallel import said_once

    rank = int(os.environ.get("RANK", "0"))
    with said_once(rank=rank, world=int(os.environ.get("WORLD_SIZE", "1"))), rows_named():
        return _distill(teacher, data, out, student=student, trajectories=trajectories,
                        train_config=train_config, cache=cache, progress=progress)


@contextlib.contextmanager
def rows_named() -> Iterator[None]:
    """A refusal raised inside that names a distillation run's ``seq_len``
    (``seq_len=16 must be >= draft_block + 2 = 102``) names what gives it instead,
    ``prompt_length + gen_length = 16``: distillation takes no ``seq_len`` (``distill`` sets
    it to prompt + generation), neither as an argument nor as a flag. ``max_seq_len=`` and
    ``heldout_seq_len=`` are left as they are."""
    try:
        yield
    except UserError as e:
        said = re.sub(r"(?<![\w/.-])seq_len=(\d+)(?![\w/.])",
                      r"prompt_length + gen_length = \1", str(e))
        if said == str(e) or type(e) is not UserError:
            raise
        e.args = (said,)  # the same error: its traceback and ``held_back`` kept
        raise


def _distill(
    teacher: str,
    data: str,
    out: str,
    *,
    student: str | None,
    trajectories: TrajectoryConfig | None,
    train_config: TrainConfig | None,
    cache: str | os.PathLike[str] | None,
    progress: bool,
) -> Path:
    from unmask.config import resolve_device
    from unmask.train import train

    tcfg = trajectories or TrajectoryConfig()
    base = train_config or DISTILL_DEFAULTS
    if not out:
        raise UserError(NO_OUT)
    _check_counts(tcfg)  # before they are compared with --distill-window
    _check_not_trajectories(data)
    run = Path(out)
    path = Path(cache) if cache else default_cache(out)
    _check_cache_outside(path, run)
    check_out(run)  # before minutes of decoding: training makes it only after them
    if run.exists() and any(run.iterdir()):  # before minutes of decoding, not after
        raise not_empty(run)
    causal = _causal_checkpoint(teacher)
    hybrid = bool(student) and _causal_checkpoint(student, any_causal=True)
    if base.distill_window and not causal:  # before minutes of decoding, not after
        raise UserError(
            "distill_window trains a drafter on an autoregressive teacher's trajectories; "
            "this teacher is not autoregressive (leave --distill-window at 0)"
        )
    if base.distill_window > tcfg.gen_length:  # no state would hold the window's masks
        raise UserError(
            f"distill_window={base.distill_window} exceeds gen_length={tcfg.gen_length}: the "
            "drafter learns to fill that many masks after the committed tokens, and the "
            "teacher's rows generate fewer (lower --distill-window or raise --gen-length)"
        )
    if not student and causal:
        raise UserError(
            "an autoregressive teacher teaches a drafter: give the diffusion checkpoint to "
            "train as --student (same tokenizer), with --distill-window K (its draft length), "
            "or the teacher itself as --student to make it a one-model hybrid (--draft-block K)"
        )
    if hybrid and not causal:
        raise UserError(
            f"--student {student} is causal: it learns to draft an autoregressive teacher's "
            "own continuations (a one-model hybrid); this teacher is not autoregressive"
        )
    if hybrid and base.distill_window:
        raise UserError(
            f"--student {student} is causal: it drafts with a draft block (--draft-block K), "
            "not --distill-window (which trains a diffusion drafter)"
        )

    config = dataclasses.replace(  # paths absolute: a resume from elsewhere finds them
        base, objective="hybrid" if hybrid else "distill", init=_absolute(student or teacher),
        out=str(out), seq_len=tcfg.prompt_length + tcfg.gen_length,
        heldout_data=_absolute(data), heldout_seq_len=_trained_seq_len(teacher),
    )  # fmt: skip
    device = str(resolve_device(base.device))
    _check_before_decoding(config, student, device, tcfg.prompt_length)
    named = cache is not None and path.resolve() != default_cache(out).resolve()
    rows = refresh_trajectories(  # ``cache`` as given: ``Path`` drops the slash of ``cache/``
        teacher, data, cache or path, tcfg, device=device, progress=progress, student=student,
        replace_other=not named,
    )  # fmt: skip
    return train(dataclasses.replace(config, data=str(rows.resolve())), progress=progress)


def _check_not_trajectories(data: str) -> None:
    """Refuse, in one line saying where it goes, a trajectory file given as the corpus
    (``--data``, as ``unmask train --objective distill`` takes it): "not a prepared dataset;
    run `unmask prepare` first" sent the user to prepare a file that was already made."""
    from unmask.objectives.distill import Trajectories

    if not (Path(data).is_file() and str(data).endswith(".safetensors")):
        return
    try:
        Trajectories.settings_of(data)
    except UserError:  # some other file: the corpus' own refusal says what is wrong
        return
    raise UserError(
        f"--data {data} is a trajectory file; --data is the prepared corpus its prompts come "
        f"from: reuse the file with --trajectory-file {data}"
    )


def _absolute(path: str) -> str:
    """``path`` made absolute where it names something here (a shipped model's name, e.g.
    ``demo``, stays a name)."""
    p = Path(path)
    return str(p.resolve()) if p.exists() else path


def _check_cache_outside(cache: Path, run: Path) -> None:
    """Refuse, in one line and before anything is decoded, a trajectory file at the run
    directory or inside it: the run directory must start empty, and a cache there would
    leave a run that can neither start nor resume."""
    c, r = cache.resolve(), run.resolve()
    if c == r or r in c.parents:
        raise UserError(
            f"--trajectory-file {cache} is "
            f"{'the run directory' if c == r else 'inside the run directory'}"
            f" --out {run}; put the trajectory file elsewhere (default: {default_cache(run)})"
        )


def _check_before_decoding(
    config: TrainConfig, student: str | None, device: str, prompt: int
) -> None:
    """What ``unmask.train.train`` would refuse about ``config`` and a ``student``, checked
    before the teacher decodes a single trajectory: the options (``ObjectiveSpec.validate``),
    the precision on this device, the batch split, and the student's context and whether its
    objective can learn this way (``mismatch``: a bd3lm student of a drafter); the teacher as
    its own student is checked by ``_check`` (its context, its objective). ``prompt``: the
    prompt length, for the advice of a refusal of the student's context."""
    import torch

    from unmask.objectives import objective_spec
    from unmask.parallel import resolve_precision
    from unmask.run_checks import check_batch_split

    spec = objective_spec(config.objective)
    spec.validate(config)
    resolve_precision(config.precision, torch.device(device))
    check_batch_split(config, int(os.environ.get("WORLD_SIZE", "1")))
    model = _model_config(student) if student else None
    if student is None or model is None:  # loading it says what is wrong with it
        return
    context = int(config.model_overrides.get("max_seq_len", model.max_seq_len))
    if config.seq_len > context:
        raise UserError(
            f"--student {student}: prompt_length + gen_length = {config.seq_len} exceeds its "
            f"max_seq_len={context}{_shorter(prompt, config.seq_len - prompt, context)}"
        )
    why = spec.mismatch(model, config)
    if why is not None:  # ``teacher_problem`` words it for a teacher: here it is the student
        raise UserError(f"--student {student}: {why.replace('teacher', 'student')}")
    bs = model.block_size if model.attention == "block-causal" else None
    if bs and config.seq_len % bs:  # the loss draws a state per block (``_unit_size``)
        raise UserError(
            f"--student {student}: prompt_length + gen_length = {config.seq_len} does not "
            f"split into its blocks of {bs} (a bd3lm student learns a state per block); use "
            f"a prompt_length and gen_length that add up to a multiple of {bs}"
        )


def _trained_seq_len(path: str) -> int:
    """The window length ``unmask eval`` measures the checkpoint at ``path`` with: the
    ``seq_len`` of its run's plan, else (an imported or shipped checkpoint) the default one
    (``unmask eval`` caps both at the model's context)."""
    from unmask.report import find_run

    try:
        cfg = find_run(path).train_config
    except UserError:  # not a checkpoint: left to load to report
        cfg = None
    return (cfg or TrainConfig()).seq_len


def _model_config(path: str) -> ModelConfig | None:
    """The model config of the checkpoint (or publisher's folder) at ``path``, read without
    its weights; None where there is none (``load`` reports it)."""
    from unmask.checkpoint import checkpoint_dir
    from unmask.config import load_json
    from unmask.convert.load import is_publisher_folder, model_config

    try:
        if is_publisher_folder(path):
            return model_config(path)[1]
        cfg_file = checkpoint_dir(path) / "config.json"
    except UserError:
        return None
    return load_json(ModelConfig, cfg_file) if cfg_file.is_file() else None


def _causal_checkpoint(path: str, *, any_causal: bool = False) -> bool:
    """``is_causal_teacher`` of the checkpoint at ``path`` (with ``any_causal``: causal
    attention, an ``ar`` or ``hybrid`` model), from its config alone (``_model_config``: a
    native checkpoint's, or a folder's read by its importer, an unmask model exported as a
    ``transformers`` folder among them; a missing one is left to ``load`` to report)."""
    config = _model_config(path)
    if config is None:
        return False
    return config.attention == "causal" if any_causal else is_causal_teacher(config)


__all__ = [
    "DISTILL_DEFAULTS",
    "TrajectoryConfig",
    "decode_batch",
    "default_cache",
    "distill",
    "first_rows_path",
    "is_causal_teacher",
    "make_trajectories",
    "refresh_trajectories",
    "replay",
    "student_vocab",
    "trajectory_sample_config",
]
