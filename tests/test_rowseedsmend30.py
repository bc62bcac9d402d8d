"""Rows of a batch write what they write alone where the batch used to differ.

- Exact ties of confidence (two columns of the same confidence, as two probabilities of
  exactly 1.0): ``torch.topk`` broke them by where the row sits in the tensor, so a row
  left-padded beside a longer prompt committed other columns than alone; the scheduled
  policy now takes them in column order, as the dynamic policies do (``most_confident``).
- A [MASK] in one prompt under a KV cache (``prefix``/``dual``): the cache recomputes from
  the first earlier mask of any row, so seeded rows batched beside it (``api.generate``,
  the server's shared seeded runs) wrote other text than alone. Such rows run a run each.
- A prompt of [MASK]s alone: its confidences tie in exact arithmetic and a batch rounds
  them otherwise than the row alone (float64 too): its seeded rows run a run each too.
- ``bd3lm`` with ``skip_empty_steps`` and ``edit_threshold``: in test_rowseeds30_blocks.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from unmask import api
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.sampling.ar import row_generators
from unmask.sampling.loop import Denoiser, generate
from unmask.sampling.policies import (
    CONFIDENCES,
    most_confident,
    register_confidence,
    topk_per_row,
)
from unmask.sampling.protocol import make_generator

V, MASK, PAD, EOS = 40, 0, 1, 2
KW = {"mask_id": MASK, "pad_id": PAD, "eos_id": EOS}


class Tied:
    """Every column of a row gets the same logits, drawn from a generator seeded by the
    row's own tokens (left padding ignored): each step's confidences tie exactly."""

    def __init__(self) -> None:
        self.config = SimpleNamespace(vocab_size=V)

    def __call__(self, tokens: torch.Tensor, attention_mask: object = None) -> torch.Tensor:
        out = []
        for row in tokens:
            r = row[row != PAD]
            g = torch.Generator().manual_seed(int((r * torch.arange(1, len(r) + 1)).sum()))
            x = (2 * torch.randn(1, V, generator=g, dtype=torch.float64)).expand(len(r), V)
            out.append(torch.cat([torch.zeros(len(row) - len(r), V, dtype=torch.float64), x]))
        return torch.stack(out)


PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], [9], [20, 21, 22]]


@pytest.mark.parametrize("options", [
    {"temperature": 0.0, "steps": 8},
    {"temperature": 0.0, "steps": 6, "block_length": 8},
    {"temperature": 1.0, "steps": 8, "block_length": 8},
])
def test_exact_ties_commit_the_same_columns_in_a_batch_as_alone(options):
    """Greedy rows in one batch (one generator: no draws at t=0) and seeded rows (a
    generator each) beside longer prompts: each row = the row alone."""
    model = Tied()
    config = SampleConfig(gen_length=16, **options)
    greedy = options["temperature"] == 0
    batch = generate(model, PROMPTS, config, generator=None if greedy else
                     row_generators([1, 2, 3]), **KW)
    for i, prompt in enumerate(PROMPTS):
        alone = generate(model, [prompt], config, generator=make_generator(i + 1), **KW)
        assert batch.gen_ids[i] == alone.gen_ids[0], i


def test_the_scheduled_choice_is_the_stable_ranking():
    """``topk_per_row`` (one batched topk, ties by a cumsum) picks what the stable ranking
    of ``most_confident`` picks: ties, ``-inf``, NaN, k from 0 to every column."""
    g = torch.Generator().manual_seed(0)
    for trial in range(400):
        B, L = int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(1, 20, (1,),
                                                                             generator=g))
        c = torch.randint(0, 4, (B, L), generator=g).double() / 4
        c[torch.rand(B, L, generator=g) < 0.3] = float("-inf")
        if trial % 5 == 0:
            c[torch.rand(B, L, generator=g) < 0.1] = float("nan")
        k = torch.randint(0, L + 1, (B,), generator=g)
        assert torch.equal(topk_per_row(c, k), most_confident(c, k)), (c, k)


def test_a_registered_confidence_is_named_where_it_keeps_a_run_per_row():
    """The refusal of a generator per row names the confidence measure too, where a
    registered one (not the policy or the remasking) is the reason."""
    register_confidence("rows_test")(CONFIDENCES["prob"])
    try:
        config = SampleConfig(gen_length=8, steps=8, temperature=1.0, confidence="rows_test")
        with pytest.raises(UserError, match="confidence 'rows_test'"):
            Denoiser.for_prompts(Tied(), [[5], [6]], config, generator=row_generators([1, 2]),
                                 **KW)
    finally:
        del CONFIDENCES["rows_test"]


@pytest.fixture(scope="module")
def mdlm(tmp_path_factory):
    from test_seeds_rows import _checkpoint

    return api.load_for_decoding(_checkpoint(tmp_path_factory.mktemp("mdlm")), device="cpu",
                                 dtype="fp32")


def _each_alone(loaded, prompts, config):
    return [api.generate(loaded, p, config=config).texts[0] for p in prompts]


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_a_masked_prompt_under_a_kv_cache_leaves_the_other_rows_as_alone(mdlm, cache):
    """Seeded rows of ``api.generate``, one prompt holding [MASK]: every row = its prompt
    alone (they run a run each, ``api.seeds_in_one_run`` with the rows says so); without a
    mask they are still one batch."""
    prompts = ["a[MASK]b", "In the"]
    config = {"gen_length": 16, "steps": 16, "block_length": 8, "temperature": 1.0,
              "seed": 5, "cache": cache}
    out = api.generate(mdlm, prompts, config=config)
    assert out.texts == [api.generate(mdlm, p, config=config).texts[0]
                         for p in prompts]
    tok = mdlm.tokenizer
    rows = [[101, 0, 102], tok.encode("In the")]
    assert not api.seeds_in_one_run(mdlm, config, rows=rows)
    assert api.seeds_in_one_run(mdlm, config, rows=[[101, 104, 102], rows[1]])
    assert api.seeds_in_one_run(mdlm, {**config, "cache": "none"}, rows=rows)
    with pytest.raises(UserError, match=r"beside a \[MASK\] in a prompt under cache"):
        api.start(mdlm, rows, config, seeds=[1, 2])


def test_a_prompt_of_masks_alone_leaves_seeded_rows_as_alone(mdlm):
    """A prompt of [MASK]s alone beside a longer one, seeded, greedy and sampled: each row
    = its prompt alone (a run each, one after another: not stepped together either)."""
    prompts = ["[MASK]", "The cat sat on the"]
    for t in (0.5, 1.0):
        config = {"gen_length": 16, "steps": 16, "temperature": t, "seed": 7}
        out = api.generate(mdlm, prompts, config=config)
        assert out.texts == _each_alone(mdlm, prompts, config), t
    assert not api.seeds_in_one_run(mdlm, config, rows=[[0, 0], [5, 6]])
    assert api.seeds_in_one_run(mdlm, config, rows=[[0, 5], [5, 6]])


def _served(client, body):
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return [c["text"] for c in sorted(r.json()["choices"], key=lambda c: c["index"])]


def test_the_server_keeps_a_masked_prompt_under_a_cache_out_of_shared_seeded_runs(mdlm):
    """A seeded request of token-id prompts, one holding [MASK], under ``dual``: each choice
    = its prompt sent alone with the seed; and such a job shares no run with other seeded
    jobs (its batch key is its own), while a job without a mask does."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app
    from unmask.server.batching import Job

    body = {"max_tokens": 16, "steps": 16, "block_length": 8, "temperature": 1.0, "seed": 5,
            "cache": "dual"}
    prompts = [[101, 0, 103], [104, 105]]
    with TestClient(create_app(mdlm, limits=ServerLimits(max_batch=16))) as client:
        both = _served(client, {**body, "prompt": prompts})
        assert both == [_served(client, {**body, "prompt": [p]})[0] for p in prompts]
        engine = client.app.state.engine
        config = SampleConfig(gen_length=16, steps=16, block_length=8, temperature=1.0,
                              seed=5, cache="dual", decoder="llada")
        masked = Job(rows=[prompts[0]], config=config, batchable=False)
        plain = Job(rows=[prompts[1]], config=config, batchable=False)
        engine._split(masked)
        engine._split(plain)
        assert masked.batch_key()[0] == "alone"
        assert plain.batch_key()[0] == "seeded"


def test_bd3lm_rows_beside_a_prompt_of_masks_alone_write_what_they_write_alone(tmp_path):
    """The same tie under block diffusion: ``api.run_rows`` (the task scorer's path) beside
    a prompt of [MASK]s alone gives each row its text alone."""
    import dataclasses

    from test_seeds_rows import _checkpoint

    m = api.load_for_decoding(_checkpoint(tmp_path, objective="bd3lm",
                                          attention="block-causal", block_size=4),
                              device="cpu", dtype="fp32")
    rows, seeds = [[115, 163, 197, 157, 120, 121], [0, 0]], [44, 28]
    for t in (0.0, 0.5):
        config = SampleConfig(gen_length=16, steps=16, temperature=t)
        batch, _ = api.run_rows(m, rows, config, seeds)
        for i, (row, seed) in enumerate(zip(rows, seeds, strict=True)):
            alone = api.start(m, [row], dataclasses.replace(config, seed=seed)).run()
            width = len(alone.gen_ids[0])
            assert batch.gen_ids[i][:width] == alone.gen_ids[0], (t, i)
