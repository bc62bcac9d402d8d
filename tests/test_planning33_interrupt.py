"""benchmarks/planning.py stopped by Ctrl-C keeps the runs that finished: a long study of
several runs interrupted after some of them wrote nothing (and said only "interrupted")."""

import json
from pathlib import Path

import pytest


def test_planning_interrupted_after_one_run_writes_it_and_names_the_missing(
        tmp_path, benchmark, monkeypatch, capsys):
    from unmask.tasks import write_task

    planning = benchmark("planning")
    import _common  # on sys.path once a benchmark is loaded

    write_task("reversal", tmp_path / "task", n_train=1, n_eval=1)
    real, calls = planning.score_items, []

    def score_items(*args, **kwargs):  # the second run is stopped by Ctrl-C as it decodes
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(planning, "score_items", score_items)
    out = tmp_path / "p.json"
    out.write_text("old")
    demo = "src/unmask/assets/demo"
    argv = ["--task-file", str(tmp_path / "task"), "--limit", "1", "--json", str(out),
            "--run", f"a={demo}", "--run", f"b={demo}", "--run", f"c={demo}"]
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the demo's path is relative
    with pytest.raises(SystemExit) as stop:
        _common.run(lambda: planning.main(argv))
    assert stop.value.code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0], err
    assert "(a)" in err[0] and "missing: b, c" in err[0] and str(out) in err[0], err
    assert "--resume" in err[0]
    d = json.loads(out.read_text())
    assert {row["model"] for row in d["rows"]} == {"a"} and d["paired"] == []
    assert d["meta"]["interrupted"] is True and d["meta"]["missing"] == ["b", "c"]
    # the same command with --resume keeps a's rows and decodes b and c only
    calls[:] = [1, 1]  # the stub raises no more
    monkeypatch.setattr(planning, "score_items", score_items)
    with pytest.raises(SystemExit) as stop:
        _common.run(lambda: planning.main([*argv, "--resume"]))
    assert stop.value.code == 0 and len(calls) == 4  # b and c decoded, not a
    again = json.loads(out.read_text())
    assert again["rows"][: len(d["rows"])] == d["rows"]  # a's, kept as they were, first
    assert [r["model"] for r in again["rows"]] == [m for m in "abc" for _ in d["rows"]]
    assert len(again["paired"]) == 3 * len(d["rows"])  # a-b, a-c, b-c in each group
    assert "interrupted" not in again["meta"]


def test_planning_resume_refuses_results_of_another_task(tmp_path, benchmark, monkeypatch):
    from unmask.errors import UserError
    from unmask.tasks import write_task

    planning = benchmark("planning")
    write_task("reversal", tmp_path / "task", n_train=1, n_eval=2)
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    out = tmp_path / "p.json"
    out.write_text(json.dumps({"meta": {"task_file": "other", "items": 1, "sample_set": {},
                                        "runs": {"a": "x"}}, "rows": []}))
    argv = ["--task-file", str(tmp_path / "task"), "--limit", "1", "--json", str(out),
            "--run", "a=src/unmask/assets/demo", "--resume"]
    with pytest.raises(UserError, match="another task"):
        planning.main(argv)
    out.write_text("[1]")
    with pytest.raises(UserError, match="not results of planning.py"):
        planning.main(argv)


def test_planning_resume_tells_other_items_of_the_same_count_apart(benchmark):
    """``--resume`` compared a task file's items by count alone: a file made again with other
    items of the same count kept rows that the paired comparison then set beside other
    items."""
    import argparse

    from unmask.tasks import Item

    planning = benchmark("planning")
    args = argparse.Namespace(task_file="t/eval.jsonl")
    one = [Item("countdown3", "1 2 3 -> 6", "1+2+3"), Item("countdown3", "2 2 2 -> 6", "2+2+2")]
    other = [Item("countdown3", "1 2 3 -> 6", "1+2+3"), Item("countdown3", "3 3 3 -> 9", "3+3+3")]
    assert planning._meta(args, one, {}) == planning._meta(args, list(one), {})
    assert planning._meta(args, one, {}) != planning._meta(args, other, {})
