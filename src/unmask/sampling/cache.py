"""KV-cache policies of the sampler loop: which positions each step recomputes.

The model only offers the mechanism (``unmask.model.KVCache`` and
``forward(tokens, cache=kv, start=s)``); the policies of when to refresh live here.

Inside:

- ``CachePolicy``: the protocol (``start_block``, ``logits``).
- ``NoCache`` (``"none"``): the whole canvas every step (LLaDA).
- ``PrefixCache`` (``"prefix"``): Fast-dLLM's prefix cache (Wu et al. 2025,
  arXiv:2505.22618, Sec. 3.2): K/V of everything before the current block are computed
  once when the block starts and reused; each step recomputes the block and the suffix.
- ``DualCache`` (``"dual"``): Fast-dLLM's DualCache: the suffix after the block is reused
  too, so each step recomputes only the current block.
- ``CACHES`` / ``register_cache`` / ``make_cache`` / ``supports_kv_cache``: the registry;
  ``block_size_of``: a block-causal model's attention block, where a window starts.
- ``call_model``, ``shift_logits``: one model call, Dream's logit shift.

For bidirectional attention the reused K/V are stale (they were computed when the block
started, before its tokens were committed), so the cached logits approximate the uncached
ones; for causal attention, and for block-causal attention whose blocks coincide with the
sampler's blocks, nothing cached can see the positions that change, and the caches are
exact. docs/sampling.md has the table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from unmask.config import SampleConfig
from unmask.errors import UserError


def shift_logits(logits: Tensor) -> Tensor:
    """Dream's logit shift: position i uses the logits the model produced at i - 1.

    ``logits[:, 1:] = logits[:, :-1]``; position 0 keeps its own.
    """
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def call_model(
    model: Any, tokens: Tensor, attention_mask: Tensor | None, *, cache: Any = None, start: int = 0,
    return_hidden: bool = False,
) -> Tensor:
    """logits (B, L, V) of ``model(tokens (B, L), attention_mask=...)``; accepts an object with
    ``.logits`` (Hugging Face). ``cache``/``start`` are passed only when a cache is given,
    ``return_hidden`` only when True (the final hidden states (B, L, D) instead, for a model
    whose head ``unmask.sampling.ar.separate_head`` returns)."""
    extra: dict[str, Any] = {"return_hidden": True} if return_hidden else {}
    if cache is None:
        out = model(tokens, attention_mask=attention_mask, **extra)
    else:
        out = model(tokens, attention_mask=attention_mask, cache=cache, start=start, **extra)
    logits = getattr(out, "logits", out)
    if not isinstance(logits, Tensor) or logits.dim() != 3 or logits.shape[:2] != tokens.shape:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise UserError(
            f"the model returned {got}; expected logits of shape (B, L, V) for tokens "
            f"{tuple(tokens.shape)}"
        )
    return logits  # (B, L, V)


MIN_HEAD_ROWS = 32
"""The fewest rows (batch rows × columns) the head runs on when it runs on a window: below
about 16, a CPU matmul (MKL, float32) takes another kernel whose rows differ from the whole
canvas' in the last bit; from this many on they are the same bits (``widened``)."""


