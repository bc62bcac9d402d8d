"""Canvas flags and allowed-token masks hold True/False or 0/1: any other number is refused
in one line (``!= 0`` took 0.5, a probability mask, and NaN as True without a word)."""

from __future__ import annotations

import pytest
import torch

from unmask.canvas import Canvas, TokenMask
from unmask.errors import UserError

TOKENS = torch.tensor([[1, 2, 9, 9, 3]])


@pytest.mark.parametrize("bad", [[[0.5, 0.0, 1.0]], [[float("nan"), 0.0, 1.0]], [[1, 0, 2]]])
def test_token_mask_refuses_values_other_than_0_and_1(bad):
    with pytest.raises(UserError, match="allowed-token mask must hold True/False or 0/1"):
        TokenMask(torch.tensor(bad))


def test_token_mask_takes_0_1_numbers_and_bools():
    logits = torch.zeros(1, 1, 3)
    for allowed in (torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([[True, False, True]])):
        out = TokenMask(allowed)(logits)
        assert torch.isinf(out[0, 0, 1]) and out[0, 0, 0] == 0 and out[0, 0, 2] == 0


@pytest.mark.parametrize("name", ["attention_mask", "locked"])
def test_canvas_flags_refuse_values_other_than_0_and_1(name):
    flags = torch.tensor([[0.5, 1.0, 1.0, 1.0, 1.0]])
    with pytest.raises(UserError, match=f"canvas {name} must hold True/False or 0/1"):
        Canvas.from_tokens(TOKENS, mask_id=9, **{name: flags})
    ok = Canvas.from_tokens(TOKENS, mask_id=9, **{name: (flags >= 1).float()})
    assert ok.locked.dtype == torch.bool


def test_a_mask_of_another_shape_is_one_line():
    with pytest.raises(UserError, match=r"canvas attention_mask has shape \(1, 4\), tokens"):
        Canvas.from_tokens(TOKENS, mask_id=9, attention_mask=torch.ones(1, 4))
    with pytest.raises(UserError, match=r"canvas locked has shape \(2, 5\), tokens"):
        Canvas.from_tokens(TOKENS, mask_id=9, locked=torch.ones(2, 5, dtype=torch.bool))
