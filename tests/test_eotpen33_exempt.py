"""A chat template's own end-of-turn token (not the EOS: LLaDA-Instruct's ``<|eot_id|>``,
Qwen's ``<|im_end|>``) is never penalised: every earlier turn holds it, and
``repetition_penalty`` 1.2 made a reply that should end at once write 'Q' instead
(``SampleConfig.exempt_ids``, set by ``unmask.sampling.penalties.exempting``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from server_helpers import loaded, tiny_config
from torch import nn

from unmask import api
from unmask.chat import ChatTemplate
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.sampling.penalties import exempting
from unmask.tokenizer import Tokenizer, byte_tokenizer

BASE = byte_tokenizer()
BASE.hf.add_special_tokens(["<|eot|>"])
TOK = Tokenizer(BASE.hf, **BASE.special_ids())
EOT = TOK.token_to_id("<|eot|>")
Q = TOK.encode("Q")[0]
TEMPLATE = ("{% for m in messages %}{{ m.role }}: {{ m.content }}<|eot|>{% endfor %}"
            "{% if add_generation_prompt %}assistant: {% endif %}")
MESSAGES = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "ok"}]


class Scripted(nn.Module):
    """The reply's first token: end of turn (logit 2.0) just before 'Q' (1.9), so that a
    penalty on the end of turn (2.0 / 1.2 < 1.9) turns it into 'Q'; then EOS. ``causal``: the
    logits at absolute position p predict position p + 1 (a KV cache's ``start`` shifts them)."""

    supports_kv_cache = True  # takes ``cache=``/``start=`` (a cache it needs not fill)

    def __init__(self, causal: bool) -> None:
        super().__init__()
        cfg = dataclasses.replace(tiny_config(128), vocab_size=TOK.vocab_size,
                                  chat_template=TEMPLATE)
        if causal:
            cfg = dataclasses.replace(cfg, attention="causal", objective="ar")
        self.config, self.causal = cfg, causal
        self.first = len(template().prompt(TOK, MESSAGES)[1])  # the reply's first position

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: object = None, start: int = 0, **_: object) -> torch.Tensor:
        B, L = tokens.shape
        at = torch.arange(start, start + L) + (1 if self.causal else 0)  # position predicted
        logits = torch.full((B, L, self.config.vocab_size), -10.0)
        logits[:, at == self.first, EOT] = 2.0
        logits[:, at == self.first, Q] = 1.9
        logits[:, at > self.first, self.config.eos_id] = 5.0
        return logits


def template() -> ChatTemplate:
    cfg = tiny_config(128)
    return ChatTemplate.with_tokens(TEMPLATE, TOK, bos_id=cfg.bos_id, eos_id=cfg.eos_id)


def chat_reply(causal: bool, options: dict) -> api.Reply:
    ld = loaded(Scripted(causal), TOK)
    config = api.sample_config(ld, {"gen_length": 4, "temperature": 0.0, **options})
    return api.chat(ld, MESSAGES, config=config, template=template())


PENALTIES = [{"repetition_penalty": 1.2}, {"no_repeat_ngram_size": 1}]
"""The penalties that read the prompt (presence and frequency count generated tokens only)."""


@pytest.mark.parametrize("causal", [False, True], ids=["llada", "ar"])
@pytest.mark.parametrize("options", PENALTIES, ids=["r", "ngram"])
def test_a_reply_that_ends_at_once_still_ends_under_penalties(causal, options):
    if not causal:
        options = {**options, "block_length": 4}
    assert chat_reply(causal, {}).text == ""  # the scripted model ends the turn at once
    reply = chat_reply(causal, options)
    assert reply.text == "", reply.result.gen_ids[0] if reply.result else None
    assert reply.decoder == ("ar" if causal else "llada")
    assert reply.config is not None and reply.config.exempt_ids == ()  # as given: derived


def test_generate_with_a_template_exempts_its_end_of_turn_too():
    ld = loaded(Scripted(causal=False), TOK)
    # one user message: its own turn's end is in the prompt, and the reply starts at once
    ld.model.first = len(template().prompt(TOK, [{"role": "user", "content": "ok"}])[1])
    out = api.generate(ld, "ok", template=template(), config={
        "gen_length": 4, "block_length": 4, "temperature": 0.0, "repetition_penalty": 1.2})
    assert out.texts == [""]


def test_exempting_changes_a_config_only_where_a_penalty_is_on():
    plain = SampleConfig()
    assert exempting(plain, {EOT}, 2) is plain  # nothing to exempt from: batches as given
    pen = SampleConfig(repetition_penalty=1.2)
    assert exempting(pen, {EOT, 2}, None).exempt_ids == tuple(sorted({EOT, 2}))
    # the EOS is exempt already: a template whose turns end with it changes nothing (the
    # demo's chat config differed from completions' for nothing and batched apart)
    assert exempting(pen, {2}, 2) is pen
    assert exempting(pen, {EOT, 2}, 2).exempt_ids == (EOT,)
    assert SampleConfig(exempt_ids=[7, 3, 7]).exempt_ids == (3, 7)  # a JSON list
    for bad in ("7", [1.5], [-1], [True], [2**70]):  # 2**70: a traceback past int64
        with pytest.raises(UserError, match="exempt_ids must be a list of token ids"):
            SampleConfig(exempt_ids=bad)


def test_the_server_chat_exempts_the_end_of_turn():
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    client = TestClient(create_app(loaded(Scripted(causal=False), TOK), access_log=False))
    body = {"messages": MESSAGES, "max_tokens": 4, "temperature": 0.0, "steps": 4}
    plain = client.post("/v1/chat/completions", json=body)
    assert plain.status_code == 200, plain.text
    assert plain.json()["choices"][0]["message"]["content"] == ""
    got = client.post("/v1/chat/completions", json={**body, "repetition_penalty": 1.2})
    assert got.status_code == 200, got.text
    assert got.json()["choices"][0]["message"]["content"] == ""
