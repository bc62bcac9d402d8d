"""Two-model speculative decoding: a masked-diffusion drafter proposes, a causal model verifies.

The checkpoint being decoded is the causal (AR) model, the *verifier*, with its KV cache;
``Target.aux["drafter"]`` is any mask predictor of the same vocabulary (a diffusion model).
Each round (one ``advance()``):

1. the drafter denoises the canvas ``[prompt ; committed ; k masks]`` in ``draft_steps``
   forwards (default one), the k masks split into that many left-to-right chunks, each
   chunk committed at one step: at temperature 0 the argmax at every masked position,
   otherwise token j is drawn from ``q_j = softmax(logits_j / temperature)`` (``[MASK]``
   and the verifier's other special tokens but EOS never proposed: ``never_proposed``).
   Chunks go left to right so that draft token j depends only on the drafts before it,
   which the speculative-sampling rule needs. With ``draft_threshold`` a
   row's draft ends before its first token whose drafter probability is below it (adaptive
   length); the verifier then scores only up to the longest draft of the batch.
   The drafter's prefix cache (``draft_cache='prefix'``): keys/values of the committed
   tokens are kept in a ``KVCache`` and each forward runs only the tokens committed since
   the last round and the draft block. For a block-causal drafter (BD3-LM) the cache keeps
   whole blocks only and is exact (no cached position can see a position that changes);
   its blocks count from each row's first real token, as they do for the row alone;
   for a bidirectional drafter each token's keys/values are those of the round it was
   committed in (they saw that round's draft block, not today's), so its drafts
   approximate the uncached drafter's. The verifier makes the output exact either way.
2. the verifier scores the last committed token and the k drafts in one causal forward
   against its KV cache (k + 1 next-token distributions ``p_0 .. p_k``, filtered as the
   ``ar`` decoder filters them: the same ``never_proposed`` ids forbidden, temperature,
   top-k, top-p);
3. acceptance, per row: at temperature 0 the longest draft prefix equal to the verifier's
   argmax, plus the verifier's own token after it, so the output is token for token that of
   ``generate_ar`` at temperature 0; at temperature > 0 the speculative-sampling rule
   (Leviathan et al. 2023, arXiv:2211.17192; Chen et al. 2023, arXiv:2302.01318): draft token
   x is accepted with probability ``min(1, p(x) / q(x))``, the first rejected one is replaced
   by a draw from the normalised ``max(0, p - q)``, and when all k are accepted one more token
   is drawn from ``p_k``; every committed token is then distributed as the verifier's own.
4. Every row commits its own ``n_i + 1`` tokens (its accepted drafts and the verifier's
   token after them): rows of a batch drift apart, and each keeps its own positions in one
   shared KV cache (``unmask.sampling.ragged``: per-row RoPE positions, rejected drafts left
   as masked holes and compacted away), so each row decodes exactly as it would alone and a
   batch runs as many rounds as its slowest row. The verifier's forward feeds each row the
   committed tokens its cache lacks (its last committed token, or the prompt in the first
   round), right-aligned, then the drafts; the drafter's cache does the same for its rows.
   The batch drafts as many masks as its least advanced row can use (a drafter without
   explicit layouts, on one left-padded canvas: no more than fit its context after the most
   advanced active row's text, so rows behind that one may draft fewer than they could; the
   most advanced row never does); a row with less room left drafts (and is counted for)
   only the tokens it can still commit, the masks past them holes for a drafter with
   explicit layouts, so (with one draft step: the chunks of ``draft_steps`` are cut from the
   batch's k) its drafts and counts are those it has alone.

With a generator per row (``generator=[...]``, ``SpeculativeDecoder.start(seeds=)``: seeded
rows in one batch) each row also draws as alone: its own draft length ``min(k, room_i)``, its
own ``draft_steps`` chunks of it (stopping where its ``draft_threshold`` ends, as alone),
its draws and ``accept_sampled`` call on its own slice with its own generator, and, for a
drafter without explicit layouts or with weights in 16 bits, a drafter forward (and prefix
cache) of its own (``_draft_rows``): the batch writes, token for token, what each row
writes alone under its seed (the verifier in float32 or float64, as
``unmask.api.seeds_in_one_run`` requires).

A row that commits EOS is finished (later positions hold the pad id); the run stops when
every row is finished or ``gen_length`` tokens are committed, as ``ARRun`` does.
``nfe`` = verifier forwards + drafter forwards; the result (``SpeculativeResult``) reports
both, and the drafts made and accepted.

Inside: ``SpeculativeRun``, ``SpeculativeResult``, ``SpeculativeDecoder`` (``speculative``),
``check_drafter``, ``shared_vocabulary``, ``accept_greedy``, ``accept_sampled``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unmask.canvas import as_rows, left_pad
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.facts import ModelFacts
from unmask.sampling.ar import (
    CAUSAL_UNUSED,
    CAUSAL_WHY,
    RowGenerators,
    check_causal,
    check_sampling,
    check_token_ids,
    filter_logits,
    forbid_id,
    never_proposed,
    prompt_and_generation,
    row_generators,
    sample_token,
    separate_head,
    start_empty_prompts,
    tempered,
)
from unmask.sampling.cache import call_model, shift_logits, supports_kv_cache
from unmask.sampling.penalties import Penalties, text_counts
from unmask.sampling.policies import _rand
from unmask.sampling.protocol import (
    DecoderRun,
    GenerateResult,
    ViewCallback,
    make_generator,
    model_device,
)
from unmask.sampling.ragged import RaggedCache, columns, commit_rows, place_drafts, rows_view
from unmask.sampling.registry import Decoder, Prompts, Target, register_decoder

SPECULATIVE_DRAFT_LENGTH = 8
"""Tokens the drafter proposes per round when ``SampleConfig.draft_length`` is None."""


@dataclass
class SpeculativeResult(GenerateResult):
    """A ``GenerateResult`` (``nfe`` = verifier + drafter forwards) with the split and the
    acceptance counts, summed over rounds and the rows still decoding in each."""

    verifier_nfe: int = 0
    drafter_nfe: int = 0
    drafted: int = 0
    """Drafts verified: each unfinished row's own draft length (adaptive: up to
    ``draft_length``), summed over rounds and rows."""
    accepted: int = 0
    """Drafts committed as drafted, summed over rounds and rows."""
    row_rounds: int = 0
    """Unfinished rows, summed over rounds."""
    committed: int = 0
    """Tokens committed (accepted drafts and the verifier's own), summed over rows."""
    drafter_cache: str = "none"
    """The drafter's cache that ran: ``prefix-exact``, ``prefix-approximate`` or ``none``."""

    @property
    def acceptance_rate(self) -> float:
        """Fraction of the drafted tokens that were committed as drafted."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_forward(self) -> float:
        """Tokens a row commits per forward pass (of either model; 1 for plain AR decoding):
        tokens per unfinished row and round, over forwards per round."""
        if not (self.row_rounds and self.nfe):
            return 0.0
        return self.committed / self.row_rounds * self.steps / self.nfe

    def acceptance_stats(self) -> dict[str, float | int | str]:
        """The counts a caller reports (``unmask generate --json``): acceptance rate, tokens
        per forward, forwards of each model, drafts made and accepted."""
        return {
            "acceptance_rate": round(self.acceptance_rate, 4),
            "tokens_per_forward": round(self.tokens_per_forward, 4),
            "forwards": self.nfe,
            "verifier_forwards": self.verifier_nfe,
            "drafter_forwards": self.drafter_nfe,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "drafter_cache": self.drafter_cache,
        }


def _vocab_size(model: Any) -> int | None:
    v = getattr(getattr(model, "config", None), "vocab_size", None)
    return int(v) if v is not None else None


def shared_vocabulary(model_tokenizer: Any, drafter_tokenizer: Any) -> int:
    """The number of leading ids the two tokenizers share (same token at every id below it):
    the smaller vocabulary, when one tokenizer is the other with special tokens appended (an
    AR model trained with fill-in-the-middle adds three). Raises one ``UserError`` line naming
    the first id that differs: drafts of another tokenizer mean nothing to the verifier."""
    from unmask.tokenizer import first_difference

    i = first_difference(model_tokenizer, drafter_tokenizer)
    if i is not None:
        a, b = model_tokenizer.id_to_token(i), drafter_tokenizer.id_to_token(i)
        raise UserError(
            f"the drafter's tokenizer differs from the model's (id {i} is {b!r} there, "
            f"{a!r} here); speculative decoding needs one tokenizer"
        )
    return min(int(model_tokenizer.vocab_size), int(drafter_tokenizer.vocab_size))


def check_drafter(
    verifier: Any,
    drafter: Any,
    drafter_facts: ModelFacts | None,
    shared_vocab: int | None = None,
) -> ModelFacts:
    """Refuse, with one ``UserError`` line, a drafter that cannot draft for ``verifier``:
    none given, a causal one (not a diffusion model), a uniform-graph SEDD model (it has no
    mask to draft into), another vocabulary size (unless
    ``shared_vocab``, from ``shared_vocabulary``, says the tokenizers agree on the ids they
    share). Returns the drafter's facts."""
    if drafter is None:
        raise UserError(
            "decoder 'speculative' needs a drafter: a masked-diffusion model of the same "
            "vocabulary (api.start(..., draft=loaded_drafter))"
        )
    facts = drafter_facts if drafter_facts is not None else ModelFacts.of(drafter)
    if facts.attention == "causal":
        raise UserError(
            "the drafter of decoder 'speculative' must be a diffusion model (a mask "
            "predictor); this one is causal (autoregressive)"
        )
    if facts.sedd_graph == "uniform":
        raise UserError(
            "the drafter of decoder 'speculative' must be a mask predictor; this one is a "
            "uniform-graph SEDD model (no [MASK] to draft into)"
        )
    va, vd = _vocab_size(verifier), _vocab_size(drafter)
    if shared_vocab is None and va is not None and vd is not None and va != vd:
        raise UserError(
            f"the drafter's vocabulary ({vd} tokens) differs from the model's ({va}); "
            "speculative decoding needs one tokenizer"
        )
    return facts


def accept_greedy(draft: Tensor, p_logits: Tensor) -> tuple[Tensor, Tensor]:
    """Greedy verification. ``draft`` (B, k), ``p_logits`` (B, k + 1, V) the verifier's
    (filtered) logits of the k + 1 next positions. Returns (n (B,) drafts accepted, out (B,
    k + 1) the tokens to commit: the accepted drafts, then the verifier's argmax)."""
    target = p_logits.argmax(dim=-1)  # (B, k + 1)
    k = draft.shape[1]
    match = (draft == target[:, :k]).long()  # (B, k)
    n = match.cumprod(dim=1).sum(dim=1)  # (B,) length of the matching prefix
    return n, target  # where they match, target == draft


def accept_sampled(
    draft: Tensor,
    q: Tensor,
    p: Tensor,
    generator: torch.Generator | None = None,
    lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Speculative sampling. ``draft`` (B, k) drawn from ``q`` (B, k, V); ``p`` (B, k + 1, V)
    the verifier's probabilities. Returns (n (B,) drafts accepted, out (B, k + 1)): out[:, j]
    for j < n is the draft, out[:, n] the correction (a draw from normalised max(0, p - q))
    or, when n = k, a draw from ``p[:, k]``; each out[:, j], j <= n, is a draw from p[:, j]
    given the tokens before it (entries after n are not drawn and must not be used).

    ``lengths`` (B,): row i drafted only its first ``lengths[i]`` tokens (adaptive length;
    the rest of its row is ignored), so its position ``lengths[i]`` is a plain draw from p.
    The length must not depend on the draft token it cuts (it is decided from the drafter's
    distribution before the draw), or the accepted tokens would not be draws from q."""
    B, k = draft.shape
    device = p.device
    out = torch.empty(B, k + 1, dtype=torch.long, device=device)
    out[:, :k] = draft
    n = torch.full((B,), k, dtype=torch.long, device=device)
    rows, dist = torch.arange(B, device=device), p[:, k]  # each row's one draw: p_k if n = k
    if k:
        live = torch.ones(B, k, dtype=torch.bool, device=device)
        if lengths is not None:
            live = torch.arange(k, device=device)[None, :] < lengths[:, None]  # (B, k)
        px = p[:, :k].gather(-1, draft[..., None])[..., 0]  # (B, k)
        qx = q.gather(-1, draft[..., None])[..., 0]  # (B, k)
        u = _rand((B, k), torch.float64, device, generator)
        ok = (u * qx < px) & live  # u < p/q, so accepted with probability min(1, p/q)
        n = ok.long().cumprod(dim=1).sum(dim=1)  # (B,)
        # a uniform per position and one per row for the bonus, as a draw at every position
        # and in every row takes (the same stream), but one draw per row: the residual at its
        # n_i < k, or p_k where n_i = k; the rest are never read (drawing all B·k + B was
        # 7-13x the time at 50257 ids: benchmarks/speculative_accept.py). Picked by masks,
        # not by the rows' indices: no host sync (a nonzero, a numel) in the round
        w = _rand((B * k, 1), torch.float64, device, generator).reshape(B, k)
        bonus = _rand((B, 1), torch.float64, device, generator)
        j = n.clamp(max=k - 1)  # (B,) each row's first rejected position (any where n = k)
        pj = p[rows, j]  # (B, V)
        resid = (pj - q[rows, j]).clamp(min=0)
        mass = resid.sum(dim=-1, keepdim=True)
        resid = torch.where(mass > 0, resid / mass.clamp(min=1e-300), pj)  # p == q: any
        resid = torch.where(live[rows, j][:, None], resid, pj)  # no draft there: from p
        cut = (n < k)[:, None]  # (B, 1)
        dist, bonus = torch.where(cut, resid, dist), torch.where(cut, w[rows, j][:, None], bonus)
        tok = _draw(dist, None, bonus)  # (B,)
        out[rows, j] = torch.where(cut[:, 0], tok, draft[rows, j])
        out[:, k] = tok.masked_fill(cut[:, 0], 0)  # never read where n < k
    else:
        out[:, 0] = _draw(dist, generator)
    return n, out


def _draw(probs: Tensor, generator: torch.Generator | None, u: Tensor | None = None) -> Tensor:
    """(N,) one draw per row of ``probs`` (N, V) (``sample_token`` on log-probabilities; with
    ``u`` (N, 1), at those uniforms)."""
    return sample_token(probs.clamp(min=0).log(), temperature=1.0, generator=generator, u=u)


def _chunks(k: int, steps: int) -> list[int]:
    """Sizes of ``min(steps, k)`` left-to-right chunks of k positions (larger ones first)."""
    steps = min(steps, k)
    return [k // steps + (1 if i < k % steps else 0) for i in range(steps)]


def _confidence(q: Tensor, drawn: Tensor) -> Tensor:
    """(...) the drafter's confidence in the drafts ``drawn`` (...) from ``q`` (..., V), which
    ``draft_threshold`` compares: q's top probability, not the drawn token's, so the length
    is decided before the draw (``drawn`` is not read). A length cut by the drawn token itself
    would bias the accepted drafts (tests/test_rows_speculative.py reads it and sees so)."""
    del drawn  # the one rule both draft paths share; a test swaps in the biased one
    return q.amax(dim=-1)


def _exact_weights(model: Any) -> bool:
    """Whether ``model`` computes in float32 or float64 (its first parameter; a module
    without parameters: True), so a row of a batch rounds as it does alone: not where
    torchao quantised a layer (``quantized_layer``, as ``api.weights_dtype`` says), whose
    kernels compute in their own precision beside fp32 parameters."""
    from unmask.quantize import quantized_layer

    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    if first is not None and first.dtype not in (torch.float32, torch.float64):
        return False
    modules = callable(getattr(model, "named_modules", None))  # a module, not a stand-in
    return not (modules and quantized_layer(model) is not None)


def _cacheable(drafter: Any) -> bool:
    """Whether the drafter can run against a KV cache: the cache interface, and no noise
    level read off the whole canvas (``sigma_input`` other than ``zero``)."""
    cfg = getattr(drafter, "config", None)
    reads_canvas = bool(getattr(cfg, "time_conditioning", False)) and (
        getattr(cfg, "sigma_input", "zero") != "zero"
    )
    return supports_kv_cache(drafter) and not reads_canvas


class SpeculativeRun(DecoderRun):
    """The ``speculative`` decoder's run (see the module docstring); runs alone (two models,
    one KV cache each).

    An ``on_view`` callback with a ``draft(step, view, drafts)`` method (``LiveView``) is
    also shown each round's drafts before they are verified: ``drafts`` (B, G) holds them
    at their positions, ``mask_id`` elsewhere; ``on_view(step, view)`` itself only ever sees
    committed tokens."""

    def __init__(
        self,
        model: Any,
        drafter: Any,
        prompt_ids: Prompts,
        *,
        max_new_tokens: int,
        draft_length: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_id: int | None,
        pad_id: int | None = None,
        start_id: int | None = None,
        mask_id: int | None = None,
        drafter_facts: ModelFacts | None = None,
        draft_threshold: float = 0.0,
        draft_steps: int = 1,
        draft_cache: str = "prefix",
        shared_vocab: int | None = None,
        generator: torch.Generator | RowGenerators | None = None,
        on_view: ViewCallback | None = None,
        penalties: Penalties | None = None,
        forbid_eos: bool = False,
    ) -> None:
        mcfg = getattr(model, "config", None)
        attention = getattr(mcfg, "attention", "causal")
        if attention != "causal":
            raise UserError(
                f"decoder 'speculative' needs a causal model to verify, not attention={attention!r}"
            )
        if not supports_kv_cache(model):
            raise UserError(
                "decoder 'speculative' needs a verifier with a KV cache (unmask.model.Transformer)"
            )
        dfacts = check_drafter(model, drafter, drafter_facts, shared_vocab)
        if draft_length < 1:
            raise UserError(f"draft_length must be >= 1, got {draft_length}")
        if draft_steps < 1:
            raise UserError(f"draft_steps must be >= 1, got {draft_steps}")
        if not 0.0 <= draft_threshold < 1.0:
            raise UserError(f"draft_threshold must be in [0, 1), got {draft_threshold}")
        if draft_cache not in ("prefix", "none"):
            raise UserError(f"unknown draft_cache {draft_cache!r}; choose one of prefix, none")
        if max_new_tokens <= 0:
            raise UserError(f"max_new_tokens must be positive, got {max_new_tokens}")
        check_sampling(temperature, top_k, top_p)
        pad_id = pad_id if pad_id is not None else getattr(mcfg, "pad_id", eos_id)
        mask_id = mask_id if mask_id is not None else getattr(mcfg, "mask_id", None)
        rows = as_rows(prompt_ids)
        if mask_id is not None and any(mask_id in r for r in rows):
            raise UserError("speculative decoding cannot fill a [MASK] in the prompt")
        rows, started = start_empty_prompts(rows, eos_id=eos_id, start_id=start_id)
        if pad_id is None and len({len(r) for r in rows}) > 1:
            raise UserError("prompts of different lengths need a pad id")
        B, P = len(rows), max(len(r) for r in rows)
        per_row = generator is not None and not isinstance(generator, torch.Generator)
        if per_row and len(generator) != B:  # type: ignore[arg-type]
            raise ValueError(f"{len(generator)} generators for {B} rows")  # type: ignore[arg-type]
        for who, longest in (("model", getattr(mcfg, "max_seq_len", None)),
                             ("drafter", dfacts.max_seq_len)):  # fmt: skip
            if longest is not None and P + max_new_tokens > longest:
                raise UserError(
                    f"prompt ({P} tokens) + gen_length ({max_new_tokens}) exceeds the {who}'s "
                    f"max_seq_len ({longest})"
                )
        device = model_device(model) or torch.device("cpu")
        prompt, real = left_pad(rows, P, pad_id if pad_id is not None else 0)
        check_token_ids(prompt, getattr(mcfg, "vocab_size", None))

        self.model, self.drafter, self.dfacts = model, drafter, dfacts
        self.prompt, self.real = prompt.to(device), real.to(device)
        self.padded = not bool(real.all())
        self._counts = text_counts(penalties, self.prompt, self.real, started, mcfg)
        self.eos_id, self.gen_length, self.k = eos_id, max_new_tokens, draft_length
        self.threshold, self.draft_steps = draft_threshold, draft_steps
        self.mask_id = mask_id if mask_id is not None else (pad_id or 0)
        # [MASK], the banned ids ([PAD], BOS, FIM markers, ...), EOS under forbid_eos: banned
        # in the drafter's q and the verifier's p alike (the greedy output stays ``ar``'s, the
        # sampled one distributed as ``ar``'s)
        forbid = eos_id if forbid_eos else None
        self._forbid = never_proposed(mcfg, mask_id, forbid, eos_id=eos_id)
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.generator, self.on_view = generator, on_view
        # one generator per row: each row drafts and accepts as alone (``_draft_rows``, ``_accept``)
        self._rows = list(generator) if per_row else None  # type: ignore[arg-type]
        self.fill = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
        gen = torch.full((B, max_new_tokens), self.fill, dtype=torch.long, device=device)
        self.seq = torch.cat([self.prompt, gen], dim=1)  # (B, P + G): logical positions
        self.gen = self.seq[:, P:]  # (B, G), a view: commits write into seq
        self.seq_real = torch.cat([self.real, torch.ones_like(gen, dtype=torch.bool)], dim=1)
        self.finished = torch.zeros(B, dtype=torch.bool, device=device)
        self.committed = torch.zeros(B, dtype=torch.long, device=device)  # (B,) per row
        self.kv = RaggedCache(B, device, slack=draft_length + 1)
        # the drafter's prefix cache: each row's positions [0, fed_i) hold keys/values to reuse
        self._explicit = _cacheable(drafter)  # per-row positions (Transformer.forward)
        cached = draft_cache == "prefix" and self._explicit
        self.dkv: RaggedCache | None = (
            RaggedCache(B, device, slack=draft_length + 1) if cached else None
        )
        # with a generator per row, a drafter whose rows of a batch do not compute what they
        # compute alone (no explicit layouts: the batch's padding and mask columns; weights
        # in 16 bits or quantised: another rounding) drafts each row by itself (``_row_logits``)
        self._alone_drafts = (per_row and temperature > 0  # greedy: nothing drawn, one path
                              and not (self._explicit and _exact_weights(drafter)))
        self._row_dkv: list[RaggedCache] | None = None
        if self._alone_drafts and cached:  # each row's own prefix cache, as alone
            self._row_dkv = [RaggedCache(1, device, slack=draft_length + 1) for _ in rows]
        block = dfacts.block_size if dfacts.attention == "block-causal" else None
        self._dblock = block
        self._pad = (~self.real).sum(dim=1)  # (B,) each row's left padding
        self.drafter_cache = "none"
        if self.dkv is not None:
            self.drafter_cache = "prefix-exact" if block else "prefix-approximate"
        if self._row_dkv is not None:
            self.dkv = None  # the rows' own caches instead
        self.vocab, self._dvocab = _vocab_size(model), _vocab_size(drafter)
        self._head, self._dhead = separate_head(model), separate_head(drafter)
        self.shared_vocab = shared_vocab
        self.nfe = self.steps = 0
        self.verifier_nfe = self.drafter_nfe = self.drafted = self.accepted = 0
        self.row_rounds = self.n_committed = 0
        self._stopped = False

    @property
    def done(self) -> bool:
        return self._stopped

    def _forbid_mask(self, logits: Tensor, *, inplace: bool = False) -> Tensor:
        return forbid_id(logits, self._forbid, inplace=inplace)

    @staticmethod
    def _vocab_error(drafter: int, model: int) -> str:
        return (
            f"the drafter gives {drafter} logits per position, the model {model}: "
            "speculative decoding needs one vocabulary"
        )

    def _to_model_vocab(self, logits: Tensor) -> Tensor:
        """The drafter's logits (B, n, Vd) over the verifier's ids (B, n, V): ids the two do
        not share are never drafted (``-inf``)."""
        vd, v, shared = logits.shape[-1], self.vocab, self.shared_vocab
        if shared is not None and shared < vd:
            logits[..., shared:] = float("-inf")
        if v is None or vd == v:
            return logits
        if shared is None:
            raise UserError(self._vocab_error(vd, v))
        if vd > v:
            return logits[..., :v]
        return F.pad(logits, (0, v - vd), value=float("-inf"))

    def _drafter_bias(self, positions: Tensor, pad: Tensor | None = None) -> Tensor:
        """Which of the drafter's new columns each one sees: all (bidirectional), or the
        blocks up to its own (block-causal): (B|1, 1, L, L). A row's blocks count from its
        first real token (``_text_pos``), so a left-padded row has the blocks it has alone.
        ``pad`` (B,): the rows' left padding (default the batch's; a row by itself: 0)."""
        L = positions.shape[1]
        if self._dblock is None:
            return torch.ones(1, 1, L, L, dtype=torch.bool, device=positions.device)
        blk = self._text_pos(positions, pad) // self._dblock  # (B, L)
        return (blk[:, None, :] <= blk[:, :, None])[:, None]  # (B, 1, L, L)

    def _text_pos(self, positions: Tensor, pad: Tensor | None = None) -> Tensor:
        """(B, L) each row's logical ``positions`` (B, L) counted from its first real token
        (left padding ``pad`` (B,) off, default the batch's; a padding column's is 0): where
        the row's drafter blocks start."""
        pad = self._pad if pad is None else pad
        return (positions - pad[:, None]).clamp(min=0)

    def _text_len(self, i: int) -> int:
        """Row i's tokens so far, its left padding off (alone: its next position)."""
        return int(self.committed[i]) + self.prompt.shape[1] - int(self._pad[i])

    def _drafter_logits(
        self, tokens: Tensor, positions: Tensor, real: Tensor, lo: int, hi: int
    ) -> Tensor:
        """The drafter's logits (B, hi - lo, Vd) of columns [lo, hi) of one round's columns
        (each row's tokens since its cache, right-aligned, then the masks), against its prefix
        cache when it has one, else of each row's whole canvas (left-padded). With explicit
        layouts and a separate head (``separate_head``) the head runs on those columns only
        (the ones before are most of a round's columns without the prefix cache)."""
        head = self._dhead if self._explicit else None
        if self.dkv is None and self._explicit:  # a fresh cache: each row at its positions
            once = RaggedCache(tokens.shape[0], tokens.device, slack=1)
            bias = self._drafter_bias(positions)
            out = once.forward(self.drafter, tokens, positions, bias, real,
                               return_hidden=head is not None)  # fmt: skip
        elif self.dkv is None:  # a mask predictor without explicit layouts: left-padded rows
            mask = None if bool(real.all()) else real
            if self._dblock is not None and supports_kv_cache(self.drafter):
                # a Transformer reading its noise level off the canvas: each row's own blocks
                # (its attention mode would count them from the padded canvas's first column)
                out = self.drafter(tokens, attention_mask=mask,
                                   attn_bias=self._drafter_bias(positions))  # fmt: skip
                out = getattr(out, "logits", out)
            else:
                out = call_model(self.drafter, tokens, mask)
        else:
            bias = self._drafter_bias(positions)
            out = self.dkv.forward(self.drafter, tokens, positions, bias, real,
                                   return_hidden=head is not None)  # fmt: skip
        self.drafter_nfe += 1
        if self.dfacts.logit_shift:  # position i reads the logits of i - 1 (h >= 1 column)
            out = shift_logits(out[:, :hi])[:, lo:]
        else:
            out = out[:, lo:hi]
        return out if head is None else head(out)  # (B, hi - lo, Vd)

    def _draft(self, k: int, active: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """(draft (B, a), q (B, a, V) or None at temperature 0, lengths (B,)): the drafter
        denoises k masks after each row's committed tokens in ``draft_steps`` left-to-right
        chunks (a <= k when every row's adaptive length ended before the last chunk)."""
        P, G = self.prompt.shape[1], self.gen_length
        B, device = self.gen.shape[0], self.gen.device
        N = P + self.committed  # (B,) each row's next position
        lo = self.dkv.fed if self.dkv is not None else torch.zeros_like(N)
        batch_canvas = not self._explicit and not (self._rows is not None and self.temperature > 0)
        upto = N
        if batch_canvas:  # a finished row's text past the active rows' is never read
            upto = torch.minimum(N, N[active].max())
        head, head_pos, head_real = columns(self.seq, self.seq_real, lo, upto)  # (B, h)
        if self._dvocab is not None:  # an id only the verifier has (a special appended to
            head = head.masked_fill(head >= self._dvocab, self.dfacts.mask_id)  # its tokenizer)
        h = head.shape[1]
        if batch_canvas and self.dfacts.max_seq_len is not None:
            # one left-padded canvas: every row's text right-aligned, then k masks. Rows that
            # drifted apart make it P + (most committed) + k wide, past the drafter's context
            # (a ValueError mid-run); k is cut to what fits, so rows behind the most advanced
            # one may draft fewer (drafts only: the verifier decides the output; the most
            # advanced row's room is at most context - h - 1). h < P + G <= context: k >= 1.
            k = min(k, self.dfacts.max_seq_len - h)
        mask_pos = (upto[:, None] + torch.arange(k, device=device)[None, :]).clamp(max=P + G - 1)
        tokens = torch.cat([head, torch.full_like(mask_pos, self.dfacts.mask_id)], dim=1)
        positions = torch.cat([head_pos, mask_pos], dim=1)  # (B, h + k)
        # k is what the least advanced row can use; a row with less room drafts only what it
        # can commit (its k alone): the masks past that are holes where the drafter has
        # explicit layouts, so its drafts are the ones it makes alone
        room = (G - 1 - self.committed).clamp(min=0)  # (B,)
        own = torch.arange(k, device=device)[None, :] < room[:, None]  # (B, k)
        if not self._explicit:  # left-padded rows only: every mask is a column
            own = torch.ones_like(own)
        real = torch.cat([head_real, own], dim=1)
        if self._rows is not None and self.temperature > 0:  # each row's own chunks and draws
            draft, q, lengths = self._draft_rows(k, tokens, positions, real, h, active, room)
            self._commit_drafter_cache(positions, h, N, lo, active)
            return draft, q, lengths
        greedy = self.temperature == 0
        conf = torch.ones(B, k, dtype=torch.float64, device=device)
        parts: list[Tensor] = []
        a = 0
        for size in _chunks(k, self.draft_steps):
            out = self._drafter_logits(tokens, positions, real, h + a, h + a + size)
            logits = self._draft_logits(out)  # (B, size, V)
            if greedy:
                tok = logits.argmax(dim=-1)  # (B, size)
                if self.threshold > 0:  # the drafter's probability of its argmax
                    conf[:, a : a + size] = F.softmax(logits, dim=-1).amax(dim=-1)
            else:
                qs = F.softmax(tempered(logits, self.temperature), dim=-1)  # (B, size, V)
                V = qs.shape[-1]
                tok = _draw(qs.reshape(B * size, V), self.generator).reshape(B, size)
                conf[:, a : a + size] = _confidence(qs, tok)
                parts.append(qs)
            tokens[:, h + a : h + a + size] = tok
            a += size
            if self.threshold > 0:
                ended = (conf[:, :a] < self.threshold).any(dim=1) | ~active | (room <= a)
                if bool(ended.all()):
                    break  # no row drafts further: skip the remaining chunks
        self._commit_drafter_cache(positions, h, N, lo, active)
        lengths = torch.full((B,), a, dtype=torch.long, device=device)
        if self.threshold > 0:
            lengths = (conf[:, :a] >= self.threshold).long().cumprod(dim=1).sum(dim=1)
        lengths = torch.minimum(lengths, room)  # drafts past a row's end are never verified
        draft = tokens[:, h : h + a]  # (B, a)
        q = torch.cat(parts, dim=1) if parts else None  # (B, a, V)
        return draft, q, lengths

    def _draft_logits(self, out: Tensor) -> Tensor:
        """The drafter's logits ``out`` (B, n, Vd) as the drafts are drawn from them: float64,
        over the verifier's ids (B, n, V), the ids never proposed and ``[MASK]`` at ``-inf``."""
        logits = self._forbid_mask(self._to_model_vocab(out.to(torch.float64)))  # (B, n, V)
        dmask = self.dfacts.mask_id
        if dmask not in self._forbid and dmask < logits.shape[-1]:
            logits[..., dmask] = float("-inf")
        return logits

    def _commit_drafter_cache(
        self, positions: Tensor, h: int, N: Tensor, lo: Tensor, active: Tensor,
        cache: RaggedCache | None = None, pad: Tensor | None = None,
    ) -> None:
        """Keep, in the drafter's prefix cache, the committed columns of the round's last
        forward (``positions`` (B, h + k): h columns of committed tokens, then the drafts) to
        reuse next round: exact whole blocks, or every committed one. ``cache`` and ``pad``
        (B,): the batch's (``dkv``, its left padding) by default; a row's own cache, 0 for
        a row by itself (``_commit_row_cache``)."""
        cache = self.dkv if cache is None else cache
        if cache is None:
            return
        pad = self._pad if pad is None else pad
        safe = N  # whole blocks of each row's own text (left padding off), if any:
        if self._dblock is not None:
            safe = pad + (N - pad) // self._dblock * self._dblock
        safe = torch.where(active, safe, lo)
        keep = positions < safe[:, None]
        keep[:, h:] = False  # never the drafts (their keys saw masks)
        cache.commit(keep & active[:, None], safe)

    def _draft_rows(
        self, k: int, tokens: Tensor, positions: Tensor, real: Tensor, h: int,
        active: Tensor, room: Tensor,
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """``_draft`` at temperature > 0 with a generator per row: (draft (B, a), q (B, a, V),
        lengths (B,)), each row's exactly as alone. Row i drafts ``k_i = min(k, room_i)``
        masks (its k alone; the masks past them are holes) in its own ``draft_steps`` chunks
        of k_i, drawing each chunk's tokens in the one call of shape (size, 1) it makes alone
        with its own generator; with ``draft_threshold`` it stops after the chunk where its
        confidence ended, as it does alone, while other rows go on. A row that has drawn its
        last chunk keeps, in the round's later forwards, the canvas of its last one (its last
        chunk still masked), so the keys its prefix cache keeps are those it keeps alone. A
        drafter without explicit layouts would see the batch's padding and mask columns in a
        left-padded row, and one in 16 bits (or quantised) would round otherwise than alone:
        each row then runs its drafter forward by itself (``_row_logits``). A finished row
        draws nothing."""
        B, device = tokens.shape[0], tokens.device
        assert self._rows is not None
        want = torch.where(active, torch.clamp(room, max=k), 0).tolist()  # each row's k_i
        plans = [_chunks(m, self.draft_steps) if m else [] for m in want]
        at = [0] * B  # each row's drafts so far
        going = [bool(plan) for plan in plans]
        drafts = tokens[:, h : h + k].clone()  # (B, k)
        conf = torch.zeros(B, k, dtype=torch.float64, device=device)  # 0: never drafted
        q: Tensor | None = None
        s = 0
        while any(going):
            rows = [i for i in range(B) if going[i]]
            lo = min(at[i] for i in rows)
            hi = max(at[i] + plans[i][s] for i in rows)
            out = None
            if not self._alone_drafts:  # holes and positions make each row's columns its own
                out = self._draft_logits(self._drafter_logits(tokens, positions, real,
                                                              h + lo, h + hi))  # fmt: skip
            else:
                self.drafter_nfe += 1  # one forward of the batch, row by row
            for i in rows:
                a, size = at[i], plans[i][s]
                if out is not None:
                    logits = out[i, a - lo : a - lo + size]  # (size, V)
                else:
                    logits = self._draft_logits(self._row_logits(i, tokens, h, want[i],
                                                                 a, a + size))[0]  # fmt: skip
                qs = F.softmax(tempered(logits, self.temperature), dim=-1)  # (size, V)
                if q is None:
                    q = qs.new_zeros(B, k, qs.shape[-1])
                q[i, a : a + size] = qs
                tok = _draw(qs, self._rows[i])  # (size,)
                conf[i, a : a + size] = _confidence(qs, tok)
                drafts[i, a : a + size] = tok
                at[i] = a + size
                ended = (s + 1 == len(plans[i]) or at[i] >= int(room[i])
                         or (self.threshold > 0 and bool((conf[i, : at[i]] < self.threshold)
                                                         .any())))  # fmt: skip
                going[i] = not ended
                if not ended:  # its next chunk sees these; a row done keeps its last canvas
                    tokens[i, h + a : h + a + size] = tok
            s += 1
        if self._row_dkv is not None:
            for i in range(B):
                if want[i]:
                    self._commit_row_cache(i, want[i])
        lengths = torch.tensor(at, dtype=torch.long, device=device)
        if self.threshold > 0:  # conf is 0 past a row's drafts
            lengths = (conf >= self.threshold).long().cumprod(dim=1).sum(dim=1)
        lengths = torch.minimum(lengths, room)
        a = max(at)
        return drafts[:, :a], (None if q is None else q[:, :a]), lengths

    def _row_logits(self, i: int, tokens: Tensor, h: int, k: int, lo: int, hi: int) -> Tensor:
        """Row i's drafter logits (1, hi - lo, Vd) of its draft columns [lo, hi), from a
        forward of that row by itself, the forward it runs alone: its tokens without the
        batch's left padding at positions from 0, then its own k draft columns (``tokens``
        (B, h + K): the round's, heads right-aligned, drafts so far); against its own prefix
        cache (``_row_dkv``) or a fresh one where the drafter has explicit layouts, else on its
        whole canvas."""
        pad, n = int(self._pad[i]), self._text_len(i)  # its tokens (alone: N)
        block = tokens[i : i + 1, h : h + k]  # (1, k) its drafts so far, masks after
        device = tokens.device
        alone = torch.zeros(1, dtype=torch.long, device=device)  # no left padding
        if not self._explicit:
            row = torch.cat([tokens[i : i + 1, h - n : h], block], dim=1)  # (1, n + k)
            if self._dblock is not None and supports_kv_cache(self.drafter):
                positions = torch.arange(row.shape[1], device=device)[None, :]
                bias = self._drafter_bias(positions, alone)  # its own blocks, as alone
                out = self.drafter(row, attention_mask=None, attn_bias=bias)
                out = getattr(out, "logits", out)
            else:
                out = call_model(self.drafter, row, None)
            head = None
            cut = n
        else:
            cache = None if self._row_dkv is None else self._row_dkv[i]
            fed = 0 if cache is None else int(cache.fed[0])
            seq = self.seq[i : i + 1, pad + fed : pad + n]  # (1, n - fed) what it lacks
            if self._dvocab is not None:
                seq = seq.masked_fill(seq >= self._dvocab, self.dfacts.mask_id)
            row = torch.cat([seq, block], dim=1)  # (1, n - fed + k)
            positions = torch.arange(fed, n + k, device=device)[None, :]
            real = torch.ones_like(row, dtype=torch.bool)
            bias = self._drafter_bias(positions, alone)
            head = self._dhead
            runner = cache if cache is not None else RaggedCache(1, device, slack=1)
            out = runner.forward(self.drafter, row, positions, bias, real,
                                 return_hidden=head is not None)  # fmt: skip
            cut = n - fed
        if self.dfacts.logit_shift:
            out = shift_logits(out[:, : cut + hi])[:, cut + lo :]
        else:
            out = out[:, cut + lo : cut + hi]
        return out if head is None else head(out)

    def _commit_row_cache(self, i: int, k: int) -> None:
        """``_commit_drafter_cache`` of row i by itself, in its own prefix cache: the columns
        of its last forward of the round (its tokens the cache lacked, then ``k`` draft
        columns), kept as the row's cache keeps them alone."""
        assert self._row_dkv is not None
        cache = self._row_dkv[i]
        n, fed, device = self._text_len(i), int(cache.fed[0]), cache.fed.device
        positions = torch.arange(fed, n + k, device=device)[None, :]
        N, on = torch.tensor([n], device=device), torch.ones(1, dtype=torch.bool, device=device)
        self._commit_drafter_cache(positions, n - fed, N, cache.fed, on, cache=cache,
                                   pad=torch.zeros_like(N))  # fmt: skip

    def _verify(self, draft: Tensor, lengths: Tensor) -> tuple[Tensor, int]:
        """(B, K + 1, V) the verifier's logits of each row's next K + 1 positions given its
        draft, in one causal forward over its cache (each row's committed tokens the cache
        does not hold yet, right-aligned, then the K drafts); and the head width h."""
        P, G = self.prompt.shape[1], self.gen_length
        N = P + self.committed  # (B,)
        head, head_pos, head_real = columns(self.seq, self.seq_real, self.kv.fed, N)
        h, K = head.shape[1], draft.shape[1]
        device = draft.device
        dpos = (N[:, None] + torch.arange(K, device=device)[None, :]).clamp(max=P + G - 1)
        live = torch.arange(K, device=device)[None, :] < lengths[:, None]  # (B, K)
        tokens = torch.cat([head, draft], dim=1)  # (B, h + K)
        positions = torch.cat([head_pos, dpos], dim=1)
        real = torch.cat([head_real, live], dim=1)
        L = h + K
        bias = torch.ones(L, L, dtype=torch.bool, device=device).tril()[None, None]
        out = self.kv.forward(self.model, tokens, positions, bias, real,
                              return_hidden=self._head is not None)  # (B, L, D|V)
        self.verifier_nfe += 1
        out = out[:, h - 1 :]  # the head only where it is read (the prompt: its last column)
        return (out if self._head is None else self._head(out)), h  # (B, K + 1, V)

    def _show_drafts(self, draft: Tensor, lengths: Tensor) -> None:
        """Hand the round's drafts to an ``on_view`` that draws them (``LiveView.draft``)."""
        show = getattr(self.on_view, "draft", None)
        if show is None or draft.shape[1] == 0:
            return
        lengths = torch.where(self.finished, 0, lengths)
        show(self.steps, self.view(), place_drafts(self.gen, self.committed, draft, lengths,
                                                   self.mask_id))  # fmt: skip

    def _accept(
        self, draft: Tensor, q: Tensor | None, p: Tensor, lengths: Tensor, active: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``accept_sampled`` of the round's drafts (B, K) under the verifier's ``p`` (B, K +
        1, V): on one generator, or with one per row each active row on its own slice (its
        ``lengths[i]`` drafts, their q, its positions up to the one after them) with its own
        generator: the call it makes alone. A finished row draws nothing (n 0, out unused)."""
        if self._rows is None:
            return accept_sampled(draft, q, p, self.generator, lengths)
        B, K = draft.shape
        n = torch.zeros(B, dtype=torch.long, device=p.device)
        out = torch.full((B, K + 1), self.fill, dtype=torch.long, device=p.device)
        for i, (g, m, on) in enumerate(zip(self._rows, lengths.tolist(), active.tolist(),
                                           strict=True)):  # fmt: skip
            if not on:
                continue
            qi = None if q is None else q[i : i + 1, :m]
            n[i : i + 1], out[i : i + 1, : m + 1] = accept_sampled(
                draft[i : i + 1, :m], qi, p[i : i + 1, : m + 1], g, lengths[i : i + 1])
        return n, out

    def advance(self) -> None:
        B, P = self.gen.shape[0], self.prompt.shape[1]
        active = ~self.finished
        # a round commits at most k + 1 tokens; the least advanced row decides k
        k = min(self.k, self.gen_length - int(self.committed[active].min()) - 1)
        with torch.no_grad():
            if k > 0:
                draft, q, lengths = self._draft(k, active)
                lengths = torch.where(active, lengths, 0)
                K = int(lengths.max())
                draft, q = draft[:, :K], (None if q is None else q[:, :K])
                self._show_drafts(draft, lengths)
            else:
                draft, q = self.gen[:, :0], None
                lengths = torch.zeros(B, dtype=torch.long, device=self.gen.device)
            K = draft.shape[1]
            logits, h = self._verify(draft, lengths)
            # the verifier's logits are the round's own (read once): written in place
            logits = self._forbid_mask(logits.to(torch.float64), inplace=True)  # (B, K + 1, V)
            if self._counts is not None:  # each position judged for the text before it
                live = torch.arange(K, device=logits.device)[None, :] < lengths[:, None]
                logits = self._counts.penalise(logits, draft, live, inplace=True)
            if q is not None and q.shape[-1] != logits.shape[-1]:
                raise UserError(self._vocab_error(q.shape[-1], logits.shape[-1]))
            if self.temperature == 0:
                n, out = accept_greedy(draft, logits)
                n = torch.minimum(n, lengths)  # a row accepts no more than it drafted
            else:
                flat = tempered(logits.reshape(B * (K + 1), -1), self.temperature)
                p = F.softmax(filter_logits(flat, self.top_k, self.top_p), dim=-1)
                p = p.reshape(B, K + 1, -1)
                n, out = self._accept(draft, q, p, lengths, active)
            # a row commits n + 1 tokens: none past gen_length (drafts past it were free)
            n = torch.where(active, torch.minimum(n, self.gen_length - 1 - self.committed), 0)
            N = P + self.committed
            count, ended = commit_rows(self.gen, self.committed, out, n, active, self.eos_id)
            if self._counts is not None:
                kept = torch.arange(K + 1, device=n.device)[None, :] < count[:, None]
                self._counts.add(out, kept)
            j = torch.arange(h + K, device=n.device)[None, :]
            keep = (j < h + n[:, None]) & active[:, None]  # the head and the accepted drafts
            self.kv.commit(keep, torch.where(active, N + n, self.kv.fed))
        self.drafted += int(lengths.sum())
        self.accepted += int(torch.minimum(n, count).sum())  # committed: none after an EOS
        self.row_rounds += int(active.sum())
        self.n_committed += int(count.sum())
        self.committed += count
        self.finished |= ended | (self.committed >= self.gen_length)
        if self.stop is not None:  # a stop sequence ends it too (no work without)
            self.finished |= self.stopped_rows(~self.finished)
        self.nfe = self.verifier_nfe + self.drafter_nfe
        self.steps += 1
        if bool(self.finished.all()):
            self._stopped = True
        self._report()

    def view(self) -> Tensor:
        return rows_view(self.gen, self.committed, self.finished, self.mask_id)

    def result(self) -> SpeculativeResult:
        real = self.real if self.padded else None
        tokens, region, attn = prompt_and_generation(self.prompt, self.gen, real)
        return SpeculativeResult(
            tokens=tokens,
            region=region,
            nfe=self.nfe,
            steps=self.steps,
            eos_id=self.eos_id,
            attention_mask=attn,
            verifier_nfe=self.verifier_nfe,
            drafter_nfe=self.drafter_nfe,
            drafted=self.drafted,
            accepted=self.accepted,
            row_rounds=self.row_rounds,
            committed=self.n_committed,
            drafter_cache=self.drafter_cache,
        )


@register_decoder("speculative")
class SpeculativeDecoder(Decoder):
    """A causal checkpoint verifies the drafts of a diffusion model (``Target.aux["drafter"]``),
    lossless: ``SpeculativeRun``."""

    penalties = True
    row_seeds = True
    summary = (
        "speculative: a diffusion drafter (draft=) proposes draft_length tokens, the causal "
        "model verifies them in one forward; output distributed exactly as 'ar'"
    )
    unused = CAUSAL_UNUSED
    unused_why = (f"{CAUSAL_WHY}; the drafter's options are draft_steps, draft_cache and "
                  "draft_threshold")

    def check(self, facts: ModelFacts, config: SampleConfig) -> None:
        check_causal("speculative", facts, config, "a causal (autoregressive) model to verify")
        if config.draft_length is not None and config.draft_length < 1:
            raise UserError(f"draft_length must be >= 1, got {config.draft_length}")

    def start(
        self,
        target: Target,
        prompt_ids: Prompts,
        config: SampleConfig,
        *,
        on_view: ViewCallback | None = None,
        seeds: Sequence[int] | None = None,
    ) -> DecoderRun:
        f = target.facts
        device = model_device(target.model) or torch.device("cpu")
        generator: torch.Generator | RowGenerators | None = make_generator(config.seed, device)
        if seeds is not None:  # row i seeded seeds[i]: what it draws alone under that seed
            generator = row_generators(seeds, device)
        return SpeculativeRun(
            target.model,
            target.aux.get("drafter"),
            prompt_ids,
            max_new_tokens=config.gen_length,
            draft_length=config.draft_length or SPECULATIVE_DRAFT_LENGTH,
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            eos_id=f.eos_id,
            pad_id=f.pad_id,
            start_id=f.start_id,
            mask_id=f.mask_id,
            drafter_facts=target.aux.get("drafter_facts"),
            draft_threshold=config.draft_threshold,
            draft_steps=config.draft_steps,
            draft_cache=config.draft_cache,
            shared_vocab=target.aux.get("shared_vocab"),
            generator=generator,
            on_view=on_view,
            penalties=Penalties.of(config),
            forbid_eos=config.forbid_eos,
        )


__all__ = [
    "SPECULATIVE_DRAFT_LENGTH",
    "SpeculativeDecoder",
    "SpeculativeResult",
    "SpeculativeRun",
    "accept_greedy",
    "accept_sampled",
    "check_drafter",
    "shared_vocabulary",
]
