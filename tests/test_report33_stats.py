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


class _Axes:
    def __init__(self, drawn):
        self.drawn = drawn

    def barh(self, labels, values, **kw):
        self.drawn.update(labels=list(labels), values=list(values), xerr=kw.get("xerr"))

    def __getattr__(self, name):
        return lambda *a, **k: None


def test_planning_plot_draws_the_rows_it_can_with_their_intervals(tmp_path, report,
                                                                  monkeypatch):
    """A row without a rate was drawn as 0% solved; a rate that was text, or a file of another
    shape beside good ones, left the section without a plot. Each bar now carries its 95%
    interval."""
    drawn: dict = {}

    class Plt:
        def subplots(self, *a, **k):
            return object(), _Axes(drawn)

        def close(self, fig):
            pass

    monkeypatch.setattr(report, "_pyplot", lambda: Plt())
    monkeypatch.setattr(report, "_save", lambda fig, path: path.write_bytes(b"png"))
    results = tmp_path / "results"
    results.mkdir()
    good = [_planning_row("sft", 167, 200), _planning_row("ar", 133, 200)]
    (results / "planning_a.json").write_text(json.dumps({"rows": good}))
    bad = [{"group": "g", "model": "m", "solved": 3},  # no rate, no total: not drawn
           {"group": "g", "model": "text", "rate": "high"},
           {"group": "g", "model": "counts", "solved": 1, "total": 4}]  # rate from its counts
    (results / "planning_b.json").write_text(json.dumps({"rows": bad}))
    (results / "planning_c.json").write_text("[1, 2]")  # another shape: shown whole
    out = tmp_path / "report.md"
    notes = report.build(results, out)
    assert not [n for n in notes if "no plot" in n], notes
    assert drawn["labels"] == ["sudoku4 · sft", "sudoku4 · ar", "g · counts"]
    assert drawn["values"] == pytest.approx([83.5, 66.5, 25.0])
    below, above = drawn["xerr"]  # Wilson 95% (by hand): 167/200 is 77.73% to 88.00%
    assert below[0] == pytest.approx(83.5 - 77.73, abs=0.01)
    assert above[0] == pytest.approx(88.00 - 83.5, abs=0.01)
    page = out.read_text()
    # the table: the interval beside each rate, for files written before planning.py had it
    assert "| sudoku4 | sft | sft | 167 | 200 | 0.835 | 0.7773 | 0.88 |" in page
    assert "| sudoku4 | ar | ar | 133 | 200 | 0.665 | 0.597 | 0.7268 |" in page
