"""A form's ``<text>`` value on tokenizers that mark word starts (review of session 30).

A ``<text>`` value may start with a space-led word whose space the output drops (``" dog"``
is written ``"dog"``). Its tokens were then the value encoded as a text of its own: a
SentencePiece-style tokenizer (Metaspace, or Llama's ``Prepend("▁")`` normalizer) put a word
start back in front (``"▁dog"``), so ``FormResult.tokens`` decoded to ``{"a": " dog"}`` where
``text`` was ``{"a": "dog"}``. The value continues the form's text and is encoded as such
(``segment_ids``), as the skeleton after it already was.
"""

from __future__ import annotations

import json

import pytest
import torch
from server_helpers import bpe_tokenizer
from test_infillmend_sentencepiece import llama_of, metaspace_of
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

from unmask.config import SampleConfig
from unmask.infill.forms import fill_form
from unmask.tokenizer import SPECIAL_TOKENS, Tokenizer


def _bpe() -> HFTokenizer:
    """Word starts, two words, and every byte (so quotes and braces have tokens)."""
    pieces = [*SPECIAL_TOKENS, "<unk>", *[f"<0x{b:02X}>" for b in range(256)], "▁",
              *"catdog", "▁c", "▁ca", "▁cat", "▁d", "▁do", "▁dog"]
    merges = [("▁", "c"), ("▁c", "a"), ("▁ca", "t"), ("▁", "d"), ("▁d", "o"), ("▁do", "g")]
    return HFTokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=merges,
                                  unk_token="<unk>", byte_fallback=True))


def _metaspace() -> Tokenizer:
    return metaspace_of(_bpe())


def _llama() -> Tokenizer:
    return llama_of(_bpe())


class Prefers:
    """Every position favours ``best`` (then each further piece a little less)."""

    def __init__(self, tokenizer: Tokenizer, *best: str) -> None:
        self.bias = torch.zeros(tokenizer.vocab_size)
        for k, piece in enumerate(best):
            self.bias[tokenizer.token_to_id(piece)] = 10.0 - k

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        return self.bias.expand(*tokens.shape, len(self.bias)).clone()  # (B, L, V)


FORMS = ['{"a": "<text:3>"}', '{"a": "<text:3-8>", "b": 1}', '["<text:2-5>"]', '"<text:3>"']


@pytest.mark.parametrize("make", [_metaspace, _llama], ids=["metaspace", "llama"])
@pytest.mark.parametrize("form", FORMS)
def test_a_text_value_that_dropped_its_space_is_spelt_by_the_tokens(make, form):
    tok = make()
    r = fill_form(Prefers(tok, "▁dog"), tok, form, config=SampleConfig(steps=8))
    hole = r.holes[0]
    assert hole.value.startswith("dog") and not hole.text.startswith('" ')
    assert r.value == json.loads(r.text)
    assert tok.decode(r.tokens) == r.text  # was '{"a": " dog"}': the word start kept


def test_a_text_value_that_dropped_its_space_on_a_byte_level_bpe():
    tok = bpe_tokenizer()
    lead = next(i for i in range(tok.vocab_size)
                if tok.decode([i]).startswith(" ") and tok.decode([i])[1:].isalpha()
                and len(tok.decode([i])) >= 4)
    word = tok.decode([lead])[1:]
    model = Prefers(tok, tok.id_to_token(lead))
    r = fill_form(model, tok, f'{{"a": "<text:{len(word)}>"}}', config=SampleConfig(steps=4))
    assert r.value == {"a": word} and tok.decode(r.tokens) == r.text


