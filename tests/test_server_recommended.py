"""The server's completions and chat take the checkpoint's recommended sampling options for
every option a request does not send, as the command line does (``api.sample_config``): the
same options give the same text from the CLI, the Python API and the server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unmask import api
from unmask.config import SampleConfig, model_preset
from unmask.loaded import Loaded
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

TOK = byte_tokenizer()
PROMPT = "abcabc"
RECOMMENDED = {"temperature": 0.0, "block_length": 4, "repetition_penalty": 1.3}


def model(attention: str = "bidirectional", **recommended: object) -> Loaded:
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, init_std=0.1,
                       attention=attention, sample_defaults=recommended or RECOMMENDED,
                       **TOK.special_ids())  # fmt: skip
    torch.manual_seed(3)  # a model that repeats itself: penalty and blocks both show
    return Loaded(model=Transformer(cfg).eval(), tokenizer=TOK, config=cfg, path=Path("runs/x"))


def text(lm: Loaded, **config: object) -> str:
    return api.generate(lm, PROMPT, config=SampleConfig(**config)).texts[0]


def client(lm: Loaded):  # noqa: ANN201 (a TestClient)
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    return TestClient(create_app(lm, limits=ServerLimits(max_steps=64), chat_template="plain"))


def served(c, route: str = "/v1/completions", **body: object) -> str:  # noqa: ANN001
    if route == "/v1/completions":
        r = c.post(route, json={"prompt": PROMPT, "max_tokens": 12, **body})
    else:
        r = c.post(route, json={"messages": [{"role": "user", "content": PROMPT}],
                                "max_tokens": 12, **body})  # fmt: skip
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    return choice["text"] if "text" in choice else choice["message"]["content"]


def test_a_request_without_options_gets_the_recommendation_as_the_cli_does():
    lm = model()
    want = text(lm, gen_length=12, steps=12, **RECOMMENDED)
    assert want == api.generate(lm, PROMPT, config=api.sample_config(lm, {"gen_length": 12})
                                ).texts[0]  # fmt: skip
    one_block = text(lm, gen_length=12, steps=12, repetition_penalty=1.3)
    unpenalised = text(lm, gen_length=12, steps=12, block_length=4)
    assert want != one_block and want != unpenalised  # each recommended option shows
    with client(lm) as c:
        assert served(c) == want
        # what a request sends wins over the recommendation; null counts as not sent
        assert served(c, block_length=12) == one_block
        assert served(c, repetition_penalty=1) == unpenalised
        assert served(c, block_length=None, repetition_penalty=None) == want
        assert served(c, temperature=0.7, seed=5) == text(
            lm, gen_length=12, steps=12, block_length=4, repetition_penalty=1.3,
            temperature=0.7, seed=5)


def test_a_recommended_block_that_does_not_divide_max_tokens_is_fitted_not_refused():
    lm = model()
    with client(lm) as c:
        r = c.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 10})
        assert r.status_code == 200, r.text  # blocks of 4 do not divide 10: blocks of 2
        assert r.json()["choices"][0]["text"] == text(
            lm, gen_length=10, steps=10, block_length=2, repetition_penalty=1.3)
        # a block length the request sends is never changed: a one-line 400
        r = c.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 10,
                                            "block_length": 4})  # fmt: skip
        assert r.status_code == 400 and "block_length" in r.json()["error"]["message"]


def test_chat_takes_the_recommendation_too():
    lm = model("causal", temperature=0.0, repetition_penalty=1.5)
    with client(lm) as c:
        chat = served(c, "/v1/chat/completions")
        assert chat == served(c, "/v1/chat/completions", repetition_penalty=1.5)
        assert chat != served(c, "/v1/chat/completions", repetition_penalty=1)


def test_cli_equals_server_with_no_flags(tmp_path, capsys):
    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main

    lm = model()
    path = str(save_checkpoint(tmp_path / "m", model=lm.model, tokenizer=TOK))
    assert main(["generate", "--model", path, "--gen-length", "12", "--json", "--no-live",
                 "--device", "cpu", PROMPT]) == 0  # fmt: skip
    cli = json.loads(capsys.readouterr().out)["results"][0]["text"]
    with client(lm) as c:
        assert served(c) == cli


def test_a_decoder_refusal_names_the_option_sent_not_the_recommended_penalty():
    """``edit_threshold`` on a checkpoint whose decoder cannot edit, with a recommended
    repetition penalty: the 400 named ``repetition_penalty`` (the first penalty), which the
    request never sent."""
    with client(model()) as c:
        r = c.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4,
                                            "edit_threshold": 0.5})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "edit_threshold" and err["message"].startswith("edit_threshold"), err
