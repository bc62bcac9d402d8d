"""Two-model speculative decoding: a masked-diffusion drafter proposes, a causal model verifies.

The checkpoint being decoded is the causal (AR) model, the *verifier*, with its KV cache;
``Target.aux["drafter"]`` is any mask predictor of the same vocabulary (a diffusion model).
Each round (one ``advance()``):

1. the drafter runs once over the canvas ``[prompt ; committed ; k masks]`` (one denoising
   step of the masked-diffusion loop that commits all k masks at once): at temperature 0
   the draft is the argmax at every masked position, otherwise token j is drawn from
   ``q_j = softmax(logits_j / temperature)`` (``[MASK]`` never proposed);
2. the verifier scores the last committed token and the k drafts in one causal forward
   against its KV cache (k + 1 next-token distributions ``p_0 .. p_k``, filtered as the
   ``ar`` decoder filters them: ``[MASK]`` forbidden, temperature, top-k, top-p);
3. acceptance, per row: at temperature 0 the longest draft prefix equal to the verifier's
   argmax, plus the verifier's own token after it, so the output is token for token that of
   ``generate_ar`` at temperature 0; at temperature > 0 the speculative-sampling rule
   (Leviathan et al. 2023, arXiv:2211.17192; Chen et al. 2023, arXiv:2302.01318): draft token
   x is accepted with probability ``min(1, p(x) / q(x))``, the first rejected one is replaced
   by a draw from the normalised ``max(0, p - q)``, and when all k are accepted one more token
   is drawn from ``p_k``; every committed token is then distributed as the verifier's own.
4. A batch keeps one KV cache of one length: every row commits ``m + 1`` tokens, m = the
   fewest drafts any unfinished row accepted (a row that accepted more commits its accepted
   draft token at position m; one that stopped there its correction). Each committed token is
   still an exact draw (or the argmax) of the verifier given the committed prefix, so the
   rule stays exact; it only commits less per round than per-row lengths would. The cache
   is rolled back by its ``length`` (positions past it are overwritten by the next forward).

A row that commits EOS is finished (later positions hold the pad id); the run stops when
every row is finished or ``gen_length`` tokens are committed, as ``ARRun`` does.
``nfe`` = verifier forwards + drafter forwards; the result (``SpeculativeResult``) reports
both, and the drafts made and accepted.

Inside: ``SpeculativeRun``, ``SpeculativeResult``, ``SpeculativeDecoder`` (``speculative``),
``check_drafter``, ``accept_greedy``, ``accept_sampled``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unmask.canvas import as_rows, left_pad
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.facts import ModelFacts
from unmask.sampling.ar import filter_logits, forbid_id, sample_token
from unmask.sampling.cache import call_model, shift_logits, supports_kv_cache
from unmask.sampling.policies import _rand
from unmask.sampling.protocol import (
    DecoderRun,
    GenerateResult,
    ViewCallback,
    make_generator,
    model_device,
    rows_finished,
)
from unmask.sampling.registry import Decoder, Prompts, Target, register_decoder


@dataclass
class SpeculativeResult(GenerateResult):
    """A ``GenerateResult`` (``nfe`` = verifier + drafter forwards) with the split and the
    acceptance counts."""

    verifier_nfe: int = 0
    drafter_nfe: int = 0
    drafted: int = 0
    """Draft tokens proposed, summed over rounds (per batch row, not times B)."""
    accepted: int = 0
    """Draft tokens committed as drafted, summed over rounds (per batch row)."""


def _vocab_size(model: Any) -> int | None:
    v = getattr(getattr(model, "config", None), "vocab_size", None)
    return int(v) if v is not None else None


def check_drafter(verifier: Any, drafter: Any, drafter_facts: ModelFacts | None) -> ModelFacts:
    """Refuse, with one ``UserError`` line, a drafter that cannot draft for ``verifier``:
    none given, a causal one (not a diffusion model), another vocabulary size. Returns the
    drafter's facts."""
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
    va, vd = _vocab_size(verifier), _vocab_size(drafter)
    if va is not None and vd is not None and va != vd:
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
) -> tuple[Tensor, Tensor]:
    """Speculative sampling. ``draft`` (B, k) drawn from ``q`` (B, k, V); ``p`` (B, k + 1, V)
    the verifier's probabilities. Returns (n (B,) drafts accepted, out (B, k + 1)): out[:, j]
    for j < n is the draft, out[:, n] the correction (a draw from normalised max(0, p - q))
    or, when n = k, a draw from ``p[:, k]``; each out[:, j], j <= n, is a draw from p[:, j]
    given the tokens before it (entries after n are draws too, but must not be used)."""
    B, k = draft.shape
    device = p.device
    out = torch.empty(B, k + 1, dtype=torch.long, device=device)
    n = torch.full((B,), k, dtype=torch.long, device=device)
    if k:
        px = p[:, :k].gather(-1, draft[..., None])[..., 0]  # (B, k)
        qx = q.gather(-1, draft[..., None])[..., 0]  # (B, k)
        u = _rand((B, k), torch.float64, device, generator)
        ok = u * qx < px  # u < p/q, so accepted with probability min(1, p/q)
        n = ok.long().cumprod(dim=1).sum(dim=1)  # (B,)
        resid = (p[:, :k] - q).clamp(min=0)  # (B, k, V)
        mass = resid.sum(dim=-1, keepdim=True)
        resid = torch.where(mass > 0, resid / mass.clamp(min=1e-300), p[:, :k])  # p == q: any
        fix = _draw(resid.reshape(B * k, -1), generator).reshape(B, k)
        out[:, :k] = torch.where(ok, draft, fix)
    out[:, k] = _draw(p[:, k], generator)
    return n, out


