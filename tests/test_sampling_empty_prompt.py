"""An empty prompt, here on a Dream-style (``logit_shift``) model: the commit loop and block
decoding give it a start token, as the autoregressive decoders do (on every model:
tests/test_loopaudit_empty_start.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from unmask.config import SampleConfig
from unmask.sampling import generate
from unmask.sampling.blocks import sample_blocks

MASK, PAD, EOS, V = 0, 1, 2, 16
IDS = dict(mask_id=MASK, pad_id=PAD, eos_id=EOS)


class NextToken:
    """A next-token predictor (Dream's convention: the logits at i are for token i + 1): after
    a real token t it predicts t + 1 (mod 13, from 3) surely; after [MASK] or padding, 9
    hesitantly. Position 0 of a canvas without a prompt so reads a mask."""

    def __init__(self, shift: bool = True, **config) -> None:
        self.config = SimpleNamespace(logit_shift=shift, **config)

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        B, L = tokens.shape
        logits = torch.zeros(B, L, V, dtype=torch.float64)
        real = (tokens != MASK) & (tokens != PAD)
        if attention_mask is not None:
            real &= attention_mask.bool()
        nxt = 3 + (tokens - 2) % 13
        logits[..., 9] = 1.0
        logits.scatter_(2, nxt.unsqueeze(-1), torch.where(real, 9.0, 0.0).double().unsqueeze(-1))
        return logits  # (B, L, V)


def test_an_empty_prompt_starts_with_the_separator():
    """The first token was committed from position 0's own logits (the prediction for token
    1): 9, 10, 11 after no prompt. With the separator (EOS, as lm-eval's prefix) it reads
    EOS's prediction: the same as the prompt [EOS] gives."""
    config = SampleConfig(gen_length=3, steps=3)
    empty = generate(NextToken(), [], config, **IDS)
    assert empty.gen_ids == generate(NextToken(), [EOS], config, **IDS).gen_ids == [[3, 4, 5]]
    assert empty.tokens.shape == (1, 4) and empty.region == (1, 4)
    # a batch: the empty row as alone (it read the padding's logits before)
    batch = generate(NextToken(), [[], [5, 6]], config, **IDS)
    assert batch.gen_ids == [[3, 4, 5], [7, 8, 9]]
    # a model without the shift is given it too (an all-[MASK] canvas is an exact tie on a
    # RoPE model: tests/test_loopaudit_empty_start.py)
    plain = generate(NextToken(shift=False), [], config, **IDS)
    assert plain.tokens.shape == (1, 4) and plain.tokens[0, 0] == EOS
    # no EOS: the pad id separates, as in lm-eval
    assert generate(NextToken(), [], config, mask_id=MASK, pad_id=4, eos_id=None).gen_ids == [
        [5, 6, 7]]


def test_guidance_does_not_blank_the_start_token():
    """The start token is no condition: the unconditional pass keeps it (blanking it would
    make that pass read a mask where the conditional one reads the separator), and a given
    prompt is blanked as before."""
    from unmask.sampling.loop import Denoiser

    guided = SampleConfig(gen_length=3, steps=3, cfg_scale=2.0)
    run = Denoiser.for_prompts(NextToken(), [[], [5, 6]], guided, **IDS)
    tokens, _ = run.model_inputs()  # (2B, L): conditional rows, then unconditional
    assert tokens[2].tolist() == [PAD, EOS, MASK, MASK, MASK]  # the start token kept
    assert tokens[3].tolist() == [MASK, MASK, MASK, MASK, MASK]  # the prompt blanked
    want = generate(NextToken(), [], SampleConfig(gen_length=3, steps=3), **IDS).gen_ids
    assert generate(NextToken(), [], guided, **IDS).gen_ids == want == [[3, 4, 5]]


@pytest.mark.parametrize("prompts", [[], [[], [5, 6, 7, 8]]])
def test_block_decoding_gives_an_empty_prompt_the_separator(prompts):
    model = NextToken(attention="block-causal", block_size=2)
    config = SampleConfig(gen_length=4, steps=4)
    r = sample_blocks(model, prompts, config, block_size=2, **IDS)
    assert r.gen_ids[0] == [3, 4, 5, 6]  # EOS's prediction, then on
    assert r.gen_ids[0] == sample_blocks(model, [EOS], config, block_size=2, **IDS).gen_ids[0]
