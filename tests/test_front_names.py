"""Names on the command line are taken in any letter case, by one rule (``any_case``), on
every flag whose values are names: ``--device CPU``, ``--dtype BF16``, ``--model Demo``,
``--quantize INT8``, ``--compile OFF`` and the static choices of the dataclass flags were
refused while registry names (``--policy``, ``--to``) were case-folded. A value that is no
name is one line naming the spellings."""

from __future__ import annotations

import argparse

import pytest

from unmask.cli import build_parser, main
from unmask.commands import any_case, device_choice


def _parse(command: str, *flags: str) -> argparse.Namespace:
    return build_parser([command]).parse_args([command, *flags])


@pytest.mark.parametrize("typed, device", [
    ("CPU", "cpu"), ("cpu", "cpu"), ("Auto", "auto"), ("CUDA", "cuda"), ("CUDA:0", "cuda:0"),
    ("cuda:1", "cuda:1"), ("Cuda:01", "cuda:1"),
])
def test_device_in_any_case(typed, device):
    assert device_choice(typed) == device
    assert _parse("generate", "--model", "m", "--device", typed).device == device


@pytest.mark.parametrize("typed, said", [
    ("gpu", "device 'gpu' is not supported; use auto, cpu or cuda[:i] (e.g. cuda:0)"),
    ("cpux", "device 'cpux' is not supported; use auto, cpu or cuda[:i]"),
    ("mps", "device 'mps' is not supported; use auto, cpu or cuda[:i]"),
    ("meta", "device 'meta' is not supported; use auto, cpu or cuda[:i]"),
    ("cuda:x", "unknown device 'cuda:x': auto takes no index, cpu and cuda a whole number"),
    ("auto:0", "unknown device 'auto:0': auto takes no index"),
    ("cuda:", "unknown device 'cuda:': "),
])
def test_a_device_that_is_no_name_is_one_line_with_the_spellings(typed, said, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["generate", "--model", "m", "--prompt", "x", "--device", typed])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"argument --device: {said}" in err


@pytest.mark.parametrize("typed, dtype", [("BF16", "bf16"), ("Auto", "auto"), ("FP32", "fp32"),
                                          ("Float16", "fp16"), ("BFLOAT16", "bf16")])
def test_dtype_in_any_case(typed, dtype):
    assert _parse("generate", "--model", "m", "--dtype", typed).dtype == dtype
    assert _parse("serve", "--model", "m", "--dtype", typed).dtype == dtype


@pytest.mark.parametrize("flags, field, value", [
    (("--quantize", "INT8"), "quantize", "int8"),
    (("--compile", "OFF"), "compile", "off"),
    (("--draft-cache", "None"), "draft_cache", "none"),
    (("--predraft", "ALL"), "predraft", "all"),
])
def test_serve_choices_in_any_case(flags, field, value):
    assert getattr(_parse("serve", "--model", "m", *flags), field) == value


def test_dataclass_choices_in_any_case():
    """A static choice of a configuration field (``--remasking``) as a registry's."""
    assert _parse("generate", "--model", "m", "--remasking", "RANDOM").remasking == "random"
    with pytest.raises(SystemExit):
        _parse("generate", "--model", "m", "--remasking", "sometimes")


def test_the_shipped_model_in_any_case(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _parse("generate", "--model", "Demo").model == "demo"
    assert _parse("chat", "--model", "DEMO").model == "demo"
    assert _parse("generate", "--model", "Mine").model == "Mine"  # a path: kept as typed
    (tmp_path / "Other").mkdir()
    assert _parse("generate", "--model", "Other").model == "Other"


def test_a_local_folder_spelled_as_the_shipped_model_makes_the_case_ambiguous(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    with pytest.raises(SystemExit) as stop:
        main(["generate", "--model", "Demo", "--prompt", "x"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "./demo is a folder here and demo the shipped model" in err


def test_any_case_prefers_the_exact_name():
    assert any_case("Ab", ["Ab", "aB"], "thing") == "Ab"
    assert any_case("x", ["a"], "thing") is None
    with pytest.raises(argparse.ArgumentTypeError, match="ambiguous thing 'ab'"):
        any_case("ab", ["Ab", "aB"], "thing")


def test_generate_runs_the_demo_with_names_in_capitals(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["generate", "--model", "Demo", "--device", "CPU", "--dtype", "FP32",
            "--prompt", "In the beginning", "--gen-length", "4", "--steps", "1", "--no-live",
            "--threads", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("In the beginning")
