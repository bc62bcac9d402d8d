"""Chat templates from a pipe through the command line, a JSON template file with no template,
and the OpenAI message reading (one implementation, refusals that name what is accepted):

- ``unmask chat`` / ``generate --chat`` with ``--template <(...)``: the pre-torch check
  (``check_template_given``) leaves a pipe to the run, which reads it once; a check that read
  it emptied it ("failed to render: it renders a user message without its text");
- a JSON object with no ``chat_template`` and no Jinja tag (a base model's
  ``tokenizer_config.json``) read through a pipe or under another name than ``*.json`` was
  rendered as Jinja ("renders a user message without its text"); it is "no chat_template in
  this file", as under ``.json``;
- ``/v1/chat/completions`` reads its messages with ``unmask.chat.check_messages``, as
  ``api.chat`` and SFT data do;
- a role that is none of the accepted ones names ``developer`` too; content given as one bare
  part names the list-of-parts form; a part with no ``type`` says so (it said "type None")."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_chat39_template_files import JINJA, _pipe

from unmask.chat import check_messages, template_arg
from unmask.errors import UserError

SRC = str(Path(__file__).resolve().parents[1] / "src")
BASE_CONFIG = json.dumps({"bos_token": "<s>", "eos_token": "</s>", "model_max_length": 2048})


def _bash(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by bash (for ``<(...)``) with this checkout's ``unmask`` as ``$UNMASK``."""
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1",
           "UNMASK": f"{sys.executable} -m unmask", **env}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                          env=env, stdin=subprocess.DEVNULL)


needs_bash_pipes = pytest.mark.skipif(shutil.which("bash") is None or not os.path.isdir("/dev/fd"),
                                      reason="no bash process substitution here")


@needs_bash_pipes
def test_chat_reads_a_template_from_a_pipe_on_the_command_line():
    done = _bash('printf "hi\\n" | $UNMASK chat --model demo --gen-length 4 --show-prompt '
                 '--template <(printf %s "$J")', J=JINJA)
    assert done.returncode == 0, done.stderr
    assert "user: hi\nassistant:" in done.stdout + done.stderr


@needs_bash_pipes
def test_generate_chat_reads_a_template_from_a_pipe_on_the_command_line():
    done = _bash('$UNMASK generate --model demo --chat --gen-length 4 --json '
                 '--template <(printf %s "$J") hi', J=JINJA)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n_tokens"] == 4


@needs_bash_pipes
def test_a_base_config_from_a_pipe_on_the_command_line_has_no_chat_template():
    done = _bash('$UNMASK chat --model demo --template <(printf %s "$J")', J=BASE_CONFIG)
    assert done.returncode == 2
    assert re.fullmatch(r"unmask chat: error: /\S+: no chat_template in this file\n",
                        done.stderr), done.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_json_object_without_a_template_from_a_pipe_has_no_chat_template(tmp_path):
    with pytest.raises(UserError, match=r"pipe: no chat_template in this file$"):
        template_arg(_pipe(tmp_path, BASE_CONFIG))


@pytest.mark.parametrize("name", ["tokenizer_config.json.bak", "other.txt", "config"])
@pytest.mark.parametrize("text", [BASE_CONFIG, '{"a": 1}', "{}"])
def test_a_json_object_without_a_template_has_none_whatever_its_name(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=f"^{re.escape(str(path))}: no chat_template in this"):
        template_arg(str(path))


def test_the_server_reads_messages_as_the_library_does():
    from unmask.server.http import chat_messages
    from unmask.server.schemas import ChatRequest

    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    for messages in (
        [{"role": "developer", "content": parts, "name": "x"}],
        [{"role": "user", "content": []}, {"role": "assistant", "content": "r", "name": None}],
        [{"role": "system", "content": "s"},
         {"role": "user", "content": parts[:1], "name": "", "tool_calls": None}],
    ):
        request = ChatRequest.model_validate({"messages": messages})
        assert chat_messages(request.messages) == check_messages(messages)
    assert chat_messages(ChatRequest.model_validate({"messages": [
        {"role": "developer", "content": parts, "name": "x"}]}).messages) == [
        {"role": "system", "content": "ab", "name": "x"}]


@pytest.mark.parametrize(("content", "role", "said"), [
    ("x", "human", "messages[0] has role 'human'; a role is one of system, user, assistant "
     "(developer is read as system)"),
    ({"type": "text", "text": "a"}, "user", 'messages[0].content must be a string or a list '
     'of text parts [{"type": "text", "text": "..."}], not an object'),
    ([{"text": "a"}], "user", "messages[0].content[0] has no 'type'; a text part is "
     '{"type": "text", "text": "..."}'),
    ([{"type": None, "text": "a"}], "user", "messages[0].content[0] has no 'type'; a text part "
     'is {"type": "text", "text": "..."}'),
])
def test_message_refusals_name_what_is_accepted(content, role, said):
    with pytest.raises(UserError, match="^messages: " + re.escape(said) + "$"):
        check_messages([{"role": role, "content": content}])
