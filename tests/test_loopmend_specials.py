"""The commit loop and block diffusion never commit a special token but EOS: an untrained
model wrote [PAD] and BOS (and, under bd3lm, [EMPTY]), none of them ever a training target.
The rule is the sedd and continuous decoders' ``banned_ids``; an infilled gap keeps [EMPTY]."""

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from unmask.canvas import Canvas
from unmask.config import SampleConfig, model_preset
from unmask.model import Transformer
from unmask.sampling.blocks import sample_blocks
from unmask.sampling.loop import commit_bans, generate, sample

BANNED = [0, 1, 3, 4, 9, 10, 11]  # [MASK], [PAD], BOS, [EMPTY], the FIM sentinels


def _model(**overrides):
    cfg = replace(model_preset("tiny", vocab_size=16, max_seq_len=40), empty_id=4,
                  fim_prefix_id=9, fim_suffix_id=10, fim_middle_id=11, **overrides)
    torch.manual_seed(0)
    return Transformer(cfg).eval(), cfg


def _made(res):
    return res.tokens[:, res.region[0]:res.region[1]]


def test_the_commit_bans_are_the_banned_ids_and_mask_but_empty():
    _, cfg = _model()
    assert commit_bans(cfg, cfg.mask_id) == [0, 1, 3, 9, 10, 11]  # EOS (2), [EMPTY] (4) not
    assert commit_bans(None, 7) == [7]  # a plain callable: [MASK] alone


@pytest.mark.parametrize("policy", ["llada", "threshold"])
def test_free_generation_never_writes_a_special_token(policy):
    model, cfg = _model()
    for temperature in (0.0, 1.0):
        config = SampleConfig(gen_length=8, steps=8, seed=0, temperature=temperature,
                              policy=policy)
        res = generate(model, [[5, 6]] * 64, config, mask_id=cfg.mask_id, pad_id=cfg.pad_id,
                       eos_id=cfg.eos_id)
        made = _made(res)
        assert not torch.isin(made, torch.tensor(BANNED)).any()  # before: [PAD], BOS
    assert (made == cfg.eos_id).any()  # EOS still ends a text


@pytest.mark.parametrize("edit_threshold", [None, 0.0])
def test_block_diffusion_never_writes_a_special_token(edit_threshold):
    model, cfg = _model(attention="block-causal", block_size=4)
    config = SampleConfig(decoder="bd3lm", gen_length=8, steps=8, seed=0, temperature=1.0,
                          edit_threshold=edit_threshold)
    res = sample_blocks(model, [[5, 6]] * 64, config, mask_id=cfg.mask_id, pad_id=cfg.pad_id,
                        eos_id=cfg.eos_id)
    made = _made(res)
    assert not torch.isin(made, torch.tensor(BANNED)).any()  # before: [PAD], BOS, [EMPTY]
    assert (made == cfg.eos_id).any()


def test_masks_inside_a_text_are_filled_with_ordinary_tokens_or_empty():
    """An infill canvas (masks between text, the path of ``unmask.infill``): no [PAD], BOS or
    sentinel, but [EMPTY] stays allowed (the gap constraint decides where it may stand)."""
    model, cfg = _model()
    row = [5, 6, 0, 0, 0, 0, 7, 8, 0, 0, 5]
    canvas = Canvas.from_tokens(torch.tensor([row] * 64), mask_id=cfg.mask_id)
    res = sample(model, canvas, SampleConfig(gen_length=len(row), steps=6, seed=0,
                                             temperature=1.0), split=True)
    assert not torch.isin(res.tokens, torch.tensor([0, 1, 3, 9, 10, 11])).any()
    assert (res.tokens == 4).any()  # [EMPTY]: the filler of an infilled gap


def test_the_ban_comes_before_the_confidences():
    """Column 0 ranks [PAD] first, then token 5 (probability 1/2 among the allowed ones);
    column 1 ranks token 6 at 0.9. Confidence over the allowed tokens commits column 1 first
    (before: [PAD]'s confidence near 1 won, and the column then held it)."""
    V = 8
    cfg = SimpleNamespace(mask_id=0, pad_id=1, eos_id=2, bos_id=3, vocab_size=V)

    def model(tokens, attention_mask=None):
        B, L = tokens.shape
        logits = torch.full((B, L, V), -30.0)
        logits[:, 0, 1], logits[:, 0, 5], logits[:, 0, 7] = 20.0, 0.0, 0.0  # [PAD], 5, 7
        logits[:, 1, 6], logits[:, 1, 7] = 2.2, 0.0  # 6 at 0.9
        return logits

    model.config = cfg  # type: ignore[attr-defined]
    canvas = Canvas.from_tokens(torch.zeros(1, 2, dtype=torch.long), mask_id=0)
    res = sample(model, canvas, SampleConfig(gen_length=2, steps=2), return_history=True)
    assert res.history is not None
    assert res.history[0].tolist() == [[0, 6]]  # column 1 first
    assert res.tokens[0, 0].item() in (5, 7)
