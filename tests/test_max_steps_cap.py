"""A step count that is a cap stays one: infill in blocks takes at most the steps asked for
(they were rounded up to a multiple of the blocks), and the server's ``--max-steps`` bounds
a dynamic-policy completion that sends no ``steps`` (it ran one forward per token)."""

from __future__ import annotations

import pytest
from server_helpers import Echo, Recording, tiny_config

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.infill import InfillOptions, infill, parse_template
from unmask.infill import fill as fill
from unmask.infill.fill import search_calls
from unmask.infill.template import plan_template
from unmask.tokenizer import byte_tokenizer

TEMPLATE = "a [MASK:30] b"


def _echo() -> Recording:
    """Echo (ASCII letters: no gap constraint ever breaks, so no refill) counting forwards."""
    return Recording(Echo(tiny_config()))


@pytest.mark.parametrize(("steps", "forwards"), [
    (10, 10),  # 30 masks in 4 blocks of 8: was rounded up to 12
    (8, 8),  # a multiple of the blocks: as before
    (13, 13),  # was 16
    (64, 30),  # capped at the masks (one token per step at most): was 32
])
def test_infill_in_blocks_takes_at_most_the_steps_asked(steps, forwards):
    model = _echo()
    res = infill(model, byte_tokenizer(), TEMPLATE, SampleConfig(steps=steps, block_length=8))
    assert len(model.sizes) == forwards and res.nfe == forwards
    assert res.repaired == 0 and len(res.gaps[0].tokens) == 30  # every mask filled


def test_infill_with_a_dynamic_policy_keeps_the_cap():
    model = _echo()  # sure, but below 1.0 in float32: no proposal passes the bar, it binds
    res = infill(model, byte_tokenizer(), TEMPLATE,
                 SampleConfig(steps=10, block_length=8, policy="threshold", threshold=1.0))
    assert len(model.sizes) == res.nfe == 10 and res.repaired == 0  # was 12


def test_fewer_steps_than_blocks_is_one_line():
    with pytest.raises(UserError) as e:
        infill(_echo(), byte_tokenizer(), TEMPLATE, SampleConfig(steps=3, block_length=8))
    message = str(e.value)
    assert "\n" not in message
    assert "steps (3) must be at least the number of blocks (4" in message
    assert "try steps 4 or block_length 10" in message


def test_a_length_search_in_blocks_runs_within_the_steps_asked(monkeypatch):
    """Every run of a length search in blocks takes at most the steps asked for (5 over 2
    blocks were rounded up to 6), and ``search_calls`` counts them so."""
    runs: list[int] = []
    real = fill.sample

    def sample(*args, **kwargs):
        res = real(*args, **kwargs)
        runs.append(res.steps)
        return res

    monkeypatch.setattr(fill, "sample", sample)
    tok = byte_tokenizer()
    template = "ab [MASK:4-8] c [MASK:4-8] d"
    config = SampleConfig(steps=5, block_length=4)
    options = InfillOptions(max_joint=1)  # one gap at a time: runs of one gap's masks
    plan = plan_template(parse_template(template), tok, max_seq_len=64)
    need = search_calls(plan, config, options, mask_id=tok.mask_id, pad_id=tok.pad_id)
    assert need == 20  # was 23: 2 runs of 6 steps (rounded up) where 5 run
    infill(_echo(), tok, template, config, options=options)
    assert runs and max(runs) <= 5, runs
