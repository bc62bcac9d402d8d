"""Session 29: ``api.run_rows`` (public) refuses no rows or a wrong count of seeds in one
line, as ``api.start`` does."""

from __future__ import annotations

import pytest
from test_evalmend_fixes import _checkpoint

from unmask.errors import UserError


def test_run_rows_refuses_a_wrong_count_of_seeds_and_no_rows(tmp_path):
    """A wrong count of seeds was ``zip() argument 2 is shorter``, no rows ``max() arg is an
    empty sequence``: now a one-line UserError each, as ``api.start`` says it."""
    from unmask.api import run_rows
    from unmask.config import SampleConfig

    loaded = _checkpoint(tmp_path / "s", objective="sedd")
    rows = [[65, 66], [67]]
    cfg = SampleConfig(gen_length=4, steps=4, temperature=1.0, seed=0)
    with pytest.raises(UserError, match=r"^1 seed for 2 rows$"):
        run_rows(loaded, rows, cfg, [1])
    with pytest.raises(UserError, match=r"^3 seeds for 2 rows$"):
        run_rows(loaded, rows, cfg, [1, 2, 3])
    with pytest.raises(UserError, match=r"^no prompts given$"):
        run_rows(loaded, [], cfg, [])
