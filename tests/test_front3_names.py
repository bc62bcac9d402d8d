"""One rule for a built-in name where a path goes too (``--template``, ``prepare
--tokenizer``, ``--model``): a file or folder of the exact typed name wins, another letter
case of the name is ambiguous while that path exists. ``--template plain`` with ``./plain``
here took the built-in (``PLAIN`` the file), ``--tokenizer byte`` with ``./byte`` the
built-in, while ``--model Demo`` next to ``./demo`` was refused as ambiguous."""

from __future__ import annotations

import argparse

import pytest

from unmask.cli import main
from unmask.commands import model_choice, name_or_path, template_names


def _rc(argv) -> int:
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code or 0)


def test_a_file_of_the_exact_builtin_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plain").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    (tmp_path / "byte").mkdir()
    (tmp_path / "demo").mkdir()
    template = name_or_path("chat template", template_names)
    assert template("plain") == "./plain"
    assert name_or_path("tokenizer", ("bpe", "byte"))("byte") == "./byte"
    assert model_choice("demo") == "demo"  # the folder: checkpoint_dir reads a path first
    from unmask.chat import template_arg

    assert template_arg(template("plain")).origin == "chat template plain"
    for check, text, name in ((template, "PLAIN", "plain"),
                              (name_or_path("tokenizer", ("bpe", "byte")), "BYTE", "byte"),
                              (model_choice, "Demo", "demo")):
        with pytest.raises(argparse.ArgumentTypeError, match=f"^{text}: ambiguous: ./{name} "
                                                             f"is a (file|folder) here"):
            check(text)
    assert template("Default") == "default"  # no ./default here: the built-in


def test_prepare_with_a_byte_folder_here_reads_that_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "byte").mkdir()  # no tokenizer in it: the folder was read, not the built-in
    (tmp_path / "a.txt").write_text("some text to prepare\n" * 50)
    assert _rc(["prepare", "a.txt", "--out", "ds", "--tokenizer", "byte",
                "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "byte" in err, err
    assert _rc(["prepare", "a.txt", "--out", "ds", "--tokenizer", "BYTE",
                "--no-progress"]) == 2
    assert "BYTE: ambiguous: ./byte is a folder here" in capsys.readouterr().err
