"""``unmask serve`` itself: the access log (on by default, off with ``--quiet``), the chat
template option, and the set-up: the hint printed when FastAPI is missing works as printed
from a clone, and ``bash install.sh`` installs what serving needs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import Echo, loaded, tiny_config  # noqa: E402

from unmask.cli import main  # noqa: E402
from unmask.commands.serve import SERVE_HINT, configure_access_log  # noqa: E402
from unmask.server import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "unmask.server.access"]


def test_access_log_has_one_line_per_request(caplog):
    caplog.set_level(logging.INFO, logger="unmask.server.access")
    app = create_app(loaded(Echo(tiny_config())), chat_template="plain")
    with TestClient(app) as c:
        c.post("/v1/completions", json={"prompt": ["ab", "c"], "n": 2, "max_tokens": 4})
        c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 3, "stream": True})
        c.post("/v1/infill", json={"template": "a [MASK:2] b"})
        c.get("/nowhere")
        c.post("/v1/completions", content=b"x" * (2 << 20))
    lines = access_lines(caplog)
    assert len(lines) == 5, lines
    for line, (method, path, status) in zip(lines, [
        ("POST", "/v1/completions", 200), ("POST", "/v1/completions", 200),
        ("POST", "/v1/infill", 200), ("GET", "/nowhere", 404), ("POST", "/v1/completions", 413),
    ], strict=True):
        assert line.startswith(f'testclient "{method} {path}" {status} '), line
        assert float(line.split()[4].rstrip("s")) >= 0  # the duration in seconds
    assert lines[0].endswith(" rows=4 prompt_tokens=3 completion_tokens=16"), lines[0]
    assert lines[1].endswith(" rows=1 prompt_tokens=2 completion_tokens=3"), lines[1]  # streamed
    assert lines[2].endswith(" nfe=2"), lines[2]
    caplog.clear()
    with TestClient(create_app(loaded(Echo(tiny_config())), access_log=False)) as c:
        assert c.get("/healthz").status_code == 200
    assert access_lines(caplog) == []


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from unmask.checkpoint import save_checkpoint
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("runs") / "mine"
    return str(save_checkpoint(run, model=Transformer(tiny_config()).eval(),
                               tokenizer=byte_tokenizer()))


@pytest.fixture
def served(monkeypatch):
    """``unmask serve`` up to ``uvicorn.Server.run``, which records the app instead of serving."""
    import uvicorn

    apps = []

    class Recorder:
        should_exit = False

        def __init__(self, config):
            self.config = config

        def run(self, sockets=None):
            address = sockets[0].getsockname()  # bound by unmask serve
            assert address[1] == self.config.port
            apps.append((self.config.app, {"host": self.config.host, "port": self.config.port}))

    monkeypatch.setattr(uvicorn, "Server", Recorder)
    yield apps
    configure_access_log(quiet=True)  # take the handler off again


@pytest.mark.parametrize("quiet", [False, True])
def test_serve_prints_the_access_log_unless_quiet(ckpt, served, capsys, quiet, free_port):
    argv = ["serve", "--model", ckpt, "--port", str(free_port), "--device", "cpu",
            "--chat-template", "plain"]
    assert main(argv + ["--quiet"] * quiet) == 0
    (app, kw), = served
    assert kw["port"] == free_port and kw["host"] == "127.0.0.1"
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                 "max_tokens": 2})
        assert r.status_code == 200, r.text
    err = capsys.readouterr().err
    assert "unmask serve: " in err  # where it listens, either way
    logged = [line for line in err.splitlines() if '"POST /v1/chat/completions" 200' in line]
    if quiet:
        assert logged == []
    else:
        assert len(logged) == 1 and logged[0].endswith("completion_tokens=2"), err


def test_serve_chat_template_errors_name_the_serve_option(ckpt, served, capsys):
    assert main(["serve", "--model", ckpt, "--device", "cpu", "--chat-template", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--chat-template 'nope': no such file" in err and err.count("\n") == 1
    assert served == []


def test_serve_refuses_a_broken_chat_template_at_startup(ckpt, served, capsys, tmp_path):
    """A syntax error or an undefined name: one line naming the file, exit 2, as ``unmask
    chat`` refuses it (the server started, said ``chat: true`` and answered every chat with a
    400 blaming the client's messages)."""
    for name, source in (("syntax.jinja", "{% for m in messages %}{{ m.content }}"),
                         ("undef.jinja", "{{ nope }}")):
        bad = tmp_path / name
        bad.write_text(source)
        argv = ["serve", "--model", ckpt, "--device", "cpu", "--chat-template", str(bad)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"chat template {bad} failed to render" in err and err.count("\n") == 1, err
    assert served == []


def test_serve_refuses_a_non_ascii_api_key_before_loading(served, capsys, monkeypatch):
    """One line and exit 2, before the model loads (the run does not exist); the key from
    $UNMASK_API_KEY too."""
    assert main(["serve", "--model", "/no/such/run", "--api-key", "clé"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "API key must be printable ASCII" in err, err
    monkeypatch.setenv("UNMASK_API_KEY", " padded")
    assert main(["serve", "--model", "/no/such/run"]) == 2
    assert "API key must be printable ASCII" in capsys.readouterr().err
    assert served == []


def test_serve_refuses_an_empty_api_key_before_loading(served, capsys, monkeypatch):
    """``--api-key ""`` (``--api-key "$KEY"`` with KEY unset) served every client without
    authentication, silently: an empty key was taken for no key. Now it is refused in one line
    before the model loads, from the flag and from ``$UNMASK_API_KEY``; no key at all still
    serves without one."""
    monkeypatch.delenv("UNMASK_API_KEY", raising=False)
    assert main(["serve", "--model", "/no/such/run", "--api-key", ""]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the API key is blank" in err, err
    monkeypatch.setenv("UNMASK_API_KEY", "")
    assert main(["serve", "--model", "/no/such/run"]) == 2
    assert "the API key is blank" in capsys.readouterr().err
    monkeypatch.delenv("UNMASK_API_KEY")
    assert main(["serve", "--model", "/no/such/run"]) == 2  # no key: on to the model
    assert "/no/such/run: no such folder" in capsys.readouterr().err
    assert served == []


def test_serve_on_a_port_in_use_says_so_in_one_line(ckpt, served, capsys, free_port):
    """It printed where it listens, then uvicorn's own ERROR line, and exited 3."""
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", free_port))
        other.listen()
        argv = ["serve", "--model", ckpt, "--port", str(free_port), "--device", "cpu"]
        assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"unmask serve: error: port {free_port} is in use (another server?): stop it, or "
        "choose another --port\n")
    assert served == []


def test_missing_fastapi_hint(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now fails
    assert main(["serve", "--model", "/no/such/run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(uvicorn is missing)" in err and SERVE_HINT in err
    assert "pip install -e '.[serve]'" in SERVE_HINT and "bash install.sh" in SERVE_HINT


def test_the_hint_and_install_sh_install_the_serve_extra(tmp_path):
    """``pip install -e '.[serve]'`` names an extra that holds FastAPI and uvicorn, and
    ``bash install.sh`` (the README's set-up) installs it, ``--test`` too (pip is replaced by
    a stub that records its arguments)."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for package in ("fastapi", "uvicorn", "pydantic"):
        assert any(r.startswith(package) for r in extras["serve"]), package
        assert any(r.startswith(package) for r in extras["test"]), package
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "calls"
    for name in ("python", "chromium"):  # a chromium on PATH: --test must not run apt-get
        stub = venv / "bin" / name
        stub.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
        stub.chmod(0o755)
    env = {**os.environ, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    env.pop("CONDA_PREFIX", None)
    for flag, extra in (([], ".[serve]"), (["--test"], ".[serve,test]")):
        log.write_text("")
        done = subprocess.run(["bash", str(ROOT / "install.sh"), *flag], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        installs = [c for c in log.read_text().splitlines() if c.startswith("-m pip install")]
        assert f"-m pip install -q -e {extra}" in installs, installs


def test_serve_checks_the_address_before_loading_the_model(served, capsys, free_port):
    """A port in use or a host that is not this machine's fails at once, before the model
    loads (``served`` records none): it failed only after loading, which takes minutes for a
    large model. (A ``--model`` that names nothing is refused before both, before torch.)"""
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", free_port))
        other.listen()
        assert main(["serve", "--model", "demo", "--port", str(free_port)]) == 2
        assert capsys.readouterr().err == (
            f"unmask serve: error: port {free_port} is in use (another server?): stop it, or "
            "choose another --port\n")
    for host, says in (("nosuch.invalid", "--host 'nosuch.invalid' is not an address or a name"),
                       ("999.1.1.1", "--host '999.1.1.1' is not an address or a name"),
                       ("192.0.2.1", "192.0.2.1 is not an address of this machine")):
        argv = ["serve", "--model", "demo", "--host", host, "--port", str(free_port)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err and "no such" not in err, err
    assert served == []


@pytest.mark.parametrize("flag,value,says", [
    ("--timeout", "nan", "--timeout must be a finite number > 0, got nan"),
    ("--timeout", "-1", "--timeout must be a finite number > 0, got -1"),
    ("--timeout", "inf", "--timeout must be a finite number > 0, got inf"),  # (inf is > 0)
    ("--max-queue", "0", "--max-queue must be a finite number > 0, got 0"),
    ("--batch-wait", "inf", "--batch-wait must be a finite number of seconds >= 0, got inf"),
    ("--batch-wait", "nan", "--batch-wait must be a finite number of seconds >= 0, got nan"),
    ("--max-search-calls", "-1", "--max-search-calls must be 0 (no limit) or positive, got -1"),
    ("--keepalive", "-1", "--keepalive must be a finite number of seconds >= 0, got -1"),
    ("--keepalive", "nan", "--keepalive must be a finite number of seconds >= 0, got nan"),
    ("--max-slow-checks", "0", "--max-slow-checks must be a finite number > 0, got 0"),
    # an int too long for math.isfinite was an OverflowError traceback (each int flag)
    ("--max-batch", "9" * 400, None),
    ("--max-slow-checks", "-" + "9" * 400,
     "--max-slow-checks must be a finite number > 0, got a number of 400 digits"),
    ("--max-slow-checks", "1025", "--max-slow-checks must be at most 1024 (threads of each "
     "kind), got 1025"),
    ("--max-slow-checks", "9" * 400, "--max-slow-checks must be at most 1024 (threads of each "
     "kind), got a number of 400 digits"),
    ("--batch-wait", "1e10", "--batch-wait must be less than --timeout (300 s: a lone "
     "request would wait it out), got 1e+10"),
])
def test_serve_names_the_flag_of_a_bad_limit(served, capsys, flag, value, says):
    """``--timeout nan`` passed the flag check (nan <= 0 is False) and was refused later as
    "server limit request_timeout_s=nan", a name the user never typed."""
    assert main(["serve", "--model", "/no/such/run", flag, value]) == 2
    err = capsys.readouterr().err
    if says is None:  # a fine limit: the next refusal is the missing model's
        assert "/no/such/run" in err and "Traceback" not in err, err
    else:
        assert err == f"unmask serve: error: {says}\n", err
    assert served == []


def test_serve_names_both_flags_of_batch_wait_past_the_timeout(served, capsys):
    """The rule that holds ``--batch-wait`` against ``--timeout`` names that flag too, not
    "the request timeout"."""
    assert main(["serve", "--model", "/no/such/run", "--batch-wait", "5", "--timeout", "2"]) == 2
    assert capsys.readouterr().err == ("unmask serve: error: --batch-wait must be less than "
                                       "--timeout (2 s: a lone request would wait it out), "
                                       "got 5\n")
    assert served == []


@pytest.mark.parametrize("argv,says", [
    (["--predraft", "ends"], "--predraft applies to a checkpoint trained with objective hybrid"),
    (["--draft-length", "0"], "--draft-length must be >= 1, got 0"),
    (["--draft-threshold", "2"], "--draft-threshold must be in [0, 1)"),
])
def test_serve_refusals_of_decoding_flags_name_the_flag(ckpt, served, capsys, argv, says):
    """They named the ``SampleConfig`` field (``predraft applies to ...``), not the flag."""
    assert main(["serve", "--model", ckpt, "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"unmask serve: error: {says}") and err.count("\n") == 1, err
    assert served == []


def test_sigterm_lets_a_streamed_request_in_flight_finish(ckpt, free_port):
    """SIGTERM while a streamed infill is under way: the stream still ends with the response
    body and ``[DONE]`` (graceful shutdown waits for it), then the server exits 143 with one
    line and no traceback; the signal is answered at once with a line saying so."""
    import json
    import signal

    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "unmask.cli", "serve", "--model", ckpt, "--port", str(free_port),
         "--device", "cpu", "--threads", "1", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    try:
        url = f"http://127.0.0.1:{free_port}"
        for _ in range(300):
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1]
                time.sleep(0.1)
        body = {"template": "a [MASK:40] b", "steps": 40, "stream": True}
        with httpx.stream("POST", url + "/v1/infill", json=body, timeout=60) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))  # under way
            proc.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
        assert json.loads(rest[-2][len("data: "):])["object"] == "infill"
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert err.splitlines()[-1] == "unmask serve: terminated" and "Traceback" not in err, err
    # it says that it waits (it said nothing: the signal looked ignored while the run went on)
    assert ("unmask serve: stopping once the 1 request in flight ends (a second signal drops "
            "it)\n") in err, err


def test_a_server_that_took_the_port_while_the_model_loaded_is_one_line(
        ckpt, served, capsys, free_port, monkeypatch):
    """The port is bound before the model loads but listened on only after; with
    ``SO_REUSEADDR`` a second ``unmask serve`` started meanwhile binds it too and may listen
    first. The later one got the bare ``Address already in use`` of ``socket.listen``."""
    from unmask import api
    from unmask.commands.serve import listen_socket

    other = []
    load = api.load_for_decoding

    def load_while_another_starts(*a, **k):
        other.append(listen_socket("127.0.0.1", free_port))
        return load(*a, **k)

    monkeypatch.setattr(api, "load_for_decoding", load_while_another_starts)
    try:
        argv = ["serve", "--model", ckpt, "--port", str(free_port), "--device", "cpu"]
        assert main(argv) == 2
    finally:
        for s in other:
            s.close()
    assert capsys.readouterr().err == (
        f"unmask serve: error: port {free_port} is in use: another server started listening "
        "on it while the model loaded; stop it, or choose another --port\n")
    assert served == []


@pytest.mark.parametrize("value", ["7", "0"])
def test_serve_max_search_calls_is_the_infill_limit(ckpt, served, free_port, value):
    """The operator's limit on an infill's length search (it was always the library's 256)."""
    argv = ["serve", "--model", ckpt, "--port", str(free_port), "--device", "cpu", "--quiet",
            "--max-search-calls", value]
    assert main(argv) == 0
    (app, _), = served
    assert app.state.limits.max_search_calls == int(value)
    with TestClient(app) as c:
        r = c.post("/v1/infill", json={"template": "a [MASK:1-4] b [MASK:1-4]"})
    assert r.status_code == (400 if value == "7" else 200), r.text
    if value == "7":
        msg = r.json()["error"]["message"]
        assert "over the limit of 7 (the server's --max-search-calls)" in msg, msg


def test_the_banner_gives_a_url_a_client_can_open(ckpt, served, capsys):
    """``--host ::1`` printed ``http://::1:PORT``, which no browser or curl takes."""
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            port = s.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")
    assert main(["serve", "--model", ckpt, "--host", "::1", "--port", str(port),
                 "--device", "cpu", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"on http://[::1]:{port} (playground at /)" in err, err
    assert served[0][1] == {"host": "::1", "port": port}


def test_the_threads_help_of_serve_says_what_serve_does():
    """The shared ``--threads`` help said "one for a decoding command whose model's weights
    are under 100 MB": ``unmask serve`` decodes, yet takes the cores whatever the model
    (``command_threads``). The help now names the commands the small-model rule is for, and
    exactly those: each sets ``decodes_model``."""
    from unmask.cli import build_parser

    sub = next(a for a in build_parser()._actions
               if a.__class__.__name__ == "_SubParsersAction")
    serve = sub.choices["serve"]
    text = next(a.help for a in serve._actions if "--threads" in a.option_strings)
    assert "decoding command" not in text, text
    small = text.split("; for ", 1)[1].split(", one when")[0]  # "generate, chat, ..."
    named = set(small.replace(" and ", ", ").split(", "))
    decoding = {name for name, p in sub.choices.items()
                if p.get_default("decodes_model")}
    assert named == decoding, (named, decoding)
    assert "serve" not in named and serve.get_default("decodes_model") is None


@pytest.mark.parametrize("value", [None, "2.5", "0"])
def test_serve_keepalive_is_the_streams_keepalive(ckpt, served, free_port, value):
    """A stream's keep-alive interval (``ServerLimits.keepalive_s``) had no flag: a server
    behind a proxy with a shorter read timeout could not shorten it, nor turn it off."""
    from unmask.server import ServerLimits

    argv = ["serve", "--model", ckpt, "--port", str(free_port), "--device", "cpu", "--quiet"]
    assert main(argv + (["--keepalive", value] if value else [])) == 0
    (app, _), = served
    want = float(value) if value else ServerLimits.keepalive_s
    assert app.state.limits.keepalive_s == want


@pytest.mark.parametrize("value", [None, "5"])
def test_serve_max_slow_checks_sizes_the_slow_check_threads(ckpt, served, free_port, value):
    """``ServerLimits.max_slow_checks`` had no flag: a server for many clients' schemas ran
    two compiles at a time whatever its cores."""
    from unmask.server import ServerLimits

    argv = ["serve", "--model", ckpt, "--port", str(free_port), "--device", "cpu", "--quiet"]
    assert main(argv + (["--max-slow-checks", value] if value else [])) == 0
    (app, _), = served
    want = int(value) if value else ServerLimits.max_slow_checks
    assert app.state.limits.max_slow_checks == want
    state = app.state.server
    assert state.compiles.pool._max_workers == state.searches.pool._max_workers == want


@pytest.mark.parametrize("field", ["max_batch", "max_queue", "max_steps", "max_search_calls"])
def test_server_limits_take_an_int_too_long_for_a_float(field):
    """``ServerLimits`` checked ints with ``math.isfinite``: ``unmask serve --max-batch
    <400 nines>`` passed the flag check and raised OverflowError once the model had loaded."""
    from unmask.errors import UserError
    from unmask.server.state import ServerLimits

    assert getattr(ServerLimits(**{field: 10**400}), field) == 10**400
    with pytest.raises(UserError, match=f"server limit {field}=a number of 401 digits must"):
        ServerLimits(**{field: -(10**400)})
