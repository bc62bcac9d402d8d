"""Signals: Ctrl-C is always honoured, in one line. A signal during torch's import is held
until the import is whole; a second one while exiting is not a traceback; SIGHUP (the
terminal closed) stops a training run as SIGTERM does; the server's second signal exits at
once; piped chat input ends on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from unmask.train_guards import StopFlag, TrainingStopped

ROOT = Path(__file__).resolve().parents[1]


def test_a_signal_during_torchs_import_waits_until_the_import_is_whole():
    """The signal is sent from inside ``import torch`` (an import hook): it lands once the
    import is complete (torch whole in ``sys.modules``), then ends the run with one line."""
    script = textwrap.dedent("""
        import atexit, builtins, os, signal, sys
        real = builtins.__import__
        def hook(name, *a, **k):
            if name == "torch" and "torch" not in sys.modules:
                builtins.__import__ = real
                os.kill(os.getpid(), signal.SIGINT)
            return real(name, *a, **k)
        builtins.__import__ = hook
        atexit.register(lambda: print("whole" if hasattr(sys.modules.get("torch"), "nn")
                                      else "half", file=sys.stderr))
        from unmask.cli import main
        sys.argv = ["unmask", "generate", "--model", "demo", "hi", "--gen-length", "4",
                    "--no-live"]
        sys.exit(main())
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                       timeout=120)  # fmt: skip
    assert r.returncode == 130, r.stderr
    assert r.stderr.splitlines() == ["unmask generate: interrupted", "whole"], r.stderr
    assert r.stdout == ""


def test_sighup_stops_a_run_as_sigterm_does(tmp_path):
    run = tmp_path / "run"
    with StopFlag(run) as flag:
        with flag.deferring():
            os.kill(os.getpid(), signal.SIGHUP)  # the terminal closed: the loop saves, stops
        assert flag.signum == signal.SIGHUP
    stopped = TrainingStopped(signal.SIGHUP, 7, run)
    assert stopped.exit_code == 129 and "stopped by SIGHUP at step 7" in str(stopped)


def test_a_second_signal_before_any_checkpoint_says_there_is_none(tmp_path):
    run = tmp_path / "run"
    with StopFlag(run) as flag, flag.deferring():
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(TrainingStopped, match="no checkpoint had been saved yet"):
            os.kill(os.getpid(), signal.SIGINT)
    (run / "checkpoint").mkdir(parents=True)
    with StopFlag(run) as flag, flag.deferring():
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(TrainingStopped, match="the last saved checkpoint is kept"):
            os.kill(os.getpid(), signal.SIGINT)


def test_the_servers_second_signal_exits_at_once(monkeypatch, capsys):
    from unmask.commands import serve

    class Base:  # uvicorn.Server's part of the protocol
        should_exit = False

        def handle_exit(self, sig, frame):
            self.should_exit = True

    def exit_now(code):
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", exit_now)
    server = serve._server_class(Base)()
    server.handle_exit(signal.SIGINT, None)  # the first: a graceful shutdown
    assert server.should_exit and capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as e:
        server.handle_exit(signal.SIGINT, None)
    assert e.value.code == 130
    assert capsys.readouterr().err == (
        "unmask serve: interrupted (second signal: requests in flight are dropped)\n")


def test_the_served_socket_listens_before_the_banner():
    from unmask.commands.serve import listen_socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sock = listen_socket("127.0.0.1", port)
    try:  # a client that connects on seeing the banner waits in the backlog, not refused
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        sock.close()


def test_piped_chat_input_ends_on_ctrl_c():
    from types import SimpleNamespace

    from unmask.commands import chat as chat_cmd

    events = iter([KeyboardInterrupt, EOFError])  # Ctrl-C while waiting for the next line

    def read():
        raise next(events)

    session = SimpleNamespace(loaded=SimpleNamespace(tokenizer=None))
    with pytest.raises(KeyboardInterrupt):  # it was: a fresh prompt for nobody, then exit 0
        chat_cmd.converse(session, read, interactive=False)  # type: ignore[arg-type]
