"""Session 35 (tasks): the report's tables and the distinct-2 bootstrap's refusals."""

import json

import pytest

from unmask.errors import UserError


def test_a_cell_with_line_breaks_stays_in_its_row(benchmark):
    """A sample text with a newline ended its row mid-cell: the rest of the row, and every row
    after it, fell out of the table (docs/report.md's guidance sections)."""
    report = benchmark("report")
    rows = [{"sample": "a\nb\r\nc\rd | e", "n": 1}, {"sample": "x", "n": 2}]
    lines = report.markdown_table(rows)
    assert not any("\n" in line or "\r" in line for line in lines)
    assert lines[2] == "| a<br>b<br>c<br>d \\| e | 1 |"


@pytest.mark.parametrize(
    "rows, meta",
    [
        ([{"texts": ["a b c"]}], {}),  # no model / policy: KeyError 'model'
        ([{"model": "m", "policy": "p", "texts": [1, 2]}], {}),  # ids: distinct_n's ValueError
        ([{"model": "m", "policy": "p", "texts": ["a b"]}], [1]),  # meta a list: AttributeError
    ],
)
def test_distinct_ci_refuses_a_file_of_another_shape_in_one_line(tmp_path, benchmark, rows,
                                                                   meta):
    ci = benchmark("distinct_ci")
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"meta": meta, "sections": [{"rows": rows}]}))
    with pytest.raises(UserError, match="not a benchmarks/decoding.py --json file"):
        ci.main([str(path), "--other", str(path), "--resamples", "5"])


def test_distinct_ci_says_a_row_without_texts_has_none(tmp_path, benchmark):
    """It read "the rows continue different prompt sets (0 vs 0 texts)"."""
    ci = benchmark("distinct_ci")
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"sections": [{"rows": [
        {"model": "m", "policy": "p", "texts": []}]}]}))  # fmt: skip
    with pytest.raises(UserError, match="a row has no texts"):
        ci.main([str(path)])
