"""Certainty-forcing trajectory distillation (dParallel; Chen et al. 2025, arXiv:2509.26488):
objective ``distill`` and the trajectory files it trains on.

A teacher (any masked-diffusion checkpoint: ``mdlm``, ``sft``, ``bd3lm``) decodes prompts one
token per step; ``unmask.distill`` records each trajectory as the final tokens and the step at
which every position was committed. The student, initialised from the teacher, is trained on
the partially masked states along those trajectories to predict the teacher's final tokens
(cross-entropy) and to be certain where it is already right (entropy minimisation), so that
many masked positions pass a confidence threshold at once and parallel policies commit them
together.

Inside: ``Trajectories`` (the file: safetensors, written atomically), ``TrajectoryData`` (the
``trajectory`` batch kind of ``unmask.train``), ``teacher_tokenizer``,
``tokenizer_stamp``, ``check_student_tokenizer``, ``rows_started_on``, ``teacher_problem``,
``trajectory_states``, ``distill`` (the loss).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from torch import Tensor

from unmask.config import ModelConfig, TrainConfig
from unmask.errors import UserError
from unmask.files import parse_json
from unmask.model import at_least_fp32
from unmask.objectives.blocks import bd3lm_logits
from unmask.objectives.spec import (
    LossParts,
    MaskPredictor,
    ObjectiveOptions,
    ObjectiveSpec,
    objective_of,
    register_objective,
    text_positions,
    unshift,
)
from unmask.trajectory_settings import TOKENIZER_KEY, same_settings

TRAJECTORY_FORMAT = "unmask-trajectories/1"
"""``format`` of a trajectory file's metadata."""

TEACHER_OBJECTIVES = ("mdlm", "sft", "bd3lm")
"""Objectives whose checkpoints can teach: masked diffusion decoded by committing tokens."""


