"""Front-door fixes of the review of session 28's command-line changes:

- ``--model Demo`` (a name in another case) imported torch while the arguments were parsed
  (the shipped models' names lived in ``unmask.checkpoint``): ``--help`` took seconds,
  ``serve --threads 1`` got torch's default OpenMP pool and ``unmask demo``'s starting line
  was skipped. The names live in ``unmask.names`` now (no torch).
- The one case rule reaches every flag whose value is a name (``convert --dtype BF16``,
  ``edit --confidence-mode``, ``prepare --errors``/``--tokenizer``, ``--template PLAIN``) and
  every flag that takes a model (``eval Demo``, ``convert Demo``, ``--draft``, ``--init``,
  ``--teacher``, ``--student``); a file of the typed name wins.
- A misspelt flag is compared with the flags without their ``--`` (``--port`` was taken for
  a typo of ``--prompt``), and one written ``--flg=a value`` with a space is a flag too (it
  became the prompt).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import unmask
import unmask.commands.generate as generate_cmd
from unmask.cli import build_parser, main

ENV = {**os.environ, "PYTHONPATH": str(Path(unmask.__file__).parents[1]),
       "OMP_NUM_THREADS": "1"}
"""A child Python that imports this checkout's unmask from any folder."""


def _parse(command: str, *words: str) -> argparse.Namespace:
    return build_parser([command]).parse_args([command, *words])


def test_a_shipped_model_in_capitals_is_parsed_without_torch(tmp_path):
    code = ("import sys\nfrom unmask.cli import build_parser\n"
            "a = build_parser(['serve']).parse_args(['serve', '--model', 'Demo'])\n"
            "print(a.model, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=ENV, timeout=120)
    assert done.stdout.split() == ["demo", "False"], done.stderr


@pytest.mark.parametrize("command, words, field, value", [
    ("convert", ["a", "b", "--dtype", "BF16"], "dtype", "bf16"),
    ("edit", ["--model", "m", "--text", "x", "--lowest", "2", "--confidence-mode", "Visible"],
     "confidence_mode", "visible"),
    ("prepare", ["x", "-o", "y", "--errors", "STRICT"], "errors", "strict"),
    ("prepare", ["x", "-o", "y", "--tokenizer", "BYTE"], "tokenizer", "byte"),
    ("chat", ["--model", "m", "--template", "PLAIN"], "template", "plain"),
    ("generate", ["--model", "m", "--chat", "--template", "Default", "x"], "template",
     "default"),
    ("serve", ["--model", "m", "--chat-template", "Plain"], "chat_template", "plain"),
    ("eval", ["Demo"], "run", "demo"),
    ("convert", ["Demo", "out", "--to", "llada"], "src", "demo"),
    ("generate", ["--model", "m", "--draft", "DEMO", "x"], "draft", "demo"),
    ("train", ["--data", "d", "--out", "o", "--init", "Demo"], "init", "demo"),
    ("distill", ["--teacher", "Demo", "--student", "DEMO", "--out", "o"], "teacher", "demo"),
    ("distill", ["--teacher", "Demo", "--student", "DEMO", "--out", "o"], "student", "demo"),
])
def test_every_flag_that_takes_a_name_takes_it_in_any_case(command, words, field, value,
                                                           tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file named as the values here
    assert getattr(_parse(command, *words), field) == value


def test_a_file_of_the_typed_name_wins_over_a_built_in_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "BYTE").write_text("{}")
    (tmp_path / "PLAIN").write_text("{{ messages }}")
    assert _parse("prepare", "x", "-o", "y", "--tokenizer", "BYTE").tokenizer == "BYTE"
    assert _parse("chat", "--model", "m", "--template", "PLAIN").template == "PLAIN"


@pytest.mark.parametrize("command, words", [
    ("convert", ["a", "b", "--dtype", "int8"]),
    ("prepare", ["x", "-o", "y", "--errors", "ignore"]),
    ("edit", ["--model", "m", "--text", "x", "--confidence-mode", "both"]),
])
def test_a_value_that_is_no_name_is_still_one_line(command, words, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, *words])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice" in err


@pytest.mark.parametrize("command, typed, meant", [
    ("generate", "--topk", "--top-k"),
    ("generate", "--top_p", "--top-p"),
    ("train", "--lr-warmup", "--warmup"),
    ("generate", "--port", None),
    ("generate", "--data", None),
    ("train", "--epochs", None),
    ("generate", "--out", None),
])
def test_a_misspelt_flag_is_compared_without_its_dashes(command, typed, meant, monkeypatch,
                                                        capsys):
    monkeypatch.setattr(generate_cmd, "run", lambda args: pytest.fail("ran"))
    assert main([command, typed, "1"]) == 2
    err = capsys.readouterr().err
    hint = f"; did you mean {meant}?" if meant else ""
    assert f"unrecognized arguments: {typed}{hint} (see:" in err


def test_a_misspelt_flag_with_a_spaced_value_after_an_equals_sign_is_a_flag(monkeypatch,
                                                                            capsys):
    monkeypatch.setattr(generate_cmd, "run", lambda args: pytest.fail("ran"))
    assert main(["generate", "--model", "demo", "--sytem=be brief", "--chat", "hi"]) == 2
    assert "unrecognized arguments: --sytem; did you mean --system?" in capsys.readouterr().err


@pytest.mark.parametrize("typed", ["cuda:²", "cuda:٣", "CPU:¹"])
def test_a_device_index_of_other_digits_is_the_one_line(typed, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["generate", "--model", "demo", "--device", typed, "x"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cpu and cuda a whole number (e.g. cuda:0)" in err, err


def test_no_prompt_with_stdin_from_dev_null_does_not_call_it_piped(tmp_path):
    with open("/dev/null") as null:
        done = subprocess.run([sys.executable, "-m", "unmask", "generate", "--model", "demo"],
                              stdin=null, capture_output=True, text=True, cwd=tmp_path,
                              env=ENV, timeout=120)
    assert done.returncode == 2
    assert done.stderr.endswith("; standard input is read by --prompt-file -\n"), done.stderr
    assert "piped" not in done.stderr
