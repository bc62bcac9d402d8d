"""The large-model benchmarks (``benchmarks/llada2.py``, ``benchmarks/large_shape.py``) refuse
counts they cannot use in one line, and ``large_shape.py`` reuses only a complete folder."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--layers", "0"], "--layers 0: build 2 to 4 blocks"),  # built all of them (mini: 33 GB)
     (["--layers", "1"], "--layers 1: build 2 to 4 blocks"),  # no MoE block: ZeroDivisionError
     (["--forwards", "0"], "--forwards: must be at least 1")],  # ZeroDivisionError
)  # fmt: skip
def test_the_llada2_benchmark_refuses_counts_it_cannot_use(argv, message) -> None:
    r = subprocess.run(
        [sys.executable, "benchmarks/llada2.py", "--shape", "small", "--skip-agreement", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("llada2.py: error:") and message in last, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def _tiny(large_shape, folder: Path) -> tuple[argparse.Namespace, object]:
    args = large_shape.parse_args(["--shape", "tiny", "--device", "cpu", "--dir", str(folder)])
    return args, large_shape.model_config(args)


def test_a_stopped_large_shape_write_is_not_reused(benchmark, tmp_path, monkeypatch) -> None:
    """config.json, which marks a folder to reuse, is written last: a run stopped before the
    tokenizer (Ctrl-C) left a config.json and an index, and the next run reused the folder
    without its tokenizer; a folder missing a shard is written again too."""
    large_shape = benchmark("large_shape")
    folder = tmp_path / "f"
    folder.mkdir()
    args, config = _tiny(large_shape, folder)

    def stop(*a: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(large_shape, "write_tokenizer", stop)
    with pytest.raises(KeyboardInterrupt):
        large_shape.write_folder(config, folder, torch.float32, 0, torch.device("cpu"))
    assert not (folder / "config.json").exists()
    monkeypatch.undo()
    large_shape.write_folder(config, folder, torch.float32, 0, torch.device("cpu"))
    assert large_shape.complete(folder) and not list(folder.glob("*.part"))
    runs: list[list[str]] = []
    monkeypatch.setattr(large_shape.subprocess, "run", lambda argv, **k: runs.append(argv))
    assert large_shape.ensure_folder(args, config, folder) == 0.0 and runs == []  # reused
    next(folder.glob("model-00002-*.safetensors")).unlink()
    large_shape.ensure_folder(args, config, folder)
    assert len(runs) == 1 and "--write-only" in runs[0]  # written again, not reused


def test_large_shape_refuses_negative_threads(benchmark, capsys) -> None:
    """Refused by argparse when the options are read (it was a UserError after parsing)."""
    large_shape = benchmark("large_shape")
    with pytest.raises(SystemExit) as e:
        large_shape.parse_args(["--shape", "tiny", "--device", "cpu", "--threads", "-1"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "error: argument --threads: must be at least 0, got -1")


def test_the_llada2_table_names_the_blocks_of_its_shape(benchmark, tmp_path, monkeypatch,
                                                        capsys) -> None:
    """``--shape small`` (4 blocks) extrapolates to 4 blocks; its table said "RSS 20 blk",
    "s/fwd 20" and "at mini (20 blocks)". The children (a minute each) are faked here."""
    import json

    llada2 = benchmark("llada2")
    row = {"load_s": 1.0, "rss_built": 1e9, "peak_rss_built": 1e9,
           "rss_full_extrapolated": 2e9, "s_per_forward_full_extrapolated": 0.5}  # fmt: skip

    def child(argv: list[str], **kw: object) -> subprocess.CompletedProcess:
        setting = argv[argv.index("--quantize") + 1]
        return subprocess.CompletedProcess(argv, 0, json.dumps({**row, "setting": setting}), "")

    monkeypatch.setattr(subprocess, "run", child)  # _common.child_json runs them
    out = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", ["llada2.py", "--shape", "small", "--skip-agreement",
                                      "--out", str(out)])  # fmt: skip
    llada2.main()
    text = capsys.readouterr().out
    assert "RSS 4 blk" in text and "s/fwd 4" in text and "at small (4 blocks)" in text, text
    assert "20" not in text.splitlines()[1] and "mini" not in text
    assert [r["setting"] for r in json.loads(out.read_text())["rows"]] == ["bf16", "int8", "int4"]


def test_the_llada2_benchmark_without_torchao_is_one_line_before_any_child(tmp_path) -> None:
    """int8 / int4 need torchao: it ran the bf16 child (minutes at the mini shape) and then
    ended in a ``CalledProcessError`` traceback that hid the child's "No module named
    torchao"."""
    shim = tmp_path / "torchao"
    shim.mkdir()
    (shim / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'torchao\'", name="torchao")\n')
    r = subprocess.run(
        [sys.executable, "benchmarks/llada2.py", "--shape", "small", "--skip-agreement",
         "--layers", "2", "--out", str(tmp_path / "r.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={"PYTHONPATH": f"{tmp_path}:{ROOT / 'src'}", "OMP_NUM_THREADS": "1",
             "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and r.stdout == ""
    last = r.stderr.strip().splitlines()[-1]
    assert last == "llada2.py: error: --quantize int8 needs torchao: pip install " \
        "'unmask[quantize]'", r.stderr[-2000:]
    assert not (tmp_path / "r.json").exists()


def test_a_failing_llada2_child_is_one_line_with_its_error(benchmark, tmp_path, monkeypatch,
                                                           capsys) -> None:
    """A child that fails (killed for memory, an error of its own) was a
    ``CalledProcessError`` traceback with the child's stderr captured and lost."""
    from unmask.errors import UserError

    llada2 = benchmark("llada2")
    row = {"load_s": 1.0, "rss_built": 1e9, "peak_rss_built": 1e9,
           "rss_full_extrapolated": 2e9, "s_per_forward_full_extrapolated": 0.5}  # fmt: skip
    import json

    def child(argv: list[str], **kw: object) -> subprocess.CompletedProcess:
        setting = argv[argv.index("--quantize") + 1]
        if setting == "int4":
            return subprocess.CompletedProcess(argv, -9, "", "")
        if setting == "int8":
            return subprocess.CompletedProcess(
                argv, 1, "", "Traceback (most recent call last):\n  ...\nRuntimeError: boom\n")
        return subprocess.CompletedProcess(argv, 0, json.dumps({**row, "setting": setting}), "")

    monkeypatch.setattr(subprocess, "run", child)  # _common.child_json runs them
    argv = ["llada2.py", "--shape", "small", "--skip-agreement", "--out", str(tmp_path / "r")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(UserError, match=r"^the int8 child process failed: RuntimeError: boom$"):
        llada2.main()
    assert llada2.child_json(["x", "--quantize", "bf16"], "bf16")["setting"] == "bf16"
    with pytest.raises(UserError, match=r"the int4 child .*killed by signal 9 \(out of memory"):
        llada2.child_json(["x", "--quantize", "int4"], "int4")


WARNING = "W1207 torch/utils/_pytree.py:630] <enum 'KernelPreference'> is an Enum subclass"
"""What every int8 / int4 child prints at import with the installed torchao."""


@pytest.mark.parametrize(("result", "said"), [
    ((-9, "", f"{WARNING}\n"), "killed by signal 9 (out of memory?)"),  # the warning was said
    ((1, "", f"Traceback ...\nRuntimeError: boom\n{WARNING}\n"), "RuntimeError: boom"),
    ((0, '{"a": 1}\ndone\n', ""), "its last line of output is not a JSON object: 'done'"),
])  # fmt: skip
def test_a_llada2_child_killed_after_a_warning_is_reported_killed(
        benchmark, tmp_path, monkeypatch, result, said) -> None:
    """With torchao installed every quantised child writes warnings to stderr at import: one
    killed for memory (the likely end at the mini shape) was reported by its last warning,
    not by the signal; an error followed by a warning by the warning; and a last line of
    stdout that is not JSON was a JSONDecodeError traceback."""
    from unmask.errors import UserError

    llada2 = benchmark("llada2")
    monkeypatch.setattr(subprocess, "run",
                        lambda argv, **kw: subprocess.CompletedProcess(argv, *result))
    monkeypatch.setattr(sys, "argv", ["llada2.py", "--shape", "small", "--skip-agreement",
                                      "--out", str(tmp_path / "r")])  # fmt: skip
    with pytest.raises(UserError) as e:
        llada2.main()
    assert str(e.value) == f"the bf16 child process failed: {said}"

