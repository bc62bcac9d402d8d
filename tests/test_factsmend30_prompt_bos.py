"""Follow-ups to the prompt-BOS fact (``ModelConfig.prompt_bos_id``): a family names its own
BOS, so an unmask model exported before the export wrote the fact keeps its BOS-less prompts;
the documented low-level path gives the ids ``generate`` gives; guided ``/v1/infill``, the
playground's advice and lm-eval's ``generate_until`` put the BOS first as the rest do; the
server's decoder-options listing is the one ``api.recommended_options`` gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_convert import make_llada

import unmask
from unmask import api
from unmask.cli import main
from unmask.errors import UserError


def _llada(tmp_path: Path) -> tuple[Path, int]:
    torch.manual_seed(0)
    folder = tmp_path / "llada"
    vocab = make_llada(folder)["vocab"]
    return folder, vocab["<|startoftext|>"]


def _first_ids(loaded) -> list[int]:
    """Spy on the model: the first column of every canvas it is called on."""
    seen: list[int] = []
    forward = loaded.model.forward

    def spy(tokens, *args, **kwargs):
        seen.append(int(tokens[0, 0]))
        return forward(tokens, *args, **kwargs)

    loaded.model.forward = spy
    return seen


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_an_old_export_of_our_model_gets_no_bos_it_never_saw(tmp_path, family):
    """An unmask model exported ``--to llada|dream`` before the export wrote ``prompt_bos_id``:
    its tokenizer's ``[BOS]`` is not the family's BOS, so its prompts stay as trained."""
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    assert tok.bos_id is not None and tok.bos_id != tok.eos_id
    shape = {"logit_shift": True, "qkv_bias": True} if family == "dream" else {}
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids(), **shape)
    native = save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    out = tmp_path / family
    assert main(["convert", str(native), str(out), "--to", family]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config.pop("prompt_bos_id") is None
    (out / "config.json").write_text(json.dumps(config))  # as an export before it wrote it
    old = unmask.load(out)
    assert old.config.prompt_bos_id is None
    assert api.encode_prompt(old.tokenizer, "ab", facts=api.facts_of(old)) == tok.encode("ab")


def test_llada_without_the_fact_still_finds_its_own_bos(tmp_path):
    folder, bos = _llada(tmp_path)
    assert "prompt_bos_id" not in json.loads((folder / "config.json").read_text())
    assert unmask.load(folder).config.prompt_bos_id == bos


def test_a_bad_prompt_bos_id_names_the_file_once(tmp_path):
    folder, _ = _llada(tmp_path)
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "prompt_bos_id": "5"}))
    with pytest.raises(UserError) as e:
        unmask.load(folder)
    assert str(e.value).count("config.json") == 1, str(e.value)
    assert "prompt_bos_id" in str(e.value)


def test_the_server_lists_what_its_requests_keep_of_the_recommendation():
    """``GET /v1/models`` and the playground's ``recommended``: a causal checkpoint that
    recommends ``ar`` with a ``block_length`` lists no ``block_length`` (a run drops it), as
    ``api.recommended_options`` gives it, and keeps the penalties ``ar`` applies."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import dataclasses

    from fastapi.testclient import TestClient
    from server_helpers import tiny_config

    from unmask.loaded import Loaded
    from unmask.model import Transformer
    from unmask.server import create_app
    from unmask.tokenizer import byte_tokenizer

    cfg = dataclasses.replace(tiny_config(), objective="mdlm", attention="causal",
                              sample_defaults={"decoder": "ar", "block_length": 4,
                                               "repetition_penalty": 1.2})
    lm = Loaded(model=Transformer(cfg).eval(), tokenizer=byte_tokenizer(), config=cfg,
                path=Path("ckpt"))
    assert api.sample_config(lm, {}).block_length is None  # what a run keeps
    want = {"decoder": "ar", "repetition_penalty": 1.2}
    assert api.recommended_options(lm) == want
    with TestClient(create_app(lm, access_log=False)) as c:
        assert c.get("/v1/models").json()["data"][0]["sample_defaults"] == want
        r = c.get("/playground/options")
        assert r.status_code == 200, r.text
        assert r.json()["recommended"] == want


def test_the_documented_start_path_decodes_what_generate_decodes(tmp_path):
    """docs/sampling.md's low-level path, ``api.start(m, api.prompt_ids(m, text), ...)``,
    starts from the ids ``api.generate`` decodes: the BOS first on a published model."""
    folder, bos = _llada(tmp_path)
    m = unmask.load(folder)
    config = {"gen_length": 4, "steps": 4}
    want = api.generate(m, "w1 w2", config=config).prompt_ids
    ids = api.prompt_ids(m, "w1 w2")
    assert ids == want and ids[0][0] == bos
    assert api.prompt_ids(m, ["w1", "w2"]) == [[bos, *m.tokenizer.encode(w)] for w in ("w1", "w2")]
    run = api.start(m, ids, config)
    while not run.done:
        run.advance()
    assert run.result().prompt_ids == want


def test_guided_infill_begins_with_the_bos_as_plain_infill_does(tmp_path):
    """``/v1/infill`` with ``guided_choice``: the model reads the template after the BOS, as a
    plain ``/v1/infill`` and a guided ``/v1/completions`` do; the text is the template's."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    folder, bos = _llada(tmp_path)
    loaded = unmask.load(folder)
    seen = _first_ids(loaded)
    with TestClient(create_app(loaded, access_log=False)) as c:
        for body in ({"template": "w1 [MASK:2] w3", "steps": 2},
                     {"template": "w1 [MASK:2] w3", "guided_choice": ["w2", "w4"]},
                     {"template": "[MASK:2] w3", "guided_choice": ["w2", "w4"]}):
            seen.clear()
            r = c.post("/v1/infill", json=body)
            assert r.status_code == 200, r.text
            assert seen and set(seen) == {bos}, body
            assert "startoftext" not in r.json()["text"]
            assert r.json()["text"].endswith("w3")
