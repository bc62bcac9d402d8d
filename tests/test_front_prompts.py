"""``echo hi | unmask generate --model m`` said "no prompt" without saying that the piped
input is read by ``--prompt-file -``; a terminal's standard input gets no such hint."""

from __future__ import annotations

import io

from unmask.cli import main


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_prompt_with_piped_input_names_prompt_file_dash(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    assert main(["generate", "--model", "demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.endswith("; standard input is read by --prompt-file -\n") and "piped" not in err


def test_no_prompt_at_a_terminal_has_no_stdin_hint(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", _Terminal(""))
    assert main(["generate", "--model", "demo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unmask generate: error: no prompt: give one or more prompts")
    assert "standard input" not in err
