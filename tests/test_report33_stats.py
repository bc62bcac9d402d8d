"""Session 33 audit of the report area: benchmarks/report.py on unreadable result files,
the planning plot and table, planning.py's runs and statistics."""

import json

import pytest


@pytest.fixture
def report(benchmark):
    return benchmark("report")


def _planning_row(model: str, solved: int, total: int, **extra) -> dict:
    return {"group": "sudoku4", "model": model, "objective": model, "solved": solved,
            "total": total, "rate": solved / total, **extra}


def test_a_result_file_that_is_not_utf8_is_a_note_not_a_traceback(tmp_path, report):
    """A binary or UTF-16 ``*.json`` in the results folder raised UnicodeDecodeError out of
    ``build``: no page at all, for one stray file."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "planning_x.json").write_bytes(b"\xff\xfe{\x00}\x00")  # UTF-16
    (results / "stray.json").write_bytes(b"\x89PNG\r\n")
    (results / "planning_ok.json").write_text(json.dumps({"rows": [_planning_row("ar", 1, 2)]}))
    out = tmp_path / "new" / "docs" / "report.md"  # a folder not there yet is made
    notes = report.build(results, out)
    page = out.read_text(encoding="utf-8")
    assert "`planning_x.json`: not UTF-8 text (byte 0), skipped." in page
    assert "`stray.json`: not UTF-8 text (byte 0), skipped." in page
    assert "| sudoku4 | ar | ar | 1 | 2 | 0.5 |" in page
    assert "stray.json: not UTF-8 text, skipped" in notes
    assert sorted(p.name for p in out.parent.iterdir()) == ["report", "report.md"]  # no temp
