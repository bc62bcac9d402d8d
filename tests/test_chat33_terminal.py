"""``unmask chat`` shows a reply's control characters escaped on a terminal (an ESC sequence a
model wrote cleared the screen or set the window title; a carriage return wrote over the
line), writes them as generated when piped, and its ``--json`` line holds no raw C1 control
(U+009B is a one-character CSI); ``--show-prompt``, which repeats earlier replies on stderr,
is escaped on a terminal too."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from unmask.commands import chat as chat_cmd
from unmask.config import SampleConfig

REPLY = "ok\x1b[2J\rgone\x9b31m\tend\nline two"


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class _Session:
    """The part of ``ChatSession`` that ``converse`` reads, replying ``REPLY``."""

    loaded = SimpleNamespace(tokenizer=None)
    config = SampleConfig()
    decoder = "llada"
    stop = ()

    def __init__(self) -> None:
        self.turns: list[dict[str, str]] = []

    def prepare(self, user: str) -> chat_cmd.Prepared:
        turns = [*self.turns, {"role": "user", "content": user}]
        text = "".join(f"{t['role']}: {t['content']}\n" for t in turns)
        return chat_cmd.Prepared(text=text, ids=[1, 2], turns=turns, dropped=0)

    def complete(self, prepared: chat_cmd.Prepared, *, live: object = None) -> chat_cmd.Turn:
        self.turns = [*prepared.turns, {"role": "assistant", "content": REPLY}]
        return chat_cmd.Turn(reply=REPLY, prompt=prepared, nfe=1, seconds=0.0)


def _converse(monkeypatch: pytest.MonkeyPatch, tty: bool, **flags: bool) -> tuple[str, str]:
    out, err = _Stream(tty), _Stream(tty)
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    lines = iter(["hello", "again"])

    def read() -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    assert chat_cmd.converse(_Session(), read, interactive=tty, **flags) == 0
    return out.getvalue(), err.getvalue()


def test_a_reply_is_shown_escaped_on_a_terminal(monkeypatch):
    out, _ = _converse(monkeypatch, tty=True)
    assert "\x1b" not in out and "\r" not in out and "\x9b" not in out
    assert out.splitlines()[:2] == ["ok\\x1b[2J\\rgone\\x9b31m\tend", "line two"]


def test_a_piped_reply_is_written_as_generated(monkeypatch):
    out, _ = _converse(monkeypatch, tty=False)
    assert out == f"{REPLY}\n{REPLY}\n"


def test_show_prompt_escapes_earlier_replies_on_a_terminal(monkeypatch):
    _, err = _converse(monkeypatch, tty=True, show_prompt=True)
    assert "\x1b" not in err and "\x9b" not in err
    assert "assistant: ok\\x1b[2J\\rgone\\x9b31m" in err


@pytest.mark.parametrize("tty", [True, False])
def test_json_lines_hold_no_raw_control_character(monkeypatch, tty):
    out, _ = _converse(monkeypatch, tty=tty, json_lines=True)
    assert not any(c in out for c in "\x1b\r\x9b\x7f")
    records = [json.loads(line) for line in out.splitlines() if line]  # Ctrl-D: a newline
    assert [r["reply"] for r in records] == [REPLY, REPLY]  # the same value


@pytest.mark.parametrize("tty", [True, False])
def test_the_prompt_goes_where_the_person_typing_sees_it(monkeypatch, tty):
    """``unmask chat > replies.txt``: ``input`` wrote each ``> `` prompt into the file, before
    each reply (and a newline at Ctrl-D), and none on the terminal."""
    out, err = _Stream(tty), _Stream(False)
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    assert chat_cmd._input_line() == "hello"
    assert (out.getvalue(), err.getvalue()) == (("> ", "") if tty else ("", "> "))


def test_a_transcript_holds_the_replies_alone(monkeypatch):
    out, err = _Stream(False), _Stream(False)
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\nagain\n"))
    assert chat_cmd.converse(_Session(), chat_cmd._input_line, interactive=True) == 0
    assert out.getvalue() == f"{REPLY}\n{REPLY}\n"  # no "> ", no newline at the end of input
    assert err.getvalue().startswith("> ") and err.getvalue().endswith("> \n")
