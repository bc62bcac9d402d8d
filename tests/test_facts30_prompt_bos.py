"""A published model's raw prompt begins with the BOS it was trained with: the fact is recorded
when its folder is read (``ModelConfig.prompt_bos_id``: LLaDA's ``<|startoftext|>``, Dream's
``<|beginoftext|>``, a tokenizer whose post-processor adds one), read into ``ModelFacts`` and
applied by ``ModelFacts.prompt_ids`` where a raw prompt is encoded (``api.encode_prompt``:
``generate``, the CLI, the server, ``unmask eval``), never twice (a chat template that writes
it). A checkpoint converted before (no field) and unmask's own models are unchanged."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from test_convert import make_dream, make_llada
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import processors

import unmask
from unmask import api
from unmask.cli import main
from unmask.convert.families import LLADA
from unmask.facts import ModelFacts

LLADA_TEMPLATE = (
    "{% for m in messages %}{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
    "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
    "{% endfor %}<|start_header_id|>assistant<|end_header_id|>\n\n"
)


def _llada(tmp_path: Path) -> tuple[Path, int]:
    torch.manual_seed(0)
    folder = tmp_path / "llada"
    vocab = make_llada(folder)["vocab"]
    return folder, vocab["<|startoftext|>"]


def _strip_fact(folder: Path) -> None:
    """The native checkpoint as unmask wrote it before the fact was recorded."""
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["prompt_bos_id"]
    (folder / "config.json").write_text(json.dumps(cfg))


def _first_ids(loaded) -> list[int]:
    """Spy on the model: the first column of every canvas it is called on."""
    seen: list[int] = []
    model = loaded.model
    forward = model.forward

    def spy(tokens, *args, **kwargs):
        seen.append(int(tokens[0, 0]))
        return forward(tokens, *args, **kwargs)

    model.forward = spy
    return seen


def test_llada_records_its_bos_and_a_raw_prompt_begins_with_it(tmp_path):
    folder, bos = _llada(tmp_path)
    loaded = unmask.load(folder)
    assert loaded.config.prompt_bos_id == bos
    assert api.facts_of(loaded).prompt_bos_id == bos
    assert api.prompt_lengths(loaded, "w1 w2") == [3]  # the BOS takes a column
    seen = _first_ids(loaded)
    out = api.generate(loaded, "w1 w2", config={"gen_length": 4, "steps": 4})
    assert out.prompt_ids[0][0] == bos and out.prompt_ids[0][1:] == loaded.tokenizer.encode(
        "w1 w2")
    assert out.prompts == ["w1 w2"]  # the BOS is not shown
    assert seen and set(seen) == {bos}
    # an empty prompt is the BOS alone (before: the start token, EOS)
    assert api.generate(loaded, "", config={"gen_length": 4, "steps": 4}).prompt_ids == [[bos]]


def test_convert_keeps_the_fact_and_a_checkpoint_without_it_is_unchanged(tmp_path):
    folder, bos = _llada(tmp_path)
    assert main(["convert", str(folder), str(tmp_path / "native")]) == 0
    native = unmask.load(tmp_path / "native")
    assert native.family == "unmask" and native.config.prompt_bos_id == bos
    ids = native.tokenizer.encode("w1 w2")
    assert api.encode_prompt(native.tokenizer, "w1 w2", facts=api.facts_of(native)) == [bos, *ids]
    # back to LLaDA's layout and in again: the fact comes back as it went
    assert main(["convert", str(tmp_path / "native"), str(tmp_path / "again"),
                 "--to", "llada"]) == 0
    assert unmask.load(tmp_path / "again").config.prompt_bos_id == bos
    # converted before the fact was recorded: prompts are decoded as they were
    _strip_fact(tmp_path / "native")
    old = unmask.load(tmp_path / "native")
    assert old.config.prompt_bos_id is None
    assert api.prompt_lengths(old, "w1 w2") == [2]
    out = api.generate(old, "w1 w2", config={"gen_length": 4, "steps": 4})
    assert out.prompt_ids == [ids]


def test_our_own_models_are_unchanged():
    demo = api.load_for_decoding("demo", dtype="fp32")
    facts = api.facts_of(demo)
    assert facts.prompt_bos_id is None
    assert api.encode_prompt(demo.tokenizer, "And", facts=facts) == demo.tokenizer.encode("And")


def test_a_chat_template_that_writes_the_bos_gets_no_second_one(tmp_path):
    folder, bos = _llada(tmp_path)
    hf = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    hf.add_special_tokens(["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    hf.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"add_bos_token": False, "bos_token": "<|startoftext|>", "chat_template": LLADA_TEMPLATE}))
    loaded = unmask.load(folder)
    assert loaded.config.prompt_bos_id == bos  # LLaDA's, though its tokenizer does not add it
    reply = api.chat(loaded, [{"role": "user", "content": "w1"}],
                     config={"gen_length": 4, "steps": 4})
    assert reply.prompt_ids[0] == bos and reply.prompt_ids[1] != bos
    out = api.generate(loaded, "w1", config={"gen_length": 4, "steps": 4},
                       template=api.chat_template(loaded))
    assert out.prompt_ids[0].count(bos) == 1


def test_prompt_ids_never_puts_the_bos_twice():
    facts = ModelFacts.of(unmask.config.ModelConfig(vocab_size=16, prompt_bos_id=5))
    assert facts.prompt_ids([7, 8]) == [5, 7, 8]
    assert facts.prompt_ids([5, 7]) == [5, 7]
    assert facts.prompt_ids([]) == [5]
    plain = dataclasses.replace(facts, prompt_bos_id=None)
    assert plain.prompt_ids([7, 8]) == [7, 8] and plain.prompt_ids([]) == []


def test_dream_takes_the_bos_its_tokenizer_config_names(tmp_path):
    folder = tmp_path / "dream"
    make_dream(folder)
    bare = unmask.load(folder)
    # no tokenizer_config.json: config.json's bos is its EOS (<|endoftext|>), a separator
    assert bare.config.bos_id == bare.config.eos_id and bare.config.prompt_bos_id is None
    hf = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    hf.add_special_tokens(["<|beginoftext|>"])
    hf.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|beginoftext|>"}))
    loaded = unmask.load(folder)
    begin = loaded.tokenizer.token_to_id("<|beginoftext|>")
    assert loaded.config.prompt_bos_id == begin != loaded.config.bos_id


def test_a_tokenizer_that_adds_a_bos_itself_is_read(tmp_path):
    """Any family: a post-processor that puts a special token before one text (as
    ``transformers`` encodes a raw prompt) is the fact, whatever the family declares."""
    from unmask.convert.load import prompt_bos_id

    folder, bos = _llada(tmp_path)
    hf = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    eos = hf.token_to_id("<|endoftext|>")
    hf.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", eos)])
    hf.save(str(folder / "tokenizer.json"))
    tok = unmask.load(folder).tokenizer
    plain = dataclasses.replace(LLADA, prompt_bos=None)
    assert prompt_bos_id(plain, folder, tok, {}) == eos
    hf.post_processor = None
    hf.save(str(folder / "tokenizer.json"))
    tok = unmask.load(folder).tokenizer
    assert prompt_bos_id(plain, folder, tok, {}) is None
    assert prompt_bos_id(LLADA, folder, tok, {}) == bos
    assert prompt_bos_id(LLADA, folder, tok, {"prompt_bos_id": None}) is None  # as recorded


def test_the_server_encodes_a_prompt_with_the_bos(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    folder, bos = _llada(tmp_path)
    loaded = unmask.load(folder)
    ids = loaded.tokenizer.encode("w1 w2")
    with TestClient(create_app(loaded, access_log=False)) as c:
        r = c.post("/v1/tokenize", json={"text": "w1 w2"})
        assert r.status_code == 200, r.text
        assert r.json()["tokens"] == [bos, *ids]
        r = c.post("/v1/completions", json={"prompt": "w1 w2", "max_tokens": 4})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == 3


def test_eval_prompts_begin_with_the_bos(tmp_path):
    """``unmask eval``'s task prompts (``tasks.score``) begin with the BOS where a checkpoint
    records one, not with the EOS that starts unmask's own documents."""
    from unmask.tasks.score import score_items

    folder, bos = _llada(tmp_path)
    loaded = unmask.load(folder)
    seen = _first_ids(loaded)
    item = _item("w1 w2", "w3")
    score_items(loaded, [item], given={"gen_length": 4, "steps": 4})
    assert seen and set(seen) == {bos}


