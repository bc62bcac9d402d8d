"""Autoregressive decoding with a KV cache, for ``attention="causal"`` models (the AR baseline).

Inside:

- ``ARRun``: the ``ar`` decoder's run (one token per ``advance()``); ``generate_ar`` runs it.
- ``generate_ar``: left-padded batches of prompts, greedy / temperature / top-k / top-p
  sampling; the prompt runs once, then every new token costs one forward of one position
  against the cached keys/values (``unmask.model.KVCache``).
- ``filter_logits``: top-k and top-p (nucleus; Holtzman et al. 2020, arXiv:1904.09751).
- ``tempered``: logits over a temperature, finite at any temperature > 0.
- ``sample_token``: one token per row from (B, V) logits; ``uniforms`` its draws, from one
  generator or one per row (``RowGenerators``, ``row_generators``: seeded rows in one batch
  draw what each draws alone).
- ``AllowedTokens`` / ``keep_allowed``: constrained decoding (``ARRun(allowed=...)``): a
  callback names the tokens each row may take next; every other logit becomes ``-inf``
  before sampling (``unmask.infill.ordered`` builds one from token automata).

Returns the same ``GenerateResult`` as the diffusion sampler, so callers (and
``unmask generate``) treat both alike.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from unmask.canvas import as_rows, left_pad
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.facts import ModelFacts
from unmask.sampling.cache import call_model, check_cache_name, supports_kv_cache
from unmask.sampling.penalties import Penalties, banned_ids, id_tensor, text_counts
from unmask.sampling.policies import _rand, make_policy, scorer
from unmask.sampling.protocol import (
    DecoderRun,
    GenerateResult,
    ViewCallback,
    make_generator,
    model_device,
    rows_finished,
)
from unmask.sampling.registry import (
    COMMIT_LOOP_OPTIONS,
    Decoder,
    Prompts,
    Target,
    register_decoder,
)

ARStepCallback = Callable[[int, Tensor], None]
"""``callback(step, tokens)``: after each new token, ``tokens`` = (B, P + step) prompt and
tokens so far. Do not modify ``tokens``."""

AllowedTokens = Callable[[int, Tensor], "Tensor | None"]
"""``allowed(step, tokens)``: before the token at generated position ``step`` (0-based) is
chosen, ``tokens`` = (B, P + step) prompt and tokens so far; returns (B, V) bool, the tokens
each row may take there (at least one per row), or None for no constraint. Do not modify
``tokens``."""


def keep_allowed(logits: Tensor, allowed: Tensor) -> Tensor:
    """(B, V) logits with everything outside ``allowed`` (B, V') bool at ``-inf`` (columns past
    V' are not allowed). NaN and infinite logits become finite first, so the argmax (and a
    draw at any temperature) is an allowed token whatever the model returned."""
    V = logits.shape[-1]
    ok = torch.zeros(allowed.shape[0], V, dtype=torch.bool, device=logits.device)
    n = min(V, allowed.shape[-1])
    ok[:, :n] = allowed[:, :n].to(logits.device)
    x = torch.nan_to_num(logits.float(), nan=-1e30, posinf=1e30, neginf=-1e30)
    return x.masked_fill(~ok, float("-inf"))  # (B, V)


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set to ``-inf`` the logits (B, V) outside the ``top_k`` largest and outside the smallest
    set whose probability reaches ``top_p`` (nucleus sampling); the top token always stays."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        p = F.softmax(sorted_logits.to(torch.float64), dim=-1)  # (B, V)
        drop_sorted = p.cumsum(dim=-1) - p >= top_p  # mass before this token already reaches top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


RowGenerators = Sequence[torch.Generator]
"""One generator per row of a batch: row i draws from ``generators[i]`` alone, so it draws
what it would in a run of its own seeded as that generator is (``row_generators``)."""


def row_generators(
    seeds: Sequence[int], device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """A generator per row, row i's seeded ``seeds[i]`` (``make_generator``), on ``device``."""
    gens = [make_generator(s, device) for s in seeds]
    if any(g is None for g in gens):
        raise ValueError("a generator per row needs a seed for every row")
    return cast(list[torch.Generator], gens)


