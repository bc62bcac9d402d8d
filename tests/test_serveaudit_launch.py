"""A checkpoint whose config contradicts itself (its objective's decoder cannot run its
attention) is refused when the server starts, in one line with the way out, not answered
with a 400 per request that no client can act on (requests name no decoder)."""

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


def _contradiction(tmp_path, objective, attention):
    cfg = dataclasses.replace(tiny_config(), objective=objective, attention=attention)
    torch.manual_seed(0)
    return str(save_checkpoint(tmp_path / f"{objective}-{attention}",
                               model=Transformer(cfg).eval(), tokenizer=byte_tokenizer()))


@pytest.mark.parametrize("objective, attention, way_out", [
    ("mdlm", "causal", "use decoder 'ar'"),
    ("ar", "bidirectional", "use decoder 'llada'"),
])
def test_serve_refuses_a_self_contradicting_checkpoint_at_launch(
        tmp_path, capsys, monkeypatch, free_port, objective, attention, way_out):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "Server", lambda config: served.append(config))
    ckpt = _contradiction(tmp_path, objective, attention)
    assert main(["serve", "--model", ckpt, "--port", str(free_port), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("unmask serve: error: cannot serve "), err
    assert "contradicts itself" in err and way_out in err and "sample_defaults" in err, err
    assert served == []


def test_create_app_refuses_it_too(tmp_path):
    from unmask.errors import UserError
    from unmask.server import create_app

    with pytest.raises(UserError, match="contradicts itself"):
        create_app(_contradiction(tmp_path, "mdlm", "causal"), access_log=False)


def test_an_app_run_twice_serves_the_second_time():
    """The lifespan closes the engine at shutdown; a second run of the same app (a second
    ``uvicorn.run(app)`` in a notebook, a second ``TestClient``) answered every request 503
    ``worker_down`` and ``/healthz`` said "down"."""
    from fastapi.testclient import TestClient
    from server_helpers import Echo, echo_text, loaded

    from unmask.server import create_app

    app = create_app(loaded(Echo(tiny_config())), access_log=False)
    for _ in range(2):
        with TestClient(app) as c:
            assert c.get("/healthz").status_code == 200
            r = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 3})
            assert r.status_code == 200 and r.json()["choices"][0]["text"] == echo_text(2, 3)
            assert "unmask_in_flight 0" in c.get("/metrics").text


def test_serve_refuses_a_bad_automaton_cache_limit_at_launch(tmp_path, capsys, monkeypatch,
                                                            free_port):
    """A bad ``UNMASK_CACHE_MAX_MB`` is the operator's mistake: one line when the server
    starts, before the model loads, not a 400 in every client's guided request."""
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "Server", lambda config: served.append(config))
    monkeypatch.setenv("UNMASK_CACHE_MAX_MB", "1GB")
    # (a model that is there: one that names nothing is refused first, before torch loads)
    assert main(["serve", "--model", "demo", "--port", str(free_port), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "UNMASK_CACHE_MAX_MB='1GB'" in err, err
    assert served == []
