"""``unmask chat`` takes a message of many lines: a line ending in a backslash continues on
the next, and a block opened by three double quotes runs up to a line ending with them
(sent as typed: never a command). Each input line was one message, so a pasted paragraph
became one reply per line and a newline could not be sent at all. Driven through standard
input, as a script would, and through the terminal's ``input``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

import unmask
from unmask.chat import DEFAULT_CHAT_TEMPLATE
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.commands import chat as chat_cmd
from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

Q = '"""'


def tiny_chat_checkpoint(path: Path) -> Path:
    """A tiny random byte-level model with the default chat template, saved at ``path``."""
    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=128,
                       chat_template=DEFAULT_CHAT_TEMPLATE, **tok.special_ids())
    save_checkpoint(path, model=Transformer(cfg), tokenizer=tok)
    return path


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    return tiny_chat_checkpoint(tmp_path_factory.mktemp("front_chat") / "chat")


def _piped(model, text, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    rc = main(["chat", "--model", str(model), "--gen-length", "4", "--steps", "4",
               "--device", "cpu", "--json", "--threads", "1"])
    out, err = capsys.readouterr()
    return rc, [json.loads(line)["user"] for line in out.splitlines()], err


def test_piped_messages_of_many_lines(chat_model, monkeypatch, capsys):
    text = ("one\\\n"
            "two\n"
            f"{Q}\n"
            "/reset is text here\n"
            "\n"
            "  indented\n"
            f"{Q}\n"
            f"{Q}inline{Q}\n"
            "plain\n")
    rc, users, err = _piped(chat_model, text, monkeypatch, capsys)
    assert rc == 0, err
    assert users == ["one\ntwo", "/reset is text here\n\n  indented", "inline", "plain"]


def test_a_block_keeps_text_on_its_quote_lines(chat_model, monkeypatch, capsys):
    rc, users, err = _piped(chat_model, f'{Q}first\nlast{Q}\n', monkeypatch, capsys)
    assert rc == 0, err
    assert users == ["first\nlast"]


@pytest.mark.parametrize("text, inside", [
    (f"ok\n{Q}\nnever closed\n", f"a {Q} block not closed"),
    ("ok\ncontinued \\\n", "a line ending with \\ continues it"),
])
def test_piped_input_that_ends_inside_a_message_is_an_error(chat_model, text, inside,
                                                            monkeypatch, capsys):
    rc, users, err = _piped(chat_model, text, monkeypatch, capsys)
    assert rc == 2 and users == ["ok"]  # the messages before it were answered
    assert err == (f"unmask chat: error: the input ended inside a message of many lines "
                   f"({inside}); it was not sent\n")


def test_a_continued_command_is_a_message_not_a_command(chat_model, monkeypatch, capsys):
    """``/reset\\`` then ``x``: one message that opens with a command word, refused as a
    command given an argument, as ``/reset x`` is (not a reset followed by a message)."""
    rc, users, err = _piped(chat_model, "/reset\\\nx\n", monkeypatch, capsys)
    assert rc == 2 and users == []
    assert "/reset takes no argument" in err


def test_in_a_terminal_a_continuation_prompts_and_ctrl_d_inside_does_not_send(
    chat_model, monkeypatch, capsys
):
    loaded = unmask.load(chat_model)
    session = chat_cmd.ChatSession(loaded, chat_cmd.model_template(loaded, None),
                                   SampleConfig(gen_length=4, steps=4))
    lines = iter(["a\\", "b", "/help", Q, "kept"])
    prompts = []

    def fake_input(prompt):
        prompts.append(prompt)
        line = next(lines, None)
        if line is None:
            raise EOFError
        return line

    monkeypatch.setattr("builtins.input", fake_input)
    rc = chat_cmd.converse(session, chat_cmd._input_line, interactive=True,
                           more=lambda: chat_cmd._input_line("... "))
    assert rc == 0
    err = capsys.readouterr().err
    assert prompts == ["> ", "... ", "> ", "> ", "... ", "... "]
    assert [t["content"] for t in session.turns[::2]] == ["a\nb"]
    assert "continues on the next line" in err  # /help names the multi-line input
    assert "(the input ended inside a message of many lines" in err and "not sent" in err


def test_ctrl_c_inside_a_message_drops_it_and_prompts_again(chat_model, monkeypatch, capsys):
    loaded = unmask.load(chat_model)
    session = chat_cmd.ChatSession(loaded, chat_cmd.model_template(loaded, None),
                                   SampleConfig(gen_length=4, steps=4))
    lines = iter(["dropped\\", KeyboardInterrupt(), "sent"])

    def read():
        line = next(lines, None)
        if line is None:
            raise EOFError
        if isinstance(line, BaseException):
            raise line
        return line

    assert chat_cmd.converse(session, read, interactive=True) == 0
    assert [t["content"] for t in session.turns[::2]] == ["sent"]
    assert "(the unfinished message was dropped; /exit or Ctrl-D quits)" in capsys.readouterr().err


@pytest.mark.parametrize("first, more, want", [
    ("x\n", [], chat_cmd.Gathered("x", literal=False)),
    ("a\\\n", ["b\\\n", "c\n"], chat_cmd.Gathered("a\nb\nc", literal=False)),
    (f"{Q}{Q}\n", [], chat_cmd.Gathered("", literal=True)),
    (f"  {Q}\n", ["//x\n", f"  {Q}  \n"], chat_cmd.Gathered("//x", literal=True)),
    (f"{Q}a\n", ["\n", f"b {Q}\n"], chat_cmd.Gathered("a\n\nb ", literal=True)),
])
def test_gather(first, more, want):
    rest = iter(more)
    assert chat_cmd.gather(first, lambda: next(rest)) == want


@pytest.mark.parametrize("typed, meant", [("/rest", "/reset"), ("/EXIT", "/exit"),
                                          ("/hlep", "/help"), ("/quti", "/quit")])
def test_a_misspelt_chat_command_names_the_nearest(typed, meant):
    with pytest.raises(UserError, match=rf"^unknown command {typed} \(did you mean {meant}\?\): "
                                        "the commands are"):
        chat_cmd._message(typed, typed)


def test_a_slash_word_far_from_any_command_is_refused_without_a_guess():
    with pytest.raises(UserError, match=r"^unknown command /etc/hosts: the commands are"):
        chat_cmd._message("/etc/hosts", "/etc/hosts")
