"""The continuous decoders' guidance step: ``guide_scale`` is a finite number >= 0."""

import math

import pytest

from unmask.config import SampleConfig
from unmask.errors import UserError


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.5])
def test_a_guide_scale_that_is_no_step_size_is_one_line(value):
    """nan turned guidance off without a word (``guide_scale > 0`` is False) and inf moved the
    state by an infinite step (inf / nan vectors into the model): both are refused as -0.5
    is."""
    with pytest.raises(UserError, match=r"^guide_scale must be a finite number >= 0, got "):
        SampleConfig(guide_scale=value)
    assert SampleConfig(guide_scale=0.0).guide_scale == 0.0
