"""The server's settings given at launch, checked without torch or FastAPI: ``ServerLimits``
(what one request may ask for, how the queue behaves), ``LimitError`` (a limit refused,
naming its field), ``MAX_SLOW_CHECKS`` and ``check_api_key``. ``unmask serve`` checks its
flags against them before torch loads (``commands.serve.check_flags``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from unmask.config import InfillOptions
from unmask.errors import UserError
from unmask.messages import finite, shown_number

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


def check_api_key(key: str) -> None:
    """A ``UserError`` (one line) for an API key no client could send: empty, or not
    printable ASCII, or with spaces at its ends (a header value is ASCII in practice, read
    as latin-1, and its ends are trimmed), so every request would be refused with a 401."""
    if not key.strip():
        raise UserError("the API key is blank: give a key (--api-key or UNMASK_API_KEY), or "
                        "none for no authentication")
    if not key.isascii() or not key.isprintable() or key != key.strip():
        raise UserError("the API key must be printable ASCII with no space at either end (an "
                        "HTTP header carries it): choose another key")
