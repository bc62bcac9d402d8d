"""The hybrid decoder's rounds run the output head once where its blocks are few (``_read``):
the same tokens as two head calls (the verified columns, then the chosen block's) and as
``ar``, for every acceptance, sampled or greedy."""

import pytest
import torch

from unmask.config import model_preset
from unmask.model import Transformer
from unmask.sampling import hybrid as hybrid_mod
from unmask.sampling.ar import ARRun
from unmask.sampling.hybrid import HybridRun

SPECIAL = dict(mask_id=0, pad_id=1, eos_id=2, bos_id=3)
PROMPTS = [[4, 5, 6], [7], [8, 9, 10, 11, 4]]


def _model(seed: int = 0) -> Transformer:
    cfg = model_preset("tiny", vocab_size=12, max_seq_len=64, attention="causal",
                       init_std=0.3, draft_block=3, **SPECIAL)  # fmt: skip
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


def _run(m: Transformer, prompts=PROMPTS, **kw) -> tuple[HybridRun, list[int]]:
    calls: list[int] = []
    hook = m.lm_head.register_forward_hook(lambda _m, inp, _o: calls.append(inp[0].shape[1]))
    try:
        run = HybridRun(m, prompts, max_new_tokens=16, eos_id=2, **kw)
        run.run()
    finally:
        hook.remove()
    return run, calls


@pytest.mark.parametrize("predraft, draft_block", [("all", 1), ("all", 2), ("ends", 2),
                                                   ("ends", 3)])
def test_one_head_call_a_round_where_the_blocks_are_few(predraft, draft_block):
    m = _model()
    for prompt in PROMPTS:  # batch 1: the bound counts every row's columns
        one, calls = _run(m, [prompt], predraft=predraft, draft_block=draft_block)
        assert len(calls) == one.nfe  # before: two a round (verified columns, chosen block)
        want = ARRun(m, [prompt], max_new_tokens=16, eos_id=2).run()
        assert one.result().gen_ids == want.gen_ids


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_one_head_call_or_two_the_same_tokens(monkeypatch, temperature):
    m = _model(1)
    kw = dict(temperature=temperature, draft_block=3, predraft="ends", draft_threshold=0.2)
    monkeypatch.setattr(hybrid_mod, "MERGED_HEAD_COLUMNS", 10**6)  # merged for 3 rows too
    one, calls = _run(m, generator=torch.Generator().manual_seed(0), **kw)
    monkeypatch.setattr(hybrid_mod, "MERGED_HEAD_COLUMNS", -1)
    two, more = _run(m, generator=torch.Generator().manual_seed(0), **kw)
    assert len(calls) == one.nfe < len(more)
    a, b = one.result(), two.result()
    assert a.gen_ids == b.gen_ids
    assert (a.nfe, a.accepted, a.drafted) == (b.nfe, b.accepted, b.drafted)


def test_a_batch_whose_rounds_hold_many_block_columns_runs_the_head_twice():
    """The one head call reads the head's weights once but computes every block's columns:
    cheaper at batch 1 only (a review measured it 1-5% slower at batch 64), so the bound
    counts the columns of all the batch's rows. The same tokens either way."""
    m = _model(1)
    kw = dict(draft_block=2, predraft="ends")
    one, calls = _run(m, PROMPTS[:1], **kw)
    assert len(calls) == one.nfe  # one row: merged
    many, calls = _run(m, PROMPTS, **kw)  # three rows: past the bound
    assert len(calls) > many.result().nfe
    assert many.result().gen_ids == ARRun(m, PROMPTS, max_new_tokens=16, eos_id=2).run().gen_ids
