"""Seeded rows of the continuous decoders (``embed-diffusion``, ``latent-diffusion``) in one
batched run.

They drew from one generator per run, so seeded rows of ``api.generate``, the server and the
task scorer (``api.run_rows``) ran one run each, one after another: about 6 to 7 times the
batch's time. Now a run takes a generator per row (``EmbedRun(generator=[...])``,
``row_seeds``): row i draws its starting noise, the re-noising of its known positions, each
ancestral step's noise and the rounding's Gumbel noise over its own columns (without the
left padding), the draws of its run alone, so the batch writes, token for token, what each
row writes alone."""

from __future__ import annotations

import pytest
import torch
from test_continuous import _model
from test_rowseeds30_commit import counted_forwards

from unmask.canvas import Canvas
from unmask.config import SampleConfig
from unmask.sampling.ar import row_generators
from unmask.sampling.continuous import BagOfWords, EmbedRun, LatentRun


@pytest.mark.parametrize("options", [
    {"temperature": 1.0, "steps": 4},
    {"temperature": 0.0, "steps": 3},
    {"temperature": 0.7, "steps": 3, "guide_scale": 0.5},
    {"temperature": 1.0, "steps": 3, "self_condition": True},
])
def test_embed_rows_draw_what_each_row_draws_alone(options):
    """Ragged prompts (one holding [MASK]s, one empty, the same prompt under two seeds),
    guidance and a self-conditioned model: row i of the batch = the row alone under its
    seed, and its generator ends in the same state."""
    from dataclasses import replace

    options = dict(options)
    model = _model("embed-diffusion")
    if options.pop("self_condition", False):
        model = _model_sc()
    mask, pad = model.config.mask_id, model.config.pad_id
    prompts = [[9, 10, mask, mask, 11], [12], [], [13, 14, 15, 16, 17, 18, 19], [12]]
    seeds = [3, 4, 5, 6, 7]
    guided = options.get("guide_scale", 0) > 0
    config = SampleConfig(gen_length=6, **options)

    def run(rows, gens):
        canvas = Canvas.from_prompts(rows, 6, mask_id=mask, pad_id=pad)
        constraint = BagOfWords([20, 21]) if guided else None
        return EmbedRun(model, canvas, config, eos_id=model.config.eos_id,
                        constraint=constraint, generator=gens).run()

    gens = row_generators(seeds)
    batch = run(prompts, gens)
    for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
        own = row_generators([seed])
        alone = run([prompt], own)
        assert batch.gen_ids[i] == alone.gen_ids[0], i
        assert batch.prompt_ids[i] == alone.prompt_ids[0], i
        assert torch.equal(gens[i].get_state(), own[0].get_state()), i
        # a generator per row of one row is the run seeded alone
        single = EmbedRun(model, Canvas.from_prompts([prompt], 6, mask_id=mask, pad_id=pad),
                          replace(config, seed=seed), eos_id=model.config.eos_id,
                          constraint=BagOfWords([20, 21]) if guided else None).run()
        assert single.gen_ids == alone.gen_ids, i
    if options["temperature"] > 0:
        assert batch.gen_ids[1] != batch.gen_ids[4]  # the same prompt, other seeds


def _model_sc():
    from dataclasses import replace

    from unmask.config import TrainConfig, model_preset
    from unmask.model import Transformer
    from unmask.objectives import objective_spec

    cfg = model_preset("tiny", vocab_size=48, max_seq_len=40)
    cfg = objective_spec("embed-diffusion").configure(cfg, TrainConfig(seq_len=24))
    torch.manual_seed(0)
    return Transformer(replace(cfg, embed_self_condition=True)).eval()


def test_latent_rows_draw_what_each_row_draws_alone():
    """Latent diffusion (whole windows, no prompt): row i of a batch of seeded rows = the
    run of that row alone under its seed."""
    from dataclasses import replace

    model = _model("latent-diffusion")
    mask, pad = model.config.mask_id, model.config.pad_id
    config = SampleConfig(gen_length=24, steps=3, temperature=1.0)
    seeds = [1, 2, 1]
    canvas = Canvas.from_prompts([[], [], []], 24, mask_id=mask, pad_id=pad)
    batch = LatentRun(model, canvas, config, generator=row_generators(seeds)).run()
    for i, seed in enumerate(seeds):
        one = Canvas.from_prompts([[]], 24, mask_id=mask, pad_id=pad)
        alone = LatentRun(model, one, replace(config, seed=seed)).run()
        assert batch.gen_ids[i] == alone.gen_ids[0], i
    assert batch.gen_ids[0] != batch.gen_ids[1]


def test_generate_runs_seeded_embed_rows_as_one_batch(tmp_path):
    """``api.generate`` with a seed, several prompts and ``n`` 2 on an ``embed-diffusion``
    checkpoint: one run (a forward per step for all rows, not one per row), each row's text
    its prompt's alone under seed + choice."""
    from unmask import api
    from unmask.checkpoint import save_checkpoint
    from unmask.config import TrainConfig, model_preset
    from unmask.model import Transformer
    from unmask.objectives import objective_spec
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, **tok.special_ids())
    cfg = objective_spec("embed-diffusion").configure(cfg, TrainConfig(seq_len=16))
    torch.manual_seed(0)
    save_checkpoint(tmp_path, model=Transformer(cfg).eval(), tokenizer=tok)
    m = api.load_for_decoding(str(tmp_path), device="cpu", dtype="fp32")
    prompts = ["ab", "The cat sat", "", "In the"]
    config = {"gen_length": 8, "steps": 4, "temperature": 1.0, "seed": 5}
    with counted_forwards(m.model) as calls:
        out = api.generate(m, prompts, config=config, n=2)
        batched = len(calls)
    assert out.decoder == "embed-diffusion"
    assert batched == out.nfe == 4
    for k, p in enumerate(prompts):
        for j in range(2):
            alone = api.generate(m, p, config={**config, "seed": 5 + j})
            assert alone.ids == [out.ids[k * 2 + j]], (p, j)
