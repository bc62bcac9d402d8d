"""Guided ``/v1/infill`` with nothing before its gap, on a Llama-style tokenizer (review of
session 30).

The route's context pre-check counted every piece of the answer's skeleton as text that
continues one; ``fill_form``, given no text before it, lays its first piece out as the start
of a text: on a tokenizer that marks word starts (``Prepend("▁")``) one token more. At that
boundary the pre-check passed and ``fill_form`` refused with its own message, which does not
name ``[MASK:n]``.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


def test_guided_infill_counts_a_first_piece_as_the_fill_lays_it():
    """And with a published model's BOS first (``prompt_bos_id``): the answer's first piece
    still starts a text after it (``fill_form``'s ``start_ids``, as the tokenizer encodes a
    text after its BOS; session 32: it was laid as a continuation), so the BOS costs one
    token, and the pre-check counts it as the fill lays it (its every refusal is its own)."""
    from fastapi.testclient import TestClient
    from server_helpers import loaded, random_transformer
    from test_infill30_forms_spacing import _llama

    from unmask.infill.template import segment_ids
    from unmask.server import create_app

    tok = _llama()
    piece = '{"a": '
    assert len(segment_ids(tok, piece, first=True)) > len(segment_ids(tok, piece, first=False))
    inner = random_transformer(0, tok)

    class Short(torch.nn.Module):
        def __init__(self, max_seq_len: int) -> None:
            super().__init__()
            self.inner = inner
            self.config = dataclasses.replace(inner.config, max_seq_len=max_seq_len)

        def forward(self, tokens, attention_mask=None, **cache):
            return self.inner(tokens, attention_mask=attention_mask, **cache)

    schema = {"type": "object", "properties": {"a": {"type": "integer"}},
              "required": ["a"]}
    least = {}
    for bos in (None, tok.bos_id):
        said = []
        for max_seq_len in range(8, 30):
            model = Short(max_seq_len)
            model.config = dataclasses.replace(model.config, prompt_bos_id=bos)
            with TestClient(create_app(loaded(model, tok))) as client:
                r = client.post("/v1/infill", json={"template": "[MASK:4]",
                                                    "guided_json": schema, "steps": 1})
            said.append(r.status_code)
            if r.status_code != 200:  # the pre-check's refusal, naming the gap's n
                assert r.status_code == 400 and "smaller n in [MASK:n]" in r.text, r.text
                assert r.json()["error"]["code"] == "context_length_exceeded"
        assert 200 in said and 400 in said, said
        least[bos] = said.index(200)
    assert least[None] + 1 == least[tok.bos_id], least
