"""``unmask chat`` and ``unmask demo --model`` on a checkpoint whose blocks start at the first
prompt token (block diffusion, ``block_align='absolute'``): ``--steps`` not given (one per
token) is fitted to the blocks each turn's (each prompt's) prompt leaves
(``api.fit_block_steps``), as ``unmask generate``, ``api.chat`` given a mapping and the server
fit it per request. The session's options were made once, with no prompt, and the first turn
was refused ("steps (11) must be a multiple of the number of blocks the 11 new tokens span"),
over steps the user never gave."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
import torch
from server_helpers import tiny_config

import unmask
from unmask import api
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


@pytest.fixture(scope="module")
def absolute_blocks(tmp_path_factory):
    cfg = dataclasses.replace(tiny_config(max_seq_len=256), attention="block-causal",
                              block_size=4, objective="bd3lm", block_align="absolute",
                              logit_shift=True)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("apiaudit_chat") / "abs"
    return save_checkpoint(path, model=Transformer(cfg).eval(), tokenizer=byte_tokenizer())


@pytest.mark.parametrize("length", [11, 7])
def test_chat_fits_default_steps_to_each_turns_blocks(absolute_blocks, length, monkeypatch,
                                                      capsys):
    lines = ["hi", "hello there", "abc"]
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{m}\n" for m in lines)))
    rc = main(["chat", "--model", str(absolute_blocks), "--gen-length", str(length),
               "--template", "plain", "--json", "--device", "cpu", "--threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    turns = [json.loads(line) for line in out.splitlines()]
    assert [t["user"] for t in turns] == lines
    lo = unmask.load(absolute_blocks)
    messages: list[dict[str, str]] = []
    for turn in turns:  # each turn runs the steps api.chat fits to its own prompt
        messages.append({"role": "user", "content": turn["user"]})
        reply = api.chat(lo, messages, config={"gen_length": length}, template="plain")
        assert turn["config"]["steps"] == reply.steps <= length
        assert turn["reply"] == reply.text
        messages.append({"role": "assistant", "content": turn["reply"]})
    assert not any(t["dropped"] for t in turns)
    assert len({t["prompt_tokens"] % 4 for t in turns}) > 1  # the turns leave other tails


def test_chat_keeps_steps_the_user_gave(absolute_blocks, monkeypatch, capsys):
    """``--steps`` given is the user's: not rounded (a count that does not split over the
    blocks is refused, naming it)."""
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    rc = main(["chat", "--model", str(absolute_blocks), "--gen-length", "11", "--steps", "12",
               "--template", "plain", "--json", "--device", "cpu", "--threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert json.loads(out)["config"]["steps"] == 12
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    rc = main(["chat", "--model", str(absolute_blocks), "--gen-length", "11", "--steps", "11",
               "--template", "plain", "--json", "--device", "cpu", "--threads", "1"])
    assert rc == 2 and "steps (11)" in capsys.readouterr().err


def test_demo_fits_default_steps_to_each_prompts_blocks(absolute_blocks, capsys):
    """``unmask demo --model`` made its options once, with no prompt, and exited 2 at the
    first continuation, after the banner ("steps (11) must be a multiple of the number of
    blocks ..."); each continuation now runs the steps ``generate`` fits to its prompt."""
    import re

    from unmask.commands.demo import PROMPTS

    assert main(["demo", "--model", str(absolute_blocks), "--gen-length", "11", "--no-live",
                 "--device", "cpu", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    shown = [int(s) for s in re.findall(r"tokens?, (\d+) steps, NFE", out)]
    lo = unmask.load(absolute_blocks)
    assert shown == [api.generate(lo, p, config={"gen_length": 11}).steps for p in PROMPTS]


def test_start_given_a_mapping_fits_default_steps_as_generate(absolute_blocks):
    """``api.start(loaded, ids, {"gen_length": 11})`` was refused over the steps nobody gave,
    where ``api.generate`` with the same mapping fits them: one rule for every entry."""
    lo = unmask.load(absolute_blocks)
    for prompt in ("a", "abcd", "hello"):
        ids = api.encode_prompt(lo.tokenizer, prompt)
        want = api.generate(lo, prompt, config={"gen_length": 11})
        result = api.start(lo, [ids], {"gen_length": 11}).run()
        assert result.steps == want.steps and result.gen_ids == want.ids


@pytest.mark.parametrize("system", [None, ""])
def test_chat_names_a_gen_length_no_message_can_fit_at_startup(absolute_blocks, system,
                                                                 monkeypatch, capsys):
    """A ``--gen-length`` longer than the context leaves no room for any message: it was
    blamed on each message in turn ("send a shorter message", the session going on) or on
    ``--system`` ("shorten it"). Now one line at startup names it with the most that fits,
    and that length runs."""
    base = ["chat", "--model", str(absolute_blocks), "--template", "plain", "--json",
            "--device", "cpu", "--threads", "1"]
    head = [] if system is None else ["--system", system]
    monkeypatch.setattr("sys.stdin", io.StringIO("x\n"))
    assert main([*base, *head, "--gen-length", "300"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unmask chat: error: --gen-length (300) leaves no room for a message "
                          "in the model's max_seq_len (256)")
    assert "--system:" not in err and "shorter message" not in err
    fits = int(err.split("use --gen-length <= ")[1].split()[0])
    monkeypatch.setattr("sys.stdin", io.StringIO("x\n"))
    assert main([*base, *head, "--gen-length", str(fits)]) == 0, capsys.readouterr().err
