"""The one-model hybrid (TiDAR; Liu et al. 2025, arXiv:2511.08923): a causal language model
that also drafts the next block of tokens from a block of ``[MASK]`` tokens, in the same
forward pass.

One structured attention mask over ``[x ; draft blocks]`` (``draft_layout``): the clean
tokens x attend causally (the model *is* an AR model there, and keeps its exact KV cache);
a draft block after boundary b holds ``draft_block`` masks at positions b + 1 .. b + k, sees
the clean tokens before position b and itself (bidirectional inside the block), and learns
to predict x[b + 1 .. b + k]. Position b itself is the token the causal part samples in the
same forward (``unmask.sampling.hybrid``), so the drafts are the k tokens after it. As in
TiDAR, every draft position is a mask (one-step drafting: train as it is used) and one pass
trains a block at every boundary b = o + 1 + j·k (o a random offset per batch, so each token
is sometimes just after a boundary, sometimes deep in a block).

Loss (TiDAR's balance, sums for ``LossParts``): the causal next-token cross-entropy of x plus
``draft_weight`` × the mean cross-entropy of the draft positions, normalised by the number of
next-token targets. With weight 0 it is exactly the ``ar`` loss (one plain causal forward).

The pass runs its attention by row chunks over the keys each chunk sees (``draft_chunks``,
``unmask.model.RowChunks``): the same mask, about half the dense masked attention's work on CPU.

Inside: ``draft_layout``, ``draft_chunks``, ``hybrid``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unmask.config import ModelConfig, TrainConfig
from unmask.errors import UserError
from unmask.model import RowChunks, row_chunks
from unmask.objectives.autoregressive import CAUSAL_SAMPLE_DEFAULTS
from unmask.objectives.blocks import check_untimed, needs_untimed, time_conditioning_problem
from unmask.objectives.spec import (
    LossParts,
    MaskPredictor,
    ObjectiveOptions,
    ObjectiveSpec,
    register_objective,
    text_positions,
)


def draft_layout(
    n_causal: int,
    boundaries: Sequence[int] | Tensor,
    lengths: Sequence[int] | int,
    *,
    offset: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """RoPE positions (T,) and boolean attention mask (1, 1, T, T) of ``n_causal`` causal
    columns at positions ``offset ..`` followed by one draft block per boundary.

    Block j (``lengths[j]`` columns; an int = every block) sits at positions b_j + 1 ..
    b_j + lengths[j], sees the causal columns at positions < b_j and its own block; causal
    columns see the causal columns at or before their position and no draft block. Keys
    before ``offset`` (a KV cache) are not in the mask: every column may see them. Training
    (``hybrid``) and decoding (``unmask.sampling.hybrid``) use this one layout.

    A layout is built once per distinct argument set and kept (``_layout``; up to
    ``LAYOUT_CACHE_COLUMNS`` columns): a decoding round asks for one of a handful, and building
    it cost ~150 µs, about a tenth of a round of the bench-size hybrid on one CPU thread. The
    tensors are shared: read them, never write.
    """
    bnd = _ints(boundaries)
    lens = _ints(lengths)
    if len(lens) == 1:  # one length for every block
        lens = lens * len(bnd)
    if len(lens) != len(bnd):
        raise ValueError(f"{len(lens)} lengths for {len(bnd)} draft blocks")
    build = _layout if n_causal + sum(lens) <= LAYOUT_CACHE_COLUMNS else _layout.__wrapped__
    positions, allowed = build(n_causal, bnd, lens, offset)
    return positions.to(device), allowed.to(device)


LAYOUT_CACHE_COLUMNS = 512
"""Layouts of at most this many columns are kept (``_layout``, 256 of them: at most 64 MB of
masks); a wider one (a decoder's first round over a long prompt) is built each time, so a
server that sees many long prompts does not keep a T × T mask per prompt length."""


def _ints(x: Sequence[int] | Tensor | int) -> tuple[int, ...]:
    """An int, a sequence of ints or a tensor as a tuple of ints."""
    if isinstance(x, Tensor):
        return tuple(x.reshape(-1).tolist())
    if isinstance(x, int):
        return (x,)
    return tuple(int(v) for v in x)


@functools.lru_cache(maxsize=256)
def _layout(
    n_causal: int, boundaries: tuple[int, ...], lengths: tuple[int, ...], offset: int
) -> tuple[Tensor, Tensor]:
    """``draft_layout`` on the CPU, for hashable arguments (cached)."""
    bnd = torch.tensor(boundaries, dtype=torch.long)  # (J,)
    lens = torch.tensor(lengths, dtype=torch.long)  # (J,)
    blk = torch.arange(bnd.shape[0]).repeat_interleave(lens)  # (D,) block of each draft column
    first = torch.cumsum(lens, 0) - lens  # (J,) column of each block's first draft
    within = torch.arange(blk.shape[0]) - first[blk]  # (D,) 0 .. len - 1
    causal_pos = torch.arange(offset, offset + n_causal)  # (C,)
    positions = torch.cat([causal_pos, bnd[blk] + 1 + within])  # (T,)
    block_of = torch.cat([torch.full((n_causal,), -1), blk])  # (T,) -1 = causal column
    is_causal = block_of < 0
    row_bound = torch.cat([torch.full((n_causal,), -1), bnd[blk]])  # (T,) boundary of the row
    q_pos, k_pos = positions[:, None], positions[None, :]
    q_c, k_c = is_causal[:, None], is_causal[None, :]
    causal = q_c & k_c & (k_pos <= q_pos)  # causal columns: causal among themselves
    prefix = ~q_c & k_c & (k_pos < row_bound[:, None])  # a block: the prefix before its boundary
    own = ~q_c & (block_of[:, None] == block_of[None, :])  # and its own block, bidirectionally
    allowed = causal | prefix | own  # (T, T)
    return positions, allowed[None, None]  # (T,), (1, 1, T, T)


def draft_boundaries(L: int, k: int, generator: torch.Generator) -> Tensor:
    """Boundaries b = 1 + o + j·k < L - k of the draft blocks of a row of L tokens (each block's
    targets x[b + 1 .. b + k] lie inside the row), with an offset o ~ U{0 .. min(k, L-k-1) - 1}
    drawn from ``generator``."""
    o = int(torch.randint(0, min(k, L - k - 1), (1,), generator=generator))
    return torch.arange(1 + o, L - k, k)  # (J,)


DRAFT_CHUNKS = 4
"""Row chunks per part (clean tokens, draft blocks) of the training pass' attention: each
chunk attends only to the keys it may see: ~0.55× the time of one dense masked attention at
L = 256 (fwd + bwd, CPU; 4 chunks measured faster than 8), a 1.45× faster training step there
(``benchmarks/train_throughput.py --compare objectives``)."""


def draft_chunks(bias: Tensor, n_causal: int, n_blocks: int, k: int) -> RowChunks:
    """``bias`` (1, 1, T, T) of ``draft_layout`` (``n_causal`` columns, ``n_blocks`` blocks of
    k) as ``RowChunks``: the causal rows in ``DRAFT_CHUNKS`` chunks (chunk i sees the keys up
    to its last row), the draft rows in as many chunks of whole blocks (the prefix before the
    chunk's last boundary and the chunk's own blocks)."""
    causal = sorted({n_causal * i // DRAFT_CHUNKS for i in range(DRAFT_CHUNKS)})
    drafts = sorted({n_causal + k * (n_blocks * i // DRAFT_CHUNKS) for i in range(DRAFT_CHUNKS)})
    return row_chunks(bias, causal + [r for r in drafts if r < n_causal + n_blocks * k])


def hybrid(
    model: MaskPredictor,
    config: ModelConfig,
    x0: Tensor,
    *,
    attention_mask: Tensor | None,
    generator: torch.Generator,
    options: ObjectiveOptions,
    commit_step: Tensor | None = None,
) -> LossParts:
    """Causal next-token cross-entropy plus ``options.draft_weight`` × the mean cross-entropy
    of fully masked draft blocks of ``config.draft_block`` tokens (module docstring; TiDAR,
    Liu et al. 2025, eq. 3 with alpha = 1 / draft_weight, up to the factor 1 + alpha).

    ``n_tokens`` is the number of next-token targets B·(L - 1), so the training loop reports
    the AR loss plus the weighted draft loss, and ``draft_weight`` 0 (evaluation) the causal
    NLL alone. Padded batches are not supported, nor is a model conditioned on the noise
    level (``time_conditioning`` other than ``sigma_input='zero'``: refused, as ``bd3lm``
    refuses it, ``unmask.objectives.blocks.time_conditioning_problem``).

    ``commit_step`` (B, L): the rows are a teacher's trajectories (``unmask distill`` with a
    causal student; ``ObjectiveSpec.trajectories``): generated positions are >= 0, and the
    tokens after a row's first generated EOS (filler, not text) are no target of either loss.
    With ``options.teacher`` (the model that wrote them) the causal part learns the teacher's
    next-token distributions, KL(teacher || model) summed over the targets, instead of its
    tokens: a greedy teacher's tokens are its argmax, and cross-entropy to them alone sharpens
    the model toward its own loops (measured: held-out 1.19 -> 1.61 bits/byte in 600 steps
    of self-distillation); the draft blocks still learn the tokens, what verification keeps.
    """
    if config.attention != "causal" or not config.draft_block:
        raise UserError(
            "objective 'hybrid' needs attention='causal' with draft_block, "
            f"not attention={config.attention!r}, draft_block={config.draft_block!r}"
        )
    why = time_conditioning_problem(config, "hybrid")  # as bd3lm: no noise level to read
    if why is not None:
        raise UserError(why)
    if attention_mask is not None:
        raise UserError("objective 'hybrid' does not support padded batches (attention_mask)")
    B, L = x0.shape
    k = config.draft_block
    if L < k + 2:
        raise UserError(
            f"objective 'hybrid' needs rows of at least draft_block + 2 = {k + 2} tokens, got {L}"
        )
    targets = x0[:, 1:]  # (B, L - 1)
    text = text_positions(x0, commit_step, config.eos_id)  # (B, L) or None: every position
    n_ar = B * (L - 1) if text is None else text[:, 1:].sum()
    keep_ar = None if text is None else text[:, 1:]
    teacher = options.teacher if commit_step is not None else None
    if teacher is not None:
        with torch.no_grad():
            soft = teacher(x0)[:, :-1].float().log_softmax(-1)  # (B, L - 1, V) teacher's log p

    def causal_sum(next_logits: Tensor) -> Tensor:  # (B, L - 1, V): the causal part's loss
        if teacher is not None:
            return _kl_sum(soft, next_logits, keep_ar)
        return _ce_sum(next_logits, targets, keep_ar)

    if options.draft_weight == 0:
        logits = model(x0)  # (B, L, V): the plain causal forward
        ce = causal_sum(logits[:, :-1])
        return LossParts(loss_sum=ce, n_tokens=torch.as_tensor(n_ar, device=x0.device))
    bnd = draft_boundaries(L, k, generator)  # (J,)
    positions, bias = draft_layout(L, bnd, k, device=x0.device)
    masks = torch.full((B, bnd.shape[0] * k), config.mask_id, dtype=x0.dtype, device=x0.device)
    chunked = draft_chunks(bias, L, bnd.shape[0], k)  # the same mask, run by row chunks
    logits = model(torch.cat([x0, masks], dim=1), positions=positions, attn_bias=chunked)
    ce_ar = causal_sum(logits[:, : L - 1])
    want = positions[L:]  # (J·k,): block j's column i predicts x[b_j + 1 + i]
    keep = None if text is None else text[:, want]  # (B, J·k)
    ce_draft = _ce_sum(logits[:, L:], x0[:, want], keep)
    n_draft = B * want.shape[0] if keep is None else keep.sum().clamp(min=1)
    loss = ce_ar + options.draft_weight * ce_draft * (n_ar / n_draft)
    return LossParts(loss_sum=loss, n_tokens=torch.as_tensor(n_ar, device=x0.device))


def _ce_sum(logits: Tensor, targets: Tensor, keep: Tensor | None) -> Tensor:
    """Summed cross-entropy of ``logits`` (B, n, V) against ``targets`` (B, n), over the
    positions where ``keep`` (B, n) holds (all when None)."""
    flat, want = logits.flatten(0, 1).float(), targets.flatten()
    if keep is None:
        return F.cross_entropy(flat, want, reduction="sum")
    return (F.cross_entropy(flat, want, reduction="none") * keep.flatten()).sum()


def _kl_sum(teacher_logp: Tensor, logits: Tensor, keep: Tensor | None) -> Tensor:
    """Summed KL(teacher || model) of the next-token distributions, ``teacher_logp`` (B, n, V)
    log-probabilities and ``logits`` (B, n, V), over the positions where ``keep`` (B, n)."""
    logp = logits.float().log_softmax(-1)
    kl = (teacher_logp.exp() * (teacher_logp - logp)).sum(-1)  # (B, n)
    return kl.sum() if keep is None else (kl * keep).sum()


DRAFT_BLOCK = 8
"""The draft block of a hybrid run that gives none (``TrainConfig.draft_block`` None) and
whose model has none yet: a fresh model, an ``ar`` one continued (TiDAR's start)."""


def draft_block_of(cfg: TrainConfig, model: ModelConfig | None = None) -> int:
    """The draft block a hybrid run of ``cfg`` trains ``model`` (the one it continues, if any)
    with: ``cfg.draft_block`` where given, else the model's own (a hybrid continued: it kept
    its blocks of, say, 2 tokens; it was made 8, the flag's old default, without a word), else
    ``DRAFT_BLOCK``."""
    if cfg.draft_block is not None:
        return cfg.draft_block
    own = getattr(model, "draft_block", None)
    return int(own) if own else DRAFT_BLOCK


def _rows_problem(seq_len: int, k: int) -> str | None:
    if seq_len < k + 2:
        return (f"seq_len={seq_len} must be >= draft_block + 2 = {k + 2} (a causal prefix, "
                "the token after it, a block)")
    return None


def _check(cfg: TrainConfig) -> None:
    if cfg.draft_block is not None and cfg.draft_block < 1:
        raise UserError(f"draft_block={cfg.draft_block} must be >= 1")
    if not (math.isfinite(cfg.draft_weight) and cfg.draft_weight >= 0):
        raise UserError(f"draft_weight={cfg.draft_weight} must be a finite number >= 0")
    # a block not given with an init model is that model's: checked by ``_needs``, which has it
    why = None if cfg.init and cfg.draft_block is None else _rows_problem(
        cfg.seq_len, draft_block_of(cfg))
    if why is not None:
        raise UserError(why)
    check_untimed("hybrid", cfg)


def _needs(model: ModelConfig, cfg: TrainConfig) -> str | None:
    """Why ``model`` cannot be continued as a hybrid with ``cfg`` (``needs_untimed``), or rows
    too short for its draft block (``draft_block_of``)."""
    return needs_untimed("hybrid", model, cfg) or _rows_problem(
        cfg.seq_len, draft_block_of(cfg, model))


def _with_init_tokens(tokenizer: Any, cfg: TrainConfig) -> Any:
    """The corpus tokenizer with the FIM sentinels when the model the run continues has them
    (an ``ar --fim-rate`` run, TiDAR's starting point; on resume the run's own checkpoint),
    so the hybrid keeps their ids and its tokenizer matches the model's."""
    from pathlib import Path

    own = Path(cfg.out) / "checkpoint" / "config.json" if cfg.out else None
    if own is not None and own.is_file():
        config = own
    elif cfg.init:
        from unmask.checkpoint import checkpoint_dir

        config = checkpoint_dir(cfg.init) / "config.json"
    else:
        return tokenizer
    from unmask.files import read_json  # a damaged config.json: one line, not a traceback

    if read_json(config).get("fim_prefix_id") is None:
        return tokenizer
    from unmask.tokenizer import with_fim_tokens

    return with_fim_tokens(tokenizer)


def _model_config(model: ModelConfig, cfg: TrainConfig) -> ModelConfig:
    from dataclasses import replace

    return replace(model, draft_block=draft_block_of(cfg, model))


register_objective(
    ObjectiveSpec(
        name="hybrid",
        loss=hybrid,
        attention="causal",
        decoder="hybrid",
        options=("draft_block", "draft_weight"),
        check=_check,
        needs=_needs,
        tokenizer=_with_init_tokens,
        model_config=_model_config,
        trajectories=True,
        sample_defaults=CAUSAL_SAMPLE_DEFAULTS,  # its causal text is an ar model's
        summary="causal next-token loss + one-step draft blocks (TiDAR hybrid; --init an ar run)",
    )
)

__all__ = [
    "DRAFT_BLOCK", "DRAFT_CHUNKS", "draft_block_of", "draft_boundaries", "draft_chunks",
    "draft_layout", "hybrid",
]
