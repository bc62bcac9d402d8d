"""Session 31: a row the commit loop keeps apart runs alone, and only that row.

- ``api.run_rows`` (seeded rows of ``api.generate``, the task scorer): one prompt of
  [MASK]s alone, or one [MASK] in a prompt under a KV cache, made every row of the batch a
  run of its own (8 rows: 3.5x the time of one batched run). Now that row runs alone and
  the others still share one run, each row exactly what it writes alone.
- Greedy batches (``api.generate`` at temperature 0, no seeds) holding such a row ran as one
  batch, where the row's exact ties round otherwise (a prompt of [MASK]s alone) or the KV
  cache recomputes the other rows from its mask: rows wrote other text than alone. Now the
  row runs alone there too (``Decoder.rows_apart``).
"""

from __future__ import annotations

import dataclasses

import pytest

from unmask import api
from unmask.config import SampleConfig


@pytest.fixture(scope="module")
def mdlm(tmp_path_factory):
    from test_seeds_rows import _checkpoint

    return api.load_for_decoding(_checkpoint(tmp_path_factory.mktemp("mdlm")), device="cpu",
                                 dtype="fp32")


def _rows(loaded, flagged):
    tok = loaded.tokenizer
    rows = [tok.encode(t) for t in ("In the", "ab", "The cat sat", "xyz", "q")]
    return rows[:2] + [flagged] + rows[2:]  # the row kept apart in the middle


@pytest.mark.parametrize("cache", ["none", "dual", "prefix"])
def test_seeded_rows_beside_a_row_kept_apart_share_one_run(mdlm, cache):
    """Six seeded rows, one kept apart: each row = its run alone under its seed, and the
    other five share one run (the forwards of two runs, not of six)."""
    M = mdlm.tokenizer.mask_id
    flagged = [M, M] if cache == "none" else [101, M, 102]
    rows = _rows(mdlm, flagged)
    seeds = [11, 12, 13, 14, 15, 16]
    config = SampleConfig(gen_length=16, steps=16, block_length=8, temperature=1.0,
                          cache=cache)
    seen, steps = [], []
    result, _ = api.run_rows(mdlm, rows, config, seeds,
                             step_callback=lambda step, view: (seen.append(view),
                                                               steps.append(step)))
    assert result.nfe == 2 * 16
    for i, (row, seed) in enumerate(zip(rows, seeds, strict=True)):
        alone = api.start(mdlm, [row], dataclasses.replace(config, seed=seed)).run()
        assert result.gen_ids[i] == alone.gen_ids[0], i
        assert result.prompt_ids[i] == alone.prompt_ids[0], i
    assert seen[-1].tolist() == result.gen_ids  # the live view holds every row in place
    assert max(steps) == 16  # each run's own step: "step 32/16" when counted over runs


def test_half_precision_rows_step_together_beside_a_prompt_of_masks(tmp_path):
    """In bfloat16 (a run per row): the rows not kept apart still step together, one
    forward a step for all of them; the prompt of [MASK]s alone runs on its own."""
    from test_seeds_rows import _checkpoint

    loaded = api.load_for_decoding(_checkpoint(tmp_path), device="cpu", dtype="bf16")
    M = loaded.tokenizer.mask_id
    rows = _rows(loaded, [M, M])
    seeds = [1, 2, 3, 4, 5, 6]
    config = SampleConfig(gen_length=8, steps=8, temperature=1.0)
    result, _ = api.run_rows(loaded, rows, config, seeds)
    assert result.nfe == 2 * 8
    alone = api.start(loaded, [rows[2]], dataclasses.replace(config, seed=3)).run()
    assert result.gen_ids[2] == alone.gen_ids[0]


@pytest.mark.parametrize(("prompts", "cache"), [
    (["[MASK]", "The cat sat on the", "ab"], "none"),
    (["[MASK][MASK][MASK]", "The cat sat on the"], "none"),
    (["a[MASK]b", "In the", "xyz"], "dual"),
    (["a[MASK]b", "In the", "xyz"], "prefix"),
])
def test_a_greedy_batch_with_a_row_kept_apart_writes_each_row_as_alone(mdlm, prompts, cache):
    """Greedy decoding draws nothing: every row of the batch = its prompt alone."""
    config = {"gen_length": 16, "steps": 16, "block_length": 8, "temperature": 0.0,
              "cache": cache}
    out = api.generate(mdlm, prompts, config=config)
    assert out.texts == [api.generate(mdlm, p, config=config).texts[0] for p in prompts]
    assert out.nfe == 2 * 16  # the row apart, and one run of the others


def test_a_greedy_bd3lm_batch_beside_a_prompt_of_masks_writes_each_row_as_alone(tmp_path):
    """The same under block diffusion (its tie alone: its caches are exact)."""
    from test_seeds_rows import _checkpoint

    m = api.load_for_decoding(_checkpoint(tmp_path, objective="bd3lm",
                                          attention="block-causal", block_size=4),
                              device="cpu", dtype="fp32")
    prompts = ["[MASK]", "The cat sat on the", "ab"]
    config = {"gen_length": 16, "steps": 16, "temperature": 0.0}
    out = api.generate(m, prompts, config=config)
    assert out.texts == [api.generate(m, p, config=config).texts[0] for p in prompts]
