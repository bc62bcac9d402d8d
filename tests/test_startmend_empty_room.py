"""An empty prompt takes its start token's column under every decoder that gives it one
(``ModelFacts.prompt_columns``: the causal decoders, ``llada`` and ``bd3lm``), and the server's
room helpers count it by that rule. ``GET /playground/options`` counted it on causal
checkpoints only, so on a diffusion model it offered a ``max_tokens`` (the whole context) that
``/v1/completions`` then refused for an empty prompt; a chat request without ``max_tokens``
whose template rendered an empty prompt was refused for the length the server picked itself
(``reply_tokens`` passed the raw prompt length)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from server_helpers import loaded, tiny_config

from unmask.model import Transformer

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

CONTEXT = 32
KINDS = {
    "mdlm": {},
    "bd3lm-padded": {"attention": "block-causal", "block_size": 4, "objective": "bd3lm"},
    "bd3lm-absolute": {"attention": "block-causal", "block_size": 4, "objective": "bd3lm",
                       "block_align": "absolute"},
    "causal": {"attention": "causal", "objective": "ar"},
}


def client(chat_template: str | None = None, **kw: object):  # noqa: ANN201 (a TestClient)
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(tiny_config(CONTEXT), **kw)).eval()
    return TestClient(create_app(loaded(model), chat_template=chat_template,
                                 limits=ServerLimits(max_steps=64)))


@pytest.mark.parametrize("kind", KINDS)
def test_the_playground_refuses_exactly_what_completions_refuses_for_an_empty_prompt(kind):
    """docs/serving.md: ``refused`` is the 400 completions answers those fields whatever the
    prompt; for the empty prompt it must agree, at the edge of the context too."""
    with client(**KINDS[kind]) as c:
        for max_tokens in (CONTEXT - 4, CONTEXT - 1, CONTEXT):
            refused = c.get(f"/playground/options?max_tokens={max_tokens}").json()["refused"]
            r = c.post("/v1/completions", json={"prompt": "", "max_tokens": max_tokens})
            assert (refused is None) == (r.status_code == 200), (max_tokens, refused, r.text)
        # the largest length the refusal offers is one that an empty prompt runs with
        refused = c.get(f"/playground/options?max_tokens={CONTEXT}").json()["refused"]
        offered = int(refused.split("max_tokens <= ")[1].split(",")[0])
        assert offered == (CONTEXT - 4 if kind == "bd3lm-padded" else CONTEXT - 1), refused
        assert c.get(f"/playground/options?max_tokens={offered}").json()["refused"] is None
        r = c.post("/v1/completions", json={"prompt": "", "max_tokens": offered})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("kind", ["mdlm", "causal"])
def test_a_chat_reply_not_sized_fits_an_empty_rendered_prompt(kind):
    """A template that renders the messages alone (an empty message: an empty prompt) and no
    ``max_tokens``: the reply's length is cut to the room after the start token, not to the
    whole context (a 400 context_length_exceeded naming max_tokens the client never sent)."""
    body = {"messages": [{"role": "user", "content": ""}]}
    if kind != "causal":
        body["steps"] = CONTEXT  # as many as the longest reply could ask for
    with client(chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}",
                **KINDS[kind]) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] <= CONTEXT - 1


@pytest.mark.parametrize("kind", ["mdlm", "causal"])
def test_one_note_names_the_start_token_under_every_decoder(kind):
    """One start rule, one note: ``api._check_fits`` said another thing for a causal decoder
    (CAUSAL_START_NOTE), and the note claimed "the document separator that training documents
    follow", untrue of an imported checkpoint whose training unmask does not know; it names
    the token (the model's EOS) and says where unmask's own data puts it."""
    from unmask import api
    from unmask.errors import UserError
    from unmask.sampling.loop import START_TOKEN_NOTE

    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(tiny_config(16), **KINDS[kind])).eval()
    with pytest.raises(UserError) as e:
        api.start(loaded(model), [[]], {"gen_length": 16, "steps": 16} if kind != "causal"
                  else {"gen_length": 16})
    message = str(e.value)
    assert f"({START_TOKEN_NOTE})" in message, message
    assert "model's EOS" in message and "unmask's training data" in message, message
    assert "training documents follow" not in message, message
