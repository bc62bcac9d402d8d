"""The noise schedules against their closed forms, and bad values refused in one line."""

from __future__ import annotations

import math

import pytest
import torch

from unmask.errors import UserError
from unmask.objectives.continuous import SqrtSchedule
from unmask.schedules import SCHEDULES, get_schedule


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_derivative_weight_and_expected_weight_match_the_closed_forms(name):
    """dα/dt against a central difference of α; weight = -α'/p_mask; a token's expected
    weight E_t[weight · p_mask] = α(0) - α(1) (1 for linear and cosine: a uniform
    predictor's bound is log V); finite over [0, 1] with the floor eps."""
    sched = get_schedule(name, eps=1e-3)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    numeric = (sched.alpha(t + h) - sched.alpha(t - h)) / (2 * h)
    torch.testing.assert_close(sched.dalpha(t), numeric, rtol=1e-6, atol=1e-8)
    grid = torch.linspace(0.0, 1.0, 200_001, dtype=torch.float64)
    w = sched.weight(grid)
    assert torch.isfinite(w).all() and (w[:-1] > 0).all()
    torch.testing.assert_close(w, -sched.dalpha(grid) / sched.p_mask(grid))
    expected = float(torch.trapezoid(w * sched.p_mask(grid), grid))
    a = sched.alpha(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert expected == pytest.approx(float(a[0] - a[1]), abs=1e-6)
    if name != "geometric":
        assert expected == pytest.approx(1.0, abs=1e-6)


def test_linear_weight_is_one_over_p_mask():
    sched = get_schedule("linear", eps=1e-3)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    want = [1 / 1e-3, 1 / (0.999 * 0.25 + 1e-3), 1.0]
    assert sched.weight(t).tolist() == pytest.approx(want)


def test_bad_schedule_values_are_one_line_errors():
    with pytest.raises(UserError, match="unknown schedule 'loglinear'; choose one of linear"):
        get_schedule("loglinear")
    for eps in (-0.1, 1.0, float("nan")):
        with pytest.raises(UserError, match="must be in \\[0, 1\\)"):
            get_schedule("cosine", eps=eps)
    with pytest.raises(UserError, match="steps=0 must be positive"):
        get_schedule("cosine").transfer_counts(4, 0)


@pytest.mark.parametrize("s", [-1e-4, 1.0, float("nan")])
def test_sqrt_schedule_refuses_an_offset_outside_0_1(s):
    """A negative offset made ᾱ NaN near t = 0 (sqrt of a negative), without a word."""
    with pytest.raises(UserError, match="offset s=.* must be in \\[0, 1\\)"):
        SqrtSchedule(s)


def test_a_posterior_step_forward_in_time_is_refused():
    """s > t gave a negative variance, silently clamped to 0, and a wrong mean."""
    sched = SqrtSchedule()
    xt = torch.zeros(1, 2, 3)
    with pytest.raises(UserError, match="0 <= s < t <= 1; got t=0.3, s=0.6"):
        sched.posterior_step(xt, xt, 0.3, 0.6, torch.Generator().manual_seed(0))
    out = sched.posterior_step(xt, torch.ones_like(xt), 1.0, 0.0, torch.Generator().manual_seed(0))
    ab0 = 1 - math.sqrt(1e-4)
    assert torch.isfinite(out).all() and out.shape == xt.shape
    # from t = 1 (ᾱ = 0) the mean is sqrt(ᾱ_s)·x0 and the variance 1 - ᾱ_s
    many = sched.posterior_step(torch.zeros(20000, 1, 1), torch.ones(20000, 1, 1), 1.0, 0.0,
                                torch.Generator().manual_seed(1))  # fmt: skip
    assert float(many.mean()) == pytest.approx(math.sqrt(ab0), abs=0.01)
    assert float(many.var()) == pytest.approx(1 - ab0, abs=0.002)
