"""``ModelConfig`` refuses, in one line naming the field, sizes no model can have: a negative
or zero count of latent slots, a non-positive or non-finite ``routed_scaling``, a block
longer than the context. Each was accepted and failed later, misleadingly or silently."""

from __future__ import annotations

import pytest

from unmask.config import ModelConfig, from_dict
from unmask.errors import UserError


@pytest.mark.parametrize(("fields", "words"), [
    ({"latent_len": -3}, r"latent_len=-3 must be a whole number of at least 1"),
    ({"latent_len": 0}, r"latent_len=0 must be a whole number of at least 1"),
    ({"latent_window": -1}, r"latent_window=-1 must be a whole number of at least 1"),
    ({"routed_scaling": float("nan")}, r"routed_scaling=nan must be a finite number > 0"),
    ({"routed_scaling": -1.0}, r"routed_scaling=-1.0 must be a finite number > 0"),
    ({"routed_scaling": 0.0}, r"routed_scaling=0.0 must be a finite number > 0"),
    ({"attention": "block-causal", "block_size": 512, "max_seq_len": 256},
     r"block_size=512 exceeds max_seq_len=256: not one block fits the context"),
])  # fmt: skip
def test_impossible_sizes_are_one_line(fields, words) -> None:
    with pytest.raises(UserError, match=rf"^config: {words}"):
        from_dict(ModelConfig, fields)


def test_the_limits_themselves_are_accepted() -> None:
    ModelConfig(latent_len=1, latent_window=1, routed_scaling=2.5)
    ModelConfig(attention="block-causal", block_size=256, max_seq_len=256)
    ModelConfig(block_size=512, max_seq_len=256)  # not block-causal: the field is unused


def test_a_negative_latent_len_no_longer_widens_the_context() -> None:
    """``ModelFacts.max_seq_len`` of a latent-diffusion model subtracts its slots: -3 slots
    made a context of 64 positions offer 66 text rows."""
    from unmask.facts import ModelFacts

    cfg = ModelConfig(max_seq_len=64, latent_len=4, objective="latent-diffusion")
    assert ModelFacts.of(cfg).max_seq_len == 59
    with pytest.raises(UserError, match="latent_len=-3"):
        ModelConfig(max_seq_len=64, latent_len=-3, objective="latent-diffusion")


@pytest.mark.parametrize("fields", [
    {"routed_scaling": 2.5}, {"router_groups": 2, "router_topk_groups": 1},
    {"router_expert_bias": True},
])  # fmt: skip
def test_sigmoid_router_options_are_refused_on_the_softmax_router(fields) -> None:
    """The softmax router (``MoE.route``) reads none of the sigmoid router's options: a
    config with ``routed_scaling`` 2.5 built a model whose outputs equal the unscaled one's."""
    moe = {"n_experts": 4, "experts_top_k": 2}
    with pytest.raises(UserError, match=r"set only with router='sigmoid'; the softmax router "
                                        r"does not read it$"):
        from_dict(ModelConfig, {**moe, **fields})
    ModelConfig(**moe, **fields, router="sigmoid")  # where they apply
    ModelConfig(**fields)  # no experts: no router, nothing read (as a dense config holds them)
