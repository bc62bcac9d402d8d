"""benchmarks/report.py's ``SOURCES``: each command it names runs as written, and each entry
names the files it is the first match for (an entry a section or an earlier entry always
answers first is dead text)."""

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def report(benchmark):
    return benchmark("report")


def test_an_unmask_command_it_names_parses(report, capsys):
    """It named ``unmask eval RUN --json FILE``: ``--json`` is a flag (the JSON goes to
    stdout), so FILE was an unrecognized argument; the file is written by ``> FILE``."""
    from unmask.cli import build_parser

    commands = [c for _, c in report.SOURCES if c.startswith("unmask ")]
    assert commands
    for command in commands:
        words = command.split()[1:]
        argv = words[: words.index(">")] if ">" in words else words
        name = argv[0]
        build_parser([name]).parse_args(argv)  # exits 2 (SystemExit) on an unknown argument
        assert capsys.readouterr().err == "", command


def test_every_source_entry_is_the_first_match_of_its_files(report):
    """``("defaults_*",)`` was never used: the Sampling defaults section reads
    ``defaults*.json`` first. A name each pattern matches is read by no section and is
    attributed to that entry."""
    for patterns, command in report.SOURCES:
        for pattern in patterns:
            name = pattern.replace("*", "x") + ("" if pattern.endswith(".json") else ".json")
            read = [s.title for s in report.SECTIONS if any(Path(name).match(p)
                                                            for p in s.patterns)]  # fmt: skip
            assert read == [], (pattern, read)
            assert report.source_of(name) == command, pattern
