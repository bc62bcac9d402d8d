"""metrics.jsonl is strict JSON (``unmask.files.json_line``: a non-finite number is null, not
the bare ``NaN`` that ``jq`` and JavaScript's ``JSON.parse`` refuse), and every reader of it
in the repository takes both such lines and the bare ``NaN`` of logs written before."""

from __future__ import annotations

import json
import math

import pytest

from unmask.files import as_number, json_line
from unmask.report import read_metrics, summarize_training


def _strict(constant: str) -> None:
    raise ValueError(f"bare {constant}")


def test_json_line_writes_non_finite_numbers_as_null() -> None:
    rec = {"step": 2, "loss": math.nan, "grad_norm": math.inf, "lr": 1e-3,
           "parts": {"a": -math.inf, "b": [1.5, math.nan]}, "skipped": True, "name": None}
    line = json_line(rec)
    assert line.endswith("\n") and line.count("\n") == 1
    back = json.loads(line, parse_constant=_strict)  # strict: no NaN/Infinity literal
    assert back == {"step": 2, "loss": None, "grad_norm": None, "lr": 1e-3,
                    "parts": {"a": None, "b": [1.5, None]}, "skipped": True, "name": None}
    with pytest.raises(ValueError, match="bare NaN"):  # what the log held before
        json.loads(json.dumps(rec), parse_constant=_strict)


def test_as_number_reads_null_and_old_nan_as_nan() -> None:
    assert math.isnan(as_number(None)) and math.isnan(as_number(json.loads("NaN")))
    assert as_number(3) == 3.0 and isinstance(as_number(3), float)
    assert as_number(math.inf) == math.inf


def _log(tmp_path, lines: list[str]):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_the_training_summary_reads_old_and_new_logs_alike(tmp_path) -> None:
    """``unmask eval``'s training summary: a skipped step's loss and a NaN validation, as
    bare NaN (old logs) or null (new ones), are NaN points of the curves (null was a
    TypeError)."""
    start = '{"event": "start", "params": 10, "model": {"block_size": null}}'
    old = [start, '{"step": 1, "loss": 2.0}', '{"step": 2, "loss": NaN, "skipped": true}',
           '{"step": 2, "val_loss": NaN, "val_bpb": NaN}']
    new = [start, '{"step": 1, "loss": 2.0}', '{"step": 2, "loss": null, "skipped": true}',
           '{"step": 2, "val_loss": null, "val_bpb": null}']
    for i, lines in enumerate((old, new)):
        (tmp_path / str(i)).mkdir()
        s = summarize_training(read_metrics(_log(tmp_path / str(i), lines)))
        assert s.params == 10 and s.steps == [1, 2] and s.loss[0] == 2.0
        assert math.isnan(s.loss[1]) and math.isnan(s.val_loss[0]) and math.isnan(s.val_bpb[0])


def test_the_data_constrained_curve_reads_old_and_new_logs_alike(tmp_path, benchmark) -> None:
    """``benchmarks/data_constrained.py`` compares held-out bits/byte: null must not reach the
    comparison (``None < float`` is a TypeError), a NaN compares as before."""
    bench = benchmark("data_constrained")
    curves = {}
    for name, bad in (("ar", "NaN"), ("mdlm", "null")):
        run = tmp_path / name
        run.mkdir()
        _log(run, [f'{{"step": 1, "val_bpb": {bad}}}', '{"step": 2, "val_bpb": 1.5}',
                   '{"step": 2, "loss": 2.5}'])
        curves[name] = bench.curve(run, 1)
        assert math.isnan(curves[name][0]["val_bpb"]) and curves[name][1]["val_bpb"] == 1.5
    assert bench.crossover(curves["ar"], curves["mdlm"]) is None  # 1.5 < 1.5 is false
