"""An empty prompt under the commit loop (``llada``) and ``bd3lm`` starts with the document
separator (EOS), the token every training document follows (``unmask.data``), on every model.

Without it the canvas was all [MASK]: in a model without absolute positions (RoPE only) every
column then has the same hidden state, so the first greedy commit was an exact tie that
kernel rounding decided, and the same greedy request wrote another text beside a longer
prompt in a batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from server_helpers import tiny_config

from unmask.config import SampleConfig
from unmask.facts import ModelFacts
from unmask.model import Transformer
from unmask.sampling import generate
from unmask.sampling.blocks import sample_blocks
from unmask.sampling.loop import Denoiser
from unmask.sampling.protocol import step_together

GREEDY = SampleConfig(gen_length=8, steps=8, temperature=0.0)
LONGER = [5, 6, 7, 8, 9, 10, 11, 12, 13]


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(tiny_config(64)).eval()


def _ids(model: Transformer) -> dict[str, int]:
    c = model.config
    return dict(mask_id=c.mask_id, pad_id=c.pad_id, eos_id=c.eos_id)


def test_an_all_mask_canvas_is_a_tie_the_start_token_breaks(model) -> None:
    """The reason: identical columns give identical logits (up to rounding) without a start
    token (a random tiny model: ~1e-8 apart); after EOS the columns differ (~1e-4)."""
    c = model.config
    with torch.no_grad():
        bare = model(torch.full((1, 8), c.mask_id))
        started = model(torch.tensor([[c.eos_id] + [c.mask_id] * 8]))[:, 1:]
    assert (bare - bare[:, :1]).abs().max() < 1e-6
    assert (started - started[:, :1]).abs().max() > 1e-5


def test_the_empty_prompt_starts_with_eos(model) -> None:
    run = Denoiser.for_prompts(model, [], GREEDY, **_ids(model))
    assert run.x[0, 0].item() == model.config.eos_id
    assert run.result().region == (1, 9)


def test_greedy_empty_prompt_alone_and_in_a_batch_agree(model) -> None:
    """The same greedy request, alone and beside a longer prompt (one padded batch, and runs
    stepped together as the server batches them), writes the same text: the prompt [EOS]'s."""
    ids = _ids(model)
    alone = generate(model, [], GREEDY, **ids).gen_ids[0]
    assert alone == generate(model, [model.config.eos_id], GREEDY, **ids).gen_ids[0]
    assert generate(model, [[], LONGER], GREEDY, **ids).gen_ids[0] == alone
    runs = [Denoiser.for_prompts(model, [LONGER], dataclasses.replace(GREEDY, gen_length=24,
                                                                       steps=24), **ids),
            Denoiser.for_prompts(model, [[]], GREEDY, **ids)]
    empty = runs[1]
    while runs:
        step_together(runs)
        runs = [r for r in runs if not r.done]
    assert empty.result().gen_ids[0] == alone


def test_block_diffusion_starts_an_empty_prompt_too() -> None:
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(64), attention="block-causal", block_size=4,
                                 objective="bd3lm")
    m = Transformer(config).eval()
    ids = _ids(m)
    config = SampleConfig(gen_length=8, steps=8, temperature=0.0)
    alone = sample_blocks(m, [], config, **ids).gen_ids[0]
    assert alone == sample_blocks(m, [m.config.eos_id], config, **ids).gen_ids[0]
    assert sample_blocks(m, [[], LONGER[:3]], config, **ids).gen_ids[0] == alone


@pytest.mark.parametrize("decoder", ["llada", "bd3lm", "ar", "hybrid", "speculative"])
def test_the_room_checks_count_the_start_token(model, decoder) -> None:
    facts = ModelFacts.of(model.config)
    assert facts.prompt_columns(0, decoder) == 1
    assert facts.prompt_columns(5, decoder) == 5
    assert facts.prompt_columns(0, "sedd") == 0  # SEDD's sampler takes the canvas as it is