@pytest.mark.parametrize("make", [_metaspace, _llama], ids=["metaspace", "llama"])
def test_a_streamed_form_reads_its_holes_where_the_canvas_has_them(make):
    """The server's stream (``AnswerSoFar``) laid the skeleton out as texts of their own
    (``tokenizer.encode``: a word start each on a SentencePiece tokenizer), one token wider
    than the canvas ``fill_form`` builds, so it read every hole after the first off by one
    and streamed no value (or a wrong one)."""
    from types import SimpleNamespace

    from unmask.server.routes.guided import AnswerSoFar, answer_text

    tok = make()
    form = {"a": "<choice:cat|dog>", "b": "<choice:cat|dog>", "c": "<bool>"}
    rows: list[list[int]] = []
    prompt = tok.encode("cat")
    r = fill_form(Prefers(tok, "▁dog", "<0x64>"), tok, form, config=SampleConfig(steps=8),
                  prefix_ids=prompt,
                  step_callback=lambda step, tokens: rows.append(tokens[0].tolist()))
    state = SimpleNamespace(tok=tok, cfg=SimpleNamespace(mask_id=tok.mask_id))
    so_far = AnswerSoFar(state, form, True, len(prompt), "form")
    assert so_far.pieces[-1][1] == len(rows[-1])  # the canvas's width
    assert so_far.text(rows[-1]) == answer_text(r, True) == json.dumps(r.value)


@pytest.mark.parametrize("make", [_metaspace, _llama], ids=["metaspace", "llama"])
@pytest.mark.parametrize("gap", [{"choices": ["cat", "dog"]}, {"regex": "[a-z]+", "max_len": 3}],
                         ids=["choices", "regex"])
def test_a_constrained_gap_that_took_the_space_keeps_one(make, gap):
    """``Hole.space_is_taken`` asked the gap's automaton whether ``"dog"`` is in its language
    with ``tokenizer.encode("dog")``: ``"▁dog"`` on a SentencePiece tokenizer, the bytes
    ``" dog"``, never in it, so the fill ``"▁dog"`` was not seen to hold the template's
    space, which was put back: ``"the  dog."``."""
    from unmask.infill import Gap, infill

    tok = make()
    r = infill(Prefers(tok, "▁dog"), tok, ["the ", Gap(**gap), "."], SampleConfig(steps=4))
    assert r.text == "the dog." and r.gaps[0].text == "dog"
    assert tok.decode(r.tokens) == r.text


@pytest.mark.parametrize("make", [_llama, "byte"], ids=["llama", "byte"])
def test_a_bare_regex_answer_has_no_padding_in_its_tokens(make):
    """A bare value (``parse=False``: the server's ``guided_regex``) dropped the spaces that pad
    it to its hole's width from ``text`` but kept them in ``tokens``: ``"aaaaa"`` with ids
    that decoded to ``"aaaaa     "``."""
    from unmask.infill.schema import constraint_form
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer() if make == "byte" else make()
    a = "a" if make == "byte" else "<0x61>"
    form, parse = constraint_form(tok, regex="[a-z]{2,5}", max_tokens=10)
    r = fill_form(Prefers(tok, a), tok, form, config=SampleConfig(steps=10), parse=parse)
    assert not parse and r.text == "aaaaa"
    assert tok.decode(r.tokens) == r.text


def test_guided_infill_reads_the_text_after_its_gap_as_the_template_has_it():
    """``/v1/infill`` with ``guided_regex`` encoded the text after the gap on its own: on a
    SentencePiece tokenizer the model read ``"▁dog"``, a space the template ``"cat
    [MASK:4]dog"`` does not have."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient
    from server_helpers import loaded, random_transformer

    from unmask.server import create_app

    tok = _llama()
    inner = random_transformer(0, tok)

    class Seen(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.config, self.rows = inner, inner.config, []

        def forward(self, tokens, attention_mask=None, **cache):
            self.rows.append(tokens[0].tolist())
            return self.inner(tokens, attention_mask=attention_mask, **cache)

    model = Seen()
    with TestClient(create_app(loaded(model, tok))) as client:
        r = client.post("/v1/infill", json={"template": "cat [MASK:4]dog",
                                            "guided_regex": "[0-9]+", "steps": 2})
    assert r.status_code == 200, r.text
    assert r.json()["text"].endswith("dog") and " dog" not in r.json()["text"]
    assert tok.decode(model.rows[0][-3:]) == "dog"  # "d", "o", "g": no word start
    assert tok.id_to_token(model.rows[0][-3]) == "d"
