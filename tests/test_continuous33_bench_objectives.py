"""benchmarks/objectives.py trains latent diffusion in two stages (``--ae-fraction`` of the
steps for the autoencoder): a split that left the second stage no steps failed with
"steps=0 must be positive" only after the autoencoder, and every family before it, had
trained. It is refused before anything trains."""

from __future__ import annotations

import argparse
import sys

import pytest

from unmask.errors import UserError


def _args(**kw: object) -> argparse.Namespace:
    base = dict(steps=20, ae_fraction=0.5, gen_length=16, seq_len=32)
    return argparse.Namespace(**{**base, **kw})


def test_a_split_that_leaves_a_stage_no_steps_is_refused_before_training(benchmark):
    script = benchmark("objectives")
    runs = script.select_runs("latent")
    script.check_sampling(_args(), runs)  # 10 + 10: fine
    assert script.stage_steps(20, 0.5) == (10, 10) and script.stage_steps(3, 0.01) == (1, 2)
    for fraction in (1.0, 0.0, -0.5, float("nan")):
        with pytest.raises(UserError, match="--ae-fraction must be between 0 and 1"):
            script.check_sampling(_args(ae_fraction=fraction), runs)
    with pytest.raises(UserError, match="--steps 1 at --ae-fraction 0.5 leaves 0 for the"):
        script.check_sampling(_args(steps=1), runs)
    with pytest.raises(UserError, match="leaves 0 for the second"):
        script.check_sampling(_args(ae_fraction=0.99), runs)  # round(19.8) = 20 of 20
    # a plan without the latent family does not care
    script.check_sampling(_args(ae_fraction=1.0), script.select_runs("mdlm"))


def test_the_refusal_comes_before_the_corpus_or_any_training(benchmark, monkeypatch, capsys,
                                                             tmp_path):  # fmt: skip
    script = benchmark("objectives")
    # no corpus there: a regression fails on it at once rather than preparing the demo's
    monkeypatch.setattr(sys, "argv", ["objectives.py", "--only", "latent", "--steps", "1",
                                      "--work", str(tmp_path / "w"),
                                      "--data", str(tmp_path / "none")])  # fmt: skip
    with pytest.raises(UserError, match="leaves 0 for the second"):
        script.main()
    assert not (tmp_path / "w").exists()
