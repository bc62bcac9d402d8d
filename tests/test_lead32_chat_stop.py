"""``unmask chat --stop TEXT`` (repeatable) ends each reply as ``api.chat(stop=...)`` does (one
rule, ``unmask.chat.text_end``), keeps the cut reply in the conversation, and reports the stops
in ``--json`` as ``generate --json`` does. The chat had no such flag (generate had)."""

from __future__ import annotations

import io
import json

import pytest
import torch

from unmask import api
from unmask.chat import DEFAULT_CHAT_TEMPLATE
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

FLAGS = ["--gen-length", "16", "--block-length", "16", "--temperature", "0", "--device", "cpu",
         "--json"]


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=256,
                       chat_template=DEFAULT_CHAT_TEMPLATE, **tok.special_ids())
    torch.manual_seed(3)
    return str(save_checkpoint(tmp_path_factory.mktemp("chat") / "m", model=Transformer(cfg),
                               tokenizer=tok))


def _turns(path: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
           *extra: str) -> list[dict]:
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\nagain\n"))
    assert main(["chat", "--model", path, *FLAGS, *extra]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_chat_stop_cuts_each_reply_as_the_api_does(chat_model, monkeypatch, capsys):
    whole = _turns(chat_model, monkeypatch, capsys)
    assert "stop" not in whole[0]
    reply = whole[0]["reply"]
    assert len(reply) >= 6, reply  # a reply long enough to cut inside
    stops = [reply[4:6], reply[2:4]]  # the later-starting one given first
    cut = _turns(chat_model, monkeypatch, capsys, "--stop", stops[0], f"--stop={stops[1]}")
    assert cut[0]["stop"] == stops and cut[1]["stop"] == stops
    loaded = api.load_for_decoding(chat_model, device="cpu")
    config = api.sample_config(loaded, {"gen_length": 16, "block_length": 16,
                                        "temperature": 0.0})
    first = api.chat(loaded, [{"role": "user", "content": "hello"}], config=config, stop=stops)
    assert cut[0]["reply"] == first.text and len(first.text) < len(reply)
    # the conversation goes on from the reply as cut, as api.chat's caller would keep it
    second = api.chat(loaded, [{"role": "user", "content": "hello"},
                               {"role": "assistant", "content": first.text},
                               {"role": "user", "content": "again"}], config=config, stop=stops)
    assert cut[1]["reply"] == second.text and cut[1]["prompt"] == second.prompt


def test_chat_refuses_an_empty_stop(chat_model, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["chat", "--model", chat_model, "--stop", ""])
    assert stopped.value.code == 2
    assert "argument --stop: a stop text needs at least one character" in (
        capsys.readouterr().err)
