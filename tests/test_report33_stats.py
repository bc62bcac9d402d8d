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


def test_mcnemar_p_by_hand():
    from unmask.tasks.score import mcnemar_p

    # 12 discordant items split 10 to 2: 2 * (C(12,0) + C(12,1) + C(12,2)) / 2**12
    assert mcnemar_p(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert mcnemar_p(2, 10) == mcnemar_p(10, 2)
    assert mcnemar_p(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(3, 3) == 1.0  # capped at 1
    assert 0.02 < mcnemar_p(1000, 900) < 0.025  # no overflow; the normal approximation's 0.023
    with pytest.raises(ValueError):
        mcnemar_p(-1, 2)


def test_paired_rows_count_the_items_one_model_alone_solved(benchmark):
    planning = benchmark("planning")
    a = [1] * 10 + [0] * 2 + [1] * 5 + [0] * 3  # 15 of 20
    b = [0] * 10 + [1] * 2 + [1] * 5 + [0] * 3  # 7 of 20
    rows = [{"group": "g", "model": "mdlm", "outcomes": a},
            {"group": "h", "model": "mdlm", "outcomes": [1]},
            {"group": "g", "model": "ar", "outcomes": b},
            {"group": "h", "model": "ar", "outcomes": [0]}]
    paired = planning.paired_rows(rows)
    assert paired[0] == {"group": "g", "a": "mdlm", "b": "ar", "items": 20, "both": 5,
                         "only_a": 10, "only_b": 2, "neither": 3, "difference": 0.4,
                         "p_value": pytest.approx(0.0386, abs=1e-4)}
    assert [(r["group"], r["only_a"], r["only_b"]) for r in paired] == [("g", 10, 2),
                                                                         ("h", 1, 0)]


def _planning(*args: str):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "benchmarks/planning.py", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_planning_refuses_a_label_given_twice_before_decoding(tmp_path):
    """``--run a=X --run a=Y`` wrote two rows named ``a`` per group: which model solved what
    could not be told in the table, the plot or the JSON."""
    from unmask.tasks import write_task

    write_task("reversal", tmp_path / "task", n_train=1, n_eval=1)
    demo = "src/unmask/assets/demo"
    r = _planning("--task-file", str(tmp_path / "task"), "--run", f"a={demo}",
                  "--run", f"a={demo}", "--json", str(tmp_path / "p.json"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "label a is given twice" in r.stderr
    assert "group" not in r.stdout and not (tmp_path / "p.json").exists()


def test_planning_writes_intervals_outcomes_and_the_paired_comparison(tmp_path):
    from unmask.tasks import write_task
    from unmask.tasks.score import wilson_interval

    write_task("reversal", tmp_path / "task", n_train=1, n_eval=2)
    demo = "src/unmask/assets/demo"
    out = tmp_path / "p.json"
    r = _planning("--task-file", str(tmp_path / "task"), "--run", f"one={demo}",
                  "--run", f"two={demo}", "--json", str(out))
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    rows = {(row["group"], row["model"]): row for row in d["rows"]}
    assert len(rows) == 6  # reversal, reversal/forward, reversal/reverse; two models
    for row in rows.values():
        assert len(row["outcomes"]) == row["total"] and sum(row["outcomes"]) == row["solved"]
        low, high = wilson_interval(row["solved"], row["total"])
        assert (row["low"], row["high"]) == (round(low, 4), round(high, 4))
    assert rows["reversal", "one"]["total"] == 4 and rows["reversal/reverse", "one"]["total"] == 2
    # one model twice: the same outcomes, no item only one of them solved
    assert [(p["group"], p["a"], p["b"], p["items"], p["only_a"], p["only_b"], p["p_value"])
            for p in d["paired"]] == [("reversal", "one", "two", 4, 0, 0, 1.0),
                                      ("reversal/forward", "one", "two", 2, 0, 0, 1.0),
                                      ("reversal/reverse", "one", "two", 2, 0, 0, 1.0)]
    assert "only a" in r.stdout and "95% interval" in r.stdout


def test_a_task_rewritten_over_a_full_disk_keeps_the_old_files_together(tmp_path, monkeypatch):
    """Each file was renamed into place as soon as written: a disk that filled up while
    ``eval.jsonl`` was written left the new seed's ``train.txt`` beside the old seed's held-out
    items, which that training file may hold. Now the folder keeps one whole set."""
    import errno
    import os

    from unmask.tasks import write_task

    folder = tmp_path / "task"
    write_task("countdown3", folder, n_train=50, n_eval=5, seed=0)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 3:  # the third file: eval.jsonl
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        write_task("countdown3", folder, n_train=50, n_eval=5, seed=1)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temp left either
    write_task("countdown3", folder, n_train=50, n_eval=5, seed=1)
    assert json.loads((folder / "task.json").read_text())["seed"] == 1


def _tiny_checkpoint(folder, max_seq_len: int) -> None:
    import torch

    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=max_seq_len)
    save_checkpoint(folder, model=Transformer(cfg), tokenizer=tok)


def test_planning_refuses_a_run_too_short_for_the_task_before_any_decodes(tmp_path):
    """The second run's context too short for the task was refused after the first run had
    decoded every item, in a line that did not say which run."""
    from unmask.tasks import write_task

    write_task("sudoku4", tmp_path / "task", n_train=0, n_eval=2)  # 18 + 17 tokens
    _tiny_checkpoint(tmp_path / "long", 64)
    _tiny_checkpoint(tmp_path / "short", 24)
    r = _planning("--task-file", str(tmp_path / "task"), "--run", f"long={tmp_path / 'long'}",
                  "--run", f"short={tmp_path / 'short'}")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("planning.py: error: --run short: the task's longest prompt")
    assert r.stderr.count("\n") == 1 and r.stdout == ""  # nothing decoded, no header
    r = _planning("--task-file", str(tmp_path / "task"), "--run", f"long={tmp_path / 'long'}",
                  "--sample-set", "top_k=3")  # an option its decoder does not read
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr.startswith("planning.py: error: --run long: top_k"), r.stderr


def test_report_out_that_is_a_folder_is_one_line_naming_it(tmp_path):
    """``--out docs`` said "Is a directory" of a temp file the user never named."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "results").mkdir()
    r = subprocess.run([sys.executable, "benchmarks/report.py", "--results",
                        str(tmp_path / "results"), "--out", str(tmp_path)], cwd=root,
                       env={"PYTHONPATH": str(root / "src"), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(f"report.py: error: --out {tmp_path}: a folder"), r.stderr
    assert r.stderr.count("\n") == 1 and not list(tmp_path.glob(".*tmp"))


def test_planning_plot_names_the_file_of_rows_that_share_a_label(tmp_path, report, monkeypatch):
    """Two files with the same task, model and steps (a rerun): their bars were drawn on one
    line of the plot, the second over the first, so one of the two rates was never seen."""
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
    (results / "planning_a.json").write_text(json.dumps(
        {"rows": [_planning_row("sft", 167, 200), _planning_row("ar", 133, 200)]}))
    (results / "planning_b.json").write_text(json.dumps({"rows": [_planning_row("sft", 90, 200)]}))
    report.build(results, tmp_path / "report.md")
    assert drawn["labels"] == ["sudoku4 · sft (planning_a.json)", "sudoku4 · ar",
                               "sudoku4 · sft (planning_b.json)"]
    assert len(set(drawn["labels"])) == 3
    assert drawn["values"] == pytest.approx([83.5, 66.5, 45.0])
