"""The launch check runs the decoder the server will run: a checkpoint whose objective's
decoder cannot run its attention, but whose config.json's ``sample_defaults`` name one that
can, is served (as it was before the check); without that recommendation it is refused at
launch in one line (exit 2)."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("fastapi")

import torch  # noqa: E402
from server_helpers import tiny_config  # noqa: E402

from unmask.checkpoint import save_checkpoint  # noqa: E402
from unmask.cli import main  # noqa: E402
from unmask.model import Transformer  # noqa: E402
from unmask.tokenizer import byte_tokenizer  # noqa: E402


def _checkpoint(tmp_path, objective, attention, sample_defaults):
    cfg = dataclasses.replace(tiny_config(), objective=objective, attention=attention,
                              sample_defaults=sample_defaults)
    torch.manual_seed(0)
    return str(save_checkpoint(tmp_path / f"{objective}-{attention}-{len(sample_defaults)}",
                               model=Transformer(cfg).eval(), tokenizer=byte_tokenizer()))


CASES = [("mdlm", "causal", "ar"), ("ar", "bidirectional", "llada")]


@pytest.mark.parametrize("objective, attention, decoder", CASES)
def test_a_checkpoint_whose_sample_defaults_name_a_decoder_that_runs_it_is_served(
        tmp_path, objective, attention, decoder):
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    ckpt = _checkpoint(tmp_path, objective, attention, {"decoder": decoder})
    with TestClient(create_app(ckpt, access_log=False)) as c:
        r = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 4})
        assert r.status_code == 200, r.text
        r = c.post("/v1/completions", json={"prompt": "", "max_tokens": 4})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("objective, attention, decoder", CASES)
def test_serve_launches_it_and_refuses_it_without_the_recommendation(
        tmp_path, capsys, monkeypatch, free_port, objective, attention, decoder):
    import uvicorn

    served = []

    class Stand:  # uvicorn's Server, which serves nothing
        def __init__(self, config):
            served.append(config)
            self.should_exit = False

        def run(self, sockets):
            for sock in sockets:
                sock.close()

    monkeypatch.setattr(uvicorn, "Server", Stand)
    bare = _checkpoint(tmp_path, objective, attention, {})
    assert main(["serve", "--model", bare, "--port", str(free_port), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("unmask serve: error: cannot serve "), err
    assert f"use decoder {decoder!r}" in err and "sample_defaults" in err, err
    assert served == []

    recommended = _checkpoint(tmp_path, objective, attention, {"decoder": decoder})
    assert main(["serve", "--model", recommended, "--port", str(free_port), "--device",
                 "cpu", "--quiet"]) == 0
    assert "error" not in capsys.readouterr().err
    assert len(served) == 1
