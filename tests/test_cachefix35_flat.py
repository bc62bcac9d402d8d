"""The flat ``llada`` loop on a block-causal model under a KV cache: a [MASK] before the
sampler's block that sits mid attention block (review sampling35, finding 3)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.model import Transformer
from unmask.sampling import generate
from unmask.sampling.cache import PrefixCache, make_cache

M = -1  # stands for the model's mask id


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize(("prompt", "prompt_masks", "seed"), [
    ([5, M, 6, 7], "fill", 0), ([5, M, 6, 7], "reference", 1), ([M, 5, 6, 7], "reference", 2),
])
def test_a_mask_mid_attention_block_is_exact_in_the_flat_loop(
    cache: str, prompt: list[int], prompt_masks: str, seed: int
) -> None:
    # the model's blocks are the sampler's (4) and the prompt is one whole block, so the
    # caches are documented exact; a [MASK] left before a block mid attention block started
    # the window at it, and the columns of its block before it (which see it) kept the K/V
    # of the masked canvas: cache on wrote other tokens than cache off (5 of 48 such runs)
    cfg = model_preset("tiny", vocab_size=48, max_seq_len=96, init_std=0.5,
                       attention="block-causal", block_size=4)
    torch.manual_seed(0)
    model = Transformer(cfg).double().eval()
    ids = [[cfg.mask_id if t == M else t for t in prompt]]
    sample = SampleConfig(gen_length=16, steps=16, block_length=4, prompt_masks=prompt_masks,
                          decoder="llada", temperature=1.0, seed=seed)
    kw = dict(mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=None)
    off = generate(model, ids, sample, **kw).tokens
    on = generate(model, ids, dataclasses.replace(sample, cache=cache), **kw).tokens
    assert torch.equal(on, off)


def test_the_window_starts_on_the_attention_block() -> None:
    cfg = model_preset("tiny", vocab_size=48, attention="block-causal", block_size=4)
    policy = make_cache(SampleConfig(cache="prefix"), Transformer(cfg))
    masked = torch.zeros(1, 12, dtype=torch.bool)
    masked[0, 5] = True  # a mask before the block [8, 12), mid attention block [4, 8)
    policy.start_block(masked, 8, 12)
    assert (policy.lo, policy.hi) == (4, 12)
    plain = PrefixCache()  # no model block (not block-causal): the mask's own column
    plain.start_block(masked, 8, 12)
    assert plain.lo == 5
