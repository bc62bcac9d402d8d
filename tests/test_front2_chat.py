"""``unmask chat``: Ctrl-C at the ``... `` prompt (inside a message of many lines) said only
"/exit or Ctrl-D quits", not that the lines typed so far were dropped; ``/help`` and the docs
now say how to send a line that ends in a backslash (a ``\"\"\"`` block); an unknown
``/command`` is matched by the package's one nearest-name lookup (``unmask.names.closest``)
against the commands' one list."""

from __future__ import annotations

import pytest
from test_front_chat_lines import tiny_chat_checkpoint

from unmask import load
from unmask.commands import chat as chat_cmd
from unmask.config import SampleConfig
from unmask.errors import UserError

Q = '"""'


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    path = tiny_chat_checkpoint(tmp_path_factory.mktemp("front2_chat") / "chat")
    loaded = load(path)
    return chat_cmd.ChatSession(loaded, chat_cmd.model_template(loaded, None),
                                SampleConfig(gen_length=4, steps=4))


def test_ctrl_c_inside_a_message_of_many_lines_says_it_was_dropped(session, capsys):
    session.reset()
    first = iter([f"{Q}start\n", "/exit\n"])

    def more() -> str:
        raise KeyboardInterrupt

    assert chat_cmd.converse(session, lambda: next(first), more=more, interactive=True) == 0
    err = capsys.readouterr().err
    assert "(the unfinished message was dropped; /exit or Ctrl-D quits)" in err
    assert session.turns == []


def test_ctrl_c_at_the_prompt_says_only_how_to_quit(session, capsys):
    lines = iter(["/exit\n"])
    calls = []

    def read() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return next(lines)

    assert chat_cmd.converse(session, read, interactive=True) == 0
    err = capsys.readouterr().err
    assert "(/exit or Ctrl-D quits)" in err and "dropped" not in err


def test_a_block_sends_a_line_ending_in_a_backslash_as_help_says():
    gathered = chat_cmd.gather(f"{Q}C:\\dir\\{Q}", lambda: pytest.fail("read on"))
    assert gathered.text == "C:\\dir\\" and gathered.literal
    assert f"{Q}C:\\dir\\{Q} sends C:\\dir\\" in chat_cmd.COMMANDS[Q]


@pytest.mark.parametrize("typed, meant", [("/rest", "/reset"), ("/QUIT", "/quit"),
                                          ("/hlep", "/help"), ("/zzz", None)])
def test_an_unknown_command_names_the_nearest_of_the_one_list(typed, meant):
    with pytest.raises(UserError) as e:
        chat_cmd._message(typed, typed)
    said = str(e.value)
    assert (f"(did you mean {meant}?)" in said) == (meant is not None), said
    assert f"the commands are {', '.join(chat_cmd.NAMES)};" in said