@dataclass
class Trajectories:
    """Teacher trajectories: row i is a prompt followed by what the teacher generated for it.

    Saved as one safetensors file (``save``, atomic; ``load``) with the settings that made it
    in its metadata, so any row can be generated again (``unmask.distill.replay``).
    """

    tokens: Tensor
    """(N, L) int64: the prompt (``prompt_length`` tokens), then the teacher's final tokens."""
    commit_step: Tensor
    """(N, L) int64: -1 on the prompt; k where the teacher committed the token at its step k
    (0-based, below the row's number of generated positions G: one token per step); G where
    it never did (a block decoder that stopped at EOS, or a row cut at an id the student
    lacks: the token there is EOS), masked in every training state (``trajectory_states``).
    Files written before this rule hold the teacher's step count there, also past every
    commit of the row."""
    seed: Tensor
    """(N,) int64: the decoder seed of the row's batch; rows sharing a seed were decoded
    together, in file order."""
    meta: dict[str, Any] = field(default_factory=dict)
    """The settings (teacher, corpus, prompt and generation lengths, sampling options)."""

    def __post_init__(self) -> None:
        n, L = self.tokens.shape
        if self.commit_step.shape != (n, L) or self.seed.shape != (n,):
            raise ValueError(
                f"trajectory shapes disagree: tokens {tuple(self.tokens.shape)}, commit_step "
                f"{tuple(self.commit_step.shape)}, seed {tuple(self.seed.shape)}"
            )

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the file atomically (a reader sees the old file or the new one, never half)."""
        from safetensors.torch import save

        from unmask.files import atomic_write_bytes

        tensors = {
            "tokens": self.tokens.contiguous(),
            "commit_step": self.commit_step.contiguous(),
            "seed": self.seed.contiguous(),
        }
        meta = {"format": TRAJECTORY_FORMAT, "settings": json.dumps(self.meta, sort_keys=True)}
        try:
            atomic_write_bytes(Path(path), save(tensors, metadata=meta))
        except OSError as e:  # a full disk: one line naming the file (it stays as it was)
            if e.filename is None:
                raise OSError(e.errno, e.strerror or str(e), str(path)) from None
            raise

    def stamp(self) -> dict[str, Any]:
        """What a run records of the file it trains on (``TrajectoryData``), so a resume can
        tell the same rows from a file rewritten since: rows, row length, teacher, corpus, a
        hash of the settings and one of the rows themselves, and the settings (``meta``), so a
        file another run extended and wrote its own equal settings to is still the same
        (``rows_started_on``)."""
        import hashlib

        digest = hashlib.sha256()
        for t in (self.tokens, self.commit_step, self.seed):
            digest.update(t.contiguous().numpy().tobytes())
        settings = json.dumps(self.meta, sort_keys=True).encode()
        return {
            "rows": len(self), "length": int(self.tokens.shape[1]),
            "teacher": self.meta.get("teacher"), "data": self.meta.get("data"),
            "settings": hashlib.sha256(settings).hexdigest()[:16],
            "rows_sha256": digest.hexdigest()[:16], "meta": self.meta,
        }  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Trajectories:
        """Read a file written by ``save``; a one-line ``UserError`` for anything else."""
        return cls._read(Path(path), rows=True)

    @classmethod
    def settings_of(cls, path: str | os.PathLike[str]) -> dict[str, Any]:
        """The settings (``meta``) of the trajectory file ``path``, read from its header alone
        (not its rows); the one-line errors of ``load``."""
        return cls._read(Path(path), rows=False)

    @classmethod
    def _read(cls, p: Path, *, rows: bool) -> Any:
        from safetensors import SafetensorError, safe_open

        if not p.is_file():
            raise UserError(f"{p}: no such trajectory file (make one with `unmask distill`)")
        tensors = {}
        try:
            with safe_open(str(p), framework="pt") as f:
                info = f.metadata() or {}
                if info.get("format") != TRAJECTORY_FORMAT:
                    raise UserError(f"{p}: not a trajectory file of `unmask distill`")
                if rows:
                    tensors = {k: f.get_tensor(k) for k in ("tokens", "commit_step", "seed")}
        except SafetensorError as e:
            raise UserError(f"{p}: not a trajectory file ({e})") from None
        try:
            meta = parse_json(info.get("settings", ""), p)
        except UserError:  # not JSON, nested too deep, a too long integer: said below
            meta = None
        if not isinstance(meta, dict):
            raise UserError(f"{p}: not a trajectory file (its settings are not a JSON object)")
        if not rows:
            return meta
        tokens, steps, seed = tensors["tokens"], tensors["commit_step"], tensors["seed"]
        if any(t.dtype != torch.long for t in (tokens, steps, seed)) or tokens.dim() != 2:
            raise UserError(f"{p}: not a trajectory file (tokens, commit_step and seed must be "
                            "int64, tokens (rows, length))")
        try:
            out = cls(tokens, steps, seed, meta)
        except ValueError as e:  # shapes that disagree
            raise UserError(f"{p}: not a trajectory file ({e})") from None
        if tokens.numel() and (int(tokens.min()) < 0 or int(steps.min()) < -1):
            raise UserError(f"{p}: not a trajectory file (negative token ids or commit steps "
                            "below -1)")
        return out


class TrajectoryData:
    """The ``trajectory`` batch kind: rows of a trajectory file for ``unmask.train``.

    ``sample`` returns ``(x0, commit_step)``, which the loop passes to the loss as ``x0`` and
    ``commit_step`` (``unmask.objectives.spec.BATCH_EXTRA``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        seq_len: int | None = None,
        started_on: dict[str, Any] | None = None,
    ) -> None:
        """``started_on``: the ``Trajectories.stamp`` a resumed run recorded; a file that no
        longer holds those rows is refused in one line (``check_same_rows``). One extended
        since (a run of more trajectories with the same settings appended rows to it) still
        holds them as its first rows: the resume trains on those (``rows_started_on``)."""
        self.path = Path(path)
        self.trajectories = Trajectories.load(self.path)
        if started_on is not None:
            self.trajectories, self.stamp = rows_started_on(self.path, self.trajectories,
                                                            started_on)
        else:
            self.stamp = self.trajectories.stamp()
        if len(self.trajectories) == 0:
            raise UserError(f"{self.path}: holds no trajectories")
        self.row_length = int(self.trajectories.tokens.shape[1])
        if seq_len is not None and seq_len != self.row_length:
            raise UserError(
                f"{self.path}: its trajectories are {self.row_length} tokens long (prompt + "
                f"generation), not the run's seq_len {seq_len}; use seq_len "
                f"{self.row_length}"
            )

    def __len__(self) -> int:
        return len(self.trajectories)

    def sample(
        self, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """``batch_size`` rows drawn uniformly (with replacement) by ``generator``: x0 (B, L)
        and commit_step (B, L)."""
        if seq_len != self.row_length:
            raise UserError(f"{self.path}: rows are {self.row_length} tokens, not {seq_len}")
        idx = torch.randint(0, len(self), (batch_size,), generator=generator)  # (B,)
        return self.trajectories.tokens[idx], self.trajectories.commit_step[idx]


def teacher_tokenizer(meta: dict[str, Any]) -> Any:
    """The tokenizer of the teacher a trajectory file's settings name (``meta["teacher"]``: a
    native checkpoint's ``tokenizer.json``, or a publisher's folder's), read without its
    weights; None where that teacher is no longer there (no such path, no checkpoint in it),
    where a native checkpoint has no ``tokenizer.json`` beside its config (it records none:
    nothing to compare with), or where the file names none (files made by
    ``make_trajectories`` alone record no teacher). A teacher that is there but cannot be
    read is the loader's one-line ``UserError``: a ``config.json`` or ``tokenizer.json`` that
    is not valid, or a publisher's folder its importer refuses, one without its tokenizer
    among them (``tokenizer.json``, or the files its family builds one from: such a folder
    cannot be loaded as a teacher either). Such a teacher was taken for one gone, so a file
    without a tokenizer stamp was trained on unchecked and a refusal said the teacher "is
    not there"."""
    from unmask.checkpoint import checkpoint_dir, native_parts
    from unmask.convert.load import is_publisher_folder, publisher_tokenizer

    teacher = meta.get("teacher")
    if not isinstance(teacher, str) or not Path(teacher).exists():
        return None
    if is_publisher_folder(teacher):
        return publisher_tokenizer(teacher)
    try:
        file = checkpoint_dir(teacher) / "tokenizer.json"  # the ids its config.json names
    except UserError:  # no checkpoint there any more: nothing to compare with
        return None
    return native_parts(teacher)[2] if file.is_file() else None


TOKENIZER_BLOCK = 256
"""Ids per hash of ``tokenizer_stamp``."""


def _block_hash(tokenizer: Any, start: int, stop: int) -> str:
    import hashlib

    digest = hashlib.sha256()
    for i in range(start, stop):
        digest.update(json.dumps(tokenizer.id_to_token(i)).encode() + b"\n")
    return digest.hexdigest()[:12]


def tokenizer_stamp(tokenizer: Any) -> dict[str, Any]:
    """What a trajectory file records of the teacher's tokenizer, so a student can be checked
    against it after the teacher is gone: its size and a hash (sha256, 12 hex digits) of the
    tokens of each ``TOKENIZER_BLOCK`` ids in order (the last block may be shorter)."""
    n = int(tokenizer.vocab_size)
    starts = range(0, n, TOKENIZER_BLOCK)
    blocks = [_block_hash(tokenizer, a, min(a + TOKENIZER_BLOCK, n)) for a in starts]
    return {"size": n, "block": TOKENIZER_BLOCK, "blocks": blocks}


def stamp_difference(stamp: dict[str, Any], tokenizer: Any) -> tuple[int, int] | None:
    """The first range of ids [a, b) below both vocabularies in which ``tokenizer`` holds other
    tokens than the one ``stamp`` (``tokenizer_stamp``) records, or None where they agree.
    A ``tokenizer`` with fewer tokens is compared on the blocks it holds whole (up to
    ``block - 1`` ids at its end are not compared); more tokens, appended, are fine."""
    try:
        size, block, blocks = int(stamp["size"]), int(stamp["block"]), stamp["blocks"]
    except (KeyError, TypeError, ValueError):
        return None  # not a stamp of this version: nothing to compare with
    if block < 1 or not isinstance(blocks, list) or not all(isinstance(b, str) for b in blocks):
        return None
    shared = min(size, int(tokenizer.vocab_size))
    for k, want in enumerate(blocks):
        a, b = k * block, min((k + 1) * block, size)
        if b > shared:
            break  # a block the student does not hold whole
        if _block_hash(tokenizer, a, b) != want:
            return a, b
    return None


def check_student_tokenizer(data: TrajectoryData, tokenizer: Any, who: str) -> None:
    """Refuse, in one line opening with ``who``, a student whose ``tokenizer`` gives an id of
    ``data``'s trajectories another meaning than the teacher's that made them: with as many
    tokens, the ids fit its embedding and it would learn other text without a word (more or
    fewer tokens appended are fine: ids past the student's are refused by the loss).

    Compared with the file's ``tokenizer_stamp``, the record of the tokenizer that made its
    ids: the teacher's folder it names may be gone or hold another model by now. That folder
    only names the first id that differs, where its tokenizer still matches the stamp. Files
    written before the stamp: compared with the folder's tokenizer (``teacher_tokenizer``),
    and not at all where that is no longer there."""
    from unmask.tokenizer import first_difference

    meta = data.trajectories.meta
    if tokenizer is None:
        return
    stamp = meta.get(TOKENIZER_KEY)
    if not _is_stamp(stamp):  # an older file: its teacher's folder, where it is still there
        try:
            theirs = teacher_tokenizer(meta)
        except UserError as e:  # there, not readable: the check cannot be made
            raise UserError(
                f"{who}: its tokenizer cannot be compared with that of the teacher of "
                f"{data.path}, which the file does not record (made before it did), and the "
                f"teacher cannot be read: {e}; repair that checkpoint, or make the "
                "trajectories again"
            ) from None
        i = None if theirs is None else first_difference(tokenizer, theirs)
        if i is not None:
            _refuse_at(data, tokenizer, theirs, i, who)
        return
    span = stamp_difference(stamp, tokenizer)
    if span is None:
        return
    try:
        theirs, unreadable = teacher_tokenizer(meta), None
    except UserError as e:  # the stamp says enough to refuse; the line says why it is alone
        theirs, unreadable = None, str(e)
    if (theirs is not None and int(theirs.vocab_size) == int(stamp["size"])
            and stamp_difference(stamp, theirs) is None):  # the folder still holds it
        i = first_difference(tokenizer, theirs)
        if i is not None:
            _refuse_at(data, tokenizer, theirs, i, who)
    teacher = meta.get("teacher")
    if not isinstance(teacher, str) or not teacher:
        where = "the file names no teacher"
    elif unreadable is not None:
        where = f"the teacher {teacher} cannot be read: {unreadable}"
    elif theirs is None:
        where = f"the teacher {teacher} is not there"
    else:
        where = f"{teacher} now holds another tokenizer"
    raise UserError(
        f"{who}: its tokenizer differs from that of the teacher of {data.path} (as the file "
        f"records it; {where}): ids {span[0]}..{span[1] - 1} hold other tokens; train on "
        "trajectories of this model's own tokenizer"
    )


def _is_stamp(stamp: Any) -> bool:
    """Whether ``stamp`` is a ``tokenizer_stamp`` this version reads."""
    try:
        size, block, blocks = int(stamp["size"]), int(stamp["block"]), stamp["blocks"]
    except (KeyError, TypeError, ValueError):
        return False
    return (size > 0 and block > 0 and isinstance(blocks, list)
            and all(isinstance(b, str) for b in blocks))


def _refuse_at(data: TrajectoryData, tokenizer: Any, theirs: Any, i: int,
               who: str) -> NoReturn:
    raise UserError(
        f"{who}: its tokenizer differs from that of the teacher of {data.path} "
        f"({data.trajectories.meta['teacher']}): id {i} is {tokenizer.id_to_token(i)!r} "
        f"there, {theirs.id_to_token(i)!r} in the teacher; train on trajectories of "
        "this model's own tokenizer"
    )


def rows_started_on(path: Path, have: Trajectories,
                    then: dict[str, Any]) -> tuple[Trajectories, dict[str, Any]]:
    """The rows of the trajectory file ``path`` (read: ``have``) that a run started on, by the
    ``Trajectories.stamp`` it recorded (``then``): its first ``then["rows"]`` (all of them,
    or where a run of more trajectories extended the file since, those: every batch is
    decoded whole, so an extension keeps the rows in front, and ``unmask distill`` trains a
    run on a shared ``--trajectory-file`` holding exactly its rows), when they are the rows
    it started on (their hash) made with the same settings: equal, or equal as a reuse of the
    file takes them (``same_settings``: the extending run wrote its own settings, with the
    weights stamp of a teacher copied or touched since, or the keys a file of an older
    version lacks). Else a one-line refusal naming what changed (``check_same_rows``); a
    checkpoint recording no settings (written before) needs their hash to be equal."""
    n = then.get("rows")
    if not isinstance(n, int) or not 0 < n <= len(have):  # fewer rows now: refused
        now = have.stamp()
        check_same_rows(path, then, now)
        return have, now
    first = have if n == len(have) else Trajectories(
        have.tokens[:n], have.commit_step[:n], have.seed[:n], have.meta)
    now = first.stamp()
    meta = then.get("meta")
    settings = then.get("settings") == now["settings"] or (
        isinstance(meta, dict) and same_settings(meta, first.meta))
    check_same_rows(path, then, now, settings=settings, of=len(have))
    if n < len(have) and int(os.environ.get("RANK", "0")) == 0:  # as a fresh run says it
        print(f"{path}: resuming on its first {n:,} of {len(have):,} trajectories (those this "
              "run started on; another run extended the file since)", file=sys.stderr)
    return first, now


_ROWS = ("teacher", "data", "length", "rows", "rows_sha256")
"""The keys of a ``Trajectories.stamp`` that must be equal for a resume: the settings are
compared apart (``rows_started_on``)."""


def check_same_rows(path: Path, then: dict[str, Any], now: dict[str, Any], *,
                    settings: bool | None = None, of: int | None = None) -> None:
    """Refuse, in one line, a trajectory file whose ``Trajectories.stamp`` ``now`` (of its
    first ``then["rows"]`` rows where it holds more: ``of``) differs from the one (``then``)
    its run started on: a resume must train on the same rows. ``settings``: whether the two
    were made with the same settings (default: their hashes are equal)."""
    if settings is None:
        settings = then.get("settings") == now.get("settings")
    if settings and all(then.get(k) == now.get(k) for k in _ROWS):
        return
    rows = then.get("rows")
    if then.get("teacher") != now.get("teacher"):
        what = f"teacher {then.get('teacher')} then, {now.get('teacher')} now"
    elif then.get("data") != now.get("data"):
        what = f"prompts from {then.get('data')} then, {now.get('data')} now"
    elif then.get("length") != now.get("length"):
        what = f"rows of {then.get('length')} tokens then, {now.get('length')} now"
    elif rows != now.get("rows"):
        what = f"{rows} rows then, {now.get('rows')} now"
    elif not settings:
        what = "made with other settings since (teacher weights, corpus or sampling)"
    elif of is not None and of > rows:
        what = f"its first {rows:,} of {of:,} rows are other rows, with the same settings"
    else:
        what = "same settings and row count, other rows"
    raise UserError(
        f"{path}: the trajectory file changed since this run started ({what}); a resume "
        "trains on the rows it started with: restore that file, or start a new run"
    )


def teacher_problem(config: ModelConfig) -> str | None:
    """Why a checkpoint with ``config`` cannot be a distillation teacher, or None: only
    masked-diffusion models that decode by committing tokens (``TEACHER_OBJECTIVES``) can."""
    name = objective_of(config).name
    if name not in TEACHER_OBJECTIVES:
        return (
            f"objective 'distill' needs a masked-diffusion teacher "
            f"({', '.join(TEACHER_OBJECTIVES)}), not objective {name!r}"
        )
    return None


def _unit_size(config: ModelConfig, L: int) -> int:
    """Positions decoded as one unit: a block of a block-causal model, else the whole row."""
    if config.attention == "block-causal":
        if not config.block_size or L % config.block_size:
            raise UserError(
                f"trajectory rows of {L} tokens do not split into blocks of "
                f"{config.block_size} (the block_size of the model that learns from them)"
            )
        return int(config.block_size)
    return L


def trajectory_states(
    commit_step: Tensor, unit: int, generator: torch.Generator, u: Tensor | None = None
) -> Tensor:
    """Masked positions (B, L) of one state per unit along each trajectory.

    The row is cut into units of ``unit`` positions (a bd3lm block, or the whole row: what the
    teacher decoded as one diffusion). In each unit with n positions the teacher committed,
    k ~ U{0..n-1} (from ``u`` (B, n_units) in [0, 1), else drawn from ``generator`` on CPU)
    of them, the first k it committed there, are kept, and the rest are masked: the canvas
    the teacher saw after its k-th commit in that unit. Prompt positions (-1) are never
    masked; positions it never committed (a step >= the row's G generated positions, EOS
    fill: ``Trajectories.commit_step``) are masked in every state.
    """
    B, L = commit_step.shape
    n_units = L // unit
    gen = commit_step >= 0  # (B, L)
    n_gen_row = gen.sum(-1, keepdim=True)  # (B, 1): G
    committed = gen & (commit_step < n_gen_row)  # (B, L): not EOS fill
    key = torch.where(gen, commit_step, torch.full_like(commit_step, -1)).view(B, n_units, unit)
    order = torch.argsort(key, dim=-1, stable=True)  # (B, U, unit)
    rank = torch.argsort(order, dim=-1, stable=True)  # (B, U, unit): position's place in order
    n_prompt = (~gen).view(B, n_units, unit).sum(-1, keepdim=True)  # (B, U, 1)
    n_done = committed.view(B, n_units, unit).sum(-1, keepdim=True)  # (B, U, 1)
    if u is None:
        u = torch.rand(B, n_units, generator=generator)
    k = (u.to(commit_step.device)[..., None] * n_done).floor()  # (B, U, 1) in [0, n_done)
    masked = (rank - n_prompt) >= k  # (B, U, unit)
    return masked.view(B, L) & gen


def window_states(
    commit_step: Tensor,
    window: int,
    generator: torch.Generator,
    u: Tensor | None = None,
    text: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Masked and visible positions (B, L) of one drafting state per row of a left-to-right
    trajectory (an autoregressive teacher's: ``commit_step`` rises with the position).

    Of a row's n generated positions, the first k ~ U{0..n-1} (from ``u`` (B,) in [0, 1), else
    drawn from ``generator`` on CPU) are kept, the next ``window`` are masked and the rest are
    cut off (not visible): the canvas ``[prompt ; committed ; window masks]`` that a drafter
    of ``window`` tokens sees in speculative decoding (``unmask.sampling.speculative``).
    ``text`` (B, L) (``unmask.objectives.spec.text_positions``): n counts only the generated
    positions that are text, up to and including the teacher's first EOS, so no state's
    committed part holds the filler after it: speculative decoding ends a row at its EOS and
    never drafts there (a file of rows that ended early spent 43% of its states on filler).
    """
    B, L = commit_step.shape
    gen = commit_step >= 0  # (B, L)
    if bool((commit_step[:, 1:] < commit_step[:, :-1]).any()):
        raise UserError(
            "distill_window needs left-to-right trajectories (an autoregressive teacher's); "
            "these were decoded in another order"
        )
    n_prompt = (~gen).sum(-1, keepdim=True)  # (B, 1)
    n_gen = L - n_prompt if text is None else (gen & text).sum(-1, keepdim=True)  # (B, 1)
    if u is None:
        u = torch.rand(B, generator=generator)
    k = (u.to(commit_step.device)[:, None] * n_gen).floor()  # (B, 1) in [0, n_gen)
    rank = torch.arange(L, device=commit_step.device)[None, :] - n_prompt  # (B, L)
    masked = gen & (rank >= k) & (rank < k + window)
    return masked, ~gen | (rank < k + window)


def distill(
    model: MaskPredictor,
    config: ModelConfig,
    x0: Tensor,
    *,
    attention_mask: Tensor | None,
    generator: torch.Generator,
    options: ObjectiveOptions,
    commit_step: Tensor | None = None,
    u: Tensor | None = None,
) -> LossParts:
    """Certainty-forcing distillation loss (dParallel, Chen et al. 2025, arXiv:2509.26488, §4).

    ``x0`` (B, L) are a teacher's final tokens, ``commit_step`` (B, L) when it committed each
    (``Trajectories``). One state per unit is drawn along the trajectory
    (``trajectory_states``); on its masked positions the loss is

        w_ce · mean over masked positions of CE(student, x0)
          + w_H · mean over the masked positions it gets right of H(softmax(logits / T))

    (``options.distill_ce_weight``, ``distill_entropy_weight``, ``distill_temperature``;
    "right": argmax of the raw logits = x0, a gate without gradient): the cross-entropy keeps
    the student on the teacher's trajectory, the entropy term makes it certain, sooner, where
    it is already right (the paper's "certainty forcing", with its T = 0.5 and weight 2 and,
    as in its reference code, czg1225/dParallel ``DLMTrainer.compute_loss``, the entropy
    averaged over the right positions alone, so its force does not shrink with the fraction
    right). Both means are per micro-batch; the loop's sum over micro-batches and processes
    weighs each by its masked positions. Unlike the paper's semi-AR random masks of the final
    answer (and its second, complementary mask), the states are the teacher's own (one per
    bd3lm block, since each block is decoded given the clean blocks before it;
    ``bd3lm_logits`` gives every block its own state in one pass).

    ``options.distill_window`` > 0 trains a drafter on an autoregressive teacher's
    trajectories instead: each state is a committed prefix, that many masks, and nothing
    after (``window_states``), the canvas speculative decoding drafts on; states are drawn
    along the teacher's text up to its first EOS, and a mask after that EOS is no target
    (``text_positions``: the decoder's filler, never drafted for).
    """
    if commit_step is None:
        raise UserError("objective 'distill' needs commit_step (trajectories of unmask distill)")
    if attention_mask is not None:
        raise UserError("objective 'distill' does not support padded batches (attention_mask)")
    why = teacher_problem(config)
    if why is not None:
        raise UserError(why)
    if bool((x0 >= config.vocab_size).any()):  # rows of another teacher's tokenizer
        raise UserError(
            f"the trajectories hold token id {int(x0.max())}, beyond this model's "
            f"vocab_size={config.vocab_size}: they were made by a teacher of another "
            "tokenizer; train on trajectories of this model's own"
        )
    window = options.distill_window
    if window and config.attention == "block-causal":
        raise UserError(
            "distill_window drafts with a bidirectional student (mdlm, sft), not a bd3lm one"
        )
    unit, visible = _unit_size(config, x0.shape[1]), None
    if window:  # states along the teacher's text; its window's masks after its EOS: no target
        text = text_positions(x0, commit_step, config.eos_id)  # (B, L)
        masked, visible = window_states(commit_step, window, generator, u, text)  # (B, L) each
        learned = masked & text  # (B, L)
    else:
        masked = trajectory_states(commit_step, unit, generator, u)  # (B, L)
        learned = masked
    xt = torch.where(masked, torch.full_like(x0, config.mask_id), x0)  # (B, L)
    if config.attention == "block-causal":
        logits = bd3lm_logits(model, xt, x0, block_size=unit)  # (B, L, V)
    else:
        logits = unshift(model(xt, visible), config)  # (B, L, V); cut-off keys: no one sees them
    z = at_least_fp32(logits[learned])  # (M, V)
    target = x0[learned]  # (M,)
    ce = F.cross_entropy(z, target, reduction="none")  # (M,)
    logp_t = F.log_softmax(z / options.distill_temperature, dim=-1)  # (M, V)
    entropy = -(logp_t.exp() * logp_t).sum(-1)  # (M,)
    correct = (z.argmax(-1) == target).float()  # (M,)
    n_masked = learned.sum()
    # sum over the right positions, scaled so that the loop's division by n_masked leaves
    # their mean: mean CE + w_H · mean entropy over the right positions
    per_right = (n_masked.float() / correct.sum().clamp_min(1.0)).detach()
    certainty_sum = (entropy * correct).sum() * per_right
    loss_sum = options.distill_ce_weight * ce.sum() + options.distill_entropy_weight * certainty_sum
    parts = {"loss_ce": ce.sum().detach(), "loss_certainty": certainty_sum.detach(),
             "frac_correct": correct.sum().detach()}  # fmt: skip
    return LossParts(loss_sum=loss_sum, n_tokens=n_masked, parts=parts)


def _check(cfg: TrainConfig) -> None:
    for name in ("distill_ce_weight", "distill_entropy_weight"):
        if getattr(cfg, name) < 0:  # each named alone: the command line names it as its flag
            raise UserError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.distill_ce_weight == 0 and cfg.distill_entropy_weight == 0:
        raise UserError(  # the loss is 0 at every step: a run of minutes that learns nothing
            "distill_ce_weight and distill_entropy_weight are both 0: the loss would be 0 and "
            "the student would learn nothing; give one of them a weight > 0"
        )
    if cfg.distill_temperature <= 0:
        raise UserError(f"distill_temperature must be > 0, got {cfg.distill_temperature}")
    if cfg.distill_window < 0:
        raise UserError(f"distill_window must be >= 0 (0 = off), got {cfg.distill_window}")


def _needs_teacher(model: ModelConfig, cfg: TrainConfig) -> str | None:
    if cfg.distill_window and model.attention == "block-causal":
        return "distill_window drafts with a bidirectional student (mdlm, sft), not a bd3lm one"
    return teacher_problem(model)


register_objective(
    ObjectiveSpec(
        name="distill",
        loss=distill,
        attention="bidirectional",  # nominal: `continues` keeps the teacher's attention
        decoder="llada",  # nominal: the student keeps the teacher's objective and decoder
        batch="trajectory",
        options=(
            "distill_ce_weight", "distill_entropy_weight", "distill_temperature",
            "distill_window",
        ),  # fmt: skip
        check=_check,
        needs=_needs_teacher,
        continues=True,
        summary="certainty-forcing distillation of a diffusion model on its trajectories",
    )
)

__all__ = [
    "TEACHER_OBJECTIVES",
    "TRAJECTORY_FORMAT",
    "TrajectoryData",
    "Trajectories",
    "TOKENIZER_KEY",
    "check_student_tokenizer",
    "distill",
    "rows_started_on",
    "stamp_difference",
    "teacher_problem",
    "teacher_tokenizer",
    "tokenizer_stamp",
    "trajectory_states",
    "window_states",
]
