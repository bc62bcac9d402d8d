"""Every example of docs/serving.md runs: the ``bash`` blocks (curl) and the ``python``
blocks (the ``openai`` client, ``create_app``) against ``unmask serve --model runs/mine`` on
a free loopback port, serving a tiny random chat checkpoint; and the server's access log
has a line for each request they made (the tests of this module run in order)."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")

import httpx  # noqa: E402
import torch  # noqa: E402
from server_helpers import tiny_config  # noqa: E402

from unmask.chat import PLAIN_CHAT_TEMPLATE  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "serving.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)


def examples(language: str) -> list[str]:
    return [code for lang, code in FENCE.findall(DOC.read_text()) if lang == language]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(working directory holding runs/mine, port, the server's stderr): ``unmask serve
    --model runs/mine`` run by the CLI in this process, with ``uvicorn.run`` replaced by a
    ``uvicorn.Server`` on a thread that the fixture can stop (a subprocess would spend most
    of the test importing torch)."""
    import uvicorn

    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main
    from unmask.commands.serve import configure_access_log
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    cwd = tmp_path_factory.mktemp("docs")
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(max_seq_len=256), chat_template=PLAIN_CHAT_TEMPLATE)
    save_checkpoint(cwd / "runs" / "mine", model=Transformer(config).eval(),
                    tokenizer=byte_tokenizer())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    servers = []

    real_server = uvicorn.Server

    class Threaded:
        """``unmask serve``'s ``uvicorn.Server``, run on a thread so the test goes on."""

        should_exit = False

        def __init__(self, config: uvicorn.Config) -> None:
            self.server = real_server(config)

        def run(self, sockets: list[socket.socket] | None = None) -> None:
            thread = threading.Thread(target=self.server.run, kwargs={"sockets": sockets},
                                      daemon=True)
            thread.start()
            servers.append((self.server, thread))

    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(uvicorn, "Server", Threaded)
        mp.setattr(sys, "stderr", err)  # the access log's handler writes here from now on
        mp.chdir(cwd)
        assert main(["serve", "--model", "runs/mine", "--port", str(port), "--device", "cpu"]) == 0
    (server, thread), = servers
    t0 = time.monotonic()
    while not server.started:
        assert thread.is_alive() and time.monotonic() - t0 < 30, "the server did not start"
        time.sleep(0.02)
    try:
        yield cwd, port, err
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        configure_access_log(quiet=True)


def local(code: str, port: int) -> str:
    assert "127.0.0.1:8000" in code or "runs/mine" in code, code
    return code.replace("127.0.0.1:8000", f"127.0.0.1:{port}")


def check_output(out: str, code: str) -> None:
    """A JSON body without an error, or an event stream that ends with [DONE]."""
    assert out.strip(), code
    if out.lstrip().startswith("{"):
        assert "error" not in json.loads(out), out
    data = [line[len("data: "):] for line in out.splitlines() if line.startswith("data: ")]
    if data:
        assert data[-1] == "[DONE]" and not any('"error"' in d for d in data), out


def test_every_curl_example_runs(server):
    cwd, port, _ = server
    blocks = examples("bash")
    assert len(blocks) >= 8, "examples went missing from docs/serving.md"
    for code in blocks:
        done = subprocess.run(["bash", "-eo", "pipefail", "-c", local(code, port)], cwd=cwd,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (code, done.stderr)
        check_output(done.stdout, code)


def test_every_python_example_runs(server, monkeypatch, capsys):
    cwd, port, _ = server
    monkeypatch.chdir(cwd)
    blocks = examples("python")
    assert len(blocks) >= 3, "examples went missing from docs/serving.md"
    for code in blocks:
        exec(compile(local(code, port), "docs/serving.md", "exec"), {"__name__": "docs"})
    out = capsys.readouterr().out
    assert "masked" in out  # the stream_denoising example saw its steps


def test_the_access_log_has_a_line_per_example(server):
    _, port, stderr = server
    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    deadline = time.monotonic() + 10  # the server writes a line after it sent the response
    while '"GET /healthz"' not in stderr.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    err = stderr.getvalue()
    # the weights' dtype: bf16 under --dtype auto on a CPU with AMX, else fp32
    assert re.search(rf"unmask serve: runs/mine \((fp32|bf16) weights\) on "
                     rf"http://127\.0\.0\.1:{port} ", err), err
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/infill", "/v1/forms",
                 "/v1/edit", "/v1/tokenize", "/metrics"):
        assert re.search(rf'"(POST|GET) {re.escape(path)}" 200 [0-9.]+s', err), (path, err)
    assert re.search(r'"POST /v1/completions" 200 [0-9.]+s rows=1 prompt_tokens=16 '
                     r"completion_tokens=\d+", err), err
    assert '"GET /healthz" 200' in err


def test_the_flag_table_lists_every_serve_flag():
    import argparse

    from unmask.commands import serve

    sub = argparse.ArgumentParser().add_subparsers()
    serve.register(sub)
    parser = sub.choices["serve"]
    flags = {s for a in parser._actions for s in a.option_strings if s.startswith("--")}
    documented = set(re.findall(r"^\| `(--[a-z-]+)", DOC.read_text(), re.M))
    assert documented == flags - {"--help"}


def test_the_endpoint_table_lists_every_route():
    """Every path the app answers has a row in the endpoint table (``GET /playground/options``
    had none); the OpenAPI pages FastAPI adds are not unmask's."""
    from fastapi.routing import APIRoute
    from server_helpers import Echo, loaded

    from unmask.server import create_app

    def routes(group):  # an included router is a route of its own in newer FastAPI
        for r in group:
            inner = getattr(r, "original_router", None)
            if inner is not None:
                yield from routes(inner.routes)
            elif isinstance(r, APIRoute):
                yield r

    app = create_app(loaded(Echo(tiny_config())), chat_template="plain")
    served = {(m, r.path) for r in routes(app.routes) for m in r.methods if m != "HEAD"}
    assert ("POST", "/v1/completions") in served and len(served) > 10, served
    text = DOC.read_text()
    table = text[text.index("## Endpoints"):]
    table = table[: table.index("\n\n", table.index("| Method and path"))]
    rows = set(re.findall(r"^\| `(GET|POST) (/[^`]*)`", table, re.M))
    rows |= set(re.findall(r"`(GET|POST) (/[^`]*)`", table))  # a route named inside a row
    def bare(path):  # "/v1/models/{model:path}" is written "/v1/models/{id}"
        return re.sub(r"\{[^}]*\}", "{}", path)

    rows = {(m, bare(p)) for m, p in rows}
    missing = {(m, p) for m, p in served if (m, bare(p)) not in rows}
    assert not missing, missing
