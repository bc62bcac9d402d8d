"""Session 35 (tasks): the report's tables and the distinct-2 bootstrap's refusals."""

import json
import signal

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


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="no file-size limit here")
def test_distinct_matched_never_leaves_a_torn_results_file(benchmark, monkeypatch, tmp_path,
                                                          capsys):  # capsys: prints in memory
    """The JSON was written in place (``Path.write_text``): a full disk or Ctrl-C mid-write
    left half a file where the last measurement was. A file-size limit fails the write
    half-way whichever way the script writes (EFBIG, as a full disk gives ENOSPC); with room,
    the new measurement must then replace the old one."""
    import resource
    from types import SimpleNamespace

    from unmask import api
    from unmask.data import prepare

    dm = benchmark("distinct_matched")
    lines = [" ".join(f"w{i}x{j}" for j in range(8)) for i in range(400)]
    (tmp_path / "a.txt").write_text("\n".join(lines) + "\n")
    prepare([tmp_path / "a.txt"], tmp_path / "data", tokenizer="byte", val_fraction=0.2,
            progress=False)  # fmt: skip
    monkeypatch.setattr(api, "load_for_decoding", lambda path, *a, **k: SimpleNamespace())
    monkeypatch.setattr(api, "facts_of", lambda loaded: SimpleNamespace(attention="causal"))
    monkeypatch.setattr(api, "sample_config", lambda loaded, given: given)
    monkeypatch.setattr(api, "generate", lambda *a, **k: SimpleNamespace(texts=["a b", "c d"]))
    out = tmp_path / "out" / "r.json"
    out.parent.mkdir()
    old = '{"old": "measurement"}\n'
    out.write_text(old)
    argv = ["--other", "o", "--data", str(tmp_path / "data"), "--prompts", "2",
            "--gen-length", "4", "--json", str(out)]  # fmt: skip
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))  # the new JSON is longer
    try:
        with pytest.raises(OSError):
            dm.main(argv)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert out.read_text() == old  # the old measurement, whole
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temporary file left
    dm.main(argv)
    assert json.loads(out.read_text())["rows"]  # room again: the new measurement


def test_eval_rows_times_the_two_ways_in_turns_after_the_start_token(benchmark, monkeypatch,
                                                                       tmp_path):
    """Every batched run came before every per-row run (a drifting machine moved the ratio),
    and the prompts lacked the start token ``unmask eval`` decodes them after."""
    from unmask import api

    er = benchmark("eval_rows")
    loaded = er.checkpoint(tmp_path / "m", "mdlm")
    order: list[str] = []
    heads: set[int] = set()

    def start(loaded, prompts, config):
        heads.update(p[0] for p in prompts)
        order.append("batched")

    def run_rows(loaded, prompts, config, seeds):
        heads.update(p[0] for p in prompts)
        order.append("per row")

    monkeypatch.setattr(api, "start", start)
    monkeypatch.setattr(api, "run_to_end", lambda run: None)
    monkeypatch.setattr(api, "run_rows", run_rows)
    args = er.parse_args(["--items", "2", "--batch", "2", "--repeats", "4",
                          "--json", str(tmp_path / "r.json")])  # fmt: skip
    row = er.measure(loaded, "mdlm", args)
    timed = order[2:]  # after one warm-up run of each way
    assert sorted(timed) == ["batched"] * 4 + ["per row"] * 4
    assert timed.index("per row") < 4  # not all four batched runs first
    assert heads == {api.facts_of(loaded).start_id} and row["items"] == 2


def test_eval_rows_runs_three_times_and_says_how_it_counted(benchmark, monkeypatch, tmp_path):
    """The default of 2 repeats made the median the mean of two (one slow run moved it), and
    the JSON did not say how its seconds were taken (the fewest of the runs until
    2026-12-07, the median since)."""
    er = benchmark("eval_rows")
    out = tmp_path / "r.json"
    monkeypatch.setattr("sys.argv", ["eval_rows.py", "--families", "mdlm", "--json", str(out)])
    monkeypatch.setattr(er, "checkpoint", lambda folder, family: None)
    seen = []

    def measure(loaded, family, args):
        seen.append(args.repeats)
        return {"family": family, "batched_cpu_s": 1.0, "per_row_cpu_s": 1.0, "ratio": 1.0}

    monkeypatch.setattr(er, "measure", measure)
    assert er.main() == 0
    result = json.loads(out.read_text())
    assert seen == [3] and result["repeats"] == 3 and result["statistic"] == "median"
