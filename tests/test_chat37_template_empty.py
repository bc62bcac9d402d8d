"""An empty ``--template`` (``--template ""``, a shell variable left unset) was read as a path,
and ``Path("")`` is the working folder: the one line said "--template '' is a folder, not a
chat template file; ... (nor does a checkpoint in it)". It says the value is empty now: on
the command line as the flag's error (``name_or_path``, every name-or-path flag: ``train
--chat-template ""`` silently trained with the ``--init`` model's template), and in the API's
``template=`` and the server's ``chat_template`` (``template_arg``)."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from unmask.chat import DEFAULT_CHAT_TEMPLATE, EMPTY_TEMPLATE, template_arg
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_template_says_so(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as e:
        template_arg(value)
    assert str(e.value) == f"chat template {value!r} is empty: {EMPTY_TEMPLATE}"
    assert "--template" not in str(e.value)  # an API call (template=) has no flag


def test_chat_with_an_empty_template_is_one_line(tmp_path, monkeypatch, capsys):
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, chat_template=DEFAULT_CHAT_TEMPLATE,
                       **tok.special_ids())
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m", model=Transformer(cfg), tokenizer=tok)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    with pytest.raises(SystemExit) as e:  # argparse's error
        main(["chat", "--model", str(path), "--template", "", "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("unmask chat: error: argument --template/--chat-template: empty: "
                          f"{EMPTY_TEMPLATE}") and err.count("\n") == 1, err  # template_arg's
