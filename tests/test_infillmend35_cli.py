"""``unmask edit``, ``infill`` and ``fill-form`` as a demanding user runs them (review of
session 35): a revision that runs fewer rounds than asked says why; ``--policy sedd-euler``
is refused by its decoder, not by an option the user never gave; ``-`` read from a terminal
says how to end it; a closed standard output is refused before the model loads."""

from __future__ import annotations

import importlib
import io
import sys

import pytest
import torch

from unmask import api
from unmask.checkpoint import load, save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TEXT = "the lord said"  # on RUN, round 1's 2 least confident tokens are 1 block of 2, round 2's 2


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32)).eval()
    return str(save_checkpoint(tmp_path_factory.mktemp("mend") / "run", model=model,
                               tokenizer=tok))


def _flags(run: str) -> list[str]:
    return ["--model", run, "--no-live", "--device", "cpu"]


# -- a revision that stops early ---------------------------------------------------------------


def test_a_later_round_its_share_of_max_calls_cannot_fit_ends_the_revision(run):
    """Round 2's share of ``max_calls`` leaves 1 step for its 2 blocks of 2 (round 1's 2
    tokens were 1 block): the revision ends before it, round 1's change kept, as when a
    later round's scoring outgrows its share (it was a ``CallLimitError`` before 922563d7;
    the docs still said so), and the result says why."""
    loaded = load(run)
    config = {"block_length": 2, "steps": 2}
    got = api.edit(loaded, TEXT, lowest=2, rounds=3, max_calls=6, config=config).detail
    one = api.edit(loaded, TEXT, lowest=2, rounds=1, max_calls=2, config=config).detail
    assert got.rounds == 1 and got.nfe <= 6 and got.changes == one.changes
    assert got.stopped == ("stopped before round 2 of 3: its least confident tokens lie in 2 "
                           "blocks of 2 tokens (a step each), more than the 1 step its share of "
                           "max_calls leaves")
    assert one.stopped is None
    with pytest.raises(UserError, match=r"^block_length 1: .* max_calls \(4\) leaves"):
        api.edit(loaded, TEXT, lowest=2, rounds=2, max_calls=4,  # round 1
                 config={"block_length": 1, "steps": 8})


def test_a_round_whose_text_outgrew_its_share_says_so(run, monkeypatch):
    edit_mod = importlib.import_module("unmask.infill.edit")  # not the function `edit`
    real = edit_mod._edit

    def growing(*args, **kwargs):  # round 1's text comes back 8 tokens longer, changed
        res = real(*args, **kwargs)
        res.text += "a" * 8
        res.changes.append(edit_mod.Change(round=1, start=0, end=1, old="a", new="b"))
        return res

    monkeypatch.setattr(edit_mod, "_edit", growing)
    got = api.edit(load(run), "a" * 32, lowest=4, rounds=2, max_calls=4).detail
    assert got.rounds == 1 and got.stopped == (
        "stopped before round 2 of 2: scoring its text's 40 tokens takes 2 model calls and a "
        "refill at least 1, more than the 2 its share of max_calls (4) leaves")


def test_the_command_line_says_why_it_ran_fewer_rounds(run, capsys):
    argv = ["edit", "--text", TEXT, "--lowest", "2", "--rounds", "3", "--block-length", "2",
            "--steps", "1", *_flags(run)]
    assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == ("unmask edit: note: stopped before round 2 of 3: its least confident "
                       "tokens lie in 2 blocks of 2 tokens (a step each), more than the 1 "
                       "step")  # after the summary line
    assert err[-2].startswith(("1 change in 1 round,", "0 changes in 1 round,"))
    assert main([*argv, "--json"]) == 0
    assert '"stopped": "stopped before round 2 of 3: ' in capsys.readouterr().out
    assert main(["edit", "--text", TEXT, "--lowest", "2", *_flags(run)]) == 0
    assert "note" not in capsys.readouterr().err  # one round asked, one ran


# -- --policy sedd-euler -------------------------------------------------------------------------


