"""``unmask chat`` started with standard input closed (``<&-``, a service or cron job without
input) raised a traceback (``sys.stdin.isatty()`` on None), and with standard output closed
(``>&-``) ran every turn and exited 0 while ``print`` dropped each reply: both are one-line
errors now (exit code 2, before the model is loaded), as ``generate`` and ``infill`` give."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from unmask.chat import DEFAULT_CHAT_TEMPLATE
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, chat_template=DEFAULT_CHAT_TEMPLATE,
                       **tok.special_ids())
    torch.manual_seed(0)
    return str(save_checkpoint(tmp_path_factory.mktemp("chat") / "m", model=Transformer(cfg),
                               tokenizer=tok))


def test_closed_standard_input_is_one_line(chat_model, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", None)
    assert main(["chat", "--model", chat_model, "--gen-length", "4", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unmask chat: error: standard input is closed") and \
        err.count("\n") == 1, err


def test_closed_standard_output_is_one_line_not_lost_replies(chat_model, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", None)
    code = main(["chat", "--model", chat_model, "--gen-length", "4", "--device", "cpu"])
    assert code == 2, err.getvalue()
    assert err.getvalue() == ("unmask chat: error: standard output is closed: the replies "
                              "would be lost; send it to a file (> out.txt) or a pipe\n")