def uniforms(
    rows: int,
    device: torch.device,
    generator: torch.Generator | RowGenerators | None,
    draws: Tensor | None = None,
) -> Tensor:
    """(rows, 1) float64 uniforms in [0, 1): one draw of that shape from ``generator`` (the
    global RNG if None), or with ``RowGenerators`` one (1, 1) draw per row from its own, the
    call a run of that row alone makes. ``draws`` (rows,) bool: the rows that draw (the others,
    finished rows, get 0 and leave their generators as they are); None: every row."""
    if generator is None or isinstance(generator, torch.Generator):
        return _rand((rows, 1), torch.float64, device, generator)
    if len(generator) != rows:
        raise ValueError(f"{len(generator)} generators for {rows} rows")
    live = [True] * rows if draws is None else draws.tolist()
    u = torch.zeros(rows, 1, dtype=torch.float64, device=device)
    for i, (g, on) in enumerate(zip(generator, live, strict=True)):
        if on:
            u[i : i + 1] = _rand((1, 1), torch.float64, device, g)
    return u  # (rows, 1)


TEMPERATURE_FLOOR = 1e-30
"""Below this temperature ``tempered`` shifts the logits by their maximum before dividing: a
logit over a subnormal temperature (``1e-310``) overflowed to inf, softmax gave NaN and every
causal decoder wrote token 0 (``[MASK]``). At or above it ``logits / temperature`` stays finite
for float64 logits up to about 1e278, and is computed as it always was."""


def tempered(logits: Tensor, temperature: float) -> Tensor:
    """``logits / temperature`` (temperature > 0) along the last dim, in ``logits``' dtype,
    finite where the logits are. Float64 logits at or above ``TEMPERATURE_FLOOR``: exactly that
    division. Below it, or logits of another dtype (half logits of 10 over 1e-5 overflowed to
    inf; a temperature under 1e-45 became 0 in float32, and 0/0 was NaN), the row's maximum is
    subtracted first and the division done in float64 (softmax is the same; the largest logits
    become 0, the others -inf or finite negatives, ties still ties), so a tiny temperature
    samples the argmax (a uniform draw among exact ties), as its limit does. The one division
    of every causal decoder's sampling (``sample_token``, ``speculative``'s and ``hybrid``'s
    proposals and acceptance ratios)."""
    if temperature >= TEMPERATURE_FLOOR and logits.dtype == torch.float64:
        return logits / temperature
    wide = logits.to(torch.float64)
    return ((wide - wide.amax(dim=-1, keepdim=True)) / temperature).to(logits.dtype)


def sample_token(
    logits: Tensor,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | RowGenerators | None = None,
    draws: Tensor | None = None,
    u: Tensor | None = None,
) -> Tensor:
    """(B,) token ids from (B, V) logits: argmax at temperature 0, else a draw from
    ``softmax(filter_logits(logits / temperature))`` by inverting the CDF at one uniform per row
    (``uniforms``: from ``generator``, or with one generator per row from each row's own; rows
    outside ``draws`` draw nothing and get a token not to be used). ``u`` (B, 1): uniforms in
    [0, 1) the caller already drew, used instead (``speculative.accept_sampled`` draws one per
    position, as it always did, and inverts the CDF only at the rows it reads)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(tempered(logits.to(torch.float64), temperature), top_k, top_p)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    cdf = probs.cumsum(dim=-1)
    if u is None:
        u = uniforms(probs.shape[0], probs.device, generator, draws)
    u = u * cdf[:, -1:]
    idx = (cdf <= u).sum(dim=-1)  # first token whose CDF passes u; zero-probability ones never do
    last = (
        probs.shape[-1] - 1 - (probs > 0).flip(-1).long().argmax(dim=-1)
    )  # guards rounding at the top
    return torch.minimum(idx, last)


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Refuse, in one ``UserError`` line, sampling options no left-to-right decoder (``ar``,
    ``speculative``, ``hybrid``) can use: a temperature that is not a finite number >= 0,
    ``top_k`` < 1, ``top_p`` outside (0, 1]."""
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise UserError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise UserError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")


