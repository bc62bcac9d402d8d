"""benchmarks/report.py: a result file that cannot be read (a folder named *.json) is a note
on the page, as a file that is not JSON is, not the end of the whole page."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def report(benchmark):
    return benchmark("report")


def test_a_folder_named_like_a_result_file_is_a_note_not_the_end_of_the_page(tmp_path, report):
    results = tmp_path / "results"
    (results / "planning_dir.json").mkdir(parents=True)
    row = {"group": "sudoku4", "model": "ar", "objective": "ar", "solved": 1, "total": 2,
           "rate": 0.5}
    (results / "planning_ok.json").write_text(json.dumps({"rows": [row]}))
    out = tmp_path / "docs" / "report.md"
    notes = report.build(results, out)
    page = out.read_text(encoding="utf-8")
    assert "`planning_dir.json`: not readable (Is a directory), skipped." in page
    assert "| sudoku4 | ar | ar | 1 | 2 | 0.5 |" in page
    assert "planning_dir.json: not readable, skipped" in notes


def test_results_that_name_a_file_say_so(tmp_path, report):
    """``--results README.md`` said "no such folder" of a file that is there."""
    from unmask.errors import UserError

    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(UserError, match=r"^--results .*r\.json: a file, not a folder of \*\.json"):
        report.main(["--results", str(tmp_path / "r.json"), "--out", str(tmp_path / "o.md")])
    with pytest.raises(UserError, match=r"^--results .*nothing: no such folder$"):
        report.main(["--results", str(tmp_path / "nothing"), "--out", str(tmp_path / "o.md")])
