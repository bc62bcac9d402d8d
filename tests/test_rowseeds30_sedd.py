"""Seeded rows of the SEDD decoder in one batched run.

SEDD drew from one generator per run, so seeded rows of ``api.generate``, the server and the
task scorer (``api.run_rows``) ran one run each, one after another: about 5 to 7 times the
batch's time. Now its run takes a generator per row (``SEDDRun(generator=[...])``,
``SEDDDecoder.row_seeds``): row i draws the uniform prior over its own columns (without the
left padding) and one uniform per moving position of its own, as alone, and nothing in a
step where none of its positions moves, so the batch writes, token for token, what each row
writes alone."""

from __future__ import annotations

import pytest
import torch
from test_rowseeds30_commit import counted_forwards

from unmask.canvas import Canvas
from unmask.config import SampleConfig, TrainConfig, model_preset
from unmask.sampling.ar import row_generators
from unmask.sampling.protocol import make_generator
from unmask.sampling.sedd import sample_sedd
from unmask.sedd import AbsorbingGraph, UniformGraph

V, MASK, PAD, EOS = 24, 23, 22, 21


def row_score(tokens: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A log-score of each row drawn from its own tokens (left padding ignored): a row's
    score never depends on the other rows."""
    out = []
    for row, s in zip(tokens, sigma, strict=True):
        r = row[row != PAD]
        g = torch.Generator().manual_seed(int((r * torch.arange(1, len(r) + 1)).sum()))
        x = torch.randn(len(r), V, generator=g, dtype=torch.float64) + float(s)
        out.append(torch.cat([torch.zeros(len(row) - len(r), V, dtype=torch.float64), x]))
    return torch.stack(out)


PROMPTS = [[5, 6, MASK, 7], [9], [11, 12, 13, 14, 15, 16], [5, 6, MASK, 7]]
SEEDS = [3, 4, 99, 4]


@pytest.mark.parametrize("graph", [AbsorbingGraph(V, MASK), UniformGraph(V)],
                         ids=["absorbing", "uniform"])
@pytest.mark.parametrize("options", [
    {"steps": 8},
    {"steps": 4, "sedd_sampler": "euler"},
    {"steps": 8, "block_length": 4, "forbid_eos": True},
])
def test_a_batch_of_seeded_rows_writes_what_each_row_writes_alone(graph, options):
    """Ragged prompts (two holding [MASK], the same prompt under two seeds), both graphs,
    both samplers, blocks (rows whose positions stop moving at other steps): row i of the
    batch = the row alone under ``seeds[i]``, and its generator ends in the same state."""
    if options.get("block_length") and not graph.absorbing:
        options = {k: v for k, v in options.items() if k != "block_length"}
    config = SampleConfig(decoder="sedd", gen_length=8, **options)

    def canvas(prompts):
        return Canvas.from_prompts(prompts, 8, mask_id=MASK, pad_id=PAD)

    gens = row_generators(SEEDS)
    batch = sample_sedd(row_score, canvas(PROMPTS), config, graph=graph, eos_id=EOS,
                        generator=gens)
    for i, (prompt, seed) in enumerate(zip(PROMPTS, SEEDS, strict=True)):
        g = make_generator(seed)
        alone = sample_sedd(row_score, canvas([prompt]), config, graph=graph, eos_id=EOS,
                            generator=g)
        assert batch.gen_ids[i] == alone.gen_ids[0], i
        assert batch.prompt_ids[i] == alone.prompt_ids[0], i
        assert torch.equal(gens[i].get_state(), g.get_state()), i
    assert batch.gen_ids[0] != batch.gen_ids[3]  # the same prompt, other seeds


@pytest.fixture(scope="module", params=["absorbing", "uniform"])
def sedd(request, tmp_path_factory):
    from unmask import api
    from unmask.checkpoint import save_checkpoint
    from unmask.model import Transformer
    from unmask.objectives import objective_spec
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, init_std=0.3,
                       **tok.special_ids())  # fmt: skip
    cfg = objective_spec("sedd").configure(cfg, TrainConfig(seq_len=16,
                                                            sedd_graph=request.param))
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp(request.param)
    save_checkpoint(folder, model=Transformer(cfg).eval(), tokenizer=tok)
    return api.load_for_decoding(str(folder), device="cpu", dtype="fp32")


def test_generate_runs_seeded_sedd_rows_as_one_batch(sedd):
    """``api.generate`` with a seed, several prompts and ``n`` 2 on a SEDD checkpoint: one
    run (a forward per step for all rows; a run per row made 8 times as many), and each row's
    text is its prompt's alone under seed + choice."""
    from unmask import api

    prompts = ["ab", "The cat sat", "", "In the"]
    config = {"gen_length": 12, "steps": 6, "seed": 5}
    with counted_forwards(sedd.model) as calls:
        out = api.generate(sedd, prompts, config=config, n=2)
        batched = len(calls)
    assert out.decoder == "sedd"
    assert api.seeds_in_one_run(sedd, config)
    assert batched == out.nfe == 6
    for k, p in enumerate(prompts):
        for j in range(2):
            alone = api.generate(sedd, p, config={**config, "seed": 5 + j})
            assert alone.ids == [out.ids[k * 2 + j]], (p, j)
    assert len(set(map(tuple, out.ids))) > 1
