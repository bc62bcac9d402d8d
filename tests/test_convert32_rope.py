"""The RoPE tables (session 32): built for the positions a forward reaches, grown as longer
inputs come, not for all of ``max_seq_len`` at once (Dream's 131072 positions cost 128 MiB
and over a second before the first forward of a short prompt), and the same numbers."""

from __future__ import annotations

import copy

import torch

from unmask.config import ModelConfig
from unmask.model import ROPE_ROWS, Transformer, rope_cache


def test_rope_tables_grow_with_the_positions_and_give_the_same_logits() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2, n_kv_heads=2,
                      ffn_hidden=32, max_seq_len=3 * ROPE_ROWS)
    model = Transformer(cfg).eval()
    full = copy.deepcopy(model)
    full._rope = rope_cache(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta, torch.device("cpu"))
    tokens = torch.randint(4, 32, (1, 8))
    far = torch.arange(cfg.max_seq_len - 8, cfg.max_seq_len)
    with torch.no_grad():
        short = model(tokens)
        assert model._rope is not None and model._rope[0].shape[0] == ROPE_ROWS
        torch.testing.assert_close(short, full(tokens), rtol=0, atol=0)
        late = model(tokens, positions=far)  # the table grows to cover them
        assert model._rope[0].shape[0] == cfg.max_seq_len
        torch.testing.assert_close(late, full(tokens, positions=far), rtol=0, atol=0)
