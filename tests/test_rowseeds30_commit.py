"""Seeded rows of the masked-diffusion commit loop in one batched run.

With a seed and a run that draws random numbers, every row of ``api.generate``, the server
and the task scorer (``api.run_rows``) is seeded on its own (``api.row_seeds``). The
``llada`` decoder drew from one generator per run, so such rows ran one run each (stepped
together, one forward per step, but the noise, policies and bookkeeping a row at a time):
about 1.6 times the batch's time at temperature 1. Now its run takes a generator per row
(``Denoiser(generator=[...])``, ``LLaDADecoder.row_seeds``): row i of a batch draws the Gumbel
noise and random remasking scores of the shapes it draws alone (its own canvas, without the
left padding), and draws nothing in a step its run alone would not take (its dynamic
block is done; an empty step it skips), so the batch writes, token for token, what each
row writes alone."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.sampling.ar import row_generators
from unmask.sampling.loop import Denoiser, generate
from unmask.sampling.policies import POLICIES, register_policy
from unmask.sampling.protocol import make_generator

V, MASK, PAD, EOS = 40, 0, 1, 2


@contextlib.contextmanager
def counted_forwards(model: torch.nn.Module) -> Iterator[list[int]]:
    """A list that grows by one per forward of ``model`` while inside (a run's calls)."""
    calls: list[int] = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        yield calls
    finally:
        hook.remove()


class RowHashed:
    """Logits of a row drawn from a generator seeded by the row's own tokens (left padding
    ignored), so a row's logits never depend on the other rows (bit for bit)."""

    def __init__(self) -> None:
        self.config = SimpleNamespace(vocab_size=V)

    def __call__(self, tokens: torch.Tensor, attention_mask: object = None) -> torch.Tensor:
        out = []
        for row in tokens:
            r = row[row != PAD]
            g = torch.Generator().manual_seed(int((r * torch.arange(1, len(r) + 1)).sum()))
            x = 2 * torch.randn(len(r), V, generator=g, dtype=torch.float64)
            out.append(torch.cat([torch.zeros(len(row) - len(r), V, dtype=torch.float64), x]))
        return torch.stack(out)


PROMPTS = [[5, 6, MASK, MASK, 7], [9], [], [11, 12, 13, 14, 15, 16, 17], [5, 6, MASK, MASK, 7]]
SEEDS = [3, 4, 5, 99, 4]

CONFIGS = [
    {"temperature": 1.0, "steps": 8, "block_length": 4},
    {"temperature": 0.7, "steps": 16, "remasking": "random"},
    {"temperature": 1.0, "steps": 32, "block_length": 8, "skip_empty_steps": True},
    {"temperature": 1.0, "steps": 4, "block_length": 8, "policy": "threshold",
     "threshold": 0.5},
    {"temperature": 0.8, "steps": 16, "block_length": 4, "policy": "entropy",
     "entropy_bound": 0.5, "prompt_masks": "reference"},
    {"temperature": 1.0, "steps": 6, "block_length": 8, "policy": "factor", "factor": 0.5,
     "confidence": "margin"},
    {"temperature": 1.0, "steps": 8, "cfg_scale": 1.5},
    {"temperature": 1.0, "steps": 16, "repetition_penalty": 1.5, "no_repeat_ngram_size": 2,
     "forbid_eos": True},
]


@pytest.mark.parametrize("options", CONFIGS)
def test_a_batch_of_seeded_rows_writes_what_each_row_writes_alone(options):
    """Ragged prompts (one empty, two holding [MASK]s, one repeated under another seed),
    the scheduled and the dynamic policies (rows whose blocks end at other steps), random
    remasking, empty steps skipped, guidance and penalties: row i of the batch = the row
    alone under ``seeds[i]``, token for token, and its generator ends in the same state."""
    model = RowHashed()
    config = SampleConfig(gen_length=16, **options)
    kw = {"mask_id": MASK, "pad_id": PAD, "eos_id": EOS}
    gens = row_generators(SEEDS)
    batch = generate(model, PROMPTS, config, generator=gens, **kw)
    for i, (prompt, seed) in enumerate(zip(PROMPTS, SEEDS, strict=True)):
        g = make_generator(seed)
        alone = generate(model, [prompt], config, generator=g, **kw)
        assert batch.gen_ids[i] == alone.gen_ids[0], i
        assert batch.prompt_ids[i] == alone.prompt_ids[0], i  # prompt masks filled alike
        assert torch.equal(gens[i].get_state(), g.get_state()), i
    assert batch.gen_ids[1] != batch.gen_ids[4] or batch.gen_ids[0] != batch.gen_ids[4]


def test_rows_whose_blocks_end_early_draw_nothing_while_they_wait():
    """A dynamic policy: the row of few masks fills its block in fewer steps than the row
    beside it, which holds [MASK]s in its prompt; while it waits for the batch it must not
    draw (alone it has moved on), or its next block would take other noise."""
    model = RowHashed()
    config = SampleConfig(gen_length=16, steps=16, block_length=8, policy="threshold",
                          threshold=0.9, temperature=1.0)
    prompts = [[5] + [MASK] * 8 + [6], [9, 10]]
    kw = {"mask_id": MASK, "pad_id": PAD, "eos_id": EOS}
    steps = [generate(model, [p], config, generator=make_generator(1), **kw).steps
             for p in prompts]
    assert steps[0] > steps[1]  # the second row alone takes fewer steps
    batch = generate(model, prompts, config, generator=row_generators([1, 1]), **kw)
    for i, p in enumerate(prompts):
        assert batch.gen_ids[i] == generate(model, [p], config, generator=make_generator(1),
                                            **kw).gen_ids[0]


def test_a_registered_policy_keeps_a_run_per_row():
    """A registered commit policy may compare rows: its seeded rows stay runs of their own
    (one line where a generator per row is given)."""
    from unmask.sampling.loop import LLaDADecoder

    register_policy("rows_test")(lambda config: POLICIES["llada"](config))
    try:
        config = SampleConfig(gen_length=8, steps=8, temperature=1.0, policy="rows_test")
        assert not LLaDADecoder().takes_seeds(config)
        assert LLaDADecoder().takes_seeds(SampleConfig(gen_length=8, temperature=1.0))
        with pytest.raises(UserError, match="one generator per run"):
            Denoiser.for_prompts(RowHashed(), [[5], [6]], config, mask_id=MASK, pad_id=PAD,
                                 eos_id=EOS, generator=row_generators([1, 2]))
    finally:
        del POLICIES["rows_test"]


@pytest.fixture(scope="module")
def mdlm(tmp_path_factory):
    from test_seeds_rows import _checkpoint

    from unmask import api

    return api.load_for_decoding(_checkpoint(tmp_path_factory.mktemp("mdlm")), device="cpu",
                                 dtype="fp32")


@pytest.mark.parametrize("options", [
    {"temperature": 1.0},
    {"temperature": 0.8, "block_length": 4, "steps": 8, "remasking": "random"},
    {"temperature": 1.0, "block_length": 8, "steps": 8, "policy": "threshold",
     "threshold": 0.3},
    {"temperature": 1.0, "block_length": 4, "steps": 8, "cache": "prefix"},
    {"temperature": 1.0, "block_length": 4, "steps": 8, "cache": "dual"},
])
def test_generate_runs_seeded_mdlm_rows_as_one_batch(mdlm, options):
    """``api.generate`` with a seed, several prompts and ``n`` 2 on an ``mdlm`` checkpoint:
    one run (its forwards are one run's, not one per row: a KV cache made them a run after
    another), and every row's text is its prompt's alone under seed + choice."""
    from unmask import api

    prompts = ["ab", "The cat sat", "", "In the beginning"]
    config = {"gen_length": 16, "seed": 5, **options}
    with counted_forwards(mdlm.model) as calls:
        out = api.generate(mdlm, prompts, config=config, n=2)
        batched = len(calls)
        alone = [api.generate(mdlm, p, config={**config, "seed": 5 + j})
                 for p in prompts for j in range(2)]
    assert out.decoder == "llada"
    assert api.seeds_in_one_run(mdlm, config)
    assert out.ids == [a.ids[0] for a in alone]
    assert batched == out.nfe == max(a.nfe for a in alone)  # one run's forwards
    assert len(set(map(tuple, out.ids))) > 1


def test_run_rows_runs_seeded_mdlm_rows_as_one_batch(mdlm):
    """``api.run_rows`` (the task scorer's ``decode_each``) under a KV cache, which ran the
    rows one run after another: one run's forwards for all rows, each row its own seed's
    text alone."""
    from unmask import api
    from unmask.config import SampleConfig

    rows = [mdlm.tokenizer.encode(p) for p in ["x", "And God said,", "ab"]]
    config = SampleConfig(gen_length=8, steps=8, block_length=4, temperature=1.0,
                          cache="prefix")
    with counted_forwards(mdlm.model) as calls:
        result, _ = api.run_rows(mdlm, rows, config, [7, 8, 7])
    assert len(calls) == result.nfe == 8  # a run per row: 24
    for i, (row, seed) in enumerate(zip(rows, [7, 8, 7], strict=True)):
        alone, _ = api.run_rows(mdlm, [row], config, [seed])
        assert result.gen_ids[i] == alone.gen_ids[0], i
