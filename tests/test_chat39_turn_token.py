"""A chat reply whose template ends a turn with a token of its own that is not EOS (ChatML's
``<|im_end|>`` beside ``<|endoftext|>``, Llama 3's ``<|eot_id|>``) ends the run at that token:
``api.chat``, ``generate --chat`` and the server cut the reply there, but without a stop
sequence the decoder ran on to ``gen_length`` (an unrelated stop sequence made it stop: 48
forwards against 8 for the same reply). ``StopRows`` now looks for a row's end ids besides
EOS, which every decoder stops at by itself: a row whose only end id is EOS adds no per-step
work; one whose template also writes another special token (BOS in a Mistral-style template
whose turns end at EOS) is looked at, as the reply is cut at that token too."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from server_helpers import loaded, tiny_config
from test_server import Scripted, sse_events

from unmask import api
from unmask.chat import ChatTemplate
from unmask.model import Transformer
from unmask.sampling.stops import StopRows, TextEnd
from unmask.tokenizer import Tokenizer, byte_tokenizer

CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TALK = [{"role": "user", "content": "Hi"}]
OPTIONS = {"gen_length": 48, "block_length": 8, "steps": 48, "decoder": "llada"}


def _chatml() -> tuple[api.Loaded, list[int]]:
    """A model sure of "Hello<|im_end|>" and then a whole next turn, after the ChatML prompt
    of ``TALK``; its generated script."""
    base = byte_tokenizer()
    hf = base.hf
    hf.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tok = Tokenizer(hf, **base.special_ids())
    cfg = dataclasses.replace(tiny_config(128), vocab_size=tok.vocab_size, chat_template=CHATML)
    prompt = ChatTemplate.with_tokens(CHATML, tok, bos_id=cfg.bos_id, eos_id=cfg.eos_id
                                      ).prompt(tok, TALK)[1]
    eot = tok.token_to_id("<|im_end|>")
    assert eot is not None and eot != cfg.eos_id
    script = tok.encode("Hello") + [eot] + tok.encode("\nmore words of a turn " * 3)
    return loaded(Scripted(cfg, script, len(prompt)), tok), script


@pytest.mark.parametrize("stop", [None, ["ZZZ"]])
def test_api_chat_ends_the_run_at_the_templates_end_of_turn_token(stop):
    m, _ = _chatml()
    reply = api.chat(m, TALK, config=OPTIONS, stop=stop)
    assert reply.text == "Hello"
    assert reply.nfe == 8  # the first block; the old code ran all 48 without a stop


def test_generate_chat_ends_the_run_at_the_end_of_turn_token():
    m, _ = _chatml()
    template = api.chat_template(m, None)
    out = api.generate(m, ["Hi"], config=OPTIONS, template=template)
    assert out.texts == ["Hello"] and out.nfe == 8
    assert out.n_tokens == len("Hello") + 1  # through the end-of-turn token


def test_the_servers_chat_ends_the_run_at_the_end_of_turn_token():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    m, _ = _chatml()
    body = {"messages": TALK, "max_tokens": 48, "steps": 48, "block_length": 8}
    with TestClient(create_app(m)) as client:
        r = client.post("/v1/chat/completions", json=body).json()
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True})
    assert r["choices"][0]["message"]["content"] == "Hello"
    assert r["choices"][0]["finish_reason"] == "stop"
    assert r["usage"]["completion_tokens"] == len("Hello") + 1
    assert r["nfe"] == 8
    chunks = [json.loads(d) for _, d in sse_events(streamed.text)[:-1]]
    assert "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks
                   if ch["choices"]) == "Hello"
    assert [ch["choices"][0]["finish_reason"] for ch in chunks if ch["choices"]][-1] == "stop"


def test_a_causal_run_stops_at_an_end_id_with_the_same_tokens():
    """``ar``: a row ends at the first id of its ``TextEnd.ends``, with the tokens before it
    as the run to the end wrote them."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_config(), attention="causal", objective="ar")
    m = loaded(Transformer(cfg).eval())
    config = {"decoder": "ar", "gen_length": 30}
    full = api.start(m, [[5, 6, 7]], config).run()
    row = [int(i) for i in full.gen_ids[0]]
    end = next(t for t in row[4:] if t != cfg.eos_id)
    k = row.index(end)
    rule = TextEnd((), frozenset({end, cfg.eos_id}))
    early = api.start(m, [[5, 6, 7]], config, stop=[rule]).run()
    assert [int(i) for i in early.gen_ids[0][: k + 1]] == row[: k + 1]
    assert full.nfe == 30 and early.nfe == k + 1


def test_a_row_that_only_ends_at_eos_is_not_watched():
    """EOS the decoders stop at themselves: a rule with no stop, no turn marker and no other
    end id adds no per-step check."""
    eos = byte_tokenizer().special_ids()["eos_id"]
    rule = TextEnd((), frozenset({eos}))
    assert not StopRows(byte_tokenizer().decode, [rule], 3, eos_id=eos)
    assert StopRows(byte_tokenizer().decode, [TextEnd((), frozenset({eos, 9}))], 3, eos_id=eos)
