"""Session 35 (tasks): a file nested past the JSON parser's stack is a one-line error, not a
``RecursionError`` traceback (the gap-set reader already said so)."""

import json

import pytest

from unmask.errors import UserError

DEEP = "[" * 100_000 + "]" * 100_000


def test_a_task_file_nested_too_deep_names_its_line(tmp_path):
    from unmask.tasks import read_items

    good = {"task": "countdown3", "prompt": "1,2,3>6:", "answer": "1+2=3,3+3=6",
            "meta": {"numbers": [1, 2, 3], "target": 6}}  # fmt: skip
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps(good) + "\n" + DEEP + "\n")
    with pytest.raises(UserError, match=r"eval\.jsonl:2: not a JSON object"):
        read_items(path)


def test_a_metrics_log_nested_too_deep_names_its_line(tmp_path):
    from unmask.report import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text(DEEP + "\n" + json.dumps({"step": 1, "loss": 2.0}) + "\n")
    with pytest.raises(UserError, match=r"metrics\.jsonl:1: not a JSON line"):
        read_metrics(path)


def test_the_report_skips_a_result_nested_too_deep(tmp_path, benchmark):
    report = benchmark("report")
    results = tmp_path / "results"
    results.mkdir()
    (results / "deep.json").write_text(DEEP)
    (results / "startup_x.json").write_text(json.dumps({"rows": [{"case": "a", "median_s": 1}]}))
    notes = report.build(results, tmp_path / "out" / "report.md")
    page = (tmp_path / "out" / "report.md").read_text()
    assert "`deep.json`: not valid JSON (nested too deep to read), skipped." in page
    assert "| a | 1 |" in page and any("deep.json" in n for n in notes)


def test_distinct_ci_refuses_a_file_nested_too_deep(tmp_path, benchmark):
    ci = benchmark("distinct_ci")
    path = tmp_path / "r.json"
    path.write_text(DEEP)
    with pytest.raises(UserError, match="not a benchmarks/decoding.py --json file"):
        ci.main([str(path)])


def test_ctrl_c_while_making_a_task_is_one_line_and_130(tmp_path, monkeypatch, capsys):
    """Ctrl-C during ``sudoku9``'s minutes of puzzle making was a traceback from inside the
    solver; the folder keeps what it held (``write_task`` writes all files or none)."""
    import unmask.cli
    import unmask.tasks.__main__ as cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "write_task", interrupted)
    monkeypatch.setattr(unmask.cli, "hold_signals", lambda: None)  # not in the test process
    try:
        code = cli.main(["sudoku9", "--out", str(tmp_path / "t")])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C went out of main: a traceback")
    assert code == 130
    err = capsys.readouterr().err
    assert err.strip() == f"python -m unmask.tasks: interrupted; {tmp_path / 't'} left as it was"
    assert not (tmp_path / "t").exists()
