"""Session 31 (apirun): stepping a run of ``unmask.api.start`` past its last step is a
one-line ``UserError``; it was an ``AssertionError`` from inside the decoder."""

from __future__ import annotations

import pytest
import torch
from test_cli30_generate import TOK, tiny  # noqa: F401 -- the fixture

from unmask import api
from unmask.errors import UserError


@pytest.mark.parametrize("options", [
    {"gen_length": 4},
    {"gen_length": 4, "cache": "prefix"},
    {"gen_length": 8, "segment_length": 16},
])
def test_stepping_a_done_run_is_one_line(tiny, options):  # noqa: F811
    loaded = api.load_for_decoding(tiny, device="cpu")
    run = api.start(loaded, [[65, 66]], options)
    text = run.run().gen_ids
    assert run.done
    steps = run.steps
    with pytest.raises(UserError, match=r"^the run is done \(\d+ steps\): advance\(\) has no "):
        run.advance()
    if run.shares_forward or options.get("segment_length"):
        with pytest.raises(UserError, match=r"step\(\) has no step left"):
            run.step(torch.zeros(1, 6, TOK.vocab_size))
    assert run.steps == steps and run.result().gen_ids == text  # untouched
