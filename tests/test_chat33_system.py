"""A chat template that writes only user and assistant turns dropped a system message without
a word: ``unmask chat --system "Answer in French"``, ``api.chat`` and a server request's
system message rendered the same prompt as without it, so the instruction never reached the
model. Such a prompt is now refused in one line (``ChatTemplate.prompt``), as a message
``name`` a template never mentions is; ``--system`` is named at startup, the server answers
400. Templates that render the system role, or require one, are unchanged."""

from __future__ import annotations

import io

import pytest
import torch

from unmask.chat import DEFAULT_CHAT_TEMPLATE, PLAIN_CHAT_TEMPLATE, ChatTemplate, TemplateRejected
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

NO_SYSTEM = ("{% for m in messages %}{% if m.role == 'user' %}U: {{ m.content }}\n"
             "{% elif m.role == 'assistant' %}A: {{ m.content }}\n{% endif %}{% endfor %}A:")
NEEDS_SYSTEM = ("{% if messages[0].role != 'system' %}{{ raise_exception('system first') }}"
                "{% endif %}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
TALK = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi"}]


def test_a_template_that_drops_the_system_message_is_refused():
    tok = byte_tokenizer()
    with pytest.raises(TemplateRejected, match=r"leaves messages\[0\] \(system\) out of the "
                                               r"prompt of these messages"):
        ChatTemplate(NO_SYSTEM).prompt(tok, TALK)
    later = [TALK[1], {"role": "assistant", "content": "Salut"}, TALK[0], TALK[1]]
    with pytest.raises(TemplateRejected, match=r"messages\[2\] \(system\)"):
        ChatTemplate(NO_SYSTEM).prompt(tok, later)


@pytest.mark.parametrize("source", [DEFAULT_CHAT_TEMPLATE, PLAIN_CHAT_TEMPLATE, NEEDS_SYSTEM])
def test_templates_that_render_the_system_message_are_unchanged(source):
    text, _ = ChatTemplate(source).prompt(byte_tokenizer(), TALK)
    assert "Answer in French." in text


def test_a_system_message_equal_to_the_templates_default_is_kept():
    """Qwen's and Dream's templates write "You are a helpful assistant." when no system message
    is given: the same prompt with that message, which is not dropped."""
    default = "You are a helpful assistant."
    qwen = ("{% if messages[0].role == 'system' %}S: {{ messages[0].content }}\n{% else %}"
            f"S: {default}\n{{% endif %}}{{% for m in messages %}}{{% if m.role != 'system' %}}"
            "{{ m.role }}: {{ m.content }}\n{% endif %}{% endfor %}")
    talk = [{"role": "system", "content": default}, TALK[1]]
    assert ChatTemplate(qwen).prompt(byte_tokenizer(), talk)[0] == f"S: {default}\nuser: Hi\n"
    with pytest.raises(TemplateRejected):  # a template that drops it is still refused
        ChatTemplate(NO_SYSTEM).prompt(byte_tokenizer(), talk)
    assert ChatTemplate(qwen).prompt(byte_tokenizer(), TALK)[0].startswith("S: Answer in")


def test_a_blank_system_message_or_none_is_no_instruction_to_lose():
    tok = byte_tokenizer()
    assert ChatTemplate(NO_SYSTEM).prompt(tok, TALK[1:])[0] == "U: Hi\nA:"
    blank = [{"role": "system", "content": "  "}, TALK[1]]
    assert ChatTemplate(NO_SYSTEM).prompt(tok, blank)[0] == "U: Hi\nA:"


def test_sft_refuses_an_example_whose_system_message_the_template_drops():
    """SFT trained the reply to "Answer in French." on a prompt without it."""
    tok = byte_tokenizer()
    reply = {"role": "assistant", "content": "Bonjour"}
    with pytest.raises(TemplateRejected, match="out of the prompt"):
        ChatTemplate(NO_SYSTEM).example(tok, [*TALK, reply])
    prompt, response = ChatTemplate(NO_SYSTEM).example(tok, [TALK[1], reply])
    assert tok.decode(prompt) == "U: Hi\nA:" and tok.decode(response).strip() == "Bonjour"
    assert ChatTemplate(DEFAULT_CHAT_TEMPLATE).example(tok, [*TALK, reply])


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64,
                       chat_template=NO_SYSTEM, **tok.special_ids())
    torch.manual_seed(0)
    return str(save_checkpoint(tmp_path_factory.mktemp("chat") / "m", model=Transformer(cfg),
                               tokenizer=tok))


def test_chat_names_system_at_startup(chat_model, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    flags = ["--gen-length", "4", "--block-length", "4", "--device", "cpu"]
    assert main(["chat", "--model", chat_model, *flags, "--system", "Answer in French."]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("unmask chat: error: --system: chat template of ")
    assert "(system) out of the prompt" in err and len(err.splitlines()) == 1
    assert main(["chat", "--model", chat_model, *flags]) == 0  # without --system it chats


def test_the_server_answers_400_naming_messages():
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient
    from server_helpers import Echo, loaded, tiny_config

    from unmask.server import create_app

    client = TestClient(create_app(loaded(Echo(tiny_config(64))), chat_template=NO_SYSTEM,
                                   access_log=False))
    r = client.post("/v1/chat/completions", json={"messages": TALK, "max_tokens": 2})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "messages" and "(system) out of the prompt" in error["message"]
    r = client.post("/v1/chat/completions", json={"messages": TALK[1:], "max_tokens": 2})
    assert r.status_code == 200, r.text
