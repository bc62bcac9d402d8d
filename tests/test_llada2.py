"""The ``llada2`` family (LLaDA 2.x): a tiny folder in the publisher's layout loads into the one
Transformer and reproduces the published forward (logits within 1e-4 in fp32, the same experts
chosen); what it cannot hold is refused with one line, before anything is loaded."""

from __future__ import annotations

import json

import pytest
import torch
from convert_helpers import load_error
from llada2_helpers import (
    TINY,
    random_tensors,
    reference_logits,
    reference_route,
    write_llada2_folder,
)

import unmask
from unmask.convert import model_config


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("llada2")
    cfg, tensors = write_llada2_folder(path)
    return path, cfg, tensors


def test_config_facts(folder) -> None:
    path, cfg, _ = folder
    imp, config, tok = model_config(path)
    assert imp.name == "llada2"
    assert (config.router, config.router_groups, config.router_topk_groups) == ("sigmoid", 4, 2)
    assert config.routed_scaling == 2.5 and config.dense_layers == 1
    assert config.rotary_dim == 8 and config.shared_expert_hidden == 16
    assert config.attention == "block-causal" and config.block_size == 32
    assert config.block_align == "absolute" and config.norm_topk_prob
    assert config.mask_id == tok.token_to_id("<|mask|>")
    assert config.eos_id == cfg["eos_token_id"]


@pytest.mark.parametrize("length", [7, 45])  # one block; two blocks (block-causal across them)
def test_logits_and_experts_match_the_published_forward(folder, length: int) -> None:
    path, cfg, tensors = folder
    loaded = unmask.load(path)
    model = loaded.model
    tokens = torch.randint(0, 44, (2, length), generator=torch.Generator().manual_seed(length))
    inputs: dict[int, torch.Tensor] = {}
    hooks = [
        layer.mlp.register_forward_hook(
            lambda mod, args, out, i=i: inputs.__setitem__(
                i, args[0].reshape(-1, args[0].shape[-1])
            )
        )
        for i, layer in enumerate(model.layers)
        if i >= cfg["first_k_dense_replace"]
    ]
    with torch.no_grad():
        ours = model(tokens)
    for h in hooks:
        h.remove()
    ref, ref_chosen = reference_logits(tokens, tensors, cfg, block_length=32)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0), (ours - ref).abs().max()
    for j, i in enumerate(sorted(inputs)):
        _, chosen = model.layers[i].mlp.route(inputs[i])
        assert torch.equal(chosen.sort(dim=-1)[0], ref_chosen[j].sort(dim=-1)[0])
        # and the reference router on our hidden states agrees with itself on the weights
        ref_idx, ref_w = reference_route(inputs[i], tensors, i, cfg)
        w, idx = model.layers[i].mlp.route(inputs[i])
        order, ref_order = idx.argsort(dim=-1), ref_idx.argsort(dim=-1)
        assert torch.allclose(w.gather(1, order), ref_w.gather(1, ref_order), atol=1e-6)


def test_expert_bias_steers_choice_not_weight(folder) -> None:
    """A large bias on one expert makes every token choose it, while its weight stays its
    unbiased sigmoid score (renormalised, scaled): the DeepSeek-V3 rule."""
    path, cfg, tensors = folder
    model = unmask.load(path).model
    moe = model.layers[1].mlp
    x = torch.randn(5, cfg["hidden_size"])
    with torch.no_grad():
        moe.expert_bias.zero_()
        moe.expert_bias[3] = 100.0
        weights, chosen = moe.route(x)
    assert (chosen == 3).any(dim=-1).all()
    scores = torch.sigmoid(x @ moe.router.weight.T)
    picked = scores.gather(1, chosen)
    want = picked / picked.sum(-1, keepdim=True) * cfg["routed_scaling_factor"]
    assert torch.allclose(weights, want, atol=1e-6)


def test_num_params_counts_the_folder(folder) -> None:
    path, _, tensors = folder
    _, config, _ = model_config(path)
    assert config.num_params() == sum(t.numel() for t in tensors.values())


def _variant(tmp_path, **changes):
    cfg = {**TINY, **changes}
    cfg = {k: v for k, v in cfg.items() if v is not ...}
    write_llada2_folder(tmp_path, cfg)
    return tmp_path


def test_unknown_key_is_refused_by_name(tmp_path) -> None:
    msg = load_error(_variant(tmp_path, moe_router_use_jitter=True))
    assert "moe_router_use_jitter" in msg and "llada2" in msg


@pytest.mark.parametrize(
    ("key", "value"),
    [("use_bias", True), ("rope_scaling", {"type": "yarn"}), ("score_function", "softmax"),
     ("use_qkv_bias", True)],
)  # fmt: skip
def test_options_it_cannot_hold_are_refused(tmp_path, key: str, value) -> None:
    msg = load_error(_variant(tmp_path, **{key: value}))
    assert key in msg


def test_head_dim_mismatch_refused(tmp_path) -> None:
    cfg = {**TINY, "head_dim": 8}
    path = tmp_path / "f"
    path.mkdir()
    write_llada2_folder(path, cfg, tensors={})  # config is refused before weights are read
    assert "head_dim" in load_error(path)


def test_shape_mismatch_names_the_tensor(tmp_path) -> None:
    cfg, tensors = dict(TINY), None
    write_llada2_folder(tmp_path, cfg)
    # a config that disagrees with the stored tensors: wider experts
    data = json.loads((tmp_path / "config.json").read_text())
    data["moe_intermediate_size"] = 32
    (tmp_path / "config.json").write_text(json.dumps(data))
    msg = load_error(tmp_path)
    assert "shape" in msg and "mlp." in msg
    del tensors


def test_a_release_quantised_by_its_publisher_is_refused_with_what_to_do(tmp_path) -> None:
    """An FP8 / GPTQ release (``quantization_config``) is refused with the way out (the bf16
    release with --quantize), not as an unknown key."""
    msg = load_error(_variant(tmp_path, quantization_config={"quant_method": "fp8"}))
    assert "quantised by its publisher (fp8)" in msg and "--quantize int8 or int4" in msg, msg
    assert "unknown key" not in msg and "\n" not in msg



def test_facts_read_with_a_default_are_read_from_config_json(tmp_path) -> None:
    """``TINY`` gives routed_scaling_factor and partial_rotary_factor their defaults (2.5, 0.5,
    as the published configs), so reading either under a misspelt key passed every test; here
    both differ from the defaults. num_key_value_heads 0, LLaDA2MoeConfig's default, means one
    per query head (the importer meant to read it so; a check before it refused the 0)."""
    cfg = {**TINY, "routed_scaling_factor": 1.7, "partial_rotary_factor": 0.25,
           "num_key_value_heads": TINY["num_attention_heads"]}
    tensors = random_tensors(cfg)
    write_llada2_folder(tmp_path, {**cfg, "num_key_value_heads": 0}, tensors)
    loaded = unmask.load(tmp_path)  # was: num_key_value_heads=0 should be at least 1
    assert (loaded.config.routed_scaling, loaded.config.rotary_dim) == (1.7, 4)
    assert loaded.config.n_kv_heads == cfg["num_attention_heads"]
    tokens = torch.randint(0, 44, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = loaded.model(tokens)
    ref, _ = reference_logits(tokens, tensors, cfg, block_length=32)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0), (ours - ref).abs().max()
