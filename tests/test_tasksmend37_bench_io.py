"""``benchmarks/_common``: a closed stdout pipe in an ordinary (buffered) shell, and results
paths that are a symlink or not a regular file."""

import os
import subprocess
import sys
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


def test_write_results_writes_through_a_symlink(benchmark, tmp_path):
    """``--json link.json`` where link.json is a symlink: the ten scripts that wrote with
    ``write_text`` wrote through it; the atomic rename replaced the link itself with a regular
    file and left its target as it was. Now the target is replaced, in its own folder."""
    import json

    common = benchmark("_common")
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "real.json").write_text("{}\n")
    (tmp_path / "link.json").symlink_to("keep/real.json")
    (tmp_path / "dangling.json").symlink_to("made/new.json")  # its folder made, as for a path
    assert common.output_file(str(tmp_path / "link.json")) == str(tmp_path / "link.json")
    common.write_results(tmp_path / "link.json", {"a": 1})
    common.write_results(str(tmp_path / "dangling.json"), {"b": 2})
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "dangling.json").is_symlink()
    assert json.loads((tmp_path / "keep" / "real.json").read_text()) == {"a": 1}
    assert json.loads((tmp_path / "made" / "new.json").read_text()) == {"b": 2}
    assert sorted(p.name for p in (tmp_path / "keep").iterdir()) == ["real.json"]  # no temp


def test_write_results_writes_a_fifo_in_place(benchmark, tmp_path):
    """A path that is there but no regular file (``--json /dev/null`` or ``/dev/stdout``, a
    FIFO) is written in place, as ``write_text`` did: the rename replaced it with a regular
    file (as root, the machine's ``/dev/null``). A FIFO here stands for the device, and a
    symlink to it for ``/dev/stdout`` (a link to ``/proc/self/fd/1``)."""
    import stat

    common = benchmark("_common")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "stdout").symlink_to(fifo)
    for path in (fifo, tmp_path / "stdout"):
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # there, so a writer's open returns
        try:
            assert common.output_file(str(path)) == str(path)
            common.write_results(path, {"a": 1}, indent=None)
            assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced"
            assert os.read(reader, 100) == b'{"a": 1}\n'
        finally:
            os.close(reader)
    assert (tmp_path / "stdout").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "stdout"]  # no temp file


def test_output_file_takes_a_fifo_in_a_folder_that_takes_no_file(benchmark, tmp_path,
                                                                 monkeypatch):
    """``--json /dev/null`` as a user who cannot make a file in /dev was refused ("no file
    can be made in /dev"), though it is written in place and no file is made."""
    import tempfile

    common = benchmark("_common")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def no_file(*args, **kwargs):  # what a folder the user cannot write does (root can)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_file)
    assert common.output_file(str(fifo)) == str(fifo)
