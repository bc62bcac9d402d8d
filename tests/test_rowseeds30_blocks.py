"""Seeded rows of block diffusion (``bd3lm``) in one batched run.

``bd3lm`` drew from one generator per run, so seeded rows of ``api.generate``, the server and
the task scorer (``api.run_rows``) ran one run each, one after another. Now its run takes a
generator per row (``BlockRun(generator=[...])``, ``BD3LMDecoder.row_seeds``): each block's
commit loop draws for row i over the canvas its run alone has (the prompt padded to whole
blocks of its own length, not the batch's longest), and a row past EOS, whose run alone has
ended, draws nothing more, so the batch writes, token for token, what each row writes alone
(then EOS, where the batch runs on)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from test_rowseeds30_commit import counted_forwards

from unmask.config import SampleConfig
from unmask.sampling.ar import row_generators
from unmask.sampling.blocks import BD3LMDecoder, BlockRun
from unmask.sampling.protocol import make_generator

V, MASK, PAD, EOS = 40, 0, 1, 2


class RowHashedBlocks:
    """A "block-causal" model whose logits of a row come from a generator seeded by the
    row's own tokens (left padding ignored; EOS favoured, so rows end at other blocks)."""

    def __init__(self, absolute: bool = False) -> None:
        self.config = SimpleNamespace(vocab_size=V, attention="block-causal", block_size=4,
                                      pad_id=PAD, mask_id=MASK, eos_id=EOS,
                                      block_align="absolute" if absolute else "pad")

    def __call__(self, tokens: torch.Tensor, attention_mask: object = None) -> torch.Tensor:
        out = []
        for row in tokens:
            r = row[row != PAD]
            g = torch.Generator().manual_seed(int((r * torch.arange(1, len(r) + 1)).sum()))
            x = 2 * torch.randn(len(r), V, generator=g, dtype=torch.float64)
            x[:, EOS] += 1.0
            out.append(torch.cat([torch.zeros(len(row) - len(r), V, dtype=torch.float64), x]))
        return torch.stack(out)


PROMPTS = [[5, 6, MASK, 7], [9], [], [11, 12, 13, 14, 15, 16, 17], [9], [20, 21, 22, 23, 24]]
SEEDS = [3, 4, 5, 99, 8, 6]


@pytest.mark.parametrize("options", [
    {"temperature": 1.0, "steps": 16},
    {"temperature": 0.8, "steps": 8, "remasking": "random"},
    {"temperature": 1.0, "steps": 16, "policy": "threshold", "threshold": 0.4},
    {"temperature": 1.0, "steps": 32, "skip_empty_steps": True},
    {"temperature": 1.0, "steps": 16, "edit_threshold": 0.3, "max_post_steps": 2},
    {"temperature": 1.0, "steps": 16, "cfg_scale": 1.0, "repetition_penalty": 1.3},
    # editing runs the model in a step of no scheduled commits, skip_empty_steps or not
    {"temperature": 0.5, "steps": 32, "skip_empty_steps": True, "edit_threshold": 0.3},
])
def test_a_batch_of_seeded_rows_writes_what_each_row_writes_alone(options):
    """Ragged prompts (whole blocks of other counts, one empty, one holding [MASK]), rows
    that end at EOS after other blocks, the scheduled and a dynamic policy, random
    remasking, skipped empty steps, token editing, guidance and penalties: row i of the batch
    = the row alone under ``seeds[i]`` (then EOS), and its generator ends in the same state."""
    model = RowHashedBlocks()
    config = SampleConfig(gen_length=16, **options)
    kw = {"mask_id": MASK, "pad_id": PAD, "eos_id": EOS}
    gens = row_generators(SEEDS)
    batch = BlockRun(model, PROMPTS, config, generator=gens, **kw).run()
    widths = []
    for i, (prompt, seed) in enumerate(zip(PROMPTS, SEEDS, strict=True)):
        g = make_generator(seed)
        alone = BlockRun(model, [prompt], config, generator=g, **kw).run()
        width = len(alone.gen_ids[0])
        assert batch.gen_ids[i][:width] == alone.gen_ids[0], i
        assert set(batch.gen_ids[i][width:]) <= {EOS}, i
        assert batch.prompt_ids[i] == alone.prompt_ids[0], i
        assert torch.equal(gens[i].get_state(), g.get_state()), i
        widths.append(width)
    assert min(widths) < max(widths)  # rows ended after other blocks, the batch ran on
    assert batch.gen_ids[1] != batch.gen_ids[4]  # the same prompt, other seeds


def test_absolute_blocks_draw_as_alone():
    """LLaDA 2.x's blocks counted from the first prompt token (equal lengths modulo the
    block size, left-padded by whole blocks): the same, row for row."""
    model = RowHashedBlocks(absolute=True)
    prompts, seeds = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [16, 17, 18]], [1, 2, 3]
    config = SampleConfig(gen_length=13, steps=16, temperature=1.0)
    kw = {"mask_id": MASK, "pad_id": PAD, "eos_id": EOS}
    batch = BlockRun(model, prompts, config, generator=row_generators(seeds), **kw).run()
    for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
        alone = BlockRun(model, [prompt], config, generator=make_generator(seed), **kw).run()
        width = len(alone.gen_ids[0])
        assert batch.gen_ids[i][:width] == alone.gen_ids[0], i


def test_token_editing_under_a_dynamic_policy_shares_a_run():
    """A row whose block is filled edited while it waited for the batch's, so those seeded
    rows were runs of their own; it now takes its edit-only steps as alone and waits
    unchanged (tests/test_sampling33_edits.py), so they share one."""
    d = BD3LMDecoder()
    assert d.takes_seeds(SampleConfig(gen_length=8, temperature=1.0, edit_threshold=0.5))
    assert d.takes_seeds(SampleConfig(gen_length=8, policy="threshold"))
    assert d.takes_seeds(SampleConfig(gen_length=8, policy="threshold", edit_threshold=0.5))


def test_generate_runs_seeded_bd3lm_rows_as_one_batch(tmp_path):
    """``api.generate`` with a seed, prompts of other block counts and ``n`` 2 on a ``bd3lm``
    checkpoint under the prefix cache: one run (a run per row made about 8 times the
    forwards), each row's text its prompt's alone under seed + choice."""
    from test_seeds_rows import _checkpoint

    from unmask import api

    m = api.load_for_decoding(_checkpoint(tmp_path, objective="bd3lm",
                                          attention="block-causal", block_size=4),
                              device="cpu", dtype="fp32")
    prompts = ["ab", "The cat sat", "", "In the"]
    config = {"gen_length": 12, "steps": 12, "temperature": 1.0, "seed": 5, "cache": "prefix"}
    with counted_forwards(m.model) as calls:
        out = api.generate(m, prompts, config=config, n=2)
        batched = len(calls)
    assert out.decoder == "bd3lm"
    assert batched == out.nfe <= 12 + 3  # a cached call a step, a prefix a block
    for k, p in enumerate(prompts):
        for j in range(2):
            alone = api.generate(m, p, config={**config, "seed": 5 + j})
            assert alone.texts == [out.texts[k * 2 + j]], (p, j)
