"""Canvas: prompt forms, left padding, locks, guidance index, constraints, infilling."""

from __future__ import annotations

import pytest
import torch

from unmask.canvas import Canvas, TokenMask
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.sampling import sample

MASK, PAD = 0, 1


def test_from_prompts_left_pads_and_appends_masks():
    c = Canvas.from_prompts([[5, 6, 7], [8]], 4, mask_id=MASK, pad_id=PAD)
    assert c.tokens.tolist() == [[5, 6, 7, 0, 0, 0, 0], [1, 1, 8, 0, 0, 0, 0]]
    assert c.attention_mask.tolist() == [[True] * 7, [False, False] + [True] * 5]
    assert c.region == (3, 7)
    assert c.locked.tolist() == [[True] * 3 + [False] * 4, [True] * 3 + [False] * 4]
    assert c.prompt_index.tolist() == [[True] * 3 + [False] * 4, [False, False, True] + [False] * 4]
    assert c.num_masked().tolist() == [4, 4]


@pytest.mark.parametrize(
    "prompts",
    [[5, 6], torch.tensor([5, 6]), [[5, 6]], torch.tensor([[5, 6]]), [torch.tensor([5, 6])]],
)
def test_prompt_forms(prompts):
    c = Canvas.from_prompts(prompts, 2, mask_id=MASK, pad_id=PAD)
    assert c.tokens.tolist() == [[5, 6, 0, 0]]
    assert c.attention_mask is None  # nothing padded


def test_empty_prompt_and_bad_input():
    c = Canvas.from_prompts([], 3, mask_id=MASK, pad_id=PAD)
    assert c.tokens.tolist() == [[0, 0, 0]] and c.region == (0, 3)
    with pytest.raises(UserError, match="mix"):
        Canvas.from_prompts([[5], 6], 2, mask_id=MASK, pad_id=PAD)
    with pytest.raises(UserError, match="1-D or 2-D"):
        Canvas.from_prompts(torch.zeros(1, 2, 3, dtype=torch.long), 2, mask_id=MASK, pad_id=PAD)


def test_masks_in_prompt_are_open_and_pad_equal_to_mask_stays_locked():
    c = Canvas.from_prompts([[5, MASK, 6], [7]], 2, mask_id=MASK, pad_id=MASK)
    assert c.masked.tolist() == [
        [False, True, False, True, True],
        [False, False, False, True, True],  # padding holds the mask id but is locked
    ]


def test_commit_respects_locks():
    c = Canvas.from_tokens(torch.tensor([[5, MASK, 6, MASK]]), mask_id=MASK)
    c.commit(torch.ones(1, 4, dtype=torch.bool), torch.tensor([[9, 9, 9, 9]]))
    assert c.tokens.tolist() == [[5, 9, 6, 9]]


def test_token_mask_constraint():
    allowed = torch.zeros(3, 5, dtype=torch.bool)
    allowed[:, 2] = True
    allowed[1] = True
    logits = TokenMask(allowed)(torch.zeros(1, 3, 5))
    assert torch.isinf(logits[0, 0, [0, 1, 3, 4]]).all() and logits[0, 0, 2] == 0
    assert torch.isfinite(logits[0, 1]).all()
    with pytest.raises(UserError, match="no allowed token"):
        TokenMask(torch.zeros(2, 5, dtype=torch.bool))


class Prefers:
    """Every position prefers token 7, then 8, then 9."""

    def __call__(self, tokens, attention_mask=None):
        logits = torch.zeros(*tokens.shape, 12)
        logits[..., 7], logits[..., 8], logits[..., 9] = 3.0, 2.0, 1.0
        return logits


def test_infill_template_with_constraints_through_the_same_loop():
    # Masks in the middle of given text; position 3 may only hold 8 or 9.
    tokens = torch.tensor([[5, MASK, 6, MASK, MASK, 4]])
    allowed = torch.ones(6, 12, dtype=torch.bool)
    allowed[3] = False
    allowed[3, [8, 9]] = True
    canvas = Canvas.from_tokens(tokens, mask_id=MASK, constraints=[TokenMask(allowed)])
    r = sample(Prefers(), canvas, SampleConfig(gen_length=6, steps=3), eos_id=None)
    assert r.tokens.tolist() == [[5, 7, 6, 8, 7, 4]]
    assert canvas.tokens.tolist() == tokens.tolist()  # the caller's canvas is untouched
    assert r.nfe == 3


def test_region_and_shape_checks():
    with pytest.raises(UserError, match="region"):
        Canvas.from_tokens(torch.tensor([[5, MASK]]), mask_id=MASK, region=(1, 3))
    with pytest.raises(UserError, match="locked has shape"):
        Canvas(
            tokens=torch.zeros(1, 3, dtype=torch.long),
            mask_id=0,
            locked=torch.zeros(1, 2, dtype=torch.bool),
            prompt_index=torch.zeros(1, 3, dtype=torch.bool),
        )


def test_float_canvas_tokens_are_refused_not_truncated():
    # 0.5 became 0, the mask id: a given token silently turned into a hole
    with pytest.raises(UserError, match="whole numbers"):
        Canvas.from_tokens(torch.tensor([[0.5, 7.0]]), mask_id=MASK)
    assert Canvas.from_tokens([[5, 0]], mask_id=MASK).tokens.dtype == torch.long