def widened(window: tuple[int, int], rows: int) -> tuple[int, int] | None:
    """``window`` ``[lo, hi)`` moved left to at least ``MIN_HEAD_ROWS / rows`` columns, so
    that ``rows`` batch rows give the head at least ``MIN_HEAD_ROWS`` rows (see there); extra
    columns on the left are computed, not read. None when column 0 comes first (a canvas
    that short runs the head on every column: whole logits)."""
    lo, hi = window
    need = -(-MIN_HEAD_ROWS // max(rows, 1))
    return None if hi < need else (min(lo, hi - need), hi)


def exact_head(head: Any) -> bool:
    """Whether running ``head`` on a window gives the bits of its whole-canvas rows: a
    float32/float64 weight on the CPU, checked there (``tests/test_narrow_head.py``). Low
    precision on the CPU is not (bfloat16 at d_model 4096 differed up to 200 rows), and on
    a GPU the library may pick another kernel for another row count: whole logits there."""
    weight = getattr(head, "weight", None)
    return (isinstance(weight, Tensor) and weight.device.type == "cpu"
            and weight.dtype in (torch.float32, torch.float64))


def head_window(
    hidden: Tensor,
    head: Any,
    window: tuple[int, int],
    *,
    shift: bool,
    offset: int = 0,
    out: Tensor | None = None,
) -> Tensor:
    """Logits (B, L, V) whose columns ``[lo, hi)`` = ``window`` are ``head`` of the hidden
    states (after Dream's shift when ``shift``): the head runs on those columns alone.

    ``hidden`` (B, W, D) holds the canvas columns ``[offset, offset + W)`` and must cover the
    columns the window reads (``lo - 1`` on with a shift, ``lo`` on without). The other
    columns are those of ``out`` (default a new (B, L, V) of zeros, ``L = offset + W``), which
    is filled in place: no step reads them (the loop checks that, ``Denoiser``), so a caller
    may pass the buffer of its previous step (``reusable``), whatever the step did to it, and
    save a (B, L, V) allocation per step."""
    lo, hi = window
    B, W, _ = hidden.shape
    src = torch.arange(lo, hi, device=hidden.device)
    if shift:
        src = (src - 1).clamp(min=0)  # position 0 keeps its own logits (``shift_logits``)
    part = head(hidden.index_select(1, src - offset))  # (B, hi - lo, V)
    if out is None:
        out = part.new_zeros(B, offset + W, part.shape[-1])
    out[:, lo:hi] = part
    return out  # (B, L, V)


def reusable(buf: Tensor | None, hidden: Tensor, head: Any) -> Tensor | None:
    """``buf`` when it can hold the logits of the whole-canvas ``hidden`` (B, L, D) again:
    the same (B, L, V), dtype and device as the ``head``'s output (else None: a new one)."""
    weight = getattr(head, "weight", None)
    if buf is None or not isinstance(weight, Tensor):
        return None
    same = buf.shape == (*hidden.shape[:2], weight.shape[0]) and buf.device == hidden.device
    return buf if same and buf.dtype == torch.result_type(hidden, weight) else None


def supports_kv_cache(model: Any) -> bool:
    """Whether ``model`` has the ``forward(tokens, attention_mask, *, cache, start)`` interface
    (``unmask.model.Transformer`` declares it with ``supports_kv_cache = True``)."""
    return bool(getattr(model, "supports_kv_cache", False))


class CachePolicy:
    """Computes the (B, L, V) logits of a step, reusing what it may.

    The loop calls ``start_block`` when a block begins and ``logits`` at every step that
    runs the model. Positions a policy does not recompute keep stale logits (those of the
    block's first call); they are never candidates of the step.
    """

    needs_kv: bool = False
    """Whether the model must support the KV-cache interface (``supports_kv_cache``)."""
    narrow_head: bool = False
    """Whether ``logits`` takes ``head`` and ``window``: the model's output head given
    separately (``unmask.sampling.ar.separate_head``, the model then returns hidden states)
    and the columns ``[lo, hi)`` the step reads, the only ones the head runs on (the others
    are left as zeros or stale; see ``head_window``)."""

    def start_block(self, masked: Tensor, block_start: int, block_end: int) -> None:
        """A block begins; ``masked`` (B, L) bool = positions still to fill on the canvas."""

    def logits(
        self, model: Any, tokens: Tensor, attention_mask: Tensor | None, *, shift: bool
    ) -> Tensor:
        raise NotImplementedError


class NoCache(CachePolicy):
    """The whole canvas, every step: LLaDA's loop (and the only choice for plain callables)."""

    narrow_head = True

    def __init__(self) -> None:
        self.buf: Tensor | None = None  # (B, L, V) logits of the previous narrow-head step

    def logits(
        self, model: Any, tokens: Tensor, attention_mask: Tensor | None, *, shift: bool,
        head: Any = None, window: tuple[int, int] | None = None,
    ) -> Tensor:
        if head is not None and window is not None:
            hidden = call_model(model, tokens, attention_mask, return_hidden=True)  # (B, L, D)
            out = reusable(self.buf, hidden, head)
            self.buf = head_window(hidden, head, window, shift=shift, out=out)
            return self.buf
        logits = call_model(model, tokens, attention_mask)  # (B, L, V)
        return shift_logits(logits) if shift else logits


class WindowCache(CachePolicy):
    """Full forward (storing K/V of all positions) at the first call of a block; later calls
    recompute only the window ``[lo, hi)`` and attend to the cached K/V elsewhere.

    ``lo`` is the block start, or the first still-masked column before it (a mask inside
    the prompt) in any row, fixed when the block starts, moved down to the start of its
    attention block on a block-causal model (``block``); ``hi`` is chosen by the subclass.
    The window is the batch's: a row without prompt masks recomputes from the ``lo`` another
    row needs, so with bidirectional attention its tokens may differ from the row alone
    (docs/sampling.md, Library; a row holding such a mask therefore runs a run of its own
    beside the others' one, seeded or greedy: ``unmask.sampling.loop.rows_apart``). The
    recomputed K/V overwrite the cached ones; those outside the window stay as they were at
    the block's first call.
    """

    needs_kv = True
    narrow_head = True

    def __init__(self) -> None:
        self.kv: Any = None
        self.buf: Tensor | None = None  # (B, L, V) logits of the current block
        self.lo = self.hi = 0
        self._carried: int | None = None  # the first column the next call recomputes (carry)
        self.reserve = 0  # the K/V slots a new cache allocates (``KVCache.reserve``)
        self.block: int | None = None  # the model's attention block, block-causal (make_cache)

    def window_end(self, block_end: int, length: int) -> int:
        raise NotImplementedError

    def start_block(self, masked: Tensor, block_start: int, block_end: int) -> None:
        self.kv, self._carried = None, None  # refresh at the block's first model call
        earlier = masked[:, :block_start].any(dim=0).nonzero()
        self.lo = int(earlier[0]) if len(earlier) else block_start
        if self.block:  # recompute from the start of the attention block (counted from
            # column 0) that holds the window's first column: under block-causal attention
            # the columns before a [MASK] in its block see it, so their K/V change when it is
            # filled (a no-op where the window starts on a block's first column)
            self.lo = self.lo // self.block * self.block
        self.hi = self.window_end(block_end, masked.shape[1])

    def carry(self, kv: Any, valid: int) -> None:
        """Start the current block from ``kv``, the K/V of an earlier canvas that this one
        extends, whose first ``valid`` columns hold the K/V of the tokens this canvas holds
        there and can see nothing after them (block-causal attention whose blocks are the
        sampler's, or causal attention: ``unmask.sampling.blocks.BlockRun``, where the block
        is the canvas's last columns): the block's first call recomputes from ``valid`` (or
        the window) on, not the whole canvas. Exact only there; nothing else calls it."""
        self.kv, self._carried = kv, valid

    @property
    def settled(self) -> int:
        """The columns ``[0, settled)`` whose cached K/V are those of tokens no later step of
        the block changes: those before the window (a block's last call runs before its last
        commit, so the window's are stale); a carried cache's own before the block's first
        call, else 0 then."""
        if self.kv is None:
            return 0
        return self.lo if self._carried is None else self._carried

    def logits(
        self, model: Any, tokens: Tensor, attention_mask: Tensor | None, *, shift: bool,
        head: Any = None, window: tuple[int, int] | None = None,
    ) -> Tensor:
        from unmask.model import KVCache

        narrow = head is not None and window is not None
        if self.kv is None:
            self.kv = KVCache(reserve=self.reserve)
            out = call_model(model, tokens, attention_mask, cache=self.kv, start=0,
                             return_hidden=narrow)  # (B, L, V|D)
            if narrow:  # the previous block's buffer serves again (``head_window``)
                buf = reusable(self.buf, out, head)
                self.buf = head_window(out, head, window, shift=shift, out=buf)
            else:
                self.buf = shift_logits(out) if shift else out
            return self.buf
        # With a logit shift position lo needs the logits of lo - 1: run one more position.
        q0 = max(self.lo - 1, 0) if shift else self.lo
        carried, self._carried = self._carried, None
        if carried is not None:  # a carried cache: its stale columns too, a new buffer
            assert self.hi == tokens.shape[1], "a carried cache serves a block at the end"
            q0, self.buf = min(q0, carried), None
        part = call_model(
            model, tokens[:, q0 : self.hi], attention_mask, cache=self.kv, start=q0,
            return_hidden=narrow,
        )  # (B, W, V|D)
        if narrow:  # the read columns lie in [lo, hi): masks only ever get filled
            assert window is not None
            lo = max(window[0], self.lo)  # the widening stops at the recomputed columns
            if part.shape[0] * (window[1] - lo) >= MIN_HEAD_ROWS:
                self.buf = head_window(part, head, (lo, window[1]), shift=shift, offset=q0,
                                       out=self.buf)
                return self.buf
            part = head(part)  # too few rows for the same bits: the head on all of them
        part = (shift_logits(part) if shift else part)[:, self.lo - q0 :]
        if self.buf is None:  # (B, L, V): the columns before lo are never read
            self.buf = part.new_zeros(part.shape[0], tokens.shape[1], part.shape[2])
        # Outside [lo, hi) the block's first logits stay: no candidate lies there (lo is at
        # or before the first masked column: the start of its attention block, hi >= the
        # block end), and one buffer per block saves a
        # (B, L, V) allocation per step.
        self.buf[:, self.lo : self.hi] = part
        return self.buf


class PrefixCache(WindowCache):
    """Fast-dLLM prefix cache (arXiv:2505.22618): reuse K/V of the prompt and the finished
    blocks; recompute the current block and everything after it."""

    def window_end(self, block_end: int, length: int) -> int:
        return length


class DualCache(WindowCache):
    """Fast-dLLM DualCache (arXiv:2505.22618): reuse K/V of the prefix and of the (masked)
    suffix after the block; recompute only the current block."""

    def window_end(self, block_end: int, length: int) -> int:
        return block_end


CacheFactory = Callable[[], CachePolicy]
CACHES: dict[str, CacheFactory] = {"none": NoCache, "prefix": PrefixCache, "dual": DualCache}


def register_cache(name: str) -> Callable[[CacheFactory], CacheFactory]:
    """Decorator: register a ``() -> CachePolicy`` factory under ``name``
    (``SampleConfig.cache``)."""

    def deco(factory: CacheFactory) -> CacheFactory:
        CACHES[name] = factory
        return factory

    return deco


def check_cache_name(name: str) -> None:
    if name not in CACHES:
        raise UserError(f"unknown cache {name!r}; choose one of {', '.join(sorted(CACHES))}")


def block_size_of(model: Any) -> int | None:
    """``model.config.block_size`` of a ``block-causal`` model, else None."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "attention", None) == "block-causal":
        return getattr(cfg, "block_size", None)
    return None


def make_cache(config: SampleConfig, model: Any) -> CachePolicy:
    """A fresh cache policy for one sampling run; ``UserError`` if ``model`` cannot run it."""
    check_cache_name(config.cache)
    policy = CACHES[config.cache]()
    if isinstance(policy, WindowCache):  # the window starts on an attention block's start
        policy.block = block_size_of(model)
    if policy.needs_kv and not supports_kv_cache(model):
        valid = sorted(n for n, f in CACHES.items() if not f().needs_kv)
        raise UserError(
            f"cache {config.cache!r} needs a model with a KV cache (unmask.model.Transformer); "
            f"this model supports: {', '.join(valid)}"
        )
    return policy
