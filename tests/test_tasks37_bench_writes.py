"""The benchmark scripts write their results JSON through ``_common.write_results`` (strict
JSON, atomically): ten of them wrote it with ``Path.write_text``, so a Ctrl-C or a full disk
mid-write left a torn file in place of the last measurement, and startup.py's
``json.dumps`` let a NaN through."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPTS = ("train_throughput", "data_constrained", "llada2", "speculative", "speculative_accept",
           "hybrid", "gqa_attention", "precision", "large_shape", "compile_decode", "threads",
           "constraints", "lm_eval_demo", "elbo_stderr", "startup", "eval_rows")

IN_PLACE = re.compile(r"\.write_text\(\s*json_text\(|atomic_write_text\(")
"""A results file written by hand: in place, or atomically but not through write_results."""


@pytest.mark.parametrize("script", SCRIPTS)
def test_results_go_through_write_results(script):
    source = (ROOT / "benchmarks" / f"{script}.py").read_text()
    assert "write_results(" in source
    assert not IN_PLACE.search(source), IN_PLACE.search(source)
