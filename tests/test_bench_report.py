"""``benchmarks/report.py``: the report page from whatever results exist."""

import json

import pytest


@pytest.fixture
def report(benchmark):
    return benchmark("report")


def test_report_from_partial_results(tmp_path, report):
    results = tmp_path / "results"
    results.mkdir()
    rows = [
        {"side": "plain", "tokens_per_s": 100.0, "ratio": 1.0},
        {"side": "unmask mdlm", "tokens_per_s": 105.0, "ratio": 1.05},
    ]
    (results / "train_throughput.json").write_text(json.dumps({"rows": rows}))
    planning = [
        {
            "group": "sudoku4",
            "model": "mdlm",
            "objective": "mdlm",
            "solved": 3,
            "total": 4,
            "rate": 0.75,
            "examples": [{"output": "x|y"}],
        }
    ]
    (results / "planning_sudoku4.json").write_text(json.dumps({"rows": planning}))
    (results / "objectives.json").write_text("{torn")
    (results / "custom.json").write_text(json.dumps({"rows": [{"a": 1, "b": "two"}]}))
    out = tmp_path / "docs" / "report.md"
    out.parent.mkdir()
    notes = report.build(results, out)
    page = out.read_text()
    assert "| unmask mdlm | 105 | 1.05 |" in page
    assert "| sudoku4 | mdlm | mdlm | 3 | 4 | 0.75 |" in page
    assert "`objectives.json`: not valid JSON" in page
    assert "## Other results" in page and "| 1 | two |" in page
    # every section without results names the command that makes them
    assert "Not measured yet: `python benchmarks/serve_load.py" in page
    assert any(n.startswith("missing: Serving") for n in notes)
    assert any("objectives.json: not valid JSON" in n for n in notes)
    pngs = {p.name for p in (out.parent / "report").glob("*.png")}
    assert pngs == {"train_throughput.png", "planning.png"}


def test_elbo_standard_error_curve_is_drawn(tmp_path, report):
    """The ELBO section draws its curve (with the 1/sqrt(n) law and the default) to a PNG."""
    results = tmp_path / "results"
    results.mkdir()
    rows = [
        {
            "target_tokens": 16,
            "n": n,
            "estimate": -60.0,
            "reported_stderr": 20 / n**0.5,
            "actual_stderr": 16 / n**0.5,
            "seconds": 0.1 * n,
        }
        for n in (16, 32, 64)
    ]
    (results / "elbo_stderr.json").write_text(json.dumps({"rows": rows}))
    out = tmp_path / "docs" / "report.md"
    out.parent.mkdir()
    report.build(results, out)
    assert "![ELBO standard error](report/elbo_stderr.png)" in out.read_text()
    png = out.parent / "report" / "elbo_stderr.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_objectives_table_shows_broken_samples_where_recorded(tmp_path, report):
    results = tmp_path / "results"
    results.mkdir()
    new = {"name": "ar", "objective": "ar", "val_bpb": 1.5, "gen_ppl": 900.0, "gen_broken": 3,
           "x_floor": 0.25}  # fmt: skip
    embed = {"name": "embed", "objective": "embed-diffusion", "val_bpb": None, "gen_ppl": 880.0,
             "gen_broken": 0, "x_floor": 0.95}  # fmt: skip
    (results / "objectives_new.json").write_text(json.dumps({"rows": [new, embed]}))
    old = {"name": "ar", "objective": "ar", "val_bpb": 1.6, "gen_ppl": 950.0}
    (results / "objectives_old.json").write_text(json.dumps({"rows": [old]}))
    out = tmp_path / "report.md"
    report.build(results, out)
    page = out.read_text()
    assert "| name | objective | val_bpb | gen_ppl | gen_broken | x_floor |" in page
    assert "| ar | ar | 1.5 | 900 | 3 | 0.25 |" in page
    assert "| embed | embed-diffusion | – | 880 | 0 | 0.95 |" in page  # no bound: not blank
    # a file from before the column existed keeps its table without an empty column
    assert "| name | objective | val_bpb | gen_ppl |\n" in page


def test_every_committed_result_renders_its_numbers(tmp_path, report):
    """Nothing measured is lost: each committed results file shows at least one table with
    rows, whatever its shape (bare lists, nested dicts, decoding.py's sections, infill.py's
    fixed/variable lists), and the decoding table keeps its agreement column."""
    from pathlib import Path

    results = Path(report.__file__).resolve().parent / "results"
    names = sorted(p.name for p in results.glob("*.json"))
    assert names
    out = tmp_path / "report.md"
    report.build(results, out)
    page = out.read_text()
    blocks = page.split("\n\n")
    for name in names:
        mine = [i for i, b in enumerate(blocks) if b.startswith(f"`{name}`")]
        assert mine, f"{name} is not in the report"
        tables = [blocks[i + 1] for i in mine]
        assert any(t.startswith("| ") and t.count("\n") >= 2 for t in tables), name
    assert "(no rows)" not in page
    decoding = page.split("## Decoding frontier", 1)[1].split("\n## ", 1)[0]
    assert "| agreement |" in decoding


