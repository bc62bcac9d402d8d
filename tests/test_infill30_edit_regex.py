"""``unmask edit --regex`` (``edit(regex=...)``, ``/v1/edit``) with a pattern that backtracks
exponentially (review of session 30).

Python's ``re`` ran the user's pattern in the process: ``(a+)+$`` on a line of 40 a's and a
``b`` searches for days, in C, where neither Ctrl-C nor the server's timeouts reach it. The
search now runs in a child process (``regex_spans``), stopped after ``REGEX_SECONDS`` with a
one-line error; Ctrl-C stops it at once. A repeat count too large for ``re``
(``a{99999999999}``) was an ``OverflowError`` traceback.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import threading

import pytest
import torch

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.infill import edit
from unmask.infill.edit import regex_spans
from unmask.tokenizer import byte_tokenizer

edit_module = importlib.import_module("unmask.infill.edit")  # the package's ``edit``: a function

TOK = byte_tokenizer()
SLOW = "(a+)+$"
LINE = "a" * 40 + "b"


def _model(tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    return torch.zeros(*tokens.shape, TOK.vocab_size)  # (B, L, V)


def test_a_regex_that_backtracks_for_days_is_stopped_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(edit_module, "REGEX_SECONDS", 0.5)
    with pytest.raises(UserError, match=r"searched the text for over 0.5 s and was stopped"):
        edit(_model, TOK, LINE, regex=SLOW, config=SampleConfig(steps=1))


def test_ctrl_c_stops_a_regex_search():
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            regex_spans(SLOW, LINE, seconds=600)
    finally:
        timer.cancel()


@pytest.mark.parametrize("pattern", ["a{99999999999}", "(", "\\p{L}"])
def test_a_bad_regex_is_a_user_error(pattern):
    with pytest.raises(UserError, match="bad regex"):
        edit(_model, TOK, "abc", regex=pattern, config=SampleConfig(steps=1))


@pytest.mark.parametrize(("pattern", "text"), [
    (r"\bcat\b", "the cat sat on the cat."), ("é+", "café \ud800 éé"), (r"(?m)^x", "x\r\nx"),
    ("", "ab"), (r"(\w)\1", "aabbc"),
])
def test_the_matches_are_pythons(pattern, text):
    assert regex_spans(pattern, text) == [m.span() for m in re.finditer(pattern, text)]


def test_the_cli_refuses_a_slow_regex_in_one_line(tmp_path, monkeypatch, capsys):
    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main
    from unmask.config import model_preset
    from unmask.model import Transformer

    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, **TOK.special_ids())
    ckpt = str(save_checkpoint(tmp_path / "run", model=Transformer(cfg).eval(), tokenizer=TOK))
    monkeypatch.setattr(edit_module, "REGEX_SECONDS", 0.5)
    assert main(["edit", "--model", ckpt, "--text", LINE, "--regex", SLOW, "--no-live"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was stopped" in err[0], err


def test_the_server_answers_a_slow_regex_with_a_400(monkeypatch):
    """``/v1/edit`` ran the search on a worker thread that held the interpreter: the whole
    server (its event loop included) froze for as long as the search ran."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient
    from server_helpers import loaded, tiny_config

    from unmask.model import Transformer
    from unmask.server import create_app

    torch.manual_seed(0)
    monkeypatch.setattr(edit_module, "REGEX_SECONDS", 0.5)
    with TestClient(create_app(loaded(Transformer(tiny_config()).eval()))) as client:
        r = client.post("/v1/edit", json={"text": LINE, "regex": SLOW})
    assert r.status_code == 400, r.text
    assert "was stopped" in r.json()["error"]["message"]
