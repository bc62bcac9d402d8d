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
