"""``GET /v1/models``: the served model as OpenAI's clients read it, plus the checkpoint's
recommended sampling options (``sample_defaults``) that completions run when a request leaves
them out, so a client (the playground) can show what will run."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from server_helpers import loaded, random_transformer  # noqa: E402

from unmask import api  # noqa: E402
from unmask.config import model_preset  # noqa: E402
from unmask.model import Transformer  # noqa: E402
from unmask.server import create_app  # noqa: E402
from unmask.tokenizer import byte_tokenizer  # noqa: E402

RECOMMENDED = {"block_length": 4, "temperature": 0.0, "no_repeat_ngram_size": 3,
               "repetition_penalty": 1.3}


def test_models_list_the_recommendation_that_completions_run():
    model = random_transformer()
    model.config.sample_defaults = dict(RECOMMENDED)
    with TestClient(create_app(loaded(model))) as c:
        listed = c.get("/v1/models").json()["data"][0]
        assert listed["sample_defaults"] == RECOMMENDED
        assert c.get(f"/v1/models/{listed['id']}").json() == listed
        # what OpenAI's clients read is unchanged
        assert (listed["object"], listed["created"], listed["owned_by"]) == ("model", 0, "unmask")
        # a completion that sends none of them runs them: the same text as one that sends them
        plain = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 8}).json()
        sent = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 8,
                                               **listed["sample_defaults"]}).json()
        assert plain["choices"][0]["text"] == sent["choices"][0]["text"]
        assert plain["steps"] == sent["steps"] == 8


def test_a_checkpoint_without_a_recommendation_lists_none():
    with TestClient(create_app(loaded(random_transformer()))) as c:
        assert c.get("/v1/models").json()["data"][0]["sample_defaults"] == {}


def test_penalties_a_decoder_cannot_apply_are_not_listed():
    """SEDD applies no penalties and reads no temperature, so those recommended do not run
    (``api.sample_config`` drops them) and are not listed."""
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64,
                       attention="bidirectional", objective="sedd", sedd_graph="uniform",
                       **tok.special_ids())
    cfg.sample_defaults = dict(RECOMMENDED)
    sedd = loaded(Transformer(cfg).eval(), tok)
    runs = api.sample_config(sedd, {})
    assert (runs.repetition_penalty, runs.no_repeat_ngram_size) == (1.0, 0)
    with TestClient(create_app(sedd)) as c:
        assert c.get("/v1/models").json()["data"][0]["sample_defaults"] == {"block_length": 4}
