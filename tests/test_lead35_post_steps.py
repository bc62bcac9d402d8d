"""``max_post_steps`` 0 (token editing off, ``edit_threshold`` unset) is the same on the
command line, in the library and on the server for a fill that edits no tokens: it was
refused by ``unmask fill-form``/``api.fill_form`` while ``/v1/forms`` took it."""

from __future__ import annotations

import pytest
import torch

from unmask import api
from unmask.checkpoint import load, save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

FORM = '{"name": "<text:2-4>"}'


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48)).eval()
    return str(save_checkpoint(tmp_path_factory.mktemp("ps") / "run", model=model,
                               tokenizer=tok))


def test_max_post_steps_off_is_the_default_for_a_form(run):
    loaded = load(run)
    off = api.fill_form(loaded, FORM, config={"max_post_steps": 0, "seed": 1})
    plain = api.fill_form(loaded, FORM, config={"seed": 1})
    assert off.text == plain.text
    with pytest.raises(UserError, match="max_post_steps applies to generation"):
        api.fill_form(loaded, FORM, config={"max_post_steps": 4})
    with pytest.raises(UserError, match="edit_threshold applies to generation"):
        api.fill_form(loaded, FORM, config={"max_post_steps": 0, "edit_threshold": 0.9})


def test_the_command_line_takes_it_too(run, capsys):
    argv = ["fill-form", FORM, "--model", run, "--no-live", "--device", "cpu", "--seed", "1"]
    assert main([*argv, "--max-post-steps", "0"]) == 0
    off = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == off