def never_proposed(
    config: Any, mask_id: int | None, forbid: int | None = None, *, eos_id: int | None = None
) -> tuple[int, ...]:
    """The ids a causal decoder (``ar``, ``speculative``'s drafts and verifier, ``hybrid``)
    never proposes: ``[MASK]`` and the checkpoint's ``banned_ids`` (``[PAD]``, BOS,
    ``[EMPTY]``, the fill-in-the-middle markers of a model trained with ``--fim-rate``), the
    rule of every decoder (``unmask.sampling.penalties.banned_ids``). None is a training
    target of free text, but an untrained or weak model still ranks them: greedy under the
    default penalties wrote a FIM marker in 3 of 8 rows of the demo's twin (plain generation
    then goes on as if a FIM prompt had begun), and an untrained one wrote [PAD] and BOS. A
    FIM infill writes the middle after the markers, never one. ``eos_id``: the token the run
    ends a text with, never banned (a checkpoint whose EOS is also its [PAD] or BOS still
    stops); ``forbid``: one more id, EOS under ``SampleConfig.forbid_eos``."""
    ids = {*banned_ids(config), *((mask_id,) if mask_id is not None else ())}
    if eos_id is not None:
        ids.discard(eos_id)
    if forbid is not None:
        ids.add(forbid)
    return tuple(sorted(int(i) for i in ids))


def forbid_id(
    logits: Tensor, token_id: int | Sequence[int] | None, *, inplace: bool = False
) -> Tensor:
    """``logits`` (..., V) with ``token_id`` (one id or several) set to ``-inf``: a copy, or
    ``logits`` itself written to when ``inplace`` (a decoder that owns its logits: the copy
    was 3% of an AR step); unchanged for None and for ids outside the vocabulary (a test
    double's small one). Called on every decoding step: the index tensor is made once per ids
    and device (``penalties.id_tensor``)."""
    if token_id is None:
        return logits
    ids = (token_id,) if isinstance(token_id, int) else tuple(token_id)
    ids = tuple(i for i in ids if i < logits.shape[-1])
    if not ids:
        return logits
    fill = logits.index_fill_ if inplace else logits.index_fill
    return fill(-1, id_tensor(ids, logits.device), float("-inf"))


def separate_head(model: Any) -> Any:
    """The model's output head when its logits are ``lm_head(hidden)`` of the final hidden
    states that ``model(..., return_hidden=True)`` returns, so that a decoder runs the head
    only on the columns it reads; None when the head needs more (time conditioning, SEDD
    scores), the model has none or its ``forward`` takes no ``return_hidden`` (a wrapper):
    whole logits then."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "time_conditioning", False) or getattr(cfg, "output", "") != "logits":
        return None
    try:  # a compiled model (``OptimizedModule``) takes what the module it wraps takes
        params = inspect.signature(getattr(model, "_orig_mod", model).forward).parameters
    except (AttributeError, TypeError, ValueError):
        return None
    if "return_hidden" not in params:
        return None
    return getattr(model, "lm_head", None)


def check_token_ids(tokens: Tensor, vocab_size: int | None) -> None:
    """Refuse in one line ``tokens`` (B, L) holding an id the model has no embedding for
    (negative, or ``>= vocab_size``, as an id of another tokenizer): it failed inside the
    embedding with an ``IndexError``. Padding counts too (the model embeds it); ``vocab_size``
    None (a plain callable) checks nothing. Every decoder's check: the causal runs' prompts,
    the masked-diffusion loop's canvas (``unmask.sampling.loop.check_ids``)."""
    if not isinstance(vocab_size, int):
        return
    bad = (tokens < 0) | (tokens >= vocab_size)  # (B, L)
    if bool(bad.any()):
        first = int(tokens[bad][0])
        raise UserError(
            f"token id {first} is outside the model's vocabulary (0..{vocab_size - 1})"
        )


