"""Session 31 (samplingmend): ``unmask generate``'s ``--n`` memory floor counts what runs.

Rows the decoder keeps apart (a prompt of [MASK]s alone, a [MASK] under a KV cache) run
alone, one forward of one row at a time (greedy: identical ones once), but the floor counted
them as one batch of every row and refused counts that fit."""

from __future__ import annotations

import pytest
from test_cli30_generate import FREE, _argv, tiny  # noqa: F401 -- the fixture

from unmask.cli import main


def _rows_over_the_free_memory_as_one_batch(tiny):  # noqa: F811
    from unmask import api
    from unmask.api import rows_bytes

    loaded = api.load_for_decoding(tiny, device="cpu")
    config = api.sample_config(loaded, {"gen_length": 8, "temperature": 0.0},
                               prompt_lengths=[2])
    n = 2 * FREE // rows_bytes(loaded, [2], config, 1)  # twice the free memory in one batch
    assert rows_bytes(loaded, [2], config, n, rows_at_once="each") < FREE // 10
    return n


@pytest.mark.parametrize(("prompt", "refused"), [("[MASK][MASK]", False), ("ab", True)])
def test_rows_kept_apart_are_not_counted_as_one_batch(tiny, monkeypatch, prompt,  # noqa: F811
                                                      refused):
    """Greedy ``--n`` of a prompt of [MASK]s runs one row (its copies take its text): the
    count whose one batch would need twice the free memory is let through; a plain prompt's
    rows, one batch, are still refused."""
    n = _rows_over_the_free_memory_as_one_batch(tiny)
    monkeypatch.setattr("unmask.quantize.free_bytes", lambda device: FREE)
    monkeypatch.setattr("unmask.api.generate", lambda *a, **k: pytest.fail("ran"))
    argv = _argv(tiny, prompt, "--n", str(n), "--temperature", "0", "--no-live")
    if refused:
        assert main(argv) == 2
    else:
        with pytest.raises(BaseException, match="ran"):
            main(argv)
