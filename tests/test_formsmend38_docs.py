"""Session 38 (formsmend): docs/infill.md keeps the house line length."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "infill.md"


def test_prose_lines_of_the_infill_docs_are_at_most_100_characters():
    # fenced and indented code, and tables, may run longer (a message is shown whole);
    # prose past 100 (the <text> width paragraph, 107) had crept in with fixes
    long, fence = [], False
    for number, line in enumerate(DOC.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not (fence or line.startswith("    ") or line.lstrip().startswith("|")):
            if len(line) > 100:
                long.append(number)
    assert long == []