def start_empty_prompts(
    prompt_ids: Sequence[Sequence[int]] | Sequence[int] | Tensor, *,
    eos_id: int | None, pad_id: int | None = None, start_id: int | None = None,
) -> tuple[list[list[int]], list[bool]]:
    """The prompts as rows, an empty one given a start token: ``start_id`` where given (the
    decoders pass ``ModelFacts.start_id``: a published model's BOS, which its raw text
    prompts begin with too, ``ModelFacts.prompt_ids``), else the document separator (EOS,
    else ``pad_id`` where given), which every document of ``unmask.data``'s training stream
    follows and lm-eval puts before an empty context (``unmask.lm_eval``). The one start of
    every decoder: the causal ones (``ar``, ``hybrid``, ``speculative``: no ``pad_id``, so a
    model with neither token is refused in one ``UserError``) and the masked-diffusion ones
    (``unmask.sampling.loop``, ``unmask.sampling.blocks``). Without it a diffusion canvas is
    all [MASK]: every column of a model without absolute positions (RoPE) then has the same
    hidden state, so the first greedy commit is an exact tie that rounding decides, and the
    same request wrote another text beside a longer prompt in a batch; a Dream-style
    (``logit_shift``) model committed its first token from the wrong prediction (position 0
    keeps its own logits, ``shift_logits``; in a batch, the padding's). The generated tokens
    are the same count either way. Returns the rows and, per row, whether it was given the
    token (not text: never counted; for a diffusion decoder the last prompt column, which
    guidance does not blank out: it is no condition, so a row without a prompt has none to
    guide by)."""
    rows = as_rows(prompt_ids)
    if all(rows):
        return rows, [False] * len(rows)
    start = start_id if start_id is not None else eos_id if eos_id is not None else pad_id
    if start is None:
        raise UserError("an empty prompt needs a start token (start_id or eos_id)")
    return [r or [int(start)] for r in rows], [not r for r in rows]


