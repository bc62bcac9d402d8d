"""Session 33, the server: ``ServerLimits`` bounds ``max_slow_checks`` itself (only the
``unmask serve`` flag did: an app built in Python could ask for any number of threads), and
the ``nfe`` metric counts the forward passes of a job that runs alone (infill, forms) even
when it is cancelled part way (it counted its result's ``nfe``, which a cancelled job never
has: a client that left mid-way had its forwards run, uncounted)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


from unmask.errors import UserError  # noqa: E402
from unmask.server import ServerLimits  # noqa: E402


def test_server_limits_bound_the_slow_check_threads():
    assert ServerLimits(max_slow_checks=1024).max_slow_checks == 1024
    for many in (1025, 10**400):
        with pytest.raises(UserError, match="max_slow_checks=.* must be at most 1024 "
                                            r"\(threads of each kind\)"):
            ServerLimits(max_slow_checks=many)
