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


def _sedd_with_a_bos():
    """A SEDD checkpoint (its decoder gives an empty prompt no start token) whose raw prompts
    begin with a BOS, as a publisher tokenizer that adds one records."""
    from server_helpers import loaded

    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, objective="sedd",
                       sedd_graph="absorbing", prompt_bos_id=tok.bos_id, **tok.special_ids())
    return loaded(Transformer(cfg).eval(), tok), tok.bos_id


def test_the_playground_counts_the_bos_of_an_empty_prompt():
    """``/playground/options``: the room an empty prompt leaves is what ``/v1/completions``
    leaves after the prompt "" (the BOS alone), so the playground refuses what it refuses."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    lm, _ = _sedd_with_a_bos()
    with TestClient(create_app(lm, access_log=False)) as c:
        r = c.post("/v1/completions", json={"prompt": "", "max_tokens": 64})
        assert r.status_code == 400 and "max_tokens <= 63" in r.json()["error"]["message"]
        refused = c.get("/playground/options", params={"max_tokens": 64}).json()["refused"]
        assert refused is not None and "max_tokens <= 63" in refused
        assert c.get("/playground/options", params={"max_tokens": 63}).json()["refused"] is None


def test_the_playgrounds_advice_is_for_the_prompt_completions_sees(monkeypatch):
    """The advice under a refusal (``playground.follows``) checks its values on the ids
    ``/v1/completions`` decodes an empty prompt from: the BOS."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app
    from unmask.server.routes import completions

    lm, bos = _sedd_with_a_bos()
    seen: list[list[int]] = []
    advised = completions.advised

    def spy(state, req, prompts, encode, e):
        seen.extend(encode(p) for p in prompts)
        return advised(state, req, prompts, encode, e)

    monkeypatch.setattr(completions, "advised", spy)
    with TestClient(create_app(lm, access_log=False, limits=ServerLimits(max_steps=32))) as c:
        refused = c.get("/playground/options", params={"max_tokens": 40}).json()["refused"]
    assert refused is not None and "max_tokens <= 32" in refused
    assert seen == [[bos]]


def test_lm_eval_generate_until_prompts_begin_with_the_bos(tmp_path):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from unmask.lm_eval import UnmaskLM

    folder, bos = _llada(tmp_path)
    lm = UnmaskLM(loaded=unmask.load(folder), batch_size=2, greedy_check=False)
    seen = _first_ids(lm.loaded)
    gen = [Instance("generate_until", {}, (p, {"until": ["zz"], "max_gen_toks": 4}), 0)
           for p in ("w1 w2", "")]
    texts = lm.generate_until(gen)
    assert len(texts) == 2 and all("startoftext" not in t for t in texts)
    assert seen and set(seen) == {bos}


def test_one_start_token_rule():
    """``ModelFacts.start_id``: what ``unmask eval``'s prompts and lm-eval's contexts begin
    with: the BOS a checkpoint records, else its EOS, else its pad id."""
    import dataclasses

    from unmask.config import ModelConfig
    from unmask.facts import ModelFacts

    facts = ModelFacts.of(ModelConfig(vocab_size=16, prompt_bos_id=5, eos_id=6, pad_id=7))
    assert facts.start_id == 5
    assert dataclasses.replace(facts, prompt_bos_id=None).start_id == 6
    assert dataclasses.replace(facts, prompt_bos_id=None, eos_id=None).start_id == 7
    # and how messages name it (the eval's length refusal said "EOS" for a pad)
    assert facts.start_name == "BOS"
    assert dataclasses.replace(facts, prompt_bos_id=None).start_name == "EOS"
    assert dataclasses.replace(facts, prompt_bos_id=None, eos_id=None).start_name == "[PAD]"


def test_eval_says_which_start_token_a_prompt_counts(tmp_path):
    """``unmask eval``'s refusal of a prompt past the context names the token counted before
    it: a published model's BOS, not the EOS."""
    from unmask.tasks import Item
    from unmask.tasks.score import task_config

    folder, _ = _llada(tmp_path)
    loaded = unmask.load(folder)
    item = Item(task="reversal", prompt=" ".join(["w1"] * 80), answer=" w3")
    with pytest.raises(UserError, match="with the BOS before it"):
        task_config(loaded, [item], {})


def test_only_the_first_segment_begins_with_the_bos(tmp_path):
    """``segment_length``: the first window is the prompt after its BOS; a later window is the
    latest text, the middle of a document, with no BOS put back (docs/sampling.md)."""
    folder, bos = _llada(tmp_path)
    m = unmask.load(folder)
    seen = _first_ids(m)
    ctx = api.facts_of(m).max_seq_len
    out = api.generate(m, "w1 w2", config={"gen_length": ctx, "steps": ctx,
                                           "segment_length": ctx // 2, "forbid_eos": True})
    assert out.prompt_ids[0][0] == bos
    assert seen[0] == bos and bos not in seen[-1:]


def test_tokenize_shows_the_bos_it_counts(tmp_path):
    """``/v1/tokenize`` on a published model: ``count`` includes the BOS, as
    ``usage.prompt_tokens`` does, and ``pieces`` show it (and a blank) as their own text
    rather than as an empty piece."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    folder, bos = _llada(tmp_path)
    loaded = unmask.load(folder)
    tok = loaded.tokenizer
    mask = tok.id_to_token(tok.mask_id)
    with TestClient(create_app(loaded, access_log=False)) as c:
        body = c.post("/v1/tokenize", json={"text": f"w1 {mask} w2"}).json()
        assert body["tokens"][0] == bos and body["count"] == len(body["tokens"])
        assert body["pieces"][0] == "<|startoftext|>" and mask in body["pieces"]
        assert body["pieces"][1:] == [mask if i == tok.mask_id else tok.decode([i])
                                      for i in body["tokens"][1:]]
        assert c.post("/v1/tokenize", json={"text": ""}).json()["pieces"] == ["<|startoftext|>"]
