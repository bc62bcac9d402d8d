"""benchmarks/threads.py: tokens/s per thread count, in one process."""

from __future__ import annotations

import json

import torch


def test_rows_per_preset_and_thread_count(benchmark, tmp_path):
    threads = benchmark("threads")
    before = torch.get_num_threads()
    out = tmp_path / "t.json"
    rows = threads.main(["--presets", "tiny", "bench", "--threads", "1", "2", "--tokens", "4",
                         "--repeats", "1", "--json", str(out)])  # fmt: skip
    torch.set_num_threads(before)
    assert [(r["preset"], r["threads"]) for r in rows] == [
        ("tiny", 1), ("tiny", 2), ("bench", 1), ("bench", 2)
    ]
    assert all(r["tok_s"] > 0 for r in rows)
    assert [r["vs_first"] for r in rows[::2]] == [1.0, 1.0]
    assert rows[0]["params"] < rows[2]["params"]
    assert json.loads(out.read_text())["rows"] == rows


def test_the_ratio_is_to_the_fewest_threads_and_says_so(benchmark, capsys):
    """``--threads 2 1`` printed the column "x1 thread" but divided by the 2-thread rate (the
    first given), and ``--threads 1 1`` timed and printed the same count twice."""
    threads = benchmark("threads")
    before = torch.get_num_threads()
    rows = threads.main(["--presets", "tiny", "--threads", "2", "1", "1", "--tokens", "4",
                         "--repeats", "1"])  # fmt: skip
    torch.set_num_threads(before)
    assert [r["threads"] for r in rows] == [1, 2]
    assert rows[0]["vs_first"] == 1.0
    assert rows[1]["vs_first"] == rows[1]["tok_s"] / rows[0]["tok_s"]
    assert "x1 thread" in capsys.readouterr().out
    rows = threads.main(["--presets", "tiny", "--threads", "2", "--tokens", "4",
                         "--repeats", "1"])  # fmt: skip
    torch.set_num_threads(before)
    assert "x2 threads" in capsys.readouterr().out


def test_tokens_must_be_positive(benchmark):
    import pytest

    threads = benchmark("threads")
    with pytest.raises(SystemExit):
        threads.parse_args(["--tokens", "0"])  # was a ZeroDivisionError after the warm-up
