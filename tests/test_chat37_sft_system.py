"""A system prompt in a field of its own on an SFT line (LLaMA-Factory's ``system`` column,
OpenOrca's ``system_prompt``) was ignored as "another field": the response was trained as the
answer to a conversation without that instruction, silently. It is the conversation's first
message, a system message, rendered as ``unmask chat --system`` renders it; a copy of the
system message ``messages`` opens with counts once, another one is refused naming the line."""

from __future__ import annotations

import json

import pytest
import torch

from unmask.checkpoint import load, save_checkpoint
from unmask.commands import chat as chat_cmd
from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.sft import SFTData, read_sft_jsonl
from unmask.tokenizer import byte_tokenizer

TALK = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
SYSTEM = {"role": "system", "content": "Be brief."}


def _write(tmp_path, rows):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _refusal(tmp_path, row):
    """The error of ``row``, read as the second line of a file, without the file's name."""
    path = _write(tmp_path, [{"prompt": "a", "response": "b"}, row])
    with pytest.raises(UserError) as e:
        read_sft_jsonl(path)
    message = str(e.value)
    assert message.startswith(f"{path}:2: ") and "\n" not in message, message
    return message.removeprefix(f"{path}:2: ")


@pytest.mark.parametrize("key", ["system", "system_prompt"])
def test_a_system_field_is_the_first_message_of_either_layout(tmp_path, key):
    rows = [{key: "Answer in French.", "prompt": "Hi", "response": "Salut"},
            {key: "Answer in French.", "messages": TALK}]
    examples = read_sft_jsonl(_write(tmp_path, rows))
    first = {"role": "system", "content": "Answer in French."}
    assert examples[0].messages == [first, {"role": "user", "content": "Hi"},
                                    {"role": "assistant", "content": "Salut"}]
    assert examples[1].messages == [first, *TALK]


def test_weight_indices_stay_on_their_turns_after_the_system_message(tmp_path):
    """``"weight": 0`` on the first answer: untrained stays that answer (index 2 once the
    system message opens the list), and the trained turn's prompt holds it."""
    talk = [{"role": "user", "content": "a"},
            {"role": "assistant", "content": "first", "weight": 0},
            {"role": "user", "content": "b"}, {"role": "assistant", "content": "second"}]
    example, = read_sft_jsonl(_write(tmp_path, [{"system": "S", "messages": talk}]))
    assert [m["role"] for m in example.messages] == [
        "system", "user", "assistant", "user", "assistant"]
    assert example.untrained == frozenset({2})
    tok = byte_tokenizer()
    data = SFTData([example], tok, eos_id=tok.eos_id, chat_template=None)
    (prompt, response), = data.rows
    assert tok.decode(prompt).startswith("<|system|>\nS\n") and "first" in tok.decode(prompt)
    assert tok.decode(response[:-1]).startswith("second")


def test_an_error_in_messages_names_the_lines_own_index(tmp_path):
    """The messages are checked as given: the system message put first does not shift the
    index an error names."""
    row = {"system": "S", "messages": [{"role": "user", "content": "a", "weight": 0}, TALK[1]]}
    assert _refusal(tmp_path, row).startswith("messages[0] has a weight")


def test_a_copy_counts_once_and_blank_or_null_is_absent(tmp_path):
    rows = [{"system": "Be brief.\n", "messages": [SYSTEM, *TALK]},  # a copy, but for "\n"
            {"system": " Be brief.", "system_prompt": "Be brief.", "messages": TALK},
            {"system": "", "prompt": "a", "response": "b"},
            {"system": "  \n", "system_prompt": None, "prompt": "a", "response": "b"}]
    examples = read_sft_jsonl(_write(tmp_path, rows))
    assert examples[0].messages == [SYSTEM, *TALK]
    assert examples[1].messages == [{"role": "system", "content": " Be brief."}, *TALK]
    assert [m["role"] for m in examples[2].messages] == ["user", "assistant"]
    assert [m["role"] for m in examples[3].messages] == ["user", "assistant"]


@pytest.mark.parametrize(("row", "said"), [
    ({"system": "Be terse.", "messages": [SYSTEM, *TALK]},
     "'system' and messages[0], a system message, are two system prompts that differ"),
    ({"system_prompt": "Be terse.", "messages": [*TALK, SYSTEM, *TALK]},
     "'system_prompt' and messages[2], a system message, are two system prompts that differ"),
    ({"system": "Be brief.", "messages": [*TALK, SYSTEM, *TALK]},
     "'system' repeats messages[2], a system message that is not the first"),
    ({"system": "A", "system_prompt": "B", "prompt": "a", "response": "b"},
     "'system' and 'system_prompt' are two system prompts that differ"),
    ({"system": 5, "prompt": "a", "response": "b"},
     "'system' (the system prompt) must be a string, not a number"),
    ({"system_prompt": ["Be brief."], "messages": TALK},
     "'system_prompt' (the system prompt) must be a string, not a list"),
    ({"system": "\ud800", "prompt": "a", "response": "b"},
     "'system' holds an unpaired surrogate"),
])
def test_a_system_field_that_cannot_be_honoured_is_one_line_naming_it(tmp_path, row, said):
    assert _refusal(tmp_path, row).startswith(said)


@pytest.mark.parametrize(("row", "said"), [
    ({"system": "S", "instruction": "i", "input": "", "output": "o"}, "an Alpaca-style record"),
    ({"system": "S", "conversations": [{"from": "human", "value": "x"}]}, "ShareGPT-style"),
    ({"system": "S", "prompt": "a", "response": "b", "messages": TALK}, "not both"),
    ({"system": 5, "prompt": "a", "response": "b", "messages": TALK}, "not both"),
])
def test_the_lines_layout_is_checked_before_its_system_field(tmp_path, row, said):
    """An Alpaca or ShareGPT record with LLaMA-Factory's ``system`` is told how to convert
    it (the refusal of the system field hid that), and a line of both layouts is told so."""
    assert said in _refusal(tmp_path, row)


def test_the_trained_prompt_holds_the_system_prompt_as_chat_system_renders_it(tmp_path):
    """The prompt columns of a trained batch are the ids ``unmask chat --system`` builds for
    the same conversation with the checkpoint's template (BOS included), the response after
    them: train and chat see the same system message."""
    tok = byte_tokenizer()
    template = ("{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}"
                "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}[assistant] "
                "{% endif %}")
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=128,
                       chat_template=template, **tok.special_ids())
    save_checkpoint(tmp_path / "m", model=Transformer(cfg), tokenizer=tok)
    loaded = load(tmp_path / "m")
    system = "Answer in French, always."
    session = chat_cmd.ChatSession(loaded, chat_cmd.model_template(loaded, None),
                                   SampleConfig(gen_length=4, steps=4), system=system)
    _, chat_ids = session.template.prompt(tok, session.messages([TALK[0]]))
    assert tok.decode(chat_ids).count(system) == 1

    data = SFTData(read_sft_jsonl(_write(tmp_path, [{"system": system, "prompt": "Hi",
                                                     "response": "Salut"}])),
                   loaded.tokenizer, eos_id=loaded.config.eos_id,
                   chat_template=loaded.config.chat_template)
    x0, prompt_mask = data.batch([0], seq_len=128)
    n = len(chat_ids)
    assert torch.equal(x0[0, :n], torch.tensor(chat_ids))
    assert prompt_mask[0].tolist() == [True] * n + [False] * (x0.shape[1] - n)
    assert tok.decode(x0[0, n:].tolist()).startswith("Salut")
