"""Prompts of unequal lengths modulo the block size on a LLaDA 2.x checkpoint (blocks counted
from the first prompt token): ``api.generate`` and ``unmask generate`` refused them ("generate
them one at a time"); they now decode in groups of equal lengths modulo the block
(``api.block_groups``, as ``unmask eval`` decodes them), each prompt writing what it writes
alone, greedy or seeded, in the caller's order."""

from __future__ import annotations

import json

import pytest
import torch
from llada2_helpers import write_llada2_folder

import unmask
from unmask import api
from unmask.config import SampleConfig
from unmask.errors import UserError

LONG = " ".join(f"w{i}" for i in range(29))  # 29 tokens: its first block holds 3 new ones
PROMPTS = ["w1 w2", LONG, "w3 w4"]  # tails 2, 29, 2: the long one between the two others


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("llada2batch")
    write_llada2_folder(path)
    return unmask.load(path)


def alone(loaded, config, n: int = 1) -> list[list[int]]:
    return [row for p in PROMPTS for row in api.generate(loaded, [p], config=config, n=n).ids]


def test_lengths_differ_modulo_the_block(loaded) -> None:
    lengths = api.prompt_lengths(loaded, PROMPTS)
    assert len({n % 32 for n in lengths}) == 2  # else the test shows nothing


def test_greedy_unequal_prompts_write_what_each_writes_alone(loaded) -> None:
    # 40 new tokens span 2 blocks after the short prompts, 3 after the long one: steps not
    # given are fitted per group (40 and 39), as alone; one batch refused them
    config = {"gen_length": 40, "policy": "llada"}
    out = api.generate(loaded, PROMPTS, config=config)
    assert out.ids == alone(loaded, config)
    assert out.texts == [api.generate(loaded, [p], config=config).texts[0] for p in PROMPTS]
    assert out.prompts == PROMPTS
    assert out.steps == 40 and out.nfe > 0


def test_seeded_choices_write_what_each_prompt_writes_alone(loaded) -> None:
    config = {"gen_length": 40, "temperature": 0.9, "seed": 4}
    out = api.generate(loaded, PROMPTS, config=config, n=2)
    assert out.ids == alone(loaded, config, n=2)
    assert out.ids[0] != out.ids[1]  # the choices are seeded seed + j, not one draw


def test_step_callback_sees_every_row(loaded) -> None:
    seen: list[torch.Tensor] = []
    out = api.generate(loaded, PROMPTS, config={"gen_length": 8},
                       step_callback=lambda step, view: seen.append(view))
    assert seen and all(v.shape == (3, 8) for v in seen)
    assert seen[-1].tolist() == out.ids


def test_given_steps_a_group_cannot_take_are_refused_first(loaded) -> None:
    # 40 steps over 2 blocks fit, over 3 they do not: refused before any group decodes
    with pytest.raises(UserError, match=r"steps \(40\) must be a multiple .* try 36 or 42"):
        api.generate(loaded, PROMPTS, config=SampleConfig(gen_length=40, steps=40))


def test_cli_unequal_prompts_write_what_each_writes_alone(loaded, capsys) -> None:
    from unmask.cli import main

    def tokens(*prompts: str) -> list[list[int]]:
        args = ["generate", "--model", str(loaded.path), "--gen-length", "40", "--policy",
                "llada", "--device", "cpu", "--no-live", "--json", *prompts]
        assert main(args) == 0
        return [r["tokens"] for r in json.loads(capsys.readouterr().out)["results"]]

    # steps not given: fitted per group, not refused as 40 over 3 blocks
    assert tokens(*PROMPTS) == [row for p in PROMPTS for row in tokens(p)]


def test_server_requests_of_unequal_tails_that_arrive_together_are_both_served(
    loaded, monkeypatch
) -> None:
    """Two requests of one prompt each, queued together, shared a whole-batch run whose
    decoder refused them: both a 400 naming lengths neither sent. ``Job.block_tail`` keeps
    them in runs of their own; each writes what it writes alone."""
    pytest.importorskip("fastapi")
    import threading

    from fastapi.testclient import TestClient

    import unmask.server.batching as batching
    from unmask.server import ServerLimits, create_app

    waited: list[bool] = []

    def gather(self) -> None:  # the first wait for company lasts until both are queued
        if not waited:
            waited.append(True)
            self._cond.wait_for(lambda: len(self._queue) >= 2, 60)

    monkeypatch.setattr(batching.Engine, "_gather", gather)
    app = create_app(loaded, limits=ServerLimits(batch_wait_s=1.0))
    prompts = PROMPTS[:2]
    out: dict[str, object] = {}
    with TestClient(app) as c:
        def post(p: str) -> None:
            out[p] = c.post("/v1/completions", json={"prompt": p, "max_tokens": 8})

        threads = [threading.Thread(target=post, args=(p,)) for p in prompts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for p in prompts:
        r = out[p]
        assert r.status_code == 200, r.text
        want = api.generate(loaded, [p], config={"gen_length": 8}).texts[0]
        assert r.json()["choices"][0]["text"] == want


def test_each_row_reports_the_steps_its_group_ran(loaded, capsys) -> None:
    """The grouped run reported one config, fitted to all prompts together (steps 40),
    though the long prompt's group ran 39 (3 blocks): ``configs`` and ``--json``'s per-result
    ``steps`` say what each row's run was given."""
    from unmask.cli import main

    config = {"gen_length": 40, "policy": "llada"}
    out = api.generate(loaded, PROMPTS, config=config, n=2)
    steps = [api.generate(loaded, [p], config=config).config.steps for p in PROMPTS]
    assert steps == [40, 39, 40]  # else the test shows nothing
    assert [c.steps for c in out.configs] == [s for s in steps for _ in range(2)]
    assert out.config.steps == out.steps == 40 and out.config.decoder == out.decoder
    args = ["generate", "--model", str(loaded.path), "--gen-length", "40", "--policy",
            "llada", "--device", "cpu", "--no-live", "--json", *PROMPTS]
    assert main(args) == 0
    d = json.loads(capsys.readouterr().out)
    assert [r["steps"] for r in d["results"]] == steps and d["config"]["steps"] == 40