def test_policy_sedd_euler_is_refused_by_its_decoder(run, capsys):
    """``SampleConfig(policy="sedd-euler")`` sets ``decoder='sedd'`` and
    ``sedd_sampler='euler'``: the refusal named ``sedd_sampler``, which the user never gave
    (and the server has no such field)."""
    loaded = load(run)
    for policy in ("sedd-euler", "sedd-analytic"):
        with pytest.raises(UserError, match=r"^decoder 'sedd' applies to generation"):
            api.infill(loaded, "the [MASK:2] sat", config={"policy": policy})
        with pytest.raises(UserError, match=r"^decoder 'sedd' applies to generation"):
            api.edit(loaded, "the cat", spans=[(4, 7)], config={"policy": policy})
    assert main(["infill", "the [MASK:2] sat", "--policy", "sedd-euler", *_flags(run)]) == 2
    assert capsys.readouterr().err.startswith("unmask infill: error: decoder 'sedd' applies")
    with pytest.raises(UserError, match=r"^sedd_sampler applies to generation"):  # still
        api.infill(loaded, "the [MASK:2] sat", config={"sedd_sampler": "euler"})
    assert api.infill(loaded, "the [MASK:2] sat", config={"sedd_sampler": "analytic"}).text


# -- standard input and output -------------------------------------------------------------------


class _Typed(io.StringIO):
    """Standard input a person types into: a terminal holding the text."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("argv", "said"), [
    (["infill", "-"], "unmask infill: reading the template"),
    (["edit", "--text", "-", "--span", "4:7"], "unmask edit: reading the text"),
    (["fill-form", "-"], "unmask fill-form: reading the template"),
])
def test_text_read_from_a_terminal_says_how_to_end_it(run, monkeypatch, capsys, argv, said):
    """``unmask infill -`` (edit ``--text -``, ``fill-form -``) in a terminal waited without
    a word; ``unmask generate --prompt-file -`` says what it reads and how to end it."""
    text = '{"a": "<int:0..9>"}' if argv[0] == "fill-form" else "the [MASK:2] sat"
    monkeypatch.setattr(sys, "stdin", _Typed(text + "\n"))
    assert main([*argv, *_flags(run)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"{said} from the terminal; end it with Ctrl-D"), err
    monkeypatch.setattr(sys, "stdin", io.StringIO(text + "\n"))  # piped in: no word
    assert main([*argv, *_flags(run)]) == 0
    assert "Ctrl-D" not in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "what"), [
    (["infill", "the [MASK:2] sat"], "the filled text"),
    (["edit", "--text", "the cat", "--span", "4:7"], "the edited text"),
    (["fill-form", '{"a": "<int:0..9>"}'], "the filled form"),
])
def test_a_closed_standard_output_is_refused_before_the_model_loads(run, monkeypatch, capsys,
                                                                    argv, what):
    """``unmask infill ... >&-``: Python's ``sys.stdout`` is None, ``print`` dropped the
    text and the command exited 0 after the whole run (``generate`` refuses it)."""
    loads = []
    monkeypatch.setattr(api, "load_for_decoding", lambda *a, **k: loads.append(a))
    monkeypatch.setattr(sys, "stdout", None)
    assert main([*argv, *_flags(run)]) == 2
    err = capsys.readouterr().err
    assert err == (f"unmask {argv[0]}: error: standard output is closed: {what} would be lost; "
                   "send it to a file (> out.txt) or a pipe\n")
    assert loads == []


def test_the_server_edit_says_why_it_ran_fewer_rounds(run):
    """``/v1/edit`` answers ``stopped`` as ``unmask edit --json`` does (a client got fewer
    ``rounds`` than it asked for with no reason)."""
    from fastapi.testclient import TestClient

    from unmask.server import create_app
    from unmask.server.state import ServerLimits

    app = create_app(load(run), limits=ServerLimits(max_steps=8))
    body = {"text": TEXT, "lowest": 2, "block_length": 2, "steps": 1}
    with TestClient(app) as client:
        two = client.post("/v1/edit", json={**body, "rounds": 2}).json()
        one = client.post("/v1/edit", json=body).json()
    assert two["rounds"] == 1 and two["stopped"].startswith("stopped before round 2 of 2: ")
    assert one["stopped"] is None