def test_infill_and_list_shaped_results_show_their_numbers(tmp_path, report):
    results = tmp_path / "results"
    results.mkdir()
    infill = {
        "model": "m",
        "fixed": [{"method": "llada 1/step", "span": 1, "exact": 0.5625}],
        "variable": [{"method": "diffusion (ELBO)", "span": 2, "length_match": 0.1875}],
    }
    (results / "infill.json").write_text(json.dumps(infill))
    (results / "compile_x.json").write_text(json.dumps([{"mode": "off", "vs_eager": 1.0}]))
    nested = {"args": {"n": 1}, "models": {"a": {"objective": "mdlm", "rows": [{"T": 0.5}]}}}
    (results / "rounding_x.json").write_text(json.dumps(nested))
    out = tmp_path / "report.md"
    report.build(results, out)
    page = out.read_text()
    assert "| fixed | llada 1/step | 1 | 0.5625 |" in page
    assert "| variable | diffusion (ELBO) | 2 |  | 0.1875 |" in page
    assert "| off | 1 |" in page
    assert "| a | mdlm |" in page and "`models.a.rows`" in page and "| 0.5 |" in page
    assert "(no rows)" not in page


def test_a_torn_file_no_section_knows_is_said_not_dropped(tmp_path, report):
    """A file of no section that is not valid JSON vanished from the page and the notes
    (one a section knows was reported), against "nothing measured is lost"."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "custom_torn.json").write_text("{torn")
    out = tmp_path / "report.md"
    notes = report.build(results, out)
    assert "custom_torn.json: not valid JSON, skipped" in notes
    assert "`custom_torn.json`: not valid JSON" in out.read_text()


def test_a_missing_results_folder_is_an_error_on_stderr(tmp_path):
    """It was printed on stdout (exit 2), where a pipe into a file hides it."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "benchmarks/report.py", "--results",
                        str(tmp_path / "none"), "--out", str(tmp_path / "r.md")], cwd=root,
                       env={"PYTHONPATH": str(root / "src"), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == f"report.py: error: --results {tmp_path / 'none'}: no such folder"


def test_files_not_in_their_sections_shape_are_shown_whole_not_a_traceback(tmp_path, report):
    """A section's file of another shape (a list, ``rows`` not a list, a section that is not
    an object) stopped the whole page with an AttributeError or TypeError."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "startup.json").write_text(json.dumps([{"case": "help", "median_s": 0.5}]))
    (results / "elbo_stderr.json").write_text(json.dumps({"rows": 5}))
    (results / "decoding_x.json").write_text(json.dumps({"sections": [1]}))
    out = tmp_path / "report.md"
    notes = report.build(results, out)
    page = out.read_text()
    assert "| help | 0.5 |" in page  # its numbers are still on the page
    assert any(n.startswith("startup.json: not the shape Startup reads") for n in notes)
    assert any(n.startswith("decoding_x.json: not the shape") for n in notes)
    assert any(n.startswith("ELBO standard error: no plot") for n in notes)


def test_every_committed_result_names_the_script_that_wrote_it(report):
    """The page showed the numbers of ~100 files under "Other results" with only their file
    names: which command measured a number was left to guess. Every committed file is now
    read by a section or attributed by ``SOURCES`` to a script that exists."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "benchmarks/results").glob("*.json")):
        sections = [s for s in report.SECTIONS if any(path.match(p) for p in s.patterns)]
        command = sections[0].command if sections else report.source_of(path.name)
        assert command, f"{path.name}: no section or source names its script"
        script = next((w for w in command.split() if w.startswith("benchmarks/")), None)
        if script is not None:
            assert (root / script).is_file(), (path.name, script)


def test_other_results_and_sections_name_their_command(tmp_path, report):
    results = tmp_path / "results"
    results.mkdir()
    (results / "gqa_attention_cpu.json").write_text(json.dumps({"ops": [{"shape": "a"}]}))
    (results / "mystery.json").write_text(json.dumps({"x": 1}))
    rows = [{"case": "help", "median_s": 0.5}]
    (results / "startup.json").write_text(json.dumps({"rows": rows}))
    out = tmp_path / "report.md"
    report.build(results, out)
    page = out.read_text()
    assert "`gqa_attention_cpu.json` `ops` (from `python benchmarks/gqa_attention.py`):" in page
    assert "`mystery.json` (no known script wrote it):" in page
    assert "Measured with `python benchmarks/startup.py`; each file records" in page
