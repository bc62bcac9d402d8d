"""Session 31 (apirun): ``unmask.api.generate`` refuses, in one line and before a row is
made, an ``n`` whose rows cannot fit the free memory, as ``unmask generate --n`` does: a
script asking for too many rows was killed by the system (status 137, no message)."""

from __future__ import annotations

import pytest
from test_cli30_generate import FREE, tiny  # noqa: F401 -- the fixture

from unmask import api
from unmask.errors import UserError


def test_generate_refuses_rows_beyond_the_free_memory(tiny, monkeypatch):  # noqa: F811
    loaded = api.load_for_decoding(tiny, device="cpu")
    monkeypatch.setattr("unmask.quantize.free_bytes", lambda device: FREE)
    monkeypatch.setattr("unmask.api.start", lambda *a, **k: pytest.fail("a run was started"))
    with pytest.raises(UserError) as err:
        api.generate(loaded, ["ab", "cd"], config={"gen_length": 8}, n=1_000_000_000)
    line = str(err.value)
    assert line.startswith("n=1000000000 × 2 prompts (2,000,000,000 rows): needs at least ")
    assert "GB of RAM, 1.0 GB free: more than n=" in line and "\n" not in line


def test_generate_names_the_most_that_fit_and_runs_it(tiny, monkeypatch):  # noqa: F811
    import re

    loaded = api.load_for_decoding(tiny, device="cpu")
    monkeypatch.setattr("unmask.quantize.free_bytes", lambda device: FREE)
    config = api.sample_config(loaded, {"gen_length": 8, "temperature": 1.0, "seed": 3},
                               prompt_lengths=[2])
    with pytest.raises(UserError, match=r"more than n=\d+ cannot fit") as err:
        api.generate(loaded, ["ab"], config=config, n=10_000_000)
    most = int(re.search(r"more than n=(\d+)", str(err.value))[1])
    bound = [api.rows_bytes(loaded, [2], config, k) * api.FIT_MARGIN for k in (most, most + 1)]
    assert bound[0] <= FREE < bound[1]  # seeded fp32 rows: one batch, as they run
    out = api.generate(loaded, ["ab"], config=config, n=2)  # a count that fits runs
    assert len(out.texts) == 2


def test_no_fit_check_lets_it_through(tiny, monkeypatch):  # noqa: F811
    loaded = api.load_for_decoding(tiny, device="cpu")
    monkeypatch.setattr("unmask.quantize.free_bytes", lambda device: FREE)
    monkeypatch.setenv("UNMASK_NO_FIT_CHECK", "1")
    monkeypatch.setattr("unmask.api.run_rows", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(BaseException, match="ran"):  # refused without it (above)
        api.generate(loaded, ["ab"], config={"gen_length": 8}, n=10_000_000)