def _draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """(N,) one draw per row of ``probs`` (N, V) (``sample_token`` on log-probabilities)."""
    return sample_token(probs.clamp(min=0).log(), temperature=1.0, generator=generator)


class SpeculativeRun(DecoderRun):
    """The ``speculative`` decoder's run (see the module docstring); runs alone (two models,
    one KV cache)."""

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
        mask_id: int | None = None,
        drafter_facts: ModelFacts | None = None,
        generator: torch.Generator | None = None,
        on_view: ViewCallback | None = None,
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
        dfacts = check_drafter(model, drafter, drafter_facts)
        if draft_length < 1:
            raise UserError(f"draft_length must be >= 1, got {draft_length}")
        if max_new_tokens <= 0:
            raise UserError(f"max_new_tokens must be positive, got {max_new_tokens}")
        if not (temperature >= 0 and math.isfinite(temperature)):
            raise UserError(f"temperature must be a finite number >= 0, got {temperature}")
        pad_id = pad_id if pad_id is not None else getattr(mcfg, "pad_id", eos_id)
        mask_id = mask_id if mask_id is not None else getattr(mcfg, "mask_id", None)
        rows = as_rows(prompt_ids)
        if mask_id is not None and any(mask_id in r for r in rows):
            raise UserError("speculative decoding cannot fill a [MASK] in the prompt")
        if any(not r for r in rows):
            if eos_id is None:
                raise UserError("an empty prompt needs a start token (eos_id)")
            rows = [r or [eos_id] for r in rows]
        if pad_id is None and len({len(r) for r in rows}) > 1:
            raise UserError("prompts of different lengths need a pad id")
        B, P = len(rows), max(len(r) for r in rows)
        for who, m in (("model", mcfg), ("drafter", getattr(drafter, "config", None))):
            longest = getattr(m, "max_seq_len", None)
            if longest is not None and P + max_new_tokens > longest:
                raise UserError(
                    f"prompt ({P} tokens) + gen_length ({max_new_tokens}) exceeds the {who}'s "
                    f"max_seq_len ({longest})"
                )
        device = model_device(model) or torch.device("cpu")
        prompt, real = left_pad(rows, P, pad_id if pad_id is not None else 0)
        from unmask.model import KVCache

        self.model, self.drafter, self.dfacts = model, drafter, dfacts
        self.prompt, self.real = prompt.to(device), real.to(device)
        self.padded = not bool(real.all())
        self.eos_id, self.gen_length, self.k = eos_id, max_new_tokens, draft_length
        self.mask_id = mask_id if mask_id is not None else (pad_id or 0)
        self._forbid = mask_id
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.generator, self.on_view = generator, on_view
        self.fill = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
        self.gen = torch.full((B, max_new_tokens), self.fill, dtype=torch.long, device=device)
        self.finished = torch.zeros(B, dtype=torch.bool, device=device)
        self.kv = KVCache()
        self.vocab = _vocab_size(model)
        self.committed = 0
        self.nfe = self.steps = 0
        self.verifier_nfe = self.drafter_nfe = self.drafted = self.accepted = 0
        self._stopped = False

    @property
    def done(self) -> bool:
        return self._stopped

    def _attn(self, length: int) -> Tensor | None:
        """(B, length) padding mask over the first ``length`` positions, None if unpadded."""
        if not self.padded:
            return None
        B, P = self.real.shape
        ones = torch.ones(B, length - P, dtype=torch.bool, device=self.real.device)
        return torch.cat([self.real, ones], dim=1)

    def _forbid_mask(self, logits: Tensor) -> Tensor:
        return forbid_id(logits, self._forbid)

    @staticmethod
    def _vocab_error(drafter: int, model: int) -> str:
        return (
            f"the drafter gives {drafter} logits per position, the model {model}: "
            "speculative decoding needs one vocabulary"
        )

    def _draft(self, k: int) -> tuple[Tensor, Tensor | None]:
        """(draft (B, k), q (B, k, V) or None at temperature 0): one drafter step."""
        P, c = self.prompt.shape[1], self.committed
        dmask = self.dfacts.mask_id
        masks = torch.full_like(self.gen[:, :k], dmask)
        canvas = torch.cat([self.prompt, self.gen[:, :c], masks], dim=1)  # (B, P + c + k)
        logits = call_model(self.drafter, canvas, self._attn(P + c + k))
        self.drafter_nfe += 1
        if self.dfacts.logit_shift:
            logits = shift_logits(logits)
        logits = logits[:, P + c :].to(torch.float64)  # (B, k, V)
        if self.vocab is not None and logits.shape[-1] != self.vocab:
            raise UserError(self._vocab_error(logits.shape[-1], self.vocab))
        logits = self._forbid_mask(logits)
        if dmask != self._forbid and dmask < logits.shape[-1]:
            logits[..., dmask] = float("-inf")
        if self.temperature == 0:
            return logits.argmax(dim=-1), None
        q = F.softmax(logits / self.temperature, dim=-1)  # (B, k, V)
        B, V = q.shape[0], q.shape[-1]
        return _draw(q.reshape(B * k, V), self.generator).reshape(B, k), q

    def _verify(self, draft: Tensor) -> Tensor:
        """(B, k + 1, V) the verifier's logits of the next k + 1 positions after the committed
        tokens, given the draft (one forward, KV cache rolled back to the committed prefix)."""
        P, c = self.prompt.shape[1], self.committed
        if c == 0:  # the prompt and the draft: logits of positions P - 1 .. P + k - 1
            tokens, start = torch.cat([self.prompt, draft], dim=1), 0
        else:  # the last committed token again (its entry may be a rejected draft's) + draft
            tokens, start = torch.cat([self.gen[:, c - 1 : c], draft], dim=1), P + c - 1
            self.kv.length = start
        logits = call_model(
            self.model, tokens, self._attn(start + tokens.shape[1]), cache=self.kv, start=start
        )
        self.verifier_nfe += 1
        return logits[:, -(draft.shape[1] + 1) :]  # (B, k + 1, V)

    def advance(self) -> None:
        assert not self._stopped, "the run is finished"
        B, c = self.gen.shape[0], self.committed
        k = min(self.k, self.gen_length - c - 1)  # a round commits at most k + 1 tokens
        with torch.no_grad():
            if k > 0:
                draft, q = self._draft(k)
            else:
                draft, q = self.gen[:, :0], None
            logits = self._forbid_mask(self._verify(draft).to(torch.float64))  # (B, k + 1, V)
            if q is not None and q.shape[-1] != logits.shape[-1]:
                raise UserError(self._vocab_error(q.shape[-1], logits.shape[-1]))
            if self.temperature == 0:
                n, out = accept_greedy(draft, logits)
            else:
                flat = logits.reshape(B * (k + 1), -1) / self.temperature
                p = F.softmax(filter_logits(flat, self.top_k, self.top_p), dim=-1)
                n, out = accept_sampled(draft, q, p.reshape(B, k + 1, -1), self.generator)
        active = ~self.finished
        m = int(n[active].min()) if bool(active.any()) else k
        new = out[:, : m + 1]  # (B, m + 1)
        # a finished row, and every position after a row's first EOS, holds the fill
        after_eos = torch.zeros_like(new, dtype=torch.bool)
        if self.eos_id is not None:
            is_eos = (new == self.eos_id).long()
            after_eos = (is_eos.cumsum(dim=1) - is_eos) > 0
        new = torch.where(self.finished[:, None] | after_eos, self.fill, new)
        self.gen[:, c : c + m + 1] = new
        self.committed = c + m + 1
        self.drafted += k
        self.accepted += m
        self.nfe = self.verifier_nfe + self.drafter_nfe
        self.steps += 1
        self.finished |= rows_finished(new, self.eos_id)
        if self.committed >= self.gen_length or bool(self.finished.all()):
            self._stopped = True
        self._report()

    def view(self) -> Tensor:
        rest = torch.full_like(self.gen[:, self.committed :], self.mask_id)
        return torch.cat([self.gen[:, : self.committed], rest], dim=1)  # (B, G)

    def result(self) -> SpeculativeResult:
        attn = None
        if self.padded:
            attn = torch.cat([self.real, torch.ones_like(self.gen, dtype=torch.bool)], dim=1)
        P = self.prompt.shape[1]
        return SpeculativeResult(
            tokens=torch.cat([self.prompt, self.gen], dim=1),
            region=(P, P + self.gen_length),
            nfe=self.nfe,
            steps=self.steps,
            eos_id=self.eos_id,
            attention_mask=attn,
            verifier_nfe=self.verifier_nfe,
            drafter_nfe=self.drafter_nfe,
            drafted=self.drafted,
            accepted=self.accepted,
        )