class ARRun(DecoderRun):
    """The ``ar`` decoder's run: token by token with a KV cache (see ``generate_ar``).

    The first ``advance()`` runs the prompt (1 NFE) and commits the first token; every later
    one feeds the last token (1 NFE) and commits the next. It runs alone (``shares_forward``
    False): its KV cache holds this batch's keys and values. ``[MASK]`` and the checkpoint's
    other special tokens but EOS are never proposed (``never_proposed``).
    ``allowed`` (``AllowedTokens``): each step samples only among the tokens it names.
    ``penalties`` (``unmask.sampling.penalties``): each step's logits are penalised for the
    prompt (a start token given to an empty prompt not counted) and the tokens so far.
    ``generator``: one for the batch, or one per row (``RowGenerators``): row i then draws
    one uniform per token from ``generator[i]``, the draws of the row alone under that
    generator, so a batch of seeded rows writes what each row writes alone (a finished row
    draws no more: alone, its run has stopped).
    """

    def __init__(
        self,
        model: Any,
        prompt_ids: Sequence[Sequence[int]] | Sequence[int] | Tensor,
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_id: int | None,
        pad_id: int | None = None,
        start_id: int | None = None,
        mask_id: int | None = None,
        generator: torch.Generator | RowGenerators | None = None,
        step_callback: ARStepCallback | None = None,
        on_view: ViewCallback | None = None,
        allowed: AllowedTokens | None = None,
        penalties: Penalties | None = None,
        forbid_eos: bool = False,
    ) -> None:
        mcfg = getattr(model, "config", None)
        attention = getattr(mcfg, "attention", "causal")
        if attention != "causal":
            raise UserError(
                f"autoregressive decoding needs a causal model, not attention={attention!r}"
            )
        if not supports_kv_cache(model):
            raise UserError(
                "autoregressive decoding needs a model with a KV cache (unmask.model.Transformer)"
            )
        if max_new_tokens <= 0:
            raise UserError(f"max_new_tokens must be positive, got {max_new_tokens}")
        check_sampling(temperature, top_k, top_p)
        pad_id = pad_id if pad_id is not None else getattr(mcfg, "pad_id", eos_id)
        mask_id = mask_id if mask_id is not None else getattr(mcfg, "mask_id", None)
        rows = as_rows(prompt_ids)
        if mask_id is not None and any(mask_id in r for r in rows):
            raise UserError(
                "an autoregressive model cannot fill a [MASK] in the prompt; "
                "use a masked diffusion model (or infill)"
            )
        rows, started = start_empty_prompts(rows, eos_id=eos_id, start_id=start_id)
        if pad_id is None and len({len(r) for r in rows}) > 1:
            raise UserError("prompts of different lengths need a pad id")
        B, P = len(rows), max(len(r) for r in rows)
        per_row = generator is not None and not isinstance(generator, torch.Generator)
        if per_row and len(generator) != B:  # type: ignore[arg-type]
            raise ValueError(f"{len(generator)} generators for {B} rows")  # type: ignore[arg-type]
        max_seq_len = getattr(mcfg, "max_seq_len", None)
        if max_seq_len is not None and P + max_new_tokens > max_seq_len:
            raise UserError(
                f"prompt ({P} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                f"max_seq_len ({max_seq_len}); use at most {max(max_seq_len - P, 0)} new tokens "
                "or a shorter prompt"
            )
        device = model_device(model) or torch.device("cpu")
        prompt, real = left_pad(rows, P, pad_id if pad_id is not None else 0)
        check_token_ids(prompt, getattr(mcfg, "vocab_size", None))
        self.prompt, self.real = prompt.to(device), real.to(device)
        self.attn = None if bool(real.all()) else self.real  # (B, P), grows by one column per token

        from unmask.model import KVCache

        self.model, self.eos_id, self.gen_length = model, eos_id, max_new_tokens
        self.mask_id = mask_id if mask_id is not None else (pad_id or 0)
        # [MASK], the banned ids ([PAD], BOS, FIM markers, ...), EOS under forbid_eos
        self._forbid = never_proposed(mcfg, mask_id, eos_id if forbid_eos else None,
                                      eos_id=eos_id)  # fmt: skip
        self.temperature, self.top_k, self.top_p, self.generator = (
            temperature,
            top_k,
            top_p,
            generator,
        )
        self._per_row = per_row  # a finished row leaves its generator alone
        self.fill = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
        self.gen = torch.full((B, max_new_tokens), self.fill, dtype=torch.long, device=device)
        self.finished = torch.zeros(B, dtype=torch.bool, device=device)
        self.kv = KVCache()
        # a long prompt's logits but the last are never read (a chat's history: most of its
        # first forward's head); None: the model's own whole logits (and a compiled model's,
        # whose prompt call keeps the graphs it compiled)
        self._head = None if hasattr(model, "_orig_mod") else separate_head(model)
        self.step_callback, self.on_view = step_callback, on_view
        self.allowed = allowed
        self._counts = text_counts(penalties, self.prompt, self.real, started, mcfg)
        self.nfe = self.steps = 0
        self._logits: Tensor | None = None  # (B, V) predicting the next position
        self._stopped = False

    @property
    def done(self) -> bool:
        return self._stopped

    def advance(self) -> None:
        B, P, t = self.gen.shape[0], self.prompt.shape[1], self.steps
        with torch.no_grad():
            if self._logits is None and self._head is not None:  # the prompt, once: the head
                hid = self.model(self.prompt, attention_mask=self.attn, cache=self.kv, start=0,
                                 return_hidden=True)  # fmt: skip
                self._logits = self._head(hid[:, -1])  # (B, V): on the column that is read
            elif self._logits is None:  # the prompt, once: predicts position P
                self._logits = call_model(
                    self.model, self.prompt, self.attn, cache=self.kv, start=0
                )[:, -1]  # (B, V)
            else:
                if self.attn is not None:
                    one = torch.ones(B, 1, dtype=torch.bool, device=self.attn.device)
                    self.attn = torch.cat([self.attn, one], dim=1)  # (B, P + t)
                last = self.gen[:, t - 1 : t]  # (B, 1)
                self._logits = call_model(
                    self.model, last, self.attn, cache=self.kv, start=P + t - 1
                )[:, -1]  # (B, V)
            self.nfe += 1
            # the model's output is the run's own (read once, never kept): written in place
            logits = forbid_id(self._logits, self._forbid, inplace=True)
            if self.allowed is not None:
                ok = self.allowed(t, torch.cat([self.prompt, self.gen[:, :t]], dim=1))
                if ok is not None:  # (B, V) bool
                    logits = keep_allowed(logits, ok)
            # after the constraint: an n-gram ban never takes a position's last allowed token
            if self._counts is not None:
                logits = self._counts.penalise(logits, inplace=True)
            nxt = sample_token(
                logits,
                temperature=self.temperature,
                top_k=self.top_k,
                top_p=self.top_p,
                generator=self.generator,
                draws=~self.finished if self._per_row else None,
            )
        nxt = torch.where(self.finished, torch.full_like(nxt, self.fill), nxt)  # (B,)
        if self._counts is not None:
            self._counts.add(nxt[:, None], ~self.finished[:, None])
        self.gen[:, t] = nxt
        self.steps += 1
        self.finished |= rows_finished(nxt[:, None], self.eos_id)
        if self.stop is not None:  # a stop sequence ends it too (no work without)
            self.finished |= self.stopped_rows(~self.finished)
        if self.step_callback is not None:
            self.check_finite()  # not a canvas of garbage: NaN logits
            self.step_callback(
                self.steps, torch.cat([self.prompt, self.gen[:, : self.steps]], dim=1)
            )
        if self.steps == self.gen_length or bool(self.finished.all()):
            self._stopped = True
        self._report()

    def view(self) -> Tensor:
        return committed_view(self.gen, self.steps, self.mask_id)

    def result(self) -> GenerateResult:
        real = self.real if self.attn is not None else None
        tokens, region, attn = prompt_and_generation(self.prompt, self.gen, real)
        return GenerateResult(
            tokens=tokens,
            region=region,
            nfe=self.nfe,
            steps=self.steps,
            eos_id=self.eos_id,
            attention_mask=attn,
        )


