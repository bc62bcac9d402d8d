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


NOT_RESULTS = {"large_shape": 2, "lm_eval_demo": 1}
"""``json.dumps`` calls that write no results: large_shape's checkpoint folder (its
safetensors index and config.json), lm_eval_demo's task rows (JSON lines)."""


@pytest.mark.parametrize("script", SCRIPTS)
def test_results_go_through_write_results(script):
    source = (ROOT / "benchmarks" / f"{script}.py").read_text()
    assert "write_results(" in source
    assert not IN_PLACE.search(source), IN_PLACE.search(source)
    # nor by json.dumps (``path.write_text(json.dumps(result,\n indent=2))``): each one
    # prints a progress line, or is one of the files that are no results
    dumps = [before for before in re.findall(r"(.{0,6})json\.dumps\(", source)
             if before != "print("]
    assert len(dumps) == NOT_RESULTS.get(script, 0), (script, dumps)


@pytest.mark.parametrize("buffered", [False, True])
def test_a_script_whose_reader_left_exits_141_quietly(benchmark, tmp_path, monkeypatch, capsys,
                                                      buffered):
    """``python benchmarks/report.py | head -c 0``: the BrokenPipeError, an OSError, was
    said as ``report.py: error: Broken pipe`` with status 2; now as ``unmask`` ends on a
    closed pipe (``unmask.cli.reader_left``): nothing said, status 141. Buffered (stdout to a
    pipe without PYTHONUNBUFFERED), the pipe breaks only as stdout is flushed: ``run`` flushes
    it inside its handlers (it was the interpreter's last flush: "Exception ignored", 120)."""
    import sys

    common = benchmark("_common")
    sink = open(tmp_path / "sink", "w")  # noqa: SIM115 - its descriptor is redirected

    class Closed:
        held = ""

        def write(self, text):
            if not buffered:
                raise BrokenPipeError(32, "Broken pipe")
            self.held += text

        def flush(self):
            if self.held:
                raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            return sink.fileno()

    def main():
        print("wrote x")

    monkeypatch.setattr(sys, "stdout", Closed())
    try:
        with pytest.raises(SystemExit) as stop:
            common.run(main)
    finally:
        sink.close()
    assert stop.value.code == 141
    assert capsys.readouterr().err == ""
