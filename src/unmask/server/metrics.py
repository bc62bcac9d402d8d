"""Prometheus metrics of the server, in the text exposition format (hand-written, no dependency).

Inside: ``Metrics`` (counters, gauges and a latency histogram behind one lock) and
``LATENCY_BUCKETS``. ``Metrics.render()`` returns the text that ``GET /metrics`` serves
(format 0.0.4: https://prometheus.io/docs/instrumenting/exposition_formats/).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Upper bounds (seconds) of the request latency histogram; ``+Inf`` is added."""

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


class Metrics:
    """Thread-safe counters, gauges and a latency histogram for ``/metrics``.

    Counters: ``COUNTERS`` (requests by endpoint and status, tokens, forward passes and
    their rows, joins, 429s, timeouts, cancellations). Gauges come from callables given at
    construction or ``add_gauge`` (the app adds ``queue_depth``, ``in_flight``,
    ``active_rows``), read at render time.
    """

    COUNTERS = {
        "requests": "HTTP requests answered, by endpoint and status code.",
        "prompt_tokens": "Prompt tokens of finished generation requests.",
        "completion_tokens": "Tokens generated (through the EOS or stop sequence that ended them).",
        "nfe": "Model evaluations (forward passes) run by the worker; a step shared by many "
               "requests counts once; a request cancelled part way counts those it ran.",
        "forward_rows": "Canvas rows in the forward passes of batched generation (completions "
                        "and chat without structured output; the rest add nfe, not rows).",
        "joined": "Generation requests that joined a running batch at a step boundary.",
        "rejected": "Requests refused with 429 because a queue was full (the model's, or a "
                    "slow check's: regex searches, structured-output compiles).",
        "timeouts": "Requests that ran past the per-request timeout.",
        "cancelled": "Requests whose client went away or timed out before they finished.",
    }

    def __init__(self, gauges: dict[str, tuple[str, Callable[[], float]]] | None = None) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = {name: {} for name in self.COUNTERS}
        self._gauges = dict(gauges or {})
        self._hist: dict[Labels, list[float]] = {}  # labels -> bucket counts (+Inf last)
        self._hist_sum: dict[Labels, float] = {}

    def add_gauge(self, name: str, help_: str, read: Callable[[], float]) -> None:
        """Register a gauge read at render time."""
        self._gauges[name] = (help_, read)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` to counter ``name`` (one of ``COUNTERS``) with ``labels``."""
        key: Labels = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + value

    def get(self, name: str, **labels: str) -> float:
        """Current value of a counter series (0 if never incremented)."""
        key: Labels = tuple(sorted(labels.items()))
        with self._lock:
            return self._counters[name].get(key, 0.0)

    def observe_latency(self, seconds: float, *, endpoint: str) -> None:
        """Record one request latency in the histogram."""
        key: Labels = (("endpoint", endpoint),)
        with self._lock:
            counts = self._hist.setdefault(key, [0.0] * (len(LATENCY_BUCKETS) + 1))
            for i, le in enumerate(LATENCY_BUCKETS):
                if seconds <= le:
                    counts[i] += 1
            counts[-1] += 1
            self._hist_sum[key] = self._hist_sum.get(key, 0.0) + seconds

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        out: list[str] = []
        with self._lock:
            for name, help_ in self.COUNTERS.items():
                full = f"unmask_{name}_total"
                out += [f"# HELP {full} {help_}", f"# TYPE {full} counter"]
                series = self._counters[name] or {(): 0.0}
                for labels, v in sorted(series.items()):
                    out.append(f"{full}{_fmt_labels(labels)} {_num(v)}")
            full = "unmask_request_latency_seconds"
            out += [f"# HELP {full} Wall time from request to last byte, by endpoint.",
                    f"# TYPE {full} histogram"]
            for labels, counts in sorted(self._hist.items()):
                for le, c in zip((*LATENCY_BUCKETS, None), counts, strict=True):
                    bound = "+Inf" if le is None else _num(le)
                    out.append(f"{full}_bucket{_fmt_labels((*labels, ('le', bound)))} {_num(c)}")
                out.append(f"{full}_sum{_fmt_labels(labels)} {_num(self._hist_sum[labels])}")
                out.append(f"{full}_count{_fmt_labels(labels)} {_num(counts[-1])}")
        for name, (help_, read) in sorted(self._gauges.items()):
            full = f"unmask_{name}"
            out += [f"# HELP {full} {help_}", f"# TYPE {full} gauge", f"{full} {_num(read())}"]
        return "\n".join(out) + "\n"
