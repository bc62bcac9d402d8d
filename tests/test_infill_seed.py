"""``--json`` of infill, edit and fill-form reports the seed a sampled run used: one is drawn
when none is given (it reported ``seed: null``, so the run could not be reproduced from its
own output); a greedy run needs none and keeps null."""

from __future__ import annotations

import json

import pytest
import torch

from unmask.cli import main
from unmask.config import model_preset
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from unmask.checkpoint import save_checkpoint

    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, **TOK.special_ids())
    torch.manual_seed(0)
    return str(save_checkpoint(tmp_path_factory.mktemp("run"), model=Transformer(cfg).eval(),
                               tokenizer=TOK))


@pytest.fixture(scope="module")
def form(tmp_path_factory):
    path = tmp_path_factory.mktemp("form") / "form.json"
    path.write_text('{"name": "<text:5>", "n": "<int:0..99>"}')
    return str(path)


def _argv(kind: str, ckpt: str, form: str) -> list[str]:
    return {
        "infill": ["infill", "--model", ckpt, "ab [MASK:5] cd [MASK:2-4] e"],
        "edit": ["edit", "--model", ckpt, "--text", "a quick brown fox", "--span", "2:11"],
        "fill-form": ["fill-form", "--model", ckpt, form],
    }[kind]


def _run(capsys, argv: list[str]) -> dict:
    assert main([*argv, "--steps", "4", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("kind", ["infill", "edit", "fill-form"])
def test_a_sampled_run_reports_a_seed_that_reproduces_it(kind, ckpt, form, capsys):
    argv = _argv(kind, ckpt, form)
    for sampled in (["--temperature", "5"], ["--remasking", "random"]):
        out = _run(capsys, [*argv, *sampled])
        seed = out["config"]["seed"]
        assert isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0
        again = _run(capsys, [*argv, *sampled, "--seed", str(seed)])
        assert again["text"] == out["text"] and again["config"]["seed"] == seed
    given = _run(capsys, [*argv, "--temperature", "5", "--seed", "7"])
    assert given["config"]["seed"] == 7  # a given seed is kept


@pytest.mark.parametrize("kind", ["infill", "edit", "fill-form"])
def test_a_greedy_run_draws_no_seed(kind, ckpt, form, capsys):
    out = _run(capsys, _argv(kind, ckpt, form))
    assert out["config"]["seed"] is None
    assert _run(capsys, _argv(kind, ckpt, form))["text"] == out["text"]
