"""The serve follow-ups of session 35: a signal with stderr closed still shuts the server
down; a stream that ends with an error event is counted and logged with that error's status,
not the 200 it started with; a path the access log cannot encode is escaped, not a traceback;
a server run does not inherit an earlier run's abandoned-check flag."""

from __future__ import annotations

import os
import signal
import sys

import pytest

pytest.importorskip("fastapi")


class Base:
    """uvicorn.Server's part of the protocol, one request in flight."""

    should_exit = False

    def __init__(self) -> None:
        self.server_state = type("State", (), {"tasks": {object()}})()

    def handle_exit(self, sig, frame):
        self.should_exit = True


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_with_stderr_closed_still_shuts_the_server_down(monkeypatch, sig, code):
    """With stderr closed (``unmask serve ... 2>&-``: ``sys.stderr`` is None) the first
    signal's 'stopping once the 1 request in flight ends' line raised AttributeError inside
    the handler before the shutdown started: the request in flight got a 500 and the server
    exited 1. The second signal's line raised the same way before ``os._exit``."""
    from unmask.commands import serve

    def exit_now(status):
        raise SystemExit(status)

    monkeypatch.setattr(os, "_exit", exit_now)
    monkeypatch.setattr(sys, "stderr", None)
    server = serve._server_class(Base)()
    server.handle_exit(sig, None)  # the first: a graceful shutdown, said to nobody
    assert server.should_exit
    with pytest.raises(SystemExit) as e:
        server.handle_exit(sig, None)  # the second: out at once
    assert e.value.code == code


def test_the_first_signal_says_its_line_once_the_shutdown_started(monkeypatch, capsys):
    """The line still comes where stderr is open, after the shutdown has started."""
    from unmask.commands import serve

    class Watched(Base):
        def handle_exit(self, sig, frame):
            assert capsys.readouterr().err == ""  # nothing said before it starts
            super().handle_exit(sig, frame)

    server = serve._server_class(Watched)()
    server.handle_exit(signal.SIGINT, None)
    assert server.should_exit
    assert capsys.readouterr().err == ("unmask serve: stopping once the 1 request in flight "
                                       "ends (a second Ctrl-C drops it)\n")


