"""``benchmarks/_common``: a closed stdout pipe in an ordinary (buffered) shell, and results
paths that are a symlink or not a regular file."""

import os
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """import sys
sys.path.insert(0, {bench!r})
from _common import run, write_results

def main():
    if sys.argv[1:] == ["--help"]:
        import argparse
        argparse.ArgumentParser(description="x" * 200).parse_args()
    print("wrote results.json")

run(main)
"""


def closed_pipe_run(tmp_path, *args):
    """The script's exit status and stderr, its stdout a pipe whose reader left (``| true``),
    in an ordinary environment: no PYTHONUNBUFFERED (set in some sandboxes), so stdout to a
    pipe is block-buffered and a small output is still in the buffer as ``main`` returns."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(bench=str(ROOT / "benchmarks")))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = str(ROOT / "src")
    read, write = os.pipe()
    os.close(read)
    try:
        r = subprocess.run([sys.executable, str(script), *args], stdout=write,
                           stderr=subprocess.PIPE, env=env, text=True, timeout=120)
    finally:
        os.close(write)
    return r.returncode, r.stderr


def test_a_buffered_stdout_whose_reader_left_exits_141_quietly(tmp_path):
    """``python benchmarks/report.py ... | true`` in a shell without PYTHONUNBUFFERED: the
    output was still buffered when ``main`` returned, so the broken pipe showed at the
    interpreter's last flush, outside ``run``'s handlers: "Exception ignored ...
    BrokenPipeError" and status 120. Now stdout is flushed inside them, as ``unmask`` does."""
    code, err = closed_pipe_run(tmp_path)
    assert (code, err) == (141, "")


def test_help_whose_reader_left_exits_141_quietly(tmp_path):
    """``python benchmarks/NAME.py --help | true``: argparse exits (SystemExit) with its help
    still buffered; it ended as "Exception ignored ... BrokenPipeError", status 120."""
    code, err = closed_pipe_run(tmp_path, "--help")
    assert (code, err) == (141, "")
