"""A diffusion teacher's trajectories record what follows a row's first generated EOS as never
committed (step G, masked in every training state), as a block decoder's stop leaves it: the
``llada`` commit loop fills an ended row with EOS at once, filler the teacher never chose."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from corpus_helpers import word_corpus

from unmask.checkpoint import load
from unmask.config import SampleConfig, TrainConfig
from unmask.distill import decode_batch
from unmask.train import train

WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
P, G, AT = 6, 8, 2  # prompt, generation, where the teacher is made to write EOS


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eos_teacher")
    corpus = word_corpus(root, WORDS, lines=200, seed=0)
    cfg = TrainConfig(
        data=str(corpus), out=str(root / "run"), preset="tiny", seq_len=16, batch_size=4,
        steps=3, warmup=1, lr=1e-3, eval_every=0, eval_batches=1, save_every=0, seed=1,
    )  # fmt: skip
    train(cfg)
    return root / "run"


class _EosAt(torch.nn.Module):
    """The teacher with its argmax made EOS at canvas ``column``, whatever the canvas holds
    (whole logits: no separate head for the decoder to run on fewer columns)."""

    def __init__(self, inner: torch.nn.Module, column: int) -> None:
        super().__init__()
        self.inner, self.config, self.column = inner, inner.config, column

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: object) -> torch.Tensor:
        out = self.inner(tokens, attention_mask=attention_mask)
        logits = getattr(out, "logits", out).clone()
        assert logits.shape[1] == P + G
        logits[:, self.column, self.config.eos_id] += 1e4
        return logits


@pytest.mark.parametrize("block", [4, 8])
def test_positions_after_the_first_eos_are_never_committed(teacher, block):
    loaded = load(teacher)
    loaded = replace(loaded, model=_EosAt(loaded.model, P + AT))
    eos = loaded.model.config.eos_id
    prompts = torch.randint(3, 10, (3, P), generator=torch.Generator().manual_seed(0))
    config = SampleConfig(gen_length=G, steps=G, block_length=block, temperature=0.0)
    tokens, steps = decode_batch(loaded, prompts, config)
    assert (tokens[:, P + AT] == eos).all() and (tokens[:, P + AT + 1 :] == eos).all()
    assert (steps[:, :P] == -1).all()
    assert (steps[:, P + AT + 1 :] == G).all()  # filler: masked in every state
    kept = steps[:, P : P + AT + 1]  # the teacher's own commits, the EOS included
    assert ((kept >= 0) & (kept < G)).all()
    for row in kept:
        assert len(set(row.tolist())) == AT + 1  # one token per step