def committed_view(gen: Tensor, n: int, mask_id: int) -> Tensor:
    """The (B, G) view of a left-to-right run (``ar``, ``speculative``, ``hybrid``): its first
    ``n`` generated tokens, ``mask_id`` where nothing is decided yet."""
    rest = torch.full_like(gen[:, n:], mask_id)
    return torch.cat([gen[:, :n], rest], dim=1)  # (B, G)


def prompt_and_generation(
    prompt: Tensor, gen: Tensor, real: Tensor | None
) -> tuple[Tensor, tuple[int, int], Tensor | None]:
    """A left-to-right run's result fields: ``tokens`` (B, P + G), the generation ``region``
    and, for left-padded prompts (``real`` (B, P), True = a real prompt token), the attention
    mask over the whole row (None without padding)."""
    attn = None
    if real is not None:
        attn = torch.cat([real, torch.ones_like(gen, dtype=torch.bool)], dim=1)  # (B, P + G)
    P = prompt.shape[1]
    return torch.cat([prompt, gen], dim=1), (P, P + gen.shape[1]), attn


def generate_ar(
    model: Any,
    prompt_ids: Sequence[Sequence[int]] | Sequence[int] | Tensor,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None,
    pad_id: int | None = None,
    start_id: int | None = None,
    generator: torch.Generator | RowGenerators | None = None,
    step_callback: ARStepCallback | None = None,
    penalties: Penalties | None = None,
) -> GenerateResult:
    """Decode up to ``max_new_tokens`` tokens after each prompt with a causal model and a KV cache.

    ``prompt_ids``: one prompt, a list of prompts (left-padded with ``pad_id``, default
    ``model.config.pad_id``, with an attention mask; RoPE is relative, so a padded row
    decodes as it would alone), or a 2-D tensor of equal-length prompts. An empty prompt
    starts from ``start_id`` (default ``eos_id``, the document separator of our training
    data). The prompt runs once (1 NFE); every further token is one forward of one
    position (1 NFE). ``penalties``: repetition penalties (``unmask.sampling.penalties``).
    ``generator``: one, or one per row (``RowGenerators``: each row as alone under its own).
    A row that emits ``eos_id`` (or whose text meets a stop sequence: ``DecoderRun.stop``)
    is finished: its later positions hold ``pad_id``; decoding stops when every row is
    finished. ``ARRun(...).run()``.

    Returns a ``GenerateResult`` with ``tokens`` (B, P + max_new_tokens), ``region`` =
    (P, P + max_new_tokens), ``nfe`` and ``steps`` = tokens decoded per row.
    """
    return ARRun(
        model,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=eos_id,
        pad_id=pad_id,
        start_id=start_id,
        generator=generator,
        step_callback=step_callback,
        penalties=penalties,
    ).run()


