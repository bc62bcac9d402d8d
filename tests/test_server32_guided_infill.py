"""Guided ``/v1/infill`` on a published model that reads a BOS first (``prompt_bos_id``),
session 32: the BOS leads as ``fill_form``'s ``start_ids`` (as ``/v1/forms`` and a plain
infill lay it), not as text before the gap."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import loaded, random_transformer  # noqa: E402

from unmask.server import create_app  # noqa: E402

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def _events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


@pytest.mark.parametrize("template", ["[MASK:4]", "Hi [MASK:4] there"])
def test_streamed_steps_of_a_guided_infill_hold_the_template_not_the_bos(template):
    """Every ``denoising.step`` showed the BOS as the canvas's first token (a plain infill's
    steps do not), so every position was one off the template's text."""
    model = random_transformer(0)
    model.config = dataclasses.replace(model.config, prompt_bos_id=3)
    with TestClient(create_app(loaded(model))) as c:
        body = {"template": template, "guided_json": SCHEMA, "steps": 2}
        r = c.post("/v1/infill", json={**body, "stream": True})
        plain = c.post("/v1/infill", json=body).json()
    assert r.status_code == 200, r.text
    *steps, final = _events(r.text)
    assert steps and final["text"] == plain["text"]
    tokens = steps[-1]["choices"][0]["tokens"]
    last = "".join(t or "" for t in tokens)
    assert last == final["text"], (last, final["text"])  # the canvas is the template's text
    # position for position: as many as the same request's on the model without a BOS (the
    # BOS, shown as "", made one more, which the join above cannot see)
    with TestClient(create_app(loaded(random_transformer(0)))) as c:
        r = c.post("/v1/infill", json={**body, "stream": True})
    no_bos = _events(r.text)[-2]["choices"][0]["tokens"]
    assert len(tokens) == len(no_bos), (tokens, no_bos)


def test_with_nothing_before_the_gap_the_answer_starts_a_text_after_the_bos():
    """A Llama-style tokenizer encodes ``{"a": 1}`` after its BOS as a text's start
    (``<s>▁{...``); the answer was laid as a continuation (``<s>{``), a text the model never
    saw at a document's start."""
    from test_infill30_forms_spacing import _llama

    from unmask.infill.template import segment_ids

    tok = _llama()
    inner = random_transformer(0, tok)
    seen: list[list[int]] = []

    class Spy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.config = dataclasses.replace(inner.config, prompt_bos_id=tok.bos_id)

        def forward(self, tokens, attention_mask=None, **cache):
            seen.append(tokens[0].tolist())
            return self.inner(tokens, attention_mask=attention_mask, **cache)

    with TestClient(create_app(loaded(Spy(), tok))) as c:
        r = c.post("/v1/infill", json={"template": "[MASK:4]", "guided_json": SCHEMA,
                                       "steps": 1})
    assert r.status_code == 200, r.text
    start = segment_ids(tok, '{"a":', first=True)
    assert start != segment_ids(tok, '{"a":', first=False)
    assert seen and seen[0][: 1 + len(start)] == [tok.bos_id, *start], seen[0][:8]
    assert json.loads(r.json()["gaps"][0]["text"]) == r.json()["gaps"][0]["value"]


@pytest.mark.parametrize("bos", [None, 3])
def test_a_guided_completions_steps_show_the_answer_not_the_prompt(bos):
    """An unguided completion's ``denoising.step`` has one entry per generated position
    (docs/serving.md); a guided one sent the whole prompt's tokens (and the BOS) with every
    step, a chat's template included."""
    model = random_transformer(0)
    model.config = dataclasses.replace(model.config, prompt_bos_id=bos)
    with TestClient(create_app(loaded(model))) as c:
        r = c.post("/v1/completions", json={"prompt": "Hello there", "max_tokens": 24,
                                            "guided_json": SCHEMA, "steps": 4, "seed": 1,
                                            "stream": True, "stream_denoising": True})
    assert r.status_code == 200, r.text
    steps = [e for e in _events(r.text) if e["object"] == "denoising.step"]
    text = "".join(e["choices"][0]["text"] for e in _events(r.text)
                   if e["object"] == "text_completion")
    assert steps and json.loads(text)["a"] is not None
    for e in steps:
        tokens = e["choices"][0]["tokens"]
        assert len(tokens) <= 24 and tokens[0] == "{", tokens[:4]
    last = "".join(t or "" for t in steps[-1]["choices"][0]["tokens"])
    assert json.loads(last) == json.loads(text)


def test_a_guided_completion_of_an_empty_prompt_starts_a_text_after_the_bos():
    """As guided infill: after the BOS alone the answer is laid as a text's start."""
    from test_infill30_forms_spacing import _llama

    from unmask.infill.template import segment_ids

    tok = _llama()
    inner = random_transformer(0, tok)
    seen: list[list[int]] = []

    class Spy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.config = dataclasses.replace(inner.config, prompt_bos_id=tok.bos_id)

        def forward(self, tokens, attention_mask=None, **cache):
            seen.append(tokens[0].tolist())
            return self.inner(tokens, attention_mask=attention_mask, **cache)

    with TestClient(create_app(loaded(Spy(), tok))) as c:
        r = c.post("/v1/completions", json={"prompt": "", "max_tokens": 8,
                                            "guided_json": SCHEMA, "steps": 1})
    assert r.status_code == 200, r.text
    start = segment_ids(tok, '{"a":', first=True)
    assert seen and seen[0][: 1 + len(start)] == [tok.bos_id, *start], seen[0][:8]
    assert json.loads(r.json()["choices"][0]["text"])["a"] is not None


def test_a_guided_infill_parses_its_template_once(monkeypatch):
    """Its checks run twice where the form compiles (``plumbing.checked``: the second on a
    slow-check thread); the template was parsed and encoded both times (a 64K template:
    some 70 ms on a slow-check thread each time)."""
    import unmask.infill

    calls: list[str] = []
    parse = unmask.infill.parse_template
    monkeypatch.setattr(unmask.infill, "parse_template",
                        lambda text, *a, **k: calls.append(text) or parse(text, *a, **k))
    with TestClient(create_app(loaded(random_transformer(0)))) as c:
        r = c.post("/v1/infill", json={"template": "Hi [MASK:6]", "guided_json": SCHEMA,
                                       "steps": 2})
    assert r.status_code == 200, r.text
    assert calls == ["Hi [MASK:6]"], calls
