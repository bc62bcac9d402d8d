"""Forms on a published model that reads a BOS first (``prompt_bos_id``), session 31: the
form is laid after it, as the tokenizer that adds the BOS encodes a text (carried over from
session 30, where ``fill-form`` and ``/v1/forms`` put no BOS first)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from server_helpers import loaded
from test_facts30_prompt_bos import _first_ids
from test_infill30_forms_spacing import _llama

from unmask import api
from unmask.config import SampleConfig, model_preset
from unmask.infill import fill_form
from unmask.infill.template import segment_ids
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0,
                                                 "maximum": 9}}, "required": ["n"]}


@pytest.mark.parametrize("causal", [False, True], ids=["mdlm", "ar"])
@pytest.mark.parametrize("how", [{"template": '{"a": "<int:0..9>", "b": "<bool>"}'},
                                 {"schema": SCHEMA}, {"schema": {"type": "boolean"}}])
def test_a_form_begins_with_the_bos(how, causal):
    """Every forward reads the BOS first (it read the form's ``{`` first: a text the model
    never saw at a document's start); neither the result nor a step's view holds it."""
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64,
                                     **TOK.special_ids(),
                                     **({"attention": "causal", "objective": "ar"} if causal
                                        else {}))).eval()
    bos = 3  # the byte tokenizer's BOS, as a published model records its own
    model.config = dataclasses.replace(model.config, prompt_bos_id=bos)
    m = loaded(model)
    seen = _first_ids(m)
    views: list[list[int]] = []
    out = api.fill_form(m, **how, config={} if causal else {"steps": 2},  # ar: steps 1 a token
                        step_callback=lambda step, tokens: views.append(tokens[0].tolist()))
    # a causal run reads the prompt once, then one new token per forward (its KV cache)
    assert seen and (seen[0] == bos if causal else set(seen) == {bos})
    assert views and all(v[0] != bos for v in views)
    assert json.loads(out.text) == out.detail.value
    assert m.tokenizer.decode(out.detail.tokens) == out.text


class Spy(torch.nn.Module):
    """Uniform logits; keeps the canvases it is called on."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size, self.seen = vocab_size, []

    def forward(self, tokens, attention_mask=None, **cache):
        self.seen.append(tokens[0].tolist())
        return torch.zeros(*tokens.shape, self.vocab_size)  # (B, L, V)


def test_after_a_bos_alone_the_forms_first_text_starts_a_text():
    """A tokenizer that marks word starts (Llama's ``▁``) and adds the BOS itself encodes
    ``<s>{"a": ...`` as the BOS, then the text as a text's start; a prompt before the form
    (``prefix_ids``) makes the form's text a continuation instead."""
    tok = _llama()
    bos = tok.bos_id
    piece = '{"a":'  # the space before the value goes into its hole (BPE spacing)
    start, cont = segment_ids(tok, piece, first=True), segment_ids(tok, piece, first=False)
    assert start != cont
    for kwargs, laid in (({"start_ids": [bos]}, [bos, *start]),
                         ({"prefix_ids": [bos]}, [bos, *cont])):
        model = Spy(tok.vocab_size)
        r = fill_form(model, tok, '{"a": "<bool>"}', SampleConfig(steps=1), **kwargs)
        assert model.seen[0][: len(laid)] == laid, kwargs
        assert r.value["a"] in (True, False)
