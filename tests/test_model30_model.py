"""The one transformer at the edges of its contract (session 30, area model)."""

from __future__ import annotations

import pytest
import torch

from unmask.config import ModelConfig
from unmask.model import KVCache, Transformer

TINY = dict(vocab_size=40, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16)


@pytest.mark.parametrize("options", [
    {}, {"attention": "causal"}, {"attention": "block-causal", "block_size": 4},
    {"n_experts": 4, "experts_top_k": 2},
    {"time_conditioning": True, "sigma_input": "masked_fraction"},
])
@pytest.mark.parametrize("shape", [(0, 5), (2, 0)])
def test_an_empty_batch_or_row_gives_empty_logits(options, shape) -> None:
    """(B, L) -> (B, L, V) for B or L of 0 too, as torch's own layers map empty batches: the
    attention's output reshape left its width to -1, which a tensor of no elements cannot
    infer ("cannot reshape tensor of 0 elements"), in every attention mode, cached or not."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**TINY, **options)).eval()
    tokens = torch.full(shape, 5, dtype=torch.long)
    with torch.no_grad():
        assert model(tokens).shape == (*shape, 40)
        assert model(tokens, attention_mask=torch.ones(shape, dtype=torch.bool)).shape == (
            *shape, 40)
        if not options.get("time_conditioning"):  # reads its noise level off the whole canvas
            cache = KVCache()
            prefix = torch.full((shape[0], 3), 5, dtype=torch.long)
            model(prefix, cache=cache)
            none = torch.full((shape[0], 0), 5, dtype=torch.long)
            assert model(none, cache=cache, start=3).shape == (shape[0], 0, 40)
