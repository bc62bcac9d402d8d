"""A block of the commit loop that starts with no mask before its end (an infill template's text
between two gaps, under ``block_length``) takes no step: no policy can commit anything there,
and the ``llada`` schedule ran its share of forwards for nothing (3 of every 4 below)."""

from __future__ import annotations

import torch

from unmask.canvas import Canvas
from unmask.config import SampleConfig, model_preset
from unmask.model import Transformer
from unmask.sampling import sample
from unmask.sampling.ar import row_generators
from unmask.sampling.loop import Denoiser


def _model(std: float = 0.5) -> Transformer:
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=32, max_seq_len=32, init_std=std)
    return Transformer(cfg).double().eval()


def _canvas(rows: list[list[int]], mask_id: int) -> Canvas:
    return Canvas.from_tokens(torch.tensor(rows), mask_id=mask_id)


class Counted:
    """``model`` as a plain callable that counts its calls."""

    def __init__(self, model: Transformer) -> None:
        self.model, self.calls = model, 0

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        self.calls += 1
        return self.model(tokens, attention_mask=attention_mask)


def test_a_block_with_no_mask_takes_no_forward():
    m = _model()
    M = m.config.mask_id
    # blocks of 4: masks in the first and the last, text in the two between
    rows = [[M, M, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, M, M]]
    for policy in ("llada", "threshold"):
        config = SampleConfig(gen_length=16, steps=16, block_length=4, policy=policy)
        model = Counted(m)
        r = sample(model, _canvas(rows, M), config)
        skipped = sample(m, _canvas(rows, M), SampleConfig(
            gen_length=16, steps=16, block_length=4, policy=policy, skip_empty_steps=True))
        assert r.tokens.tolist() == skipped.tokens.tolist()  # the same text
        assert M not in r.tokens.tolist()[0]
        # llada: 4 steps a block, 2 of them commit in each block with masks; the two text
        # blocks took 8 forwards that committed nothing
        assert model.calls == r.nfe == (8 if policy == "llada" else 4), (policy, r.nfe)
        assert r.steps == r.nfe


def test_a_row_alone_with_no_mask_in_a_block_draws_as_in_the_batch():
    """Seeded rows (a generator each): a row whose block holds no mask skips it alone, so in
    a batch beside a row that has work there it draws nothing in that block either (flat
    logits: its later tokens follow the draws)."""
    m = _model(std=0.02)
    M = m.config.mask_id
    rows = [[M, M, 5, 6, 7, 8, M, M, M, M], [M, M, M, 9, M, M, M, M, M, M]]
    config = SampleConfig(gen_length=10, steps=10, block_length=2, temperature=1.0)
    batch = Denoiser(m, _canvas(rows, M), config, generator=row_generators([3, 4])).run()
    for i, row in enumerate(rows):
        alone = Denoiser(m, _canvas([row], M), config,
                         generator=row_generators([3 + i])).run()
        assert alone.tokens.tolist()[0] == batch.tokens.tolist()[i], i


def test_topk_per_row_with_a_host_bound_picks_the_same_columns():
    """``LLaDAPolicy`` passes its per-step bound on k (host counts: no device read a step):
    any bound at or above the largest k, up to past the row's width, picks what k alone
    picks, ties in column order, NaN first, -inf (no candidate) never."""
    from unmask.sampling.policies import topk_per_row

    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        conf = torch.randint(0, 4, (3, 9), generator=g).double() / 4  # many exact ties
        conf[torch.rand(3, 9, generator=g) < 0.2] = float("-inf")
        if torch.rand(1, generator=g) < 0.3:
            conf[0, 4] = float("nan")
        k = torch.randint(0, 5, (3,), generator=g)
        want = topk_per_row(conf, k)
        for extra in (0, 2, 20):
            assert torch.equal(topk_per_row(conf, k, int(k.max()) + extra), want)
