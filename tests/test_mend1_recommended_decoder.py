"""A checkpoint's recommended sampling options (``sample_defaults``) that its decoder has no
use for are left out (``api.sample_config``, which the CLI, the API and the server share):
they refused every request that did not override them, blaming the client ("block_length does
not apply to decoder 'ar' ... leave it out") for an option it never sent."""

from __future__ import annotations

import json
import shutil

import pytest

from unmask import api
from unmask.cli import main
from unmask.errors import UserError
from unmask.files import asset_path


@pytest.fixture(scope="module")
def causal_demo(tmp_path_factory):
    """A copy of the demo checkpoint hand-edited into a causal one: its recommendation keeps
    the diffusion options (``block_length`` 4, and ``steps`` 6 added)."""
    folder = tmp_path_factory.mktemp("causal") / "demo"
    shutil.copytree(asset_path("demo"), folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(attention="causal", objective="ar")
    config["sample_defaults"] = {**config["sample_defaults"], "steps": 6}
    assert config["sample_defaults"]["block_length"] == 4
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_the_api_drops_what_the_decoder_cannot_use(causal_demo):
    lm = api.load_for_decoding(causal_demo, dtype="fp32")
    config = api.sample_config(lm, {"gen_length": 8})
    assert config.block_length is None and config.steps == 8  # not the recommended 4 and 6
    assert config.repetition_penalty == 1.3  # what ar applies is kept
    out = api.generate(lm, "And", config={"gen_length": 8})
    assert out.decoder == "ar" and len(out.ids[0]) == 8
    with pytest.raises(UserError, match="block_length does not apply to decoder 'ar'"):
        api.generate(lm, "And", config={"gen_length": 8, "block_length": 4})  # the user's own


def test_the_cli_drops_what_the_decoder_cannot_use(causal_demo, capsys):
    assert main(["generate", "--model", str(causal_demo), "--gen-length", "8", "And"]) == 0
    assert "leave it out" not in capsys.readouterr().err
    assert main(["generate", "--model", str(causal_demo), "--gen-length", "8",
                 "--block-length", "4", "And"]) == 2  # given: still refused, in one line
    assert "--block-length does not apply to decoder 'ar'" in capsys.readouterr().err


def test_the_server_drops_what_the_decoder_cannot_use(causal_demo):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    lm = api.load_for_decoding(causal_demo, dtype="fp32")
    client = TestClient(create_app(lm))
    for stream in (False, True):
        r = client.post("/v1/completions", json={"prompt": "And", "max_tokens": 8,
                                                 "stream": stream})
        assert r.status_code == 200, r.text
        assert "error" not in r.text, r.text
    r = client.post("/v1/completions", json={"prompt": "And", "max_tokens": 8,
                                             "block_length": 4})
    assert r.status_code == 400 and "block_length" in r.text


def test_a_diffusion_decoder_drops_a_recommended_top_k():
    """``top_k`` recommended (a causal model's option) on a diffusion checkpoint, and the
    inverse, ``cfg_scale`` on a causal one, are left out for the decoder that refuses them."""
    assert api._inapplicable("llada", {"top_k": 5, "top_p": 0.9, "block_length": 4}) == [
        "top_k", "top_p"]
    assert api._inapplicable("ar", {"top_k": 5, "cfg_scale": 1.0, "steps": 3}) == [
        "cfg_scale", "steps"]
    assert api._inapplicable("sedd", {"temperature": 0.0, "repetition_penalty": 1.3}) == [
        "temperature", "repetition_penalty"]
    assert api._inapplicable("nosuch", {"top_k": 5}) == []  # choose_decoder names it


def test_recommended_options_lists_what_the_decoder_takes(causal_demo):
    lm = api.load_for_decoding(causal_demo, dtype="fp32")
    out = api.recommended_options(lm)
    assert "block_length" not in out and "steps" not in out
    assert out["repetition_penalty"] == 1.3 and out["no_repeat_ngram_size"] == 3
    demo = api.load_for_decoding(asset_path("demo"), dtype="fp32")
    assert api.recommended_options(demo)["block_length"] == 4  # its own decoder uses it
