"""One server request of prompts of unequal lengths modulo the block size on a LLaDA 2.x
checkpoint (blocks counted from the first prompt token): a list of prompts, or ``n`` > 1
across them, was a 400 ("generate them one at a time") although ``api.generate`` and
``unmask generate`` decode such prompts in groups (``api.block_groups``). The server now runs
each group as a part of the job (``Job.groups``), one after another, and answers in the
request's order, each prompt writing what it writes alone."""

from __future__ import annotations

import json

import pytest
from llada2_helpers import write_llada2_folder

import unmask
from unmask import api

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from unmask.server import ServerLimits, create_app  # noqa: E402

LONG = " ".join(f"w{i}" for i in range(29))  # 29 tokens: its first block holds 3 new ones
PROMPTS = ["w1 w2", LONG, "w3 w4"]  # tails 2, 29, 2: the long one between the two others


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("llada2server")
    write_llada2_folder(path)
    return unmask.load(path)


@pytest.fixture(scope="module")
def client(loaded):
    with TestClient(create_app(loaded, limits=ServerLimits(max_batch=2))) as c:
        yield c


def alone(loaded, config, n: int = 1) -> list[str]:
    return [t for p in PROMPTS for t in api.generate(loaded, [p], config=config, n=n).texts]


def texts(body: dict) -> list[str]:
    return [c["text"] for c in sorted(body["choices"], key=lambda c: c["index"])]


def test_lengths_differ_modulo_the_block(loaded) -> None:
    lengths = api.prompt_lengths(loaded, PROMPTS)
    assert len({n % 32 for n in lengths}) == 2  # else the tests show nothing


def test_greedy_prompts_of_unequal_tails_write_what_each_writes_alone(loaded, client) -> None:
    # 40 new tokens span 2 blocks after the short prompts, 3 after the long one: steps not
    # sent are fitted per group (40 and 39), as api.generate and unmask generate fit them
    r = client.post("/v1/completions", json={"prompt": PROMPTS, "max_tokens": 40,
                                             "policy": "llada"})
    assert r.status_code == 200, r.text
    assert texts(r.json()) == alone(loaded, {"gen_length": 40, "policy": "llada"})
    assert r.json()["steps"] == 40
    assert r.json()["steps"] == api.generate(loaded, PROMPTS, config={
        "gen_length": 40, "policy": "llada"}).steps


def test_seeded_choices_write_what_each_prompt_writes_alone(loaded, client) -> None:
    config = {"gen_length": 12, "temperature": 0.9, "seed": 4}
    r = client.post("/v1/completions", json={"prompt": PROMPTS, "max_tokens": 12, "n": 2,
                                             "temperature": 0.9, "seed": 4})
    assert r.status_code == 200, r.text
    got = texts(r.json())
    assert got == alone(loaded, config, n=2)
    assert got == api.generate(loaded, PROMPTS, config=config, n=2).texts
    assert got[0] != got[1]  # the choices are seeded seed + j, not one draw


def test_streamed_request_ends_with_every_prompt_alone(loaded, client) -> None:
    with client.stream("POST", "/v1/completions", json={
            "prompt": PROMPTS, "max_tokens": 8, "stream": True}) as r:
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    got = {i: "" for i in range(3)}
    for e in events:
        for c in e.get("choices", []):
            got[c["index"]] += c.get("text") or ""
    assert list(got.values()) == alone(loaded, {"gen_length": 8})


def test_sent_steps_a_group_cannot_take_are_refused_first(client) -> None:
    # 40 steps over 2 blocks fit, over 3 they do not: a 400 before any group decodes
    r = client.post("/v1/completions", json={"prompt": PROMPTS, "max_tokens": 40,
                                             "steps": 40, "policy": "llada"})
    assert r.status_code == 400
    assert "try 36 or 42" in r.json()["error"]["message"]


def test_rows_kept_apart_inside_groups_write_what_each_writes_alone(loaded, client) -> None:
    # a prompt of [MASK]s alone runs apart (twice the same: once), in its group
    prompts = ["<|mask|><|mask|>", LONG, "<|mask|><|mask|>", "w1 w2"]
    r = client.post("/v1/completions", json={"prompt": prompts, "max_tokens": 12})
    assert r.status_code == 200, r.text
    want = [api.generate(loaded, [p], config={"gen_length": 12}).texts[0] for p in prompts]
    assert texts(r.json()) == want
