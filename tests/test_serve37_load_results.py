"""benchmarks/serve_load.py writes its results whole or not at all: a run interrupted while
writing them (Ctrl-C, a full disk) left a half-written JSON in place of the last results."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("httpx")


def test_results_interrupted_while_written_leave_the_last_ones(benchmark, monkeypatch,
                                                                tmp_path):
    serve_load = benchmark("serve_load")

    class Proc:
        pid = 0

    async def load(base, clients, *args):
        return {"clients": clients, "requests": 1, "errors": 0, "error_samples": [],
                "seconds": 1.0, "requests_per_s": 1.0, "tokens_per_s": 8.0, "p50_s": 0.1,
                "p95_s": 0.1, "mean_s": 0.1, "forwards": 8, "rows_per_forward": 1.0}

    monkeypatch.setattr(serve_load, "start_server", lambda *a: Proc())
    monkeypatch.setattr(serve_load, "stop_server", lambda proc: None)
    monkeypatch.setattr(serve_load, "warm_up", lambda *a: None)
    monkeypatch.setattr(serve_load, "load", load)
    monkeypatch.setattr(serve_load, "rss_mb", lambda pid: 1.0)
    out = tmp_path / "serve_load.json"
    argv = ["serve_load.py", "--quick", "--model", str(tmp_path), "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    assert serve_load.main() == 0
    written = json.loads(out.read_text())
    assert [r["clients"] for r in written["runs"]["batched"]] == [1, 4]

    import os

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C as the file is being written

    monkeypatch.setattr(os, "fsync", interrupted)
    monkeypatch.setattr(serve_load, "load", lambda *a: load(a[0], 2))
    with pytest.raises(KeyboardInterrupt):
        serve_load.main()
    assert json.loads(out.read_text()) == written  # the last results, whole
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left
