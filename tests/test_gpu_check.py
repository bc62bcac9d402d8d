"""benchmarks/gpu_check.py runs: its --dry-run does every row on CPU at toy sizes, so the GPU
check is known to work before a GPU is at hand."""

import json


def test_gpu_check_dry_run_fills_the_table(tmp_path, capsys, free_port, benchmark):
    mod = benchmark("gpu_check")
    out = tmp_path / "check.json"
    assert mod.main(["--dry-run", "--json", str(out), "--port", str(free_port)]) == 0
    rows = {r["row"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == [
        "train 125M bf16 eager",
        "train 125M bf16 compiled",
        "decode 8B: build + prefill",
        "decode 8B step eager",
        "decode 8B step cuda graph",
        "decode 8B step compiled",
        "train 125M bf16 compiled, FSDP2 1 device",
    ]
    for name, r in rows.items():
        if name == "decode 8B step cuda graph":
            assert r["error"] == "skipped: CUDA graphs need a GPU"
            continue
        assert "error" not in r, r
        assert r.get("step_ms", 1) > 0
    assert "mfu" not in rows["train 125M bf16 eager"]  # no peak known for a CPU
    table = capsys.readouterr().out
    assert "decode 8B step compiled" in table and "gpu_check on cpu" in table
