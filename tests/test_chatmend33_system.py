"""``--template RUN`` (the folder ``--model`` takes, the model in ``RUN/checkpoint``) said the
folder holds no template; it names the file in the checkpoint, and says that leaving out
``--template`` uses the model's own template.

The check that a chat template renders the system messages (``ChatTemplate._renders_system``)
looked at the first system message only, and let it through when its text occurred anywhere in
the prompt: a later system message the template drops passed, and so did system "Hi" with a
user message "Hi there". Each system message is now checked by rendering the conversation with
its text replaced. The refusal no longer says the template "does not render system messages":
Mistral v0.3's renders one where the conversation ends with a user message."""

from __future__ import annotations

import pytest
import torch

from unmask.chat import DEFAULT_CHAT_TEMPLATE, ChatTemplate, TemplateRejected, template_arg
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

FIRST_ONLY = ("{% if messages[0].role == 'system' %}S: {{ messages[0].content }}\n{% endif %}"
              "{% for m in messages %}{% if m.role != 'system' %}{{ m.role }}: {{ m.content }}\n"
              "{% endif %}{% endfor %}A:")
NO_SYSTEM = "{% for m in messages %}{% if m.role == 'user' %}U: {{ m.content }}\n{% endif %}" \
            "{% endfor %}A:"
MISTRAL_03 = (  # the system message goes into the last user turn
    "{% if messages[0].role == 'system' %}{% set system = messages[0].content %}"
    "{% set rest = messages[1:] %}{% else %}{% set rest = messages %}{% endif %}"
    "{% for m in rest %}{% if m.role == 'user' %}{% if loop.last and system is defined %}"
    "[INST] {{ system }}\n\n{{ m.content }}[/INST]{% else %}[INST] {{ m.content }}[/INST]"
    "{% endif %}{% else %} {{ m.content | trim }}</s>{% endif %}{% endfor %}")
ONE_LINE = ("{% for m in messages %}{{ m.role }}: {{ m.content | replace('\\n', ' ') }}\n"
            "{% endfor %}A:")


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def test_every_system_message_is_checked():
    talk = [_msg("system", "Be brief."), _msg("user", "Hi"), _msg("assistant", "Yo"),
            _msg("system", "From now on answer in French."), _msg("user", "Bye")]
    with pytest.raises(TemplateRejected, match=r"leaves messages\[3\] \(system\) out"):
        ChatTemplate(FIRST_ONLY).prompt(byte_tokenizer(), talk)
    text, _ = ChatTemplate(DEFAULT_CHAT_TEMPLATE).prompt(byte_tokenizer(), talk)
    assert "Be brief." in text and "answer in French." in text


def test_a_system_text_found_elsewhere_in_the_prompt_is_still_dropped():
    with pytest.raises(TemplateRejected, match=r"messages\[0\] \(system\)"):
        ChatTemplate(NO_SYSTEM).prompt(byte_tokenizer(), [_msg("system", "Hi"),
                                                          _msg("user", "Hi there")])


def test_a_template_that_renders_system_messages_in_some_conversations_only():
    tok = byte_tokenizer()
    system, user = _msg("system", "Answer in French."), _msg("user", "Hi")
    text, _ = ChatTemplate(MISTRAL_03).prompt(tok, [system, user])
    assert text == "[INST] Answer in French.\n\nHi[/INST]"
    with pytest.raises(TemplateRejected) as e:  # a prefill: the system text is dropped
        ChatTemplate(MISTRAL_03).prompt(tok, [system, user, _msg("assistant", "Sal")])
    assert "out of the prompt of these messages" in str(e.value)
    assert "does not render system messages" not in str(e.value)


def test_a_template_that_rewrites_the_system_text_renders_it():
    """``| replace`` changes the text (it is not found in the prompt as given): rendered."""
    talk = [_msg("system", "Answer\nin French."), _msg("user", "Hi")]
    text, _ = ChatTemplate(ONE_LINE).prompt(byte_tokenizer(), talk)
    assert text.startswith("system: Answer in French.\nuser: Hi\n")
    probe = [_msg("system", "unmask probe: a system message"), _msg("user", "Hi")]
    assert ChatTemplate(ONE_LINE).prompt(byte_tokenizer(), probe)[0].startswith("system: unmask")
    with pytest.raises(TemplateRejected):
        ChatTemplate(NO_SYSTEM).prompt(byte_tokenizer(), probe)


def test_generate_names_system_where_the_template_drops_it(tmp_path, capsys):
    """``unmask generate --chat --system`` named ``messages[0] (system)``, an index the user
    never wrote; ``unmask chat`` names ``--system``. A prompt the template rejects is still
    said as the template says it."""
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, **tok.special_ids())
    torch.manual_seed(0)
    model = save_checkpoint(tmp_path / "m", model=Transformer(cfg), tokenizer=tok)
    picky = tmp_path / "picky.jinja"
    picky.write_text("{% if messages[-1].content == 'bad' %}{{ raise_exception('no bad') }}"
                     "{% endif %}" + NO_SYSTEM)
    run = ["generate", "--model", str(model), "--chat", "--template", str(picky),
           "--gen-length", "4", "--device", "cpu", "--no-live"]
    assert main([*run, "--system", "Answer in French.", "Hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unmask generate: error: --system: chat template ")
    assert "leaves messages[0] (system) out of the prompt" in err
    assert main([*run, "--system", "Answer in French.", "bad"]) == 2
    err = capsys.readouterr().err
    assert "--system" not in err and "no bad" in err


def test_template_given_a_run_folder_names_the_checkpoints_file(tmp_path):
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32,
                       chat_template=DEFAULT_CHAT_TEMPLATE, **tok.special_ids())
    save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)  # in checkpoint/
    with pytest.raises(UserError) as refused:
        template_arg(str(tmp_path / "run"))
    said = str(refused.value)
    assert f"give {tmp_path / 'run' / 'checkpoint' / 'config.json'}, or leave out" in said
    assert said.endswith("leave out --template to use the model's own chat template")
    assert template_arg(str(tmp_path / "run" / "checkpoint" / "config.json")).source == \
        DEFAULT_CHAT_TEMPLATE  # as the hint says
