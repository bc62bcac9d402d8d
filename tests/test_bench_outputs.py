"""Benchmark scripts write their results where ``--json`` says, else to ``runs/bench`` (not
committed): a documented command run again never overwrites the measurements committed in
``benchmarks/results`` unless the user names one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
READS_RESULTS = {"report.py"}  # reads benchmarks/results (its --results) and writes docs/


def _code_strings(path: Path) -> list[str]:
    """The string constants of a script that are neither docstrings nor ``help=`` texts, a
    path segment joined with ``/`` marked with a leading ``/``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant):
            skip.add(id(body[0].value))
        if isinstance(node, ast.keyword) and node.arg == "help":
            skip.update(id(n) for n in ast.walk(node.value))
    joined = {id(n.right) for n in ast.walk(tree)
              if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)}
    return [("/" if id(n) in joined else "") + n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]


def test_no_script_writes_into_benchmarks_results_by_default(benchmark) -> None:
    """guidance, infill, large_shape, llada2, objectives, rounding, serve_load,
    data_constrained and gpu_check (on CUDA) wrote into benchmarks/results when no path was
    given, replacing committed results; distill_scale.sh and hybrid_scale.sh too."""
    offenders = []
    for path in sorted(BENCH.glob("*.py")):
        if path.name in READS_RESULTS:
            continue
        for s in _code_strings(path):
            if s == "/results" or "benchmarks/results" in s:
                offenders.append(f"{path.name}: {s!r}")
    for path in sorted(BENCH.glob("*.sh")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if re.search(r"\$\{\w+:-benchmarks/results", line):
                offenders.append(f"{path.name}: {line.strip()}")
    assert not offenders, offenders
    common = benchmark("_common")
    assert common.default_output("x.json") == BENCH.parent / "runs" / "bench" / "x.json"
    assert "/runs/" in (BENCH.parent / ".gitignore").read_text()
    assert benchmark("infill").RESULTS == common.default_output("infill.json")
    assert benchmark("serve_load").RESULTS == common.default_output("serve_load.json")


def test_decoding_tokens_per_forward_of_an_ar_row_counts_the_steps_it_took(benchmark) -> None:
    """decoding.py's teacher-vs-student table divided the requested length by an AR row's
    forwards: an AR model whose rows all stopped at EOS after 16 of 64 tokens (16 forwards)
    showed 4 tokens per forward, where it decodes one."""
    decoding = benchmark("decoding")

    def row(policy: str, steps: int, nfe: int, tps: float) -> dict:
        return {"gen_length": 64, "policy": policy, "cache": "none", "model": policy,
                "steps": steps, "nfe": nfe, "tokens_per_s": tps, "gen_ppl": None,
                "entropy": 2.0, "distinct_2": 0.5}  # fmt: skip

    def section(name: str, rows: list) -> object:
        sec = decoding.Section(name, None, None, None, trained=True)
        sec.lengths, sec.rows = [64], rows
        return sec

    teacher = section("t", [row("llada 1/step", 64, 64, 10.0), row("llada 4/step", 16, 16, 40.0)])
    student = section("s", [row("llada 8/step", 8, 8, 80.0)])
    ar = section("a", [row("autoregressive", 16, 16, 20.0)])
    out = {r["which"]: r for r in decoding.compare(teacher, student, ar, "llada 1/step")}
    assert out["autoregressive"]["tokens_per_forward"] == 1.0
    assert out["teacher best"]["tokens_per_forward"] == 4.0
    assert out["student best"]["tokens_per_forward"] == 8.0
    assert out["student best"]["x_teacher_1step"] == 8.0 and out["student best"]["x_ar"] == 4.0


def _strict(path) -> object:
    import json

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_decoding_and_segments_write_strict_json_when_a_number_is_nan(
    benchmark, tmp_path, monkeypatch
) -> None:
    """The gen ppl of texts with no token to score is NaN (``ReferenceScorer.perplexity``),
    and a diverged one inf: decoding.py and segments.py (and the other scripts that scored
    or divided) wrote them as bare NaN / Infinity, which jq and JavaScript refuse."""
    import torch

    before = torch.get_num_threads()
    decoding = benchmark("decoding")
    real = decoding.quality

    def nan_quality(*a, **k):
        return {**real(*a, **k), "gen_ppl": float("nan"), "entropy": float("inf")}

    monkeypatch.setattr(decoding, "quality", nan_quality)
    out = tmp_path / "d.json"
    decoding.main(["--quick", "--speed-preset", "none", "--gen-lengths", "16",
                   "--json", str(out)])  # fmt: skip
    rows = _strict(out)["sections"][0]["rows"]
    assert rows and all(r["gen_ppl"] is None and r["entropy"] is None for r in rows)

    segments = benchmark("segments")
    monkeypatch.setattr(segments, "unigram_entropy", lambda ids: float("nan"))
    out = tmp_path / "s.json"
    segments.main(["--quick", "--gen-length", "16", "--segments", "8", "--json", str(out)])
    torch.set_num_threads(before)
    assert [r["entropy"] for r in _strict(out)["rows"]] == [None]


def test_sampling_baseline_has_a_quick_mode_and_writes_what_it_prints(
    benchmark, tmp_path, capsys
) -> None:
    """sampling_baseline.py had no small setting (its smallest run decoded 256 tokens four
    times and scored the whole validation split: minutes on one thread) and no --threads."""
    import torch

    before = torch.get_num_threads()
    sb = benchmark("sampling_baseline")
    out = tmp_path / "sb.json"
    sb.main(["--quick", "--threads", "1", "--json", str(out)])
    torch.set_num_threads(before)
    got = _strict(out)
    assert [(r["gen_length"], r["steps"]) for r in got["rows"]] == [(16, 16), (16, 4)]
    assert got["threads"] == 1 and got["quick"] is True and len(got["samples"]) == 1
    printed = capsys.readouterr().out
    for r in got["rows"]:
        assert f"{r['tokens_per_s']:>9.1f}" in printed
    assert f"{got['quality']['val_bpb']:.4f} bits/byte" in printed


def test_the_prepared_shell_scripts_run_with_python3_alone(tmp_path) -> None:
    """distill_scale.sh and hybrid_scale.sh called ``python`` by default, which a fresh
    machine (a device image, Debian/Ubuntu) often lacks: ``python: command not found`` before
    anything ran (device_session.sh and gpu_check.sh use ``python3``). With a ``python3``
    that records its arguments and nothing else on PATH, each script runs to its end and
    passes the options its header documents."""
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    shim = bin_dir / "python3"
    shim.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    shim.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    (data / "index.json").write_text("{}")
    env = {"PATH": str(bin_dir), "DATA": str(data), "OUT": str(tmp_path / "out"),
           "SHIP": str(tmp_path / "ship"), "RESULT": str(tmp_path / "r.json")}  # fmt: skip
    for script, expect in (
        ("distill_scale.sh", ["-m unmask.cli distill", "benchmarks/decoding.py --model"]),
        ("hybrid_scale.sh", ["-m unmask.cli train --data", "-m unmask.cli convert",
                             "benchmarks/speculative.py --ar-model"]),
    ):  # fmt: skip
        log.write_text("")
        r = subprocess.run(["/bin/bash", str(BENCH / script)], cwd=BENCH.parent, env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, (script, r.stderr)
        calls = log.read_text().splitlines()
        assert len(calls) == len(expect), calls
        for call, start in zip(calls, expect, strict=True):
            assert call.startswith(start), (script, call)


def test_precision_times_no_first_call(benchmark, monkeypatch, capsys) -> None:
    """precision.py timed each dtype's first decode: with --repeats 1 the reference dtype's
    first-call costs were in its time and the other dtype's speed-up was inflated. A fake
    decode whose first call per model takes 100 s and every later one 1 s: speed-up 1."""
    import torch

    before = torch.get_num_threads()
    precision = benchmark("precision")
    seen: set[int] = set()

    def fake(m, prompts, cfg, batch):
        first = id(m) not in seen
        seen.add(id(m))
        ids = [[5] * cfg.gen_length for _ in prompts]
        return ids, ["x"] * len(prompts), 100.0 if first else 1.0

    monkeypatch.setattr(precision, "_decode_all", fake)
    precision.main(["--dtypes", "fp32", "bf16", "--prompts", "2", "--prompt-words", "4",
                    "--prompt-source", "corpus-tail", "--batch", "2", "--gen-lengths", "8",
                    "--repeats", "1", "--threads", "1", "--no-score"])  # fmt: skip
    torch.set_num_threads(before)
    table = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| demo")]
    assert len(table) == 2
    for line in table:
        cells = [c.strip() for c in line.split("|")]
        assert cells[5:7] == ["16.0", "1.000"], line  # tok_s = 2 x 8 tokens / 1 s, speed-up 1


def test_gpu_check_sh_without_torch_is_one_line(tmp_path) -> None:
    """With a python that lacks torch (a fresh checkout has no .venv, and the system python3
    none), gpu_check.sh ran gpu_check.py into a ModuleNotFoundError traceback (exit 1)."""
    import subprocess

    shim = tmp_path / "python3"
    shim.write_text("#!/bin/sh\necho 'Traceback (most recent call last):' >&2\n"
                    "echo \"ModuleNotFoundError: No module named 'torch'\" >&2\n"
                    "exit 1\n")  # fmt: skip
    shim.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(shim)}
    r = subprocess.run(["/bin/bash", str(BENCH / "gpu_check.sh"), "--dry-run"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (f"gpu_check.sh: error: {shim} cannot import torch (set PYTHON "
                                "to the environment's python)")  # fmt: skip


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CPU-only check")
def test_device_session_without_a_gpu_stops_at_once(tmp_path) -> None:
    """On a machine without CUDA (DEVICE defaults to cuda) every stage failed with its own
    error, the script went on, packed empty logs and said "done", exit 0."""
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "PY": sys.executable, "OUT": str(tmp_path / "out"),
           "STAGES": "spec", "TOTAL": "30"}  # fmt: skip
    r = subprocess.run(["/bin/bash", "benchmarks/device_session.sh"], cwd=BENCH.parent, env=env,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip().splitlines() == [
        f"device_session.sh: error: DEVICE=cuda but {sys.executable} sees no CUDA device "
        "(DEVICE=cpu and the small sizes of the header's dry run check the plumbing here)"]
    assert "== done" not in r.stdout