def test_token_mask_of_the_wrong_shape_is_one_line():
    canvas = Canvas.from_tokens(
        torch.tensor([[5, 0, 0, 7]]), mask_id=MASK,
        constraints=[TokenMask(torch.ones(3, 16, dtype=torch.bool))],
    )
    model = lambda x, attention_mask=None: torch.zeros(*x.shape, 16)  # noqa: E731
    with pytest.raises(UserError, match=r"shape \(3, 16\); this canvas needs \(4, 16\)"):
        sample(model, canvas, SampleConfig(gen_length=4, steps=2))
    rows = TokenMask(torch.ones(2, 4, 16, dtype=torch.bool))  # two rows for a canvas of one
    with pytest.raises(UserError, match="rows first"):
        rows(torch.zeros(1, 4, 16))
    assert TokenMask(torch.ones(1, 4, 16, dtype=torch.bool))(torch.zeros(3, 4, 16)).shape == (
        3, 4, 16)


@pytest.mark.parametrize("bad", [-1, 48])
def test_ids_outside_the_vocabulary_are_one_line(bad):
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.sampling import generate

    cfg = model_preset("tiny", vocab_size=48, max_seq_len=32)
    model = Transformer(cfg).eval()
    ids = dict(mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=cfg.eos_id)
    with pytest.raises(UserError, match=f"token id {bad} is outside the model's vocabulary"):
        generate(model, [[5, bad]], SampleConfig(gen_length=4, steps=4), **ids)
    canvas = Canvas.from_tokens(torch.tensor([[5, cfg.mask_id, bad]]), mask_id=cfg.mask_id)
    with pytest.raises(UserError, match="outside the model's vocabulary"):
        sample(model, canvas, SampleConfig(gen_length=3, steps=1))


def test_canvas_flags_given_as_ints_act_as_bools():
    """``Canvas(locked=0/1 ints)``: ``~locked`` was -1/-2 and ``masked`` an int tensor, which
    ``commit`` then used as row indices (an IndexError, or writes to the wrong place)."""
    c = Canvas(tokens=torch.tensor([[0, 5, 0]]), mask_id=MASK, locked=torch.tensor([[0, 1, 1]]),
               prompt_index=torch.tensor([[0, 1, 0]]), attention_mask=torch.tensor([[1, 1, 1]]),
               region=(0, 3))
    assert c.masked.tolist() == [[True, False, False]]
    c.commit(torch.ones(1, 3, dtype=torch.bool), torch.tensor([[7, 8, 9]]))
    assert c.tokens.tolist() == [[7, 5, 0]]
    assert c.prompt_index.dtype == c.attention_mask.dtype == torch.bool
    with pytest.raises(UserError, match="whole numbers"):
        Canvas(tokens=torch.tensor([[0.0, 5.0]]), mask_id=MASK,
               locked=torch.zeros(1, 2, dtype=torch.bool), prompt_index=torch.zeros(1, 2))


def test_one_row_canvas_takes_a_one_row_padding_mask():
    """1-D tokens are one row; their 1-D attention mask was refused ("shape (4,), tokens
    (1, 4)") while a 1-D ``locked`` was taken."""
    c = Canvas.from_tokens(torch.tensor([1, 5, 0, 0]), mask_id=MASK,
                           attention_mask=torch.tensor([False, True, True, True]))
    assert c.attention_mask.tolist() == [[False, True, True, True]]
    assert c.locked.tolist() == [[True, True, False, False]]


def test_flags_of_another_shape_are_one_line():
    """A padding mask or locks not of the tokens' shape were torch's broadcast error; a
    (2, L) mask beside one row was refused as the shape of ``locked``."""
    tokens = torch.tensor([[1, 2, MASK, MASK, 3]])
    with pytest.raises(UserError, match=r"attention_mask has shape \(1, 4\), tokens \(1, 5\)"):
        Canvas.from_tokens(tokens, mask_id=MASK, attention_mask=torch.ones(1, 4))
    with pytest.raises(UserError, match=r"attention_mask has shape \(2, 5\)"):
        Canvas.from_tokens(tokens, mask_id=MASK, attention_mask=torch.ones(2, 5))
    with pytest.raises(UserError, match=r"locked has shape \(1, 4\), tokens \(1, 5\)"):
        Canvas.from_tokens(tokens, mask_id=MASK, locked=torch.ones(1, 4, dtype=torch.bool))
    two = Canvas.from_tokens(tokens.repeat(2, 1), mask_id=MASK,
                             locked=[False, True, False, False, False])  # one row for both
    assert two.locked.tolist() == [[False, True, False, False, False]] * 2


@pytest.mark.parametrize("bad", [-1, 2.5, "4", True])
def test_from_prompts_refuses_a_bad_gen_length(bad):
    with pytest.raises(UserError, match="gen_length must be a whole number >= 0"):
        Canvas.from_prompts([[5, 6]], bad, mask_id=MASK, pad_id=PAD)


def test_token_mask_of_numbers_acts_as_bools():
    """0/1 numbers (as the canvas' own flags may be): ``~allowed`` was a TypeError."""
    out = TokenMask(torch.tensor([[1.0, 0.0, 1.0]]))(torch.zeros(1, 1, 3))
    assert out.tolist() == [[[0.0, float("-inf"), 0.0]]]
