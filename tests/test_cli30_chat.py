"""``unmask chat --json`` reports what ``unmask.api.chat`` returns for the same messages and
options: the reply and its ``nfe`` and ``steps`` (``steps`` was missing, where ``generate
--json`` and the API's ``Reply`` have it)."""

from __future__ import annotations

import io
import json

import torch

from unmask import api
from unmask.chat import DEFAULT_CHAT_TEMPLATE
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


def test_chat_json_equals_the_api(tmp_path, monkeypatch, capsys):
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=128,
                       chat_template=DEFAULT_CHAT_TEMPLATE, **tok.special_ids())
    torch.manual_seed(0)
    path = str(save_checkpoint(tmp_path / "chat", model=Transformer(cfg), tokenizer=tok))
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    flags = ["--gen-length", "8", "--block-length", "4", "--temperature", "0.9", "--seed", "7"]
    assert main(["chat", "--model", path, "--device", "cpu", "--json", *flags]) == 0
    turn = json.loads(capsys.readouterr().out)
    loaded = api.load_for_decoding(path, device="cpu")
    config = api.sample_config(loaded, {"gen_length": 8, "block_length": 4,
                                        "temperature": 0.9, "seed": 7})
    reply = api.chat(loaded, [{"role": "user", "content": "hello"}], config=config)
    assert turn["reply"] == reply.text and turn["prompt"] == reply.prompt
    assert (turn["nfe"], turn["steps"]) == (reply.nfe, reply.steps) and reply.steps == 8