def _item(prompt: str, answer: str):
    from unmask.tasks import Item

    return Item(task="reversal", prompt=prompt, answer=f" {answer}")


@pytest.mark.parametrize("template", ["w1 [MASK:2] w3", "[MASK:2] w1 w2"])
def test_an_infill_template_begins_with_the_bos(tmp_path, template):
    """The template's text is what the model read after its BOS (a gap at the start follows
    the BOS rather than the hidden line break); the output is the template's text alone."""
    folder, bos = _llada(tmp_path)
    loaded = unmask.load(folder)
    seen = _first_ids(loaded)
    views: list[list[int]] = []
    out = api.infill(loaded, template, config={"steps": 2},
                     step_callback=lambda step, tokens: views.append(tokens[0].tolist()))
    assert seen and set(seen) == {bos}
    assert bos not in views[-1]  # the view starts at the template, as the output
    fixed = template.replace("[MASK:2]", "").strip()
    assert "startoftext" not in out.text
    assert out.text.startswith(fixed.split()[0]) if template.startswith("w") else \
        out.text.endswith(fixed)


@pytest.mark.parametrize("how", [{"spans": [(3, 5)]}, {"lowest": 1}, {"lowest": 1, "rounds": 2}])
def test_an_edited_text_begins_with_the_bos(tmp_path, how):
    """``api.edit``: the model scores and refills the text after its BOS (the spans' path,
    ``lowest``'s scoring and ``revise``'s rounds), and the text outside the spans is kept."""
    folder, bos = _llada(tmp_path)
    loaded = unmask.load(folder)
    seen = _first_ids(loaded)
    out = api.edit(loaded, "w1 w2 w3 w4", config={"steps": 1}, **how)
    assert seen and set(seen) == {bos}
    assert "startoftext" not in out.text
    if "spans" in how:
        assert out.text.startswith("w1 ") and out.text.endswith(" w3 w4")


def test_lm_eval_contexts_begin_with_the_bos(tmp_path):
    """The lm-eval adapter scores a continuation after its context as the publisher's own
    evaluation reads it: the BOS first, an empty context the BOS alone."""
    pytest.importorskip("lm_eval")
    from unmask.lm_eval import UnmaskLM

    folder, bos = _llada(tmp_path)
    lm = UnmaskLM(loaded=unmask.load(folder), batch_size=2, greedy_check=False)
    tok = lm.loaded.tokenizer
    context, target = lm._encode_pair("w1 w2", " w3")
    assert context == [bos, *tok.encode("w1 w2")] and target == tok.encode(" w3")
    assert lm._encode_pair("", "w3")[0] == [bos] and lm._start_id == bos


def test_the_demo_decodes_the_prompt_it_counts(tmp_path):
    """``unmask demo`` on a converted LLaDA: the ids it decodes hold the BOS that its steps
    and room were fitted to (``api.prompt_lengths``)."""
    from unmask.commands.demo import _prompt_ids

    folder, bos = _llada(tmp_path)
    loaded = unmask.load(folder)
    ids = _prompt_ids(loaded, "w1 w2", None)
    assert ids[0] == bos and [len(ids)] == api.prompt_lengths(loaded, "w1 w2")
