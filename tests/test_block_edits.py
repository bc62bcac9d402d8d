"""Token-to-token editing of the block decoder (LLaDA 2.1, ``SampleConfig.edit_threshold``)
reads only the current block's columns of the step's logits: the guidance merge, the token
bans and the softmax over V ran again over the whole canvas (prompt and finished blocks
included) after the step's commits had processed it. Same seed, same tokens as the
whole-canvas reference below (the edit logits of before, over the whole canvas; the step
around them is ``BlockRun``'s own)."""

from __future__ import annotations

import types

import pytest
import torch

from unmask.canvas import CanvasConstraint
from unmask.config import SampleConfig
from unmask.sampling import blocks
from unmask.sampling.blocks import BlockRun, edit_step
from unmask.sampling.penalties import PenaltyConstraint


class WholeCanvasEdits(BlockRun):
    """``BlockRun`` with the edits of before: every column of the canvas processed again."""

    @staticmethod
    def _edit_logits(inner, logits):
        if inner.config.cfg_scale > 0:
            cond, un = torch.chunk(logits, 2, dim=0)
            logits = un + (inner.config.cfg_scale + 1) * (cond - un)
        for proc in inner.canvas.constraints:
            if isinstance(proc, CanvasConstraint):
                if not isinstance(proc, PenaltyConstraint):
                    logits = proc.apply(logits, inner.x)
            else:
                logits = proc(logits)
        return logits

    def _edit(self, inner, logits, tokens, editable):
        return edit_step(self._edit_logits(inner, logits), tokens, editable,
                         self.edit_threshold, self.mask_id)  # fmt: skip


class Restless:
    """A block-causal mask predictor whose logits at each column are a fixed random row picked
    by the whole canvas and the column: every commit changes them, so committed tokens often
    stop being the argmax and edits happen (a random ``Transformer`` predicts its own input at
    a committed position, and never edits)."""

    def __init__(self, absolute: bool, vocab: int = 40) -> None:
        self.config = types.SimpleNamespace(
            attention="block-causal", block_size=4, max_seq_len=96, mask_id=0, pad_id=1,
            eos_id=2, block_align="absolute" if absolute else "pad")
        self.table = 4 * torch.randn(97, vocab, generator=torch.Generator().manual_seed(0))

    def __call__(self, x: torch.Tensor, **_: object) -> torch.Tensor:
        key = x.sum(dim=1, keepdim=True) * 7 + torch.arange(x.shape[1])  # (B, L)
        return self.table[key % self.table.shape[0]]  # (B, L, V)


def _run(cls, model, prompts, config):
    cfg = model.config
    run = cls(model, prompts, config, mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=cfg.eos_id,
              return_history=True)
    while not run.done:
        run.advance()
    return run.result()


@pytest.mark.parametrize("absolute", [False, True])
@pytest.mark.parametrize("options", [
    {},
    {"temperature": 0.9, "seed": 3},
    {"cfg_scale": 1.5, "temperature": 0.7, "seed": 5},
    {"repetition_penalty": 1.4, "no_repeat_ngram_size": 2, "forbid_eos": True, "seed": 7,
     "temperature": 0.5},
    {"cfg_scale": 0.5, "policy": "threshold", "threshold": 0.3, "max_post_steps": 4},
])  # fmt: skip
def test_block_edits_read_only_the_block_and_decode_the_same_tokens(absolute, options,
                                                                    monkeypatch) -> None:
    model = Restless(absolute)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]]  # equal tails (absolute)
    config = SampleConfig(**{"gen_length": 12, "steps": 12, "edit_threshold": 0.0,
                             "max_post_steps": 2, **options})
    edits, real = [], blocks.edit_step

    def counted(logits, tokens, editable, threshold, mask_id):
        out = real(logits, tokens, editable, threshold, mask_id)
        edits.append((int(out.sum()), logits.shape[1]))
        return out

    monkeypatch.setattr(blocks, "edit_step", counted)
    new = _run(BlockRun, model, prompts, config)
    read = {n for _, n in edits}
    monkeypatch.undo()
    old = _run(WholeCanvasEdits, model, prompts, config)
    assert torch.equal(new.tokens, old.tokens)
    assert (new.nfe, new.steps, new.region) == (old.nfe, old.steps, old.region)
    assert len(new.history) == len(old.history)
    assert all(torch.equal(a, b) for a, b in zip(new.history, old.history, strict=True))
    assert sum(n for n, _ in edits) > 0  # tokens were edited
    assert max(read) <= 4 < new.tokens.shape[1]  # a block's columns, not the canvas
