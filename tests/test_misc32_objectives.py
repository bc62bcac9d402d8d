"""Objective fixes of session 32: the SEDD loss holds its noise time at 1e-3 at least, as the
reference does (``sampling_eps``): at t → 0 a row noised ~t of its tokens and weighed each
~1/t, and the batch loss spiked."""

from __future__ import annotations

import torch

from unmask.config import ModelConfig
from unmask.objectives import ObjectiveOptions, sedd
from unmask.schedules import get_schedule

V, MASK = 16, 15
CFG = ModelConfig(vocab_size=V, mask_id=MASK, pad_id=0, eos_id=1, d_model=16, n_layers=1,
                  n_heads=2, max_seq_len=4096, sedd_graph="absorbing")


def _model(xt: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    return torch.zeros(*xt.shape, V)


def _loss(t: float, schedule: str = "linear") -> float:
    x0 = torch.randint(2, MASK, (4, 2048), generator=torch.Generator().manual_seed(0))
    opts = ObjectiveOptions(schedule=get_schedule(schedule))
    parts = sedd(_model, CFG, x0, attention_mask=None, generator=torch.Generator().manual_seed(1),
                 options=opts, t=torch.full((4,), t))
    return float(parts.loss_sum)


def test_the_sedd_loss_is_taken_at_t_of_1e_3_at_least() -> None:
    for schedule in ("linear", "geometric"):
        held = _loss(1e-3, schedule)  # the reference's sampling_eps
        assert _loss(0.0, schedule) == held
        assert _loss(1e-6, schedule) == held
        assert _loss(0.5, schedule) != held
    from unmask.objectives.score_entropy import T_MIN

    assert T_MIN == 1e-3

