"""``unmask train --objective sft --chat-template`` reads its value by the rule of ``unmask chat
--template`` and ``unmask serve --chat-template`` (README, "Every command"): a file of the
typed name wins over the built-in (``plain`` with ``./plain`` here is that file), and a
built-in name is taken in any letter case (``PLAIN``, ``Default``). Train's flag took the
built-in over ``./plain`` (the SFT trained on another format than the one chat then read from
the same words) and refused ``PLAIN`` as "no such file"."""

from __future__ import annotations

import json

import pytest
import torch

from unmask.chat import DEFAULT_CHAT_TEMPLATE, PLAIN_CHAT_TEMPLATE
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

FILE_TEMPLATE = "{% for m in messages %}{{ m.role }}> {{ m.content }}\n{% endfor %}"


@pytest.fixture()
def base(tmp_path):
    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids()))
    save_checkpoint(tmp_path / "base", model=model, tokenizer=tok)
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"prompt": "q", "response": "a"}) + "\n")
    return tmp_path


def _trained_template(base, value: str, out: str) -> str:
    assert main(["train", "--objective", "sft", "--init", str(base / "base"), "--data",
                 str(base / "pairs.jsonl"), "--out", str(base / out), "--steps", "1",
                 "--seq-len", "32", "--batch-size", "1", "--no-progress",
                 "--chat-template", value]) == 0
    config = json.loads((base / out / "checkpoint" / "config.json").read_text())
    return config["chat_template"]


def test_a_file_of_the_typed_name_wins_as_in_chat(base, monkeypatch):
    here = base / "here"
    here.mkdir()
    (here / "plain").write_text(FILE_TEMPLATE)
    monkeypatch.chdir(here)
    assert _trained_template(base, "plain", "file") == FILE_TEMPLATE


def test_a_built_in_name_in_any_case_as_in_chat(base, monkeypatch):
    monkeypatch.chdir(base)
    assert _trained_template(base, "PLAIN", "upper") == PLAIN_CHAT_TEMPLATE
    assert _trained_template(base, "Default", "title") == DEFAULT_CHAT_TEMPLATE


def test_an_empty_chat_template_is_refused_not_the_init_models(base, monkeypatch, capsys):
    """``--chat-template ""`` (a variable left unset) trained with the ``--init`` model's
    template (else the default) without a word."""
    monkeypatch.chdir(base)
    with pytest.raises(SystemExit) as e:  # argparse's error
        main(["train", "--objective", "sft", "--init", str(base / "base"), "--data",
              str(base / "pairs.jsonl"), "--out", str(base / "empty"), "--steps", "1",
              "--seq-len", "32", "--batch-size", "1", "--no-progress", "--chat-template", ""])
    assert e.value.code == 2
    assert "argument --chat-template: empty" in capsys.readouterr().err
    assert not (base / "empty").exists()


def test_an_empty_chat_template_in_a_config_file_is_refused_as_the_flag_is(base, capsys):
    """``"chat_template": ""`` in a ``--config`` file trained with the ``--init`` model's
    template without a word, where the flag's ``""`` is refused; it is refused too."""
    config = base / "train_config.json"
    config.write_text(json.dumps({"objective": "sft", "chat_template": "", "steps": 1,
                                  "seq_len": 32, "batch_size": 1}))
    rc = main(["train", "--config", str(config), "--init", str(base / "base"), "--data",
               str(base / "pairs.jsonl"), "--out", str(base / "cfg"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "chat template '' is empty: give a built-in chat template (default, plain)" in err
    assert "chat_template (a --config file's" in err  # where the "" came from
    assert not (base / "cfg").exists()


def test_train_help_shows_the_chat_template_flag_as_chat_does(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--chat-template FILE|NAME" in capsys.readouterr().out
