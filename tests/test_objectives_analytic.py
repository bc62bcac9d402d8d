"""The losses against numbers worked out by hand: a uniform predictor (all logits equal) costs
log V a token at every masked position, weighted as each objective's docstring says, and
normalised per token (``mdlm``, ``bd3lm``, ``hybrid``) or per row (``sft``)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from unmask.config import model_preset
from unmask.objectives import ObjectiveOptions, get_objective
from unmask.schedules import get_schedule

V = 40


class Uniform(torch.nn.Module):
    """Every token equally likely at every position, whatever the input's shape."""

    def forward(self, x, attention_mask=None, positions=None, attn_bias=None, **kw):
        return torch.zeros(*x.shape, V, requires_grad=True)


def _draws(gen: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """The masking draws the loss will take next from ``gen`` (a copy of its state)."""
    copy = torch.Generator().manual_seed(0)
    copy.set_state(gen.get_state())
    return torch.rand(shape, generator=copy)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "geometric"])
def test_bd3lm_weighs_each_block_by_its_own_time(schedule):
    """bd3lm with given times (B, n_blocks): the loss is Σ over masked positions of
    weight(t of its block) · log V, over B·L tokens."""
    cfg = model_preset("tiny", vocab_size=V, attention="block-causal", block_size=4)
    opts = ObjectiveOptions(schedule=get_schedule(schedule, eps=1e-3))
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randint(4, V, (3, 16), generator=gen)
    t = torch.tensor([[0.1, 0.5, 0.9, 0.3], [0.7, 0.2, 0.6, 0.95], [0.05, 0.4, 0.8, 0.25]])
    u = _draws(gen, tuple(x0.shape))
    parts = get_objective("bd3lm")(Uniform(), cfg, x0, attention_mask=None, generator=gen,
                                   options=opts, t=t)
    t_pos = t.repeat_interleave(4, dim=1)
    masked = u < opts.schedule.p_mask(t_pos)
    want = float((opts.schedule.weight(t_pos) * masked).sum()) * math.log(V)
    assert float(parts.loss_sum.detach()) == pytest.approx(want, rel=1e-5)
    assert int(parts.n_tokens) == x0.numel()


def test_sft_is_the_mean_over_rows_of_each_answers_per_token_loss():
    """sft: a row's masked answer tokens each cost weight(t) · log V, divided by the row's
    answer length; n_tokens is the number of rows (the mean per row)."""
    cfg = model_preset("tiny", vocab_size=V)
    opts = ObjectiveOptions(schedule=get_schedule("linear", eps=1e-3))
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randint(4, V, (3, 12), generator=gen)
    prompt = torch.zeros(3, 12, dtype=torch.bool)
    prompt[0, :2], prompt[1, :6], prompt[2, :10] = True, True, True  # answers of 10, 6, 2
    t = torch.tensor([0.3, 0.6, 0.9])
    u = _draws(gen, tuple(x0.shape))
    parts = get_objective("sft")(Uniform(), cfg, x0, attention_mask=None, generator=gen,
                                 options=opts, prompt_mask=prompt, t=t)
    masked = (u < opts.schedule.p_mask(t)[:, None]) & ~prompt
    per_row = masked.sum(1) / (~prompt).sum(1) / opts.schedule.p_mask(t)
    assert float(parts.loss_sum.detach()) == pytest.approx(float(per_row.sum()) * math.log(V),
                                                           rel=1e-5)
    assert int(parts.n_tokens) == 3


@pytest.mark.parametrize("weight", [0.0, 0.5, 2.0])
def test_hybrid_is_log_v_plus_its_weight_times_log_v(weight):
    """hybrid: the causal next-token CE plus draft_weight × the mean draft CE, over the
    B·(L - 1) next-token targets: (1 + draft_weight)·log V a token for a uniform model."""
    cfg = model_preset("tiny", vocab_size=V, attention="causal", draft_block=3)
    opts = ObjectiveOptions(schedule=get_schedule("linear", eps=1e-3), draft_weight=weight)
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randint(4, V, (2, 20), generator=gen)
    parts = get_objective("hybrid")(Uniform(), replace(cfg, mask_id=0), x0, attention_mask=None,
                                    generator=gen, options=opts)
    assert int(parts.n_tokens) == 2 * 19
    per_token = float(parts.loss_sum.detach()) / int(parts.n_tokens)
    assert per_token == pytest.approx((1 + weight) * math.log(V), rel=1e-5)
