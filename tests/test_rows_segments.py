"""Seeded rows in segments (``segment_length``) as one batched run per segment.

``SegmentedRun`` derived every segment's seed from one ``config.seed``, so seeded rows (a
seed each, ``unmask.api.row_seeds``) ran one segmented run per row. Given ``seeds``, it
starts each segment with the active rows' own segment seeds (``segment_seed(seeds[i], k)``)
through a decoder with a generator per row: the batch writes, token for token, what each
row writes alone in segments under its seed (fp32), one segment run for all rows."""

from __future__ import annotations

import pytest
import torch
from server_helpers import loaded

from unmask import api
from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.loaded import Loaded
from unmask.model import Transformer
from unmask.sampling import Target, choose_decoder
from unmask.sampling.segments import SegmentedRun
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
CONTEXT = 32
PROMPTS = [[10, 20, 30, 40, 50], [7, 8], [], [60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71,
                                              72, 73, 74, 75, 76, 77, 78, 79, 80], [7, 8]]
SEEDS = [5, 6, 7, 8, 9]


def model(attention: str = "causal", seed: int = 0, eos: int | None = None, **extra
          ) -> Transformer:
    """A tiny fp32 model; ``eos``: another token as its EOS (the same weights)."""
    ids = {**TOK.special_ids(), **({} if eos is None else {"eos_id": eos})}
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=CONTEXT,
                       attention=attention, init_std=0.3, **ids, **extra)
    torch.manual_seed(seed)
    return Transformer(cfg).eval()  # float32


def batched(ld: Loaded, prompts, config: SampleConfig, seeds, draft=None):
    """A ``SegmentedRun`` of ``prompts``, row i seeded ``seeds[i]``, whose segments start the
    checkpoint's decoder with the active rows' seeds; and its calls (rows per segment)."""
    config = api.sample_config(ld, config) if not isinstance(config, SampleConfig) else config
    if draft is not None:
        config = SampleConfig(**{**config.__dict__, "decoder": "speculative"})
    facts = api.facts_of(ld)
    decoder = choose_decoder(facts, config)
    target = Target(ld.model, facts, api.draft_aux(ld, draft))
    calls: list[list[int]] = []

    def start(rows, cfg, view, row_seeds):
        calls.append(list(row_seeds))
        return decoder.start(target, rows, cfg, on_view=view, seeds=row_seeds)

    run = SegmentedRun(start, prompts, config, limit=CONTEXT, mask_id=facts.mask_id,
                       eos_id=facts.eos_id, pad_id=facts.pad_id, seeds=seeds)  # fmt: skip
    return run, calls


CASES = {
    "ar": (lambda eos=None: (loaded(model(eos=eos)), None), {"temperature": 0.9, "top_k": 50}),
    "hybrid": (lambda eos=None: (loaded(model(eos=eos, objective="hybrid", draft_block=3)),
                                 None), {"temperature": 1.5}),
    "speculative": (lambda eos=None: (loaded(model(seed=1, eos=eos)),
                                      loaded(model("bidirectional", 2, eos=eos))),
                    {"temperature": 2.0, "draft_length": 3}),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_seeded_rows_in_segments_run_as_one_batch_and_write_what_each_row_writes_alone(kind):
    """gen_length 40 in segments of 16 (16 + 16 + 8; windows cut a long prompt): rows of
    different lengths (one empty, a repeated prompt under another seed), an EOS that ends some
    rows in the first segment: row i of the batch = ``api.start`` of its prompt alone under
    ``seed = seeds[i]``, token for token; one segment run per segment, for the rows still
    running."""
    make, sampling = CASES[kind]
    ld, draft = make()
    base = {"gen_length": 40, "segment_length": 16, **sampling}
    free = [api.start(ld, [p], {**base, "seed": s}, draft=draft).run().gen_ids[0]
            for p, s in zip(PROMPTS, SEEDS, strict=True)]  # fmt: skip
    eos = free[1][10]  # row 1 (and maybe others) ends in the first segment
    ld, draft = make(eos)  # the same weights, that token as EOS
    config = api.sample_config(ld, base)
    run, calls = batched(ld, PROMPTS, config, SEEDS, draft)
    batch = run.run()
    ended = 0
    for i, (p, s) in enumerate(zip(PROMPTS, SEEDS, strict=True)):
        alone = api.start(ld, [p], {**base, "seed": s}, draft=draft).run().gen_ids[0]
        assert batch.gen_ids[i][: len(alone)] == alone, i
        ended += eos in alone
    assert 0 < ended < len(PROMPTS)
    assert batch.gen_ids[1] != batch.gen_ids[4]  # the same prompt, other seeds
    assert len(calls) == 3 and calls[0] == SEEDS  # one run per segment, all rows at first
    assert len(calls[2]) < len(PROMPTS)  # the rows that ended are left out


def test_a_seed_count_that_does_not_match_the_rows_is_refused():
    ld = loaded(model())
    with pytest.raises(UserError, match="2 seeds for 5 rows"):
        batched(ld, PROMPTS, {"gen_length": 40, "segment_length": 16, "temperature": 1.0},
                [1, 2])


def test_generate_runs_seeded_rows_in_segments_as_one_batch():
    """``api.generate`` in segments with a seed and several rows: one run (each segment one
    batched run; nfe that of the slowest row, not the sum), each row what its prompt writes
    alone under its seed (choice j: seed + j)."""
    ld = loaded(model())
    config = {"gen_length": 40, "segment_length": 16, "temperature": 0.9, "seed": 21}
    prompts = ["ab", "The cat", "In the beginning God created"]
    assert api.seeds_in_one_run(ld, config)
    out = api.generate(ld, prompts, config=config, n=2)
    alone = [api.generate(ld, p, config={**config, "seed": 21 + j})
             for p in prompts for j in range(2)]  # fmt: skip
    assert out.ids == [a.ids[0] for a in alone]
    assert len(out.result.segments) == 3
    assert out.nfe == max(a.nfe for a in alone) < sum(a.nfe for a in alone)