def check_causal(
    decoder: str, facts: ModelFacts, config: SampleConfig, needs: str = "a causal model"
) -> None:
    """What every decoder over a causal checkpoint's KV cache (``ar``, ``speculative``,
    ``hybrid``) refuses, in one ``UserError`` line each: a model that is not causal, one
    without a KV cache, classifier-free guidance, an unknown policy, confidence or cache name
    (the options it has no use for are its ``Decoder.unused``: ``CAUSAL_UNUSED``)."""
    if facts.attention != "causal":
        raise UserError(
            f"decoder {decoder!r} needs {needs}; this checkpoint is "
            f"{facts.attention}{facts.attention_way_out(decoder)}"
        )
    if not facts.has_kv_cache:
        raise UserError(
            f"decoder {decoder!r} needs a model with a KV cache (unmask.model.Transformer)"
        )
    if config.cfg_scale > 0:
        raise UserError(
            f"cfg_scale applies to diffusion models, not to decoder {decoder!r} (this checkpoint "
            "is autoregressive, causal)"
        )
    make_policy(config), scorer(config), check_cache_name(config.cache)  # an unknown name first


CAUSAL_UNUSED = ("steps", "block_length", *COMMIT_LOOP_OPTIONS)
"""What a decoder over a causal checkpoint's KV cache has no use for (``Decoder.unused``):
the masked-diffusion loop's options, ``steps`` and ``block_length`` too (unset at
``gen_length``: one step per token, one block, what a command fills in)."""

CAUSAL_WHY = "decodes token by token with a KV cache (it runs no masked-diffusion loop)"


@register_decoder("ar")
class ARDecoder(Decoder):
    """Autoregressive decoding with a KV cache (``ARRun``), for causal checkpoints."""

    penalties = True
    row_seeds = True
    summary = "autoregressive: token by token with a KV cache (temperature, top_k, top_p)"
    unused, unused_why = CAUSAL_UNUSED, CAUSAL_WHY

    def check(self, facts: ModelFacts, config: SampleConfig) -> None:
        check_causal("ar", facts, config)

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
        return ARRun(
            target.model,
            prompt_ids,
            max_new_tokens=config.gen_length,
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            eos_id=f.eos_id,
            pad_id=f.pad_id,
            mask_id=f.mask_id,
            start_id=f.start_id,
            generator=generator,
            on_view=on_view,
            penalties=Penalties.of(config),
            forbid_eos=config.forbid_eos,
        )
