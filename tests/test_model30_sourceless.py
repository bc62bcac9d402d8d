"""``unmask`` starts where its source is not installed: a .pyc-only install or a zipped package.

``config.field_docs`` (the flags' help) read each module's ``.py`` file by path, so every
command failed with "No such file or directory: .../config.py" on a bytecode-only install, and
with "Not a directory" in a zip, even one that holds the sources."""

from __future__ import annotations

import argparse
import importlib
import py_compile
import sys
import zipfile
from pathlib import Path

import pytest

from unmask.commands import add_dataclass_flags
from unmask.config import field_docs

FUTURE = "from __future__ import annotations\n"
KNOBS = '''
from dataclasses import dataclass


@dataclass
class Knobs:
    steps: int = 3
    """How many steps."""
    name: str = "x"
    """Which one."""
'''
SOURCE = FUTURE + KNOBS


def _import(monkeypatch: pytest.MonkeyPatch, where: Path, module: str):
    monkeypatch.syspath_prepend(str(where))
    importlib.invalidate_caches()
    monkeypatch.delitem(sys.modules, module, raising=False)
    mod = importlib.import_module(module)
    monkeypatch.setitem(sys.modules, module, mod)  # taken out again after the test
    return mod


def test_bytecode_only_module_has_no_docs_and_flags_still_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "model30_knobs_pyc.py"
    src.write_text(SOURCE)
    py_compile.compile(str(src), cfile=str(tmp_path / "model30_knobs_pyc.pyc"), doraise=True)
    src.unlink()
    knobs = _import(monkeypatch, tmp_path, "model30_knobs_pyc").Knobs
    assert field_docs(knobs) == {}
    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, knobs)
    assert parser.parse_args(["--steps", "5"]).steps == 5
    assert "--steps" in parser.format_help()


def test_zipped_module_with_sources_keeps_its_docs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "knobs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("model30_knobs_zip.py", SOURCE)
    knobs = _import(monkeypatch, archive, "model30_knobs_zip").Knobs
    assert field_docs(knobs) == {"steps": "How many steps.", "name": "Which one."}


def test_nested_class_without_source_has_no_docs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "model30_nested_pyc.py"
    src.write_text(FUTURE + "class Outer:\n"
                   + "".join(f"    {line}\n" for line in KNOBS.splitlines()))
    py_compile.compile(str(src), cfile=str(tmp_path / "model30_nested_pyc.pyc"), doraise=True)
    src.unlink()
    assert field_docs(_import(monkeypatch, tmp_path, "model30_nested_pyc").Outer.Knobs) == {}


def test_every_command_parser_builds_from_bytecode_alone(tmp_path: Path) -> None:
    """The whole package compiled to .pyc with its sources removed (as a bytecode-only install
    ships it): ``unmask train --help`` and ``generate --help`` run (every command's flags
    are built from the dataclasses) and exit 0."""
    import compileall
    import shutil
    import subprocess

    import unmask

    pkg = tmp_path / "unmask"
    shutil.copytree(Path(unmask.__file__).parent, pkg,
                    ignore=shutil.ignore_patterns("__pycache__", "assets"))
    assert compileall.compile_dir(str(pkg), quiet=1, legacy=True)
    for source in pkg.rglob("*.py"):
        source.unlink()
    for command in ("train", "generate"):
        run = subprocess.run(
            [sys.executable, "-c", "import sys; from unmask.cli import main; "
             f"sys.exit(main(['{command}', '--help']))"],
            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=120,
        )
        assert run.returncode == 0, run.stderr[-500:]
        assert "--steps" in run.stdout


def test_two_files_imported_under_one_name_each_keep_their_docs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parse cache was keyed by the module's name alone: a second file imported under the
    same name (plugin folders, a reimport from another path) got the first file's docs."""
    docs = []
    for folder in ("a", "b"):
        where = tmp_path / folder
        where.mkdir()
        (where / "model30_knobs_twice.py").write_text(SOURCE.replace("How many", folder))
        knobs = _import(monkeypatch, where, "model30_knobs_twice").Knobs
        docs.append(field_docs(knobs)["steps"])
    assert docs == ["a steps.", "b steps."]
