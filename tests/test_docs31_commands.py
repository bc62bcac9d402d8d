"""The shell commands the README and docs/*.md show name real commands and flags: every
``unmask COMMAND ... --flag`` in a code block (fenced or indented) is a command of ``unmask``
whose parser has that flag, so a renamed or removed flag cannot stay documented. (Whether
each command runs was checked by hand, session 31; this holds the names.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from unmask.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
NOT_SHELL = {"python", "json", "jsonl", "text", "toml", "yaml", "js", "javascript", "html"}


def code_lines(text: str) -> list[tuple[int, str]]:
    """The lines of ``text``'s shell code blocks (fenced, not of another language, or
    indented by four spaces after a blank line), continuations (``\\``) joined."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    indented = False
    previous_blank = True
    pending: tuple[int, str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        opened = re.match(r"\s*(```+|~~~+)(\w*)", line)
        if opened:
            fence = (opened.group(2) or "shell") if fence is None else None
            indented = False
            continue
        code = None
        if fence is not None:
            code = None if fence in NOT_SHELL else line
        elif line.startswith("    ") and line.strip() and (previous_blank or indented):
            indented, code = True, line[4:]
        elif line.strip():
            indented = False
        previous_blank = not line.strip()
        if code is None:
            continue
        code = re.sub(r"^\$\s+", "", code.strip())
        if pending is not None:
            pending = (pending[0], pending[1] + " " + code.rstrip("\\"))
        elif code.endswith("\\"):
            pending = (number, code.rstrip("\\"))
        else:
            out.append((number, code))
        if pending is not None and not code.endswith("\\"):
            out.append(pending)
            pending = None
    return out


COMMAND = re.compile(r"^(?:\.venv/bin/)?unmask ([\w-]+)|^torchrun .*?-m unmask\.cli ([\w-]+)")
OUTPUT = re.compile(r"^unmask [\w-]+: ")  # a command's own line quoted (error, note, stop)


def documented_commands(text: str) -> list[tuple[int, str, list[str]]]:
    """(line, command, its --flags) of each ``unmask`` command in ``text``'s code blocks;
    quoted strings and ``  #`` comments left out, torchrun's own flags too."""
    found = []
    for number, code in code_lines(text):
        m = COMMAND.match(code)
        if m is None or OUTPUT.match(code):
            continue
        rest = code[m.end():].split("  #")[0]
        rest = re.sub(r"\$?'[^']*'|\"[^\"]*\"", "", rest)
        flags = re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest)
        found.append((number, m.group(1) or m.group(2), flags))
    return found


def _parsers() -> dict:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices


def unknown(text: str) -> list[str]:
    """Each command or flag of ``text``'s code blocks that ``unmask`` does not have."""
    parsers, bad = _parsers(), []
    for number, command, flags in documented_commands(text):
        if command not in parsers:
            bad.append(f"line {number}: no command {command!r}")
            continue
        options = parsers[command]._option_string_actions
        bad += [f"line {number}: unmask {command} has no {flag}" for flag in flags
                if flag not in options]
    return bad


def test_the_checker_sees_a_wrong_command_or_flag():
    text = ("Run:\n\n    unmask generate --model demo --topk 3 \"--not-a-flag\"\n"
            "    unmask genrate --model demo\n\n```bash\nunmask train --data d \\\n"
            "    --out r --stepz 2   # --comment-flag\n```\n"
            "    unmask infill: error: --quoted-output is output, not a command\n")
    assert unknown(text) == ["line 3: unmask generate has no --topk",
                             "line 4: no command 'genrate'",
                             "line 7: unmask train has no --stepz"]


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_and_flags_exist(doc):
    assert unknown(doc.read_text(encoding="utf-8")) == []


def test_commands_were_found():
    found = sum(len(documented_commands(p.read_text(encoding="utf-8"))) for p in DOCS)
    assert found > 100  # the README and docs show well over a hundred
