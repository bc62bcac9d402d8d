"""Sampling flags that name a registry entry (``--policy``, ``--decoder``, ``--cache``,
``--remasking``, ``--confidence``) are checked and case-folded at parse time without importing
torch: the names are the torch-free tuples of ``unmask.config`` (``DECODER_NAMES``,
``POLICY_NAMES``, ``REMASKING_NAMES``, ``CONFIDENCE_NAMES``, ``CACHE_NAMES``), which the
registries must register exactly (checked here), or a registry already imported as it is
(``registered_names``). ``--policy Threshold`` imported ``unmask.sampling.policies`` (and
torch) to read them; then they were read from the registries' source by pattern, which missed
``@register_policy(name="entropy")`` or a name held in a variable."""

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


@pytest.mark.parametrize("module,registry,names", [
    ("unmask.sampling", "DECODERS", "DECODER_NAMES"),
    ("unmask.sampling.policies", "POLICIES", "POLICY_NAMES"),
    ("unmask.sampling.policies", "REMASKING", "REMASKING_NAMES"),
    ("unmask.sampling.policies", "CONFIDENCES", "CONFIDENCE_NAMES"),
    ("unmask.sampling.cache", "CACHES", "CACHE_NAMES"),
    ("unmask.objectives", "OBJECTIVES", "OBJECTIVE_NAMES"),  # train --objective
])
def test_the_torch_free_names_are_the_registrys(module, registry, names):
    """Each tuple of ``unmask.config`` names exactly the built-in entries of its registry (a
    forgotten entry, either way, fails here), and ``registered_names`` gives the registry as
    it is once imported, the tuple before (what the parse-time flags use)."""
    import importlib

    import unmask.config
    from unmask.commands.sample_options import registered_names

    real = getattr(importlib.import_module(module), registry)
    builtin = getattr(unmask.config, names)
    assert len(set(builtin)) == len(builtin) and set(builtin) == set(real)
    assert registered_names(module, registry, builtin) == sorted(real)  # imported already
    assert registered_names("unmask.not_imported", registry, builtin) == sorted(builtin)


def test_a_name_registered_at_run_time_is_a_flag_choice(monkeypatch):
    """A plugin's policy, registered at run time, is taken by the flag (the live registry
    wins once imported), not only the built-in names."""
    from unmask.commands.sample_options import _sample_choices
    from unmask.sampling import policies

    monkeypatch.setitem(policies.POLICIES, "plugin-policy", policies.POLICIES["threshold"])
    assert "plugin-policy" in _sample_choices()["policy"]()


def test_a_builtin_decoder_missing_from_the_tuple_fails_at_registration(monkeypatch):
    """``register_decoder`` refuses a decoder of unmask's own not in ``DECODER_NAMES`` (the
    command line would refuse its name before importing the registry); a plugin's decoder,
    from another package, registers as before."""
    from unmask.sampling import registry

    monkeypatch.setattr(registry, "DECODERS", dict(registry.DECODERS))

    class Builtin(registry.Decoder):
        pass

    Builtin.__module__ = "unmask.sampling.forgotten"
    with pytest.raises(AssertionError, match="'forgotten' is not in unmask.config.DECODER_NAMES"):
        registry.register_decoder("forgotten")(Builtin)

    class Plugin(registry.Decoder):
        pass

    Plugin.__module__ = "my_plugin.decoders"
    registry.register_decoder("mine")(Plugin)
    assert registry.DECODERS["mine"].name == "mine"


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
