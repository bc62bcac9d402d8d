"""A benchmark's results path (``benchmarks/_common.output_file``) is checked before the run
without making anything: a folder no file can be made in is refused at once, a refused
command leaves no folder behind, and the script makes the folders when it writes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_bench_errors import JSON_FLAGS, _parse_only

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_folder_no_file_can_be_made_in_is_refused_before_the_run():
    """``--json /proc/x.json``: /proc exists, so making the folder succeeded and the path was
    accepted; the script measured its whole run and then failed to write (even as root)."""
    got = _parse_only([(name, flag, "/proc/x.json") for name, flag in JSON_FLAGS])
    for name, flag, _, status, last in got:
        assert status == 2 and last, (name, status, last)
        assert last[0].startswith(f"{name}: error: argument {flag}: cannot write /proc/x.json: "
                                  ), last  # fmt: skip
        assert last[0].endswith("(no file can be made in /proc)"), last


def test_output_file_refuses_what_is_under_a_file_and_leaves_no_file(benchmark, tmp_path):
    import argparse

    common = benchmark("_common")
    (tmp_path / "f").write_text("")
    with pytest.raises(argparse.ArgumentTypeError, match=r"Not a directory: .*f$"):
        common.output_file(str(tmp_path / "f" / "a" / "x.json"))
    existing = tmp_path / "old.json"
    existing.write_text("kept")
    assert common.output_file(str(existing)) == str(existing)
    assert existing.read_text() == "kept"  # opened to append, unchanged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "old.json"]  # no temp file left


def test_a_refused_command_leaves_no_folder(tmp_path):
    """The folder of ``--json`` was made while parsing, so a command refused by a later flag
    (or a default ``runs/bench`` path on every ``--help``-less run) left it behind."""
    r = _run("benchmarks/threads.py", "--json", str(tmp_path / "new" / "x.json"),
             "--repeats", "0")  # fmt: skip
    assert r.returncode == 2 and "argument --repeats: must be at least 1" in r.stderr, r.stderr
    assert not (tmp_path / "new").exists()


def test_the_script_makes_the_folder_when_it_writes(tmp_path):
    out = tmp_path / "a" / "b" / "threads.json"
    r = _run("benchmarks/threads.py", "--presets", "tiny", "--threads", "1", "--tokens", "2",
             "--repeats", "1", "--json", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    import json

    rows = json.loads(out.read_text())["rows"]
    assert [row["preset"] for row in rows] == ["tiny"]


def test_every_script_makes_the_folder_of_its_results():
    """``output_file`` makes no folder, so each script that takes one makes it at write
    time (threads.py, defaults.py, precision.py ... wrote into a folder made while parsing)."""
    for name, _ in JSON_FLAGS:
        source = (ROOT / "benchmarks" / name).read_text()
        assert ("write_results(" in source  # _common.write_results makes it
                or ".parent.mkdir(parents=True, exist_ok=True)" in source), name
