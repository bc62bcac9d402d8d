"""benchmarks/report.py names the script behind every result file a benchmark writes."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WRITERS = sorted(
    f.stem for f in (ROOT / "benchmarks").glob("*.py")
    if f.stem not in ("_common", "report")
    and re.search(r'"--json"|"--out"', f.read_text(encoding="utf-8"))
)


@pytest.mark.parametrize("script", WRITERS)
def test_a_scripts_result_file_names_that_script(script, benchmark):
    """A result file in its script's default name (``NAME.json``) is read by a section whose
    command runs that script, or listed under "Other results" as made by it: six scripts'
    files were "no known script wrote it", speculative_accept's said speculative.py."""
    report = benchmark("report")
    name = f"{script}.json"
    sections = [s for s in report.SECTIONS if any(Path(name).match(p) for p in s.patterns)]
    source = sections[0].command if sections else report.source_of(name)
    assert source is not None and f"benchmarks/{script}." in source, (name, source)
