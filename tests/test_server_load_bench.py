"""benchmarks/serve_load.py: options the server refuses are one line, not a traceback."""

from __future__ import annotations

import pytest

pytest.importorskip("httpx")

import httpx  # noqa: E402

from unmask.errors import UserError  # noqa: E402


def test_a_warm_up_the_server_refuses_is_one_line(benchmark, monkeypatch):
    serve_load = benchmark("serve_load")
    refusal = {"error": {"message": "prompt (3 tokens) + max_tokens (999) exceeds the model's "
                                    "context of 256 tokens", "type": "invalid_request_error",
                         "param": "max_tokens", "code": "context_length_exceeded"}}
    sent = []

    def post(url: str, json: dict, timeout: float) -> httpx.Response:
        sent.append(json)
        ok = json["max_tokens"] <= 32
        return httpx.Response(200 if ok else 400, json={} if ok else refusal,
                              request=httpx.Request("POST", url))

    monkeypatch.setattr(serve_load.httpx, "post", post)
    serve_load.warm_up("http://server", [8, 8, 16], None)  # each length once
    assert [b["max_tokens"] for b in sent] == [8, 16]
    with pytest.raises(UserError, match=r"max_tokens 999, steps 999: prompt \(3 tokens\)"):
        serve_load.warm_up("http://server", [8, 999], None)
    assert serve_load.error_message(httpx.Response(502, text="Bad Gateway")) == "HTTP 502"


def test_seeded_sampled_load_sends_a_seed_of_its_own_per_request(benchmark, monkeypatch):
    """``--temperature T --seeded``: every request (warm-up included) samples at T with a seed
    of its own (request k: seed k), so seeded requests can be measured; without them the
    body is as before (the checkpoint's temperature, no seed)."""
    serve_load = benchmark("serve_load")
    assert serve_load.request_body(5, 8, None, {}) == {
        "prompt": serve_load.PROMPTS[1], "max_tokens": 8, "steps": 8}
    sampled = serve_load.request_body(5, 8, 4, {"temperature": 0.8, "seeded": True})
    assert sampled == {"prompt": serve_load.PROMPTS[1], "max_tokens": 8, "steps": 4,
                       "temperature": 0.8, "seed": 5}
    sent = []

    def post(url: str, json: dict, timeout: float) -> httpx.Response:
        sent.append(json)
        return httpx.Response(200, json={}, request=httpx.Request("POST", url))

    monkeypatch.setattr(serve_load.httpx, "post", post)
    serve_load.warm_up("http://server", [8], None, {"temperature": 0.5, "seeded": True})
    assert sent == [{"prompt": serve_load.PROMPTS[0], "max_tokens": 8, "steps": 8,
                     "temperature": 0.5, "seed": 0}]


FAKE_SERVER = """\
import http.server, sys

class Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")
        self.wfile.flush()
        sys.stderr.write("a logged line of a server under load\\n" * 3000)  # ~110 KB
        sys.stderr.flush()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Healthz).serve_forever()
"""


def test_a_server_that_logs_a_lot_does_not_hang_the_load(benchmark, monkeypatch, tmp_path,
                                                         free_port):
    """The servers' stderr was a pipe nobody read while the load ran: a server that logged
    (a failing model logs a line per request) blocked on it past 64 KiB, and the benchmark
    hung. It goes to a file, read when a server exits early."""
    import subprocess
    import sys

    serve_load = benchmark("serve_load")
    script = tmp_path / "server.py"
    script.write_text(FAKE_SERVER)
    real = subprocess.Popen

    def popen(cmd, **kwargs):  # the same pipes, this stand-in for `unmask serve`
        return real([sys.executable, str(script), cmd[cmd.index("--port") + 1]], **kwargs)

    monkeypatch.setattr(serve_load.subprocess, "Popen", popen)
    proc = serve_load.start_server("model", free_port, 1, 1, "cpu")
    try:
        for _ in range(3):  # each answer is followed by ~110 KB on stderr
            r = httpx.get(f"http://127.0.0.1:{free_port}/healthz", timeout=30)
            assert r.status_code == 200
        assert "a logged line" in serve_load.server_log(proc)
    finally:
        serve_load.stop_server(proc)
