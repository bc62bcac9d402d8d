"""``FormResult.text`` (``unmask fill-form --json``'s ``text``, ``/v1/forms``' ``text``) is the
template's JSON text with each value written in: the spaces that pad a value to its hole's
width on the canvas are dropped (they were kept: ``{"n": 7   , "b": true }``), and the
token ids still spell it."""

from __future__ import annotations

import json

import pytest
import torch
from server_helpers import bpe_tokenizer

from unmask.config import SampleConfig, model_preset
from unmask.infill import fill_form
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

FORM = {"name": "<text:2-12>", "n": "<int:0..99999>", "ok": "<bool>",
        "tags": ["<choice:red|green|blue>", "<digits:1-6>"], "x": "<float>"}


def _model(tok):
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=160, **tok.special_ids())
    return Transformer(cfg).eval(), tok


def _byte_model():
    return _model(byte_tokenizer())


def _bpe_model():  # its tokens join spaces: runs of padding spaces, " 42"
    return _model(bpe_tokenizer())


@pytest.mark.parametrize("make", [_byte_model, _bpe_model])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_text_is_the_template_with_its_values_and_no_padding(make, seed):
    model, tok = make()
    template = json.dumps(FORM)
    r = fill_form(model, tok, template, SampleConfig(steps=8, temperature=1.0, seed=seed))
    want = template
    for h in r.holes:  # each hole's spec, in the template's order, becomes its value's text
        want = want.replace(json.dumps(h.spec), h.text, 1)
    assert r.text == want, (r.text, want)
    assert json.loads(r.text) == r.value
    assert tok.decode(r.tokens) == r.text


def test_the_cli_json_text_has_no_padding(tmp_path, capsys):
    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main

    model, tok = _byte_model()
    ckpt = str(save_checkpoint(tmp_path / "run", model=model, tokenizer=tok))
    assert main(["fill-form", "--model", ckpt, '{"n": "<int:0..99999>", "b": "<bool>"}',
                 "--json", "--steps", "4"]) == 0  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert data["text"] == json.dumps(data["value"])  # one space after each ":" and ","
