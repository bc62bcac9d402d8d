"""A checkpoint's recommended sampling options (``ModelConfig.sample_defaults``): written by
``unmask train`` from the objective's spec, used by the CLI for every flag not given."""

from __future__ import annotations

import json

import pytest
import torch

from unmask import api
from unmask.checkpoint import load, save_checkpoint
from unmask.cli import main
from unmask.commands.demo import asset_path
from unmask.config import (
    ModelConfig,
    SampleConfig,
    TrainConfig,
    from_dict,
    model_preset,
    to_dict,
)
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.objectives import objective_spec
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
RECOMMENDED = {"temperature": 0.8, "block_length": 4}
"""A recommendation of the tiny test checkpoints (the fitting tests below assume blocks of 4)."""
MEASURED = {"temperature": 0.0, "block_length": 4, "repetition_penalty": 1.3,
            "no_repeat_ngram_size": 4}
"""What mdlm checkpoints and the shipped demo model recommend (benchmarks/defaults.py)."""


def _ckpt(root, **defaults):
    torch.manual_seed(0)
    cfg = model_preset(
        "tiny",
        vocab_size=TOK.vocab_size,
        max_seq_len=64,
        **TOK.special_ids(),
        sample_defaults=defaults,
    )
    return save_checkpoint(root, model=Transformer(cfg).eval(), tokenizer=TOK)


@pytest.fixture(scope="module")
def recommended(tmp_path_factory):
    return load(_ckpt(tmp_path_factory.mktemp("rec") / "run", **RECOMMENDED))


def test_the_checkpoint_recommends_and_the_user_overrides(recommended):
    assert api.sample_config(recommended, {}) == SampleConfig(**RECOMMENDED)
    given = {"temperature": 0.0, "gen_length": 32, "steps": 32}
    config = api.sample_config(recommended, given)
    assert (config.temperature, config.block_length) == (0.0, 4)
    assert api.sample_config(recommended, {"block_length": 8}).block_length == 8


@pytest.mark.parametrize(
    "gen_length,steps,policy,block",
    [
        (64, 64, "llada", 4),  # fits as recommended
        (50, 50, "llada", 2),  # 4 does not divide 50: the largest block length below that does
        (12, 4, "llada", 3),  # 3 blocks of 4 cannot share 4 steps evenly; 4 blocks of 3 can
        (7, 7, "llada", 1),
        (6, 5, "llada", None),  # no block length gives whole steps per block: one block
        (50, 25, "threshold", 2),  # a dynamic policy: any steps, a step a block at least
        (50, 7, "threshold", None),  # 25 blocks of 2 need 25 steps: one block (was 2)
    ],
)
def test_a_recommended_block_length_is_fitted_to_the_run(
    recommended, gen_length, steps, policy, block
):
    given = {"gen_length": gen_length, "steps": steps, "policy": policy}
    config = api.sample_config(recommended, given)
    assert config.block_length == block


def test_no_recommendation_keeps_the_sample_config_defaults(tmp_path):
    plain = load(_ckpt(tmp_path / "run"))
    assert api.sample_config(plain, {"steps": 8}) == SampleConfig(steps=8)


def test_unmask_generate_uses_them_for_flags_not_given(recommended, capsys):
    argv = [
        "generate",
        "--model",
        str(recommended.path),
        "--gen-length",
        "16",
        "--steps",
        "16",
        "--json",
        "--no-live",
        "--seed",
        "3",
        "x",
    ]
    assert main(argv) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert (config["temperature"], config["block_length"]) == (0.8, 4)
    assert main([*argv, "--temperature", "0", "--block-length", "16"]) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert (config["temperature"], config["block_length"]) == (0.0, 16)


def test_the_cli_and_the_api_agree_once_the_options_are_resolved(recommended, capsys):
    argv = [
        "generate",
        "--model",
        str(recommended.path),
        "--gen-length",
        "16",
        "--steps",
        "16",
        "--json",
        "--no-live",
        "--seed",
        "5",
        "abc",
    ]
    assert main(argv) == 0
    cli = json.loads(capsys.readouterr().out)["results"][0]["tokens"]
    config = api.sample_config(recommended, {"gen_length": 16, "steps": 16, "seed": 5})
    assert api.generate(recommended, ["abc"], config=config).ids[0] == cli


CAUSAL = {"temperature": 0.0, "repetition_penalty": 1.15, "no_repeat_ngram_size": 4}
"""What ar and hybrid checkpoints recommend (benchmarks/defaults.py on the demo's AR twin)."""


def test_objectives_record_their_measured_defaults():
    assert dict(objective_spec("mdlm").sample_defaults) == MEASURED
    for name in ("ar", "hybrid"):  # plain greedy causal text repeats itself: penalised
        spec = objective_spec(name)
        assert dict(spec.sample_defaults) == CAUSAL
        init = model_preset("tiny", vocab_size=300, attention="causal")
        block = {"draft_block": 4} if name == "hybrid" else {}  # None is no int: refused
        cfg = spec.configure(init, TrainConfig(objective=name, **block))
        assert cfg.sample_defaults == CAUSAL  # what unmask train stores with the checkpoint
    assert objective_spec("bd3lm").sample_defaults == ()  # not measured: SampleConfig's


def test_the_shipped_demo_model_recommends_its_measured_setting():
    # the demo model bans a repeated 3-gram: as varied as its AR twin (TRAINING.md, session 21)
    assert load(asset_path("demo")).config.sample_defaults == {**MEASURED,
                                                               "no_repeat_ngram_size": 3}


def test_unknown_options_in_config_json_are_one_line_errors():
    data = to_dict(model_preset("tiny", vocab_size=300))
    data["sample_defaults"] = {"temprature": 0.8}
    words = r"sample_defaults: temprature \(did you mean temperature\?\) is not a sampling option$"
    with pytest.raises(UserError, match=words):
        from_dict(ModelConfig, data)


@pytest.mark.parametrize("gen_length", [16, 40, 200])
def test_steps_not_given_are_one_per_generated_token(recommended, tmp_path, gen_length):
    assert api.sample_config(recommended, {"gen_length": gen_length}).steps == gen_length
    plain = load(_ckpt(tmp_path / "run"))
    assert api.sample_config(plain, {"gen_length": gen_length}).steps == gen_length
    assert api.sample_config(recommended, {"gen_length": gen_length, "steps": 8}).steps == 8


def test_unmask_generate_without_steps_takes_one_step_per_token(recommended, capsys):
    argv = ["generate", "--model", str(recommended.path), "--gen-length", "8", "--json",
            "--no-live", "--seed", "0", "x"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["config"]["steps"], out["nfe"]) == (8, 8)


def test_several_unknown_options_are_named_together():
    with pytest.raises(UserError) as e:
        model_preset("tiny", vocab_size=300, sample_defaults={"zzz": 1, "stepz": 4})
    assert str(e.value) == ("sample_defaults: stepz (did you mean steps?), zzz are not sampling "
                            "options")
