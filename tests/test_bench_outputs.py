"""Benchmark scripts write their results where ``--json`` says, else to ``runs/bench`` (not
committed): a documented command run again never overwrites the measurements committed in
``benchmarks/results`` unless the user names one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

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
