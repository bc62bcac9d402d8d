"""What every route needs: the served model, the server's limits, the engine and metrics.

Inside: ``ServerLimits`` (what one request may ask for, how the queue behaves) and
``ServerState`` (one per app, built by ``create_app`` and passed to every router).
"""

from __future__ import annotations

import dataclasses
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
from unmask.config import InfillOptions
from unmask.errors import UserError
from unmask.messages import finite, shown_number
from unmask.server.batching import Engine
from unmask.server.metrics import Metrics

MAX_SLOW_CHECKS = 1024
"""Most ``ServerLimits.max_slow_checks``: each check runs on a thread of its own, and a count
past any machine's cores only grows the threads, one per check under way."""


class LimitError(UserError):
    """A ``ServerLimits`` field refused: which one (``field``), its value and the ``rule`` it
    breaks (``must be ...``; ``{other}`` in it stands for the field ``other`` it is held
    against), so that ``unmask serve`` names the flags the user typed (``naming``)."""

    def __init__(self, field: str, value: Any, rule: str, *, other: str | None = None) -> None:
        self.field, self.value, self.rule, self.other = field, value, rule, other
        super().__init__(f"server limit {field}={shown_number(value)} {self.naming(str)}")

    def naming(self, name: Callable[[str], str]) -> str:
        """The rule, with the field it is held against called ``name(other)``."""
        return self.rule if self.other is None else self.rule.replace("{other}",
                                                                      name(self.other))


@dataclass(kw_only=True)
class ServerLimits:
    """What one request may ask for, and how the queue behaves."""

    max_batch: int = 8
    """Most rows (prompts × n) in the running batch and in any forward pass: a single larger
    request runs in slices of this many rows (``Engine._split``)."""
    max_queue: int = 64
    """Most requests waiting for the worker; beyond that, 429."""
    batch_wait_s: float = 0.0
    """How long the idle worker waits for company before starting a batch, at most: it starts
    once ``max_batch`` rows wait. 0 (greedy): a lone request starts at once; requests
    arriving later join it at the next step. A request that queued while the worker ran
    others starts as soon as it is free (it has waited already). Less than
    ``request_timeout_s``."""
    request_timeout_s: float = 300.0
    """Wall-time limit per request (queueing included); then 504 and the work is cancelled."""
    keepalive_s: float = 15.0
    """A stream that has sent nothing for this long sends an SSE comment (``: keep-alive``,
    which SSE and OpenAI clients ignore), so that a proxy or client with a read timeout does
    not cut a generation whose text is not final yet. 0: never."""
    max_n: int = 8
    """Most choices per prompt."""
    max_prompts: int = 16
    """Most prompts in one completions request."""
    max_steps: int = 1024
    """Most denoising steps per request."""
    max_prompt_chars: int = 65536
    """Longest prompt, template, form or text, in characters (tokens are bounded by the
    context)."""
    max_body_bytes: int = 1 << 20
    """Largest request body; beyond that, 413."""
    max_search_calls: int = InfillOptions.max_search_calls
    """Most model calls the length search of one ``/v1/infill`` template may make
    (``InfillOptions.max_search_calls``, whose default this is; 0: no limit); a template
    that needs more is a 400 before any model work."""
    allow_regex: bool = True
    """Accept ``regex`` in ``/v1/edit`` and ``/v1/infill`` (a pattern runs or compiles on the
    worker: a pathological one can occupy it; turn off for untrusted clients)."""
    max_slow_checks: int = 2
    """Most requests checked at once, of each kind, whose checks may take seconds, each on a
    thread of its own (``plumbing.slow_check``): ``/v1/edit`` regex searches (a child process
    for up to ``REGEX_SECONDS``: ``ServerState.searches``) and, apart from them, structured
    answers' compiles (``response_format`` and ``guided_*`` of completions, chat and
    ``/v1/infill``, a ``/v1/forms`` schema: ``ServerState.compiles``), so neither kind waits
    for the other. Up to ``max_queue`` more of a kind wait for one; beyond that, 429. At most
    ``MAX_SLOW_CHECKS``."""

    def __post_init__(self) -> None:
        from unmask.config import check_field_types

        check_field_types(self)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool):
                continue
            # a timeout of -1 answered every request 504, max_n 0 refused every one
            at_least_0 = f.name in ("batch_wait_s", "max_search_calls", "keepalive_s")  # 0: none
            # finite: an int too long for math.isfinite was an OverflowError traceback
            if at_least_0 and not (finite(v) and v >= 0):
                raise LimitError(f.name, v, "must be at least 0")
            if not at_least_0 and not (finite(v) and v > 0):
                raise LimitError(f.name, v, "must be positive")
        if self.batch_wait_s >= self.request_timeout_s:  # (a huge one killed the worker: an
            # OverflowError at the first request, and every request after it a 503)
            raise LimitError("batch_wait_s", self.batch_wait_s, "must be less than {other} ("
                             f"{shown_number(self.request_timeout_s)} s: a lone request would "
                             "wait it out)", other="request_timeout_s")
        if self.max_slow_checks > MAX_SLOW_CHECKS:  # threads of their own: never unbounded
            raise LimitError("max_slow_checks", self.max_slow_checks,
                             f"must be at most {MAX_SLOW_CHECKS} (threads of each kind)")


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
