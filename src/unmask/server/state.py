"""What every route needs: the served model, the server's limits, the engine and metrics.

Inside: ``ServerState`` (one per app, built by ``create_app`` and passed to every router),
``SlowChecks``, ``FormMemo``, ``model_name``; and, from ``limits``, ``ServerLimits`` (what one
request may ask for, how the queue behaves).
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unmask.chat import ChatTemplate
from unmask.checkpoint import Loaded
from unmask.server.batching import Engine
from unmask.server.limits import MAX_SLOW_CHECKS, LimitError, ServerLimits
from unmask.server.metrics import Metrics


class SlowChecks:
    """One kind of slow check (``plumbing.slow_check``): its threads, apart from asyncio's
    default ones that every other request's checks use, and how many are running or waiting
    for one (``pending``, under ``lock``)."""

    def __init__(self, what: str, threads: int) -> None:
        self.what = what
        """The kind, as a 429 names it (``regex searches``)."""
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="unmask-slow-check")
        self.pending = 0
        self.lock = threading.Lock()

    @property
    def busy(self) -> bool:
        """Whether a check is running or waiting for a thread (``pending``)."""
        with self.lock:
            return self.pending > 0


class FormMemo:
    """The structured answers' forms compiled so far (``routes.guided.build_form``), by their
    constraint, the least recently used dropped past ``size``: a request whose form is here
    compiles nothing (its automata are cached), so it needs no slow check. Thread-safe.
    An entry holds the form's text and parse (measured about 0.5 MB for a large schema), so
    ``size`` 64 keeps at most some 32 MB."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._forms: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        """The form kept under ``key``, or None."""
        with self._lock:
            if key not in self._forms:
                return None
            self._forms.move_to_end(key)
            return self._forms[key]

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._forms[key] = value
            self._forms.move_to_end(key)
            while len(self._forms) > self.size:
                self._forms.popitem(last=False)


def model_name(loaded: Loaded) -> str:
    """The id a checkpoint is served under: its run directory's name."""
    path = Path(loaded.path)
    name = path.parent.name if path.name in ("checkpoint", ".checkpoint.old") else path.name
    return name or "unmask"


@dataclass(eq=False, kw_only=True)
class ServerState:
    """One served model and everything a request handler reads."""

    loaded: Loaded
    name: str
    """The model id clients pass as ``model``."""
    limits: ServerLimits
    metrics: Metrics
    engine: Engine
    chat: ChatTemplate | None
    """The chat template with the model's BOS/EOS text; None = chat is refused."""
    api_key: bytes | None = None
    draft: Loaded | None = None
    """The diffusion checkpoint that drafts for the served causal one (``--draft``), or None."""
    decode_one: Callable[[int], str] = field(init=False, repr=False)
    """One token's text (cached: streamed steps decode every position)."""
    chat_ends: frozenset[int] = field(init=False, repr=False)
    """Tokens that end a chat reply: EOS and the chat template's end-of-turn tokens
    (``ChatTemplate.reply``), found once, not per request."""
    searches: SlowChecks = field(init=False, repr=False)
    """The threads ``/v1/edit`` regex searches run on (``plumbing.slow_check``)."""
    compiles: SlowChecks = field(init=False, repr=False)
    """The threads structured answers compile on (``plumbing.slow_check``): apart from the
    regex searches, so that one client's slow searches neither delay nor refuse (429) every
    structured answer, nor its compiles the searches."""
    forms: FormMemo = field(init=False, repr=False)
    """The structured answers' forms already compiled (``routes.guided.build_form``)."""

    @property
    def checking(self) -> bool:
        """Whether a slow check (``searches``, ``compiles``) is running: once the server has
        stopped, one whose client left (it ends on its own, up to tens of seconds later)."""
        return self.searches.busy or self.compiles.busy

    def __post_init__(self) -> None:
        tok = self.loaded.tokenizer
        self.decode_one = functools.lru_cache(maxsize=65536)(lambda i: tok.decode([i]))
        eos = getattr(self.loaded.config, "eos_id", None)
        no_chat = frozenset({eos} - {None})
        self.chat_ends = self.chat.ends(tok, eos) if self.chat is not None else no_chat
        self.searches = SlowChecks("regex searches", self.limits.max_slow_checks)
        self.compiles = SlowChecks("structured-output compiles", self.limits.max_slow_checks)
        self.forms = FormMemo()

    @property
    def tok(self) -> Any:
        return self.loaded.tokenizer

    @property
    def cfg(self) -> Any:
        return self.loaded.config

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def causal(self) -> bool:
        """Whether the checkpoint is autoregressive (decoded token by token)."""
        return getattr(self.cfg, "attention", None) == "causal"

    @functools.cached_property
    def max_seq_len(self) -> int:
        """The longest canvas the model takes (``ModelFacts.max_seq_len``: a latent-diffusion
        model's text rows, not the latent slots after them)."""
        from unmask import api

        return int(api.facts_of(self.loaded).max_seq_len or 1 << 30)

    @functools.cached_property
    def fixed_canvas(self) -> bool:
        """Whether the checkpoint's decoder writes one fixed canvas (continuous diffusion), so
        that it cannot continue in segments (``segment_length``)."""
        from unmask import api
        from unmask.sampling.continuous import CONTINUOUS_DECODERS

        return api.facts_of(self.loaded).default_decoder in CONTINUOUS_DECODERS

    @functools.cached_property
    def context(self) -> tuple[int, str]:
        """The longest canvas (prompt + max_tokens) a generation may use, and whose limit it
        is: the model's ``max_seq_len``, or with ``--draft`` the drafter's where that is
        shorter ("model" or "drafter"; ``unmask.api.context_limit``); found once."""
        from unmask import api

        limit, who = api.context_limit(self.loaded, self.draft)
        return int(limit or 1 << 30), who


__all__ = ["MAX_SLOW_CHECKS", "FormMemo", "LimitError", "ServerLimits", "ServerState",
           "SlowChecks", "model_name"]
