"""Session 31 (samplingmend): the steps bound and the refusals it stood in front of.

``--steps`` over ``MAX_STEPS`` was refused before the checkpoint was read, so a decoder
that takes no steps (``ar``) got the bound ("one step per token ... is the most that
commits anything") instead of "steps does not apply to decoder 'ar'", and that reason was
untrue for SEDD's time steps. Now the bound is checked once the decoder is known, for every
decoder that takes steps (the continuous ones had none: their time grid of 10**9 steps was
built up front)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unmask import api
from unmask.cli import main
from unmask.errors import UserError


def test_steps_over_the_bound_on_a_causal_checkpoint_say_they_do_not_apply(tmp_path, capsys):
    from test_seeds_rows import _checkpoint

    ar = _checkpoint(tmp_path, objective="ar", attention="causal")
    argv = ["generate", "--model", ar, "hi", "--gen-length", "8", "--steps", "2000000",
            "--no-live", "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "steps does not apply to decoder 'ar'" in err and err.count("\n") == 1, err


def test_the_bound_holds_for_a_continuous_decoder_and_names_no_tokens():
    from server_helpers import loaded, tiny_config

    from unmask.model import Transformer

    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(tiny_config(), objective="embed-diffusion")).eval()
    m = loaded(model)
    with pytest.raises(UserError, match=r"^steps must be at most 1048576, got 2000000 "
                                        r"\(each step runs the model once\)$"):
        api.choose(m, {"gen_length": 8, "steps": 2_000_000})
    api.choose(m, {"gen_length": 8, "steps": 1 << 20})  # the bound itself is let through
