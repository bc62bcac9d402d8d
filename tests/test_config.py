"""Configs as facts: modes validated at load with one-line errors, old config.json files load
unchanged (the shipped demo model included), the schedule and objective are checkpoint facts."""

import dataclasses
import json
from dataclasses import asdict
from importlib import resources

import pytest

from unmask.config import (
    MODEL_MODES,
    SCHEDULE_NAMES,
    ModelConfig,
    TrainConfig,
    load_json,
    model_preset,
    save_json,
)
from unmask.errors import UserError
from unmask.objectives import OBJECTIVES
from unmask.schedules import SCHEDULES, LinearSchedule, get_schedule, schedule_of

DEMO = resources.files("unmask") / "assets" / "demo"


def _write(tmp_path, **changes):
    data = {**asdict(model_preset("tiny", vocab_size=48)), **changes}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("field", sorted(MODEL_MODES))
def test_an_invalid_mode_in_config_json_is_a_one_line_error(tmp_path, field):
    path = _write(tmp_path, **{field: "sideways"})
    with pytest.raises(UserError) as e:
        load_json(ModelConfig, path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == f"{path}: {field}='sideways'; choose one of {', '.join(MODEL_MODES[field])}"


@pytest.mark.parametrize(
    "field, value, want",
    [
        ("d_model", "64", "d_model='64' should be int"),
        ("n_layers", True, "n_layers=True should be int"),
        ("rope_theta", "big", "rope_theta='big' should be float"),
        ("tie_embeddings", 1, "tie_embeddings=1 should be bool"),
        ("attention", 3, "attention=3 should be AttentionMode"),
        ("bos_id", 1.5, "bos_id=1.5 should be int | None"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_one_line_error(tmp_path, field, value, want):
    path = _write(tmp_path, **{field: value})
    with pytest.raises(UserError, match="^") as e:
        load_json(ModelConfig, path)
    assert str(e.value) == f"{path}: {want}"


def test_ints_are_fine_where_floats_are_expected(tmp_path):
    assert load_json(ModelConfig, _write(tmp_path, rope_theta=10000)).rope_theta == 10000


OLD_DEMO_CONFIG = {
    "attention": "bidirectional", "block_size": None, "bos_id": 3, "chat_template": None,
    "d_model": 256, "eos_id": 2, "ffn_hidden": 704, "fim_middle_id": None,
    "fim_prefix_id": None, "fim_suffix_id": None, "init_std": 0.02, "logit_shift": False,
    "mask_id": 0, "max_seq_len": 256, "n_heads": 8, "n_kv_heads": 4, "n_layers": 6,
    "norm_eps": 1e-05, "pad_id": 1, "qkv_bias": False, "rope_theta": 10000.0,
    "tie_embeddings": True, "vocab_size": 4096,
    "sample_defaults": {"temperature": 0.8, "block_length": 2},
}  # fmt: skip
"""The config.json the demo model shipped with until 2026-12-03: written before
``schedule``, ``objective``, ``norm`` and the other later keys existed."""


def test_the_shipped_demo_model_loads_unchanged(tmp_path):
    """The demo weights load under today's config.json and under the old one (a model folder
    from before the new keys), to the same model."""
    import shutil

    import torch

    from unmask.checkpoint import load
    from unmask.objectives.masked import MASKED_SAMPLE_DEFAULTS

    old = tmp_path / "old-demo"
    old.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        shutil.copy(DEMO / name, old / name)
    (old / "config.json").write_text(json.dumps(OLD_DEMO_CONFIG))
    loaded, today = load(str(old)), load(str(DEMO))
    cfg = loaded.config
    assert (cfg.schedule, cfg.schedule_eps, cfg.objective) == ("linear", 1e-3, None)
    assert (cfg.attention, cfg.norm, cfg.mlp, cfg.sedd_graph) == (
        "bidirectional",
        "rms",
        "swiglu",
        None,
    )
    assert isinstance(schedule_of(cfg), LinearSchedule)
    assert sum(p.numel() for p in loaded.model.parameters()) == cfg.num_params()
    assert cfg.sample_defaults == OLD_DEMO_CONFIG["sample_defaults"]  # read as written
    assert today.config.objective == "mdlm"
    # mdlm's, with the 3-gram ban: as varied as its AR twin (its TRAINING.md, session 21)
    assert today.config.sample_defaults == {**dict(MASKED_SAMPLE_DEFAULTS),
                                            "no_repeat_ngram_size": 3}
    ids = torch.arange(16)[None]
    with torch.no_grad():
        assert torch.equal(loaded.model(ids), today.model(ids))


def test_old_config_without_the_new_keys_loads_as_linear(tmp_path):
    data = asdict(model_preset("tiny", vocab_size=48))
    for key in ("schedule", "schedule_eps", "objective"):
        del data[key]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    cfg = load_json(ModelConfig, path)
    assert (cfg.schedule, cfg.objective) == ("linear", None)
    assert schedule_of(cfg).transfer_counts(10, 4) == [3, 3, 2, 2]  # LLaDA's counts


def test_schedule_round_trip(tmp_path):
    cfg = model_preset(
        "tiny", vocab_size=48, schedule="cosine", schedule_eps=0.01, objective="mdlm"
    )
    save_json(cfg, tmp_path / "config.json")
    back = load_json(ModelConfig, tmp_path / "config.json")
    assert back == cfg
    s = schedule_of(back)
    assert (s.name, s.eps) == ("cosine", 0.01)
    assert s.transfer_counts(64, 8)[0] < s.transfer_counts(64, 8)[-1]


def test_schedule_names_are_the_implemented_schedules():
    assert tuple(SCHEDULES) == SCHEDULE_NAMES
    for name in SCHEDULE_NAMES:
        assert get_schedule(name).name == name
    with pytest.raises(UserError, match="schedule_eps=1.0 must be in"):
        ModelConfig(schedule_eps=1.0)


def test_train_config_modes_are_checked():
    with pytest.raises(UserError, match="^sedd_graph='circle'; choose one of absorbing, uniform$"):
        TrainConfig(sedd_graph="circle")
    assert TrainConfig(schedule="cosine").schedule == "cosine"


def test_unknown_keys_and_non_objects_are_refused(tmp_path):
    path = _write(tmp_path, colour="blue")
    with pytest.raises(UserError, match="unknown ModelConfig field"):
        load_json(ModelConfig, path)
    path.write_text("[1, 2]")
    with pytest.raises(UserError, match="expected a JSON object"):
        load_json(ModelConfig, path)


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (TrainConfig, {"steps": "5"}, "steps must be int, not '5'"),
        (TrainConfig, {"seq_len": 32.0}, "seq_len must be int, not 32.0"),
        (TrainConfig, {"lr": "1e-3"}, "lr must be float, not '1e-3'"),
        (TrainConfig, {"compile": "yes"}, "compile must be bool, not 'yes'"),
        (ModelConfig, {"d_model": "64"}, "d_model must be int, not '64'"),
        (ModelConfig, {"block_size": "4"}, "block_size must be int or None, not '4'"),
        (ModelConfig, {"mask_id": 1.5}, "mask_id must be int, not 1.5"),
        (ModelConfig, {"tie_embeddings": "no"}, "tie_embeddings must be bool, not 'no'"),
    ],
)
def test_a_python_config_value_of_the_wrong_type_is_one_line(cls, kwargs, message):
    """The Python API builds configs without from_dict's checks: a value of the wrong type
    failed with a TypeError deep in the checks (d_model="64"), in the first training step
    (steps="5", seq_len=32.0, after the run had started writing) or not at all."""
    with pytest.raises(UserError) as e:
        cls(**kwargs)
    assert str(e.value) == message


def test_an_int_is_a_float_config_value_and_a_saved_config_loads_back_equal(tmp_path):
    train = TrainConfig(data="d", out="o", lr=1, model_overrides={"d_model": 64})
    model = model_preset("tiny", block_size=4, attention="block-causal")
    for cls, obj in ((TrainConfig, train), (ModelConfig, model)):
        save_json(obj, tmp_path / "c.json")
        assert load_json(cls, tmp_path / "c.json") == obj


def test_train_config_takes_pathlib_paths_for_its_paths(tmp_path):
    """``TrainConfig(data=Path(...))`` trained until the run wrote train_config.json, where the
    Path was a TypeError (not JSON serializable)."""
    from pathlib import Path

    cfg = TrainConfig(data=Path("data/mine"), out=tmp_path / "run", init=Path("runs/base"),
                      heldout_data=Path("data/other"))  # fmt: skip
    assert (cfg.data, cfg.init, cfg.heldout_data) == ("data/mine", "runs/base", "data/other")
    assert cfg.out == str(tmp_path / "run")
    save_json(cfg, tmp_path / "c.json")
    assert load_json(TrainConfig, tmp_path / "c.json") == cfg


@pytest.mark.parametrize(("defaults", "message"), [
    ({"gen_length": "x"}, "sample_defaults: gen_length must be int, not 'x'"),
    ({"steps": -1}, "sample_defaults: steps must be positive, got -1"),
])  # fmt: skip
def test_a_bad_recommended_sampling_value_names_the_config_file(tmp_path, defaults, message):
    """A checkpoint's sample_defaults were checked for their names only: a bad value failed at
    the first run that did not override it, in a message that named no file."""
    path = _write(tmp_path, sample_defaults=defaults)
    with pytest.raises(UserError) as e:
        load_json(ModelConfig, path)
    assert str(e.value) == f"{path}: {message}"


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_num_params_is_the_built_models_count_for_every_objective_and_option(objective):
    """``ModelConfig.num_params`` (the memory guard, ``_parallel_kind``, quantize read it)
    equals the parameters of the model the config builds: for the model every objective
    configures (embed-diffusion's ``embed_self_condition`` map, d_model² weights, was left
    out), and with each optional part switched on."""
    from unmask.model import meta_model
    from unmask.objectives import objective_spec
    from unmask.train import build_model_config

    special = dict(mask_id=0, pad_id=1, eos_id=2, bos_id=3)
    cfg = TrainConfig(objective=objective, preset="tiny", seq_len=32, block_size=4,
                      draft_block=3)
    spec = objective_spec(objective)
    base = spec.configure(build_model_config(cfg, 40, special), cfg)
    variants = [
        {}, {"tie_embeddings": False}, {"qkv_bias": True, "head_bias": True},
        {"qk_norm": True, "mlp": "gelu", "norm": "layer"}, {"rotary_dim": 4},
        {"embed_self_condition": True}, {"embed_self_condition": True, "tie_embeddings": False},
        {"time_conditioning": True, "sigma_input": "masked_fraction"},
        {"n_experts": 4, "experts_top_k": 2, "expert_hidden": 16, "shared_expert_hidden": 8,
         "dense_layers": 1, "router": "sigmoid", "router_expert_bias": True},
    ]
    for extra in variants:
        model = dataclasses.replace(base, **extra)
        built = sum(p.numel() for p in meta_model(model).parameters())
        assert model.num_params() == built, (objective, extra)
