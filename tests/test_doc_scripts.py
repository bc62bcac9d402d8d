"""The docs cite scripts a reader of the repository has: TRAINING.md and docs/sampling.md
cited ``/work/runs22/measure_val.sh``, ``/work/runs-seg/measure_ngram.sh`` and others of past
sessions' machines. The demo's default measurements are now ``benchmarks/demo_defaults.sh``,
whose runs are checked here against the committed results they name (a stand-in python
records the commands: no model runs)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "demo_defaults.sh"


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "src" / "unmask" / "assets").rglob("*.md"))]


def test_no_doc_cites_a_script_of_another_machine():
    cited = [f"{p.relative_to(ROOT)}: {m}" for p in _docs()
             for m in re.findall(r"/work/[\w./-]+\.sh", p.read_text(encoding="utf-8"))]
    assert not cited, cited


def _commands(tmp_path: Path, name: str) -> list[list[str]]:
    log = tmp_path / "argv.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(log))}\n')
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PY": str(fake), "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(SCRIPT), name], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [line.split() for line in log.read_text().splitlines()]


def _flag(argv: list[str], flag: str) -> list[str]:
    i = argv.index(flag) + 1
    out = []
    while i < len(argv) and not argv[i].startswith("--"):
        out.append(argv[i])
        i += 1
    return out


@pytest.mark.parametrize("name", ["val22", "pen21", "ng3_21"])
def test_demo_defaults_runs_what_the_committed_results_hold(name, tmp_path):
    commands = _commands(tmp_path, name)
    assert len(commands) == 3
    for argv in commands:
        assert argv[0] == "benchmarks/defaults.py"
        out = Path(_flag(argv, "--json")[0])
        committed = json.loads((ROOT / "benchmarks" / "results" / out.name).read_text())
        assert out.parent == tmp_path / "out"  # not over the committed file by default
        sizes = {f: _flag(argv, f)[0] for f in ("--prompts", "--prompt-words", "--gen-length")}
        grid = {f"T=0, blocks of 4, repetition {r}, no-repeat n-gram {n}"
                for r in _flag(argv, "--repetition-penalties")
                for n in _flag(argv, "--no-repeat-ngram-sizes")}
        rows = {row["setting"] for row in committed["rows"]} - {"held-out text"}
        if "note" in committed:  # a run stopped early, its rows read from its log
            assert " ".join(f"{f} {v}" for f, v in sizes.items()) in committed["note"]
            assert rows and rows < grid
            continue
        assert len(committed["prompts"]) == int(sizes["--prompts"])
        assert committed["prompt_words"] == int(sizes["--prompt-words"])
        assert committed["gen_length"] == int(sizes["--gen-length"])
        source = _flag(argv, "--prompt-source")[0]  # results before the option: corpus tail
        assert committed.get("prompt_source", "corpus-tail").split(":")[0] == source
        assert rows == grid


def test_demo_defaults_names_its_sets_when_given_none():
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 2 and "val22|pen21|ng3_21" in done.stderr