@register_decoder("speculative")
class SpeculativeDecoder(Decoder):
    """A causal checkpoint verifies the drafts of a diffusion model (``Target.aux["drafter"]``),
    lossless: ``SpeculativeRun``."""

    summary = (
        "speculative: a diffusion drafter (draft=) proposes draft_length tokens, the causal "
        "model verifies them in one forward; output distributed exactly as 'ar'"
    )

    def check(self, facts: ModelFacts, config: SampleConfig) -> None:
        if facts.attention != "causal":
            raise UserError(
                f"decoder 'speculative' needs a causal (autoregressive) model to verify; this "
                f"checkpoint is {facts.attention}: use decoder {facts.default_decoder!r}"
            )
        if not facts.has_kv_cache:
            raise UserError(
                "decoder 'speculative' needs a model with a KV cache (unmask.model.Transformer)"
            )
        if config.cfg_scale > 0:
            raise UserError(
                "cfg_scale applies to diffusion models; this checkpoint is autoregressive (causal)"
            )
        if config.draft_length < 1:
            raise UserError(f"draft_length must be >= 1, got {config.draft_length}")

    def start(
        self,
        target: Target,
        prompt_ids: Prompts,
        config: SampleConfig,
        *,
        on_view: ViewCallback | None = None,
    ) -> DecoderRun:
        f = target.facts
        device = model_device(target.model) or torch.device("cpu")
        return SpeculativeRun(
            target.model,
            target.aux.get("drafter"),
            prompt_ids,
            max_new_tokens=config.gen_length,
            draft_length=config.draft_length,
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            eos_id=f.eos_id,
            pad_id=f.pad_id,
            mask_id=f.mask_id,
            drafter_facts=target.aux.get("drafter_facts"),
            generator=make_generator(config.seed, device),
            on_view=on_view,
        )


__all__ = [
    "SpeculativeDecoder",
    "SpeculativeResult",
    "SpeculativeRun",
    "accept_greedy",
    "accept_sampled",
    "check_drafter",
]
