"""``unmask.model.Transformer`` at the edges of its layouts: a negative RoPE position is
refused (it read another position's rotation from the end of the table); padding keeps a row's
logits as the module docstring says."""

from __future__ import annotations

import pytest
import torch

from unmask.config import model_preset
from unmask.model import KVCache, Transformer


def _model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(model_preset("tiny", vocab_size=50)).double().eval()


def test_a_negative_position_is_refused() -> None:
    m, x = _model(), torch.arange(4)[None]
    with pytest.raises(ValueError, match="position -1 is negative"):
        m(x, positions=torch.tensor([-1, 0, 1, 2]))
    with pytest.raises(ValueError, match="position -2 is negative"):
        m(x[:, :2], cache=KVCache(), start=0, positions=torch.tensor([-2, 0]),
          attn_bias=torch.ones(1, 1, 2, 2, dtype=torch.bool))


def test_given_positions_equal_the_default_ones() -> None:
    """The refusal reads the positions once; valid ones still give the default layout's
    logits, with and without a cache."""
    m, x = _model(), torch.randint(0, 50, (2, 6))
    with torch.no_grad():
        want = m(x)
        got = m(x, positions=torch.arange(6))
        cached = m(x, cache=KVCache(), start=0, positions=torch.arange(6))
    assert torch.allclose(got, want) and torch.allclose(cached, want)


@pytest.mark.parametrize("attention", ["bidirectional", "causal", "block-causal"])
def test_a_padded_row_is_the_row_alone(attention) -> None:
    """The module docstring's promise: left padding (whole blocks of a block-causal model)
    and right padding leave a row's logits at its real positions as they are alone."""
    torch.manual_seed(0)
    extra = {"block_size": 4} if attention == "block-causal" else {}
    m = Transformer(model_preset("tiny", vocab_size=50, attention=attention, **extra))
    m = m.double().eval()
    x = torch.randint(0, 50, (1, 12))
    with torch.no_grad():
        alone = m(x)[0]
        for pad in (4, 8):
            fill = torch.full((1, pad), 7)
            left, right = torch.cat([fill, x], 1), torch.cat([x, fill], 1)
            assert torch.allclose(m(left, attention_mask=torch.arange(12 + pad)[None] >= pad)
                                  [0, pad:], alone)
            assert torch.allclose(m(right, attention_mask=torch.arange(12 + pad)[None] < 12)
                                  [0, :12], alone)
