"""``generate --json`` and ``chat --json`` report the seed a sampled run used: one is drawn
when none is given (generate reported ``seed: null``, so a sampled run could not be repeated
from its own output), as infill, edit and fill-form do (tests/test_infill_seed.py); a greedy
run needs none and keeps null."""

from __future__ import annotations

import io
import json

import pytest
import torch

from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def _checkpoint(folder, **extra) -> str:
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, init_std=0.3,
                       **TOK.special_ids(), **extra)  # fmt: skip
    torch.manual_seed(0)
    return str(save_checkpoint(folder, model=Transformer(cfg).eval(), tokenizer=TOK))


@pytest.fixture(scope="module")
def mdlm(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("mdlm"))


@pytest.fixture(scope="module")
def sedd(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("sedd"), objective="sedd")


def _generate(capsys, ckpt: str, *flags: str) -> dict:
    argv = ["generate", "--model", ckpt, "ab", "--gen-length", "12", "--json", *flags]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _seed(out: dict) -> int:
    seed = out["config"]["seed"]
    assert isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0, seed
    return seed


@pytest.mark.parametrize("sampled", [["--temperature", "5"], ["--remasking", "random"]])
def test_a_sampled_generate_reports_a_seed_that_repeats_it(sampled, mdlm, capsys):
    out = _generate(capsys, mdlm, *sampled)
    seed = _seed(out)
    again = _generate(capsys, mdlm, *sampled, "--seed", str(seed))
    assert again["results"] == out["results"] and again["config"]["seed"] == seed
    other = _generate(capsys, mdlm, *sampled, "--seed", str(seed + 1))
    assert other["config"]["seed"] == seed + 1
    if "--temperature" in sampled:  # the seed is what makes the text (not so for the order)
        assert other["results"] != out["results"]


def test_sedd_samples_at_temperature_0_so_generate_reports_its_seed(sedd, capsys):
    """SEDD's reverse steps draw their tokens whatever the options: no greedy run."""
    out = _generate(capsys, sedd, "--steps", "4")
    assert out["decoder"] == "sedd"
    again = _generate(capsys, sedd, "--steps", "4", "--seed", str(_seed(out)))
    assert again["results"] == out["results"]


def test_a_greedy_generate_keeps_seed_null(mdlm, capsys):
    out = _generate(capsys, mdlm)
    assert out["config"]["temperature"] == 0 and out["config"]["seed"] is None
    assert _generate(capsys, mdlm)["results"] == out["results"]


def _chat(capsys, monkeypatch, ckpt: str, *flags: str) -> list[dict]:
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\nagain\n"))
    argv = ["chat", "--model", ckpt, "--template", "plain", "--gen-length", "8", "--json", *flags]
    assert main(argv) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_a_sampled_chat_reports_the_seed_that_repeats_it(mdlm, capsys, monkeypatch):
    turns = _chat(capsys, monkeypatch, mdlm, "--temperature", "5")
    seed = _seed(turns[0])
    assert all(t["config"]["seed"] == seed for t in turns)  # one seed for the conversation
    again = _chat(capsys, monkeypatch, mdlm, "--temperature", "5", "--seed", str(seed))
    assert [t["reply"] for t in again] == [t["reply"] for t in turns]
    assert _chat(capsys, monkeypatch, mdlm)[0]["config"]["seed"] is None  # greedy
