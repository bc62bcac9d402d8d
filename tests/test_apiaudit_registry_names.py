"""Sampling flags that name a registry entry (``--policy``, ``--decoder``, ``--cache``,
``--remasking``, ``--confidence``) are checked and case-folded at parse time without importing
torch: the names are read from the registries' source (``registered_names``), the one list of
each. ``--policy Threshold`` imported ``unmask.sampling.policies`` (and torch) to read them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

PARSE = """
import json, sys
from unmask.cli import build_parser
args = build_parser().parse_args(sys.argv[1:])
print(json.dumps({"torch": "torch" in sys.modules, "policy": args.policy,
                  "decoder": args.decoder, "cache": args.cache, "remasking": args.remasking,
                  "confidence": args.confidence}))
"""


def _parse(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", PARSE, *argv], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.parametrize("command", ["generate", "chat"])
def test_registry_flags_parse_without_torch_in_any_case(command):
    argv = [command, "--model", "m", "--policy", "Threshold", "--decoder", "LLaDA", "--cache",
            "Prefix", "--remasking", "Random", "--confidence", "NEG_ENTROPY"]
    r = _parse(*argv)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got == {"torch": False, "policy": "threshold", "decoder": "llada",
                   "cache": "prefix", "remasking": "random", "confidence": "neg_entropy"}


def test_an_unknown_policy_is_refused_with_the_registrys_names_without_torch():
    r = _parse("generate", "--model", "m", "--policy", "fastest")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown policy 'fastest' (choose from entropy, factor, llada, sedd-analytic, " \
           "sedd-euler, threshold)" in r.stderr


@pytest.mark.parametrize("module,registry,decorator", [
    ("unmask.sampling", "DECODERS", "register_decoder"),
    ("unmask.sampling.policies", "POLICIES", "register_policy"),
    ("unmask.sampling.policies", "REMASKING", "register_remasking"),
    ("unmask.sampling.policies", "CONFIDENCES", "register_confidence"),
    ("unmask.sampling.cache", "CACHES", "register_cache"),
])
def test_the_names_read_from_source_are_the_registrys(module, registry, decorator):
    import importlib

    from unmask.commands.sample_options import registered_names, source_names

    real = getattr(importlib.import_module(module), registry)
    assert source_names(module, registry, decorator) == sorted(real)  # read, not imported
    assert registered_names(module, registry, decorator) == sorted(real)  # imported already


def test_the_flag_choices_are_the_registries():
    from unmask.commands.sample_options import _sample_choices
    from unmask.config import SEDD_POLICY_ALIASES
    from unmask.sampling import CACHES, DECODERS
    from unmask.sampling.policies import CONFIDENCES, POLICIES, REMASKING

    choices = _sample_choices()
    want = {"decoder": ["auto", *sorted(DECODERS)],
            "policy": sorted([*POLICIES, *SEDD_POLICY_ALIASES]), "cache": sorted(CACHES),
            "remasking": sorted(REMASKING), "confidence": sorted(CONFIDENCES)}
    for name, names in want.items():
        assert choices[name]() == names, name
