"""A chat template given as a file (``--template``, ``--chat-template``, ``template=``):

- a pipe is a file: ``--template <(jq -r .chat_template tokenizer_config.json)`` (a FIFO,
  ``/dev/fd/63``) was refused as "no such file, not a built-in template and not a Jinja
  string" by chat, ``generate --chat``, ``serve`` and ``train``;
- a JSON object with a ``chat_template`` key is read as one whatever its name (a pipe has no
  ``.json`` suffix; ``tokenizer_config.json.bak``): it was rendered as Jinja, so the prompt was
  the JSON text;
- ``unmask chat`` and ``generate --chat`` refuse a ``--template`` that cannot be read or
  rendered, and a ``--draft`` that names nothing, before torch loads (they waited for it, 5-7 s
  here, to say the same line)."""

from __future__ import annotations

import json
import os
import threading

import pytest
from cli_helpers import refusal

from unmask.chat import template_arg
from unmask.errors import UserError

JINJA = ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
         "{% if add_generation_prompt %}assistant:{% endif %}")
NOWHERE = "/nonexistent-unmask-chat39"


def _pipe(tmp_path, text: str) -> str:
    """A FIFO that a thread writes ``text`` to once (as the shell's ``<(...)``)."""
    path = str(tmp_path / "pipe")
    os.mkfifo(path)

    def write() -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    threading.Thread(target=write, daemon=True).start()
    return path


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
@pytest.mark.parametrize("text", [JINJA, json.dumps({"chat_template": JINJA, "eos_token": "x"})])
def test_a_template_read_from_a_pipe(tmp_path, text):
    assert template_arg(_pipe(tmp_path, text)).source == JINJA


@pytest.mark.parametrize("name", ["tokenizer_config.json.bak", "template.txt", "config"])
def test_a_json_file_with_a_chat_template_is_read_as_one_whatever_its_name(tmp_path, name):
    path = tmp_path / name
    path.write_text(json.dumps({"chat_template": JINJA}), encoding="utf-8")
    assert template_arg(str(path)).source == JINJA


def test_jinja_text_with_a_nul_is_text():
    """(``pathlib.is_file`` said False for a NUL; a ``stat`` raises ValueError: kept so.)"""
    text = "{% for m in messages %}{{ m.content }}{% endfor %}\x00"
    assert template_arg(text).source == text


def test_jinja_text_and_json_holding_jinja_stay_what_they_were(tmp_path):
    path = tmp_path / "t.jinja"
    braced = "{{ bos_token }}" + JINJA  # Jinja that opens with a brace is no JSON
    path.write_text(braced, encoding="utf-8")
    assert template_arg(str(path)).source == braced
    # a JSON object whose strings are Jinja that renders the messages: a working template
    shaped = '{"q": "{% for m in messages %}{{ m.content }}{% endfor %}"}'
    path.write_text(shaped, encoding="utf-8")
    assert template_arg(str(path)).render([{"role": "user", "content": "hi"}]) == '{"q": "hi"}'
    empty = tmp_path / "tokenizer_config.json"
    empty.write_text('{"chat_template": null}', encoding="utf-8")
    with pytest.raises(UserError, match="no chat_template in this file"):
        template_arg(str(empty))


@pytest.mark.parametrize(("argv", "said"), [
    (["chat", "--model", "demo", "--template", f"{NOWHERE}/t.jinja"],
     f"unmask chat: error: --template '{NOWHERE}/t.jinja': no such file, not a built-in "
     "template (default, plain) and not a Jinja string"),
    (["chat", "--model", "demo", "--template", "{{ nope.x }}"],
     "unmask chat: error: chat template (--template) failed to render: 'nope' is undefined"),
    (["chat", "--model", "demo", "--draft", f"{NOWHERE}/drafter"],
     f"unmask chat: error: {NOWHERE}/drafter: no such folder"),
    (["generate", "--model", "demo", "--chat", "--template", f"{NOWHERE}/t.jinja", "hi"],
     f"unmask generate: error: --template '{NOWHERE}/t.jinja': no such file, not a built-in "
     "template (default, plain) and not a Jinja string"),
    (["generate", "--model", "demo", "--draft", f"{NOWHERE}/drafter", "hi"],
     f"unmask generate: error: {NOWHERE}/drafter: no such folder"),
])
def test_template_and_drafter_mistakes_are_refused_before_torch_loads(argv, said):
    assert refusal(argv) == said + "\n"
