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
