"""Infill in blocks: a block of the template's text alone (no mask) takes no step, so the steps
go to the blocks with a gap (``spread_steps``): ``--steps N`` is N forwards where masks are,
and the refusal counts the blocks with a gap only (it refused steps the run had room for)."""

from __future__ import annotations

import pytest
import torch

from unmask.canvas import Canvas
from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.infill.fill import fill_canvas, infill_config
from unmask.model import Transformer
from unmask.sampling import sample


def _model() -> Transformer:
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=32, max_seq_len=48, init_std=0.5)
    return Transformer(cfg).double().eval()


def _gappy(mask_id: int) -> Canvas:
    """Two gaps of 4 in blocks of 8: the first and the sixth block hold them, four hold text."""
    row = [mask_id] * 4 + [5 + i % 20 for i in range(36)] + [mask_id] * 4
    return Canvas.from_tokens(torch.tensor([row]), mask_id=mask_id)


@pytest.mark.parametrize("policy", ["llada", "threshold"])
def test_steps_fewer_than_blocks_but_enough_for_the_gaps_run(policy):
    m = _model()
    canvas = _gappy(m.config.mask_id)
    config = SampleConfig(steps=4, block_length=8, policy=policy)
    run, _ = infill_config(config, canvas)  # refused before: 6 blocks, "a step each"
    assert run.steps <= 4
    out = fill_canvas(m, canvas, config)
    assert m.config.mask_id not in out.tokens.tolist()[0]
    assert out.nfe <= 4
    if policy == "llada":
        assert out.nfe == out.steps == 4  # the steps asked for are the forwards


def test_the_steps_of_text_blocks_go_to_the_gaps():
    m = _model()
    canvas = _gappy(m.config.mask_id)
    # 6 steps: 3 a gap block (before: 1 each of the six blocks, 2 forwards in all)
    out = fill_canvas(m, canvas, SampleConfig(steps=6, block_length=8))
    assert out.nfe == out.steps == 6
    # steps past the masks are capped at one token a step: 8 forwards for 8 masks (before:
    # 12 rounded to the six blocks, 2 forwards a gap block: 4 tokens at once, 2 a step)
    out = fill_canvas(m, canvas, SampleConfig(steps=12, block_length=8))
    assert out.nfe == out.steps == 8


def test_the_refusal_counts_the_blocks_with_a_gap():
    canvas = _gappy(99)
    with pytest.raises(UserError) as e:
        infill_config(SampleConfig(steps=1, block_length=8), canvas)
    msg = str(e.value)
    assert "(2 of 6 with a gap, the 44 tokens" in msg, msg
    assert "each block with a gap takes a step; try 2 steps" in msg, msg


def test_sample_split_spreads_over_the_blocks_with_a_mask():
    m = _model()
    M = m.config.mask_id
    rows = [[M, M, M, M, 5, 6, 7, 8, M, M, M, M]]  # blocks of 4: the middle one is text
    canvas = Canvas.from_tokens(torch.tensor(rows), mask_id=M)
    r = sample(m, canvas, SampleConfig(gen_length=12, steps=4, block_length=4), split=True)
    assert r.nfe == r.steps == 4  # 2 and 2 (before: 2, 1, 1, the text block's 1 dropped)
    with pytest.raises(UserError, match="blocks with a mask .2 of 3 = gen_length 12"):
        sample(m, canvas, SampleConfig(gen_length=12, steps=1, block_length=4), split=True)


def test_every_block_with_a_mask_spreads_as_before():
    from unmask.sampling.loop import spread_steps

    assert spread_steps(10, [True] * 4) == [3, 3, 2, 2]
    assert spread_steps(10, [False] * 4) == [3, 3, 2, 2]  # nothing to fill: as before
    assert spread_steps(5, [True, False, True, False]) == [3, 0, 2, 0]
    m = _model()
    M = m.config.mask_id
    rows = [[M, M, 5, M, M, M, 6, M, M, 7, M, M], [M, 8, M, M, M, M, M, 9, M, M, M, M]]
    canvas = Canvas.from_tokens(torch.tensor(rows), mask_id=M)
    for steps in (3, 5, 7):
        config = SampleConfig(gen_length=12, steps=steps, block_length=4, temperature=1.0,
                              seed=3)
        split = sample(m, canvas, config, split=True)
        assert split.nfe == split.steps == steps
