"""Session 33, sampling: ``bd3lm``'s token editing under a dynamic policy writes, row for row,
what each row writes alone (greedy and seeded).

Under a dynamic policy the rows of a batch fill a block at different steps. A row whose block
was filled went on editing (LLaDA 2.1's T2T) at every step while it waited for the others,
and then took ``max_post_steps`` more edit-only steps with them; alone it takes edit-only
steps until one changes nothing or ``max_post_steps`` have run, and its block ends. So a
greedy batch (``api.generate``, the server) wrote other text than its rows alone, and seeded
rows had to run a run each. Now each row takes its edit-only steps as alone, then waits
unchanged (``BlockRun._edit_round``)."""

from __future__ import annotations

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.model import Transformer
from unmask.sampling.blocks import BD3LMDecoder, BlockRun
from unmask.sampling.protocol import make_generator


def _model(align: str) -> Transformer:
    cfg = model_preset("tiny", vocab_size=48, max_seq_len=64, init_std=0.5,
                       attention="block-causal", block_size=4, block_align=align)
    torch.manual_seed(0)
    return Transformer(cfg).double().eval()


PROMPTS = {"pad": [[41, 20, 37], [9, 10, 11, 12, 13, 14], [30, 31]],
           "absolute": [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [20, 21, 22]]}


@pytest.mark.parametrize("align", ["pad", "absolute"])
@pytest.mark.parametrize("seeded", [False, True])
def test_edits_under_a_dynamic_policy_write_each_row_as_alone(align, seeded) -> None:
    m = _model(align)
    c = m.config
    ids = {"mask_id": c.mask_id, "pad_id": c.pad_id, "eos_id": None}
    prompts = PROMPTS[align]
    differ = 0
    for threshold in (0.1, 0.3, 0.6):
        for edit, post in ((0.05, 1), (0.2, 4), (0.5, 16)):
            config = SampleConfig(gen_length=12, steps=16, policy="threshold", threshold=threshold,
                                  edit_threshold=edit, max_post_steps=post,
                                  temperature=1.0 if seeded else 0.0, decoder="bd3lm")
            gens = [make_generator(50 + i) for i in range(3)] if seeded else None
            batch = BlockRun(m, prompts, config, generator=gens, **ids).run()
            for i, p in enumerate(prompts):
                alone = BlockRun(m, p, config, generator=make_generator(50 + i) if seeded
                                 else None, **ids).run()
                differ += batch.gen_ids[i] != alone.gen_ids[0]
    assert differ == 0


def test_a_filled_row_takes_its_edit_only_steps_then_waits() -> None:
    """A row whose block is filled edits at most ``max_post_steps`` times (none with 0), as
    alone, however long the other rows take."""
    m = _model("pad")
    c = m.config
    prompts = PROMPTS["pad"]
    for post in (0, 1, 2):
        config = SampleConfig(gen_length=12, steps=16, policy="threshold", threshold=0.3,
                              edit_threshold=0.05, max_post_steps=post, decoder="bd3lm")
        batch = BlockRun(m, prompts, config, mask_id=c.mask_id, pad_id=c.pad_id,
                         eos_id=None).run()
        for i, p in enumerate(prompts):
            alone = BlockRun(m, p, config, mask_id=c.mask_id, pad_id=c.pad_id,
                             eos_id=None).run()
            assert batch.gen_ids[i] == alone.gen_ids[0], (post, i)
    assert BD3LMDecoder().takes_seeds(config)


def test_live_view_highlights_an_edited_token() -> None:
    """The live view highlighted a token only when its position was masked a step earlier:
    a committed token that token editing replaced was drawn as unchanged text."""
    from unmask.sampling import LiveView

    class Tok:
        mask_id, eos_id, pad_id, bos_id = 0, 2, 1, None

        def decode(self, ids, *, skip_special: bool = True) -> str:
            return "".join(chr(ord("a") + i - 4) for i in ids)

    view = LiveView(Tok(), enabled=False)
    assert view.render_row([4, 5, 0], [4, 0, 0]) == [("a", "old"), ("b", "new"), ("░", "mask")]
    assert view.render_row([4, 6, 7], [4, 5, 0]) == [("a", "old"), ("cd", "new")]


def _edit_only_runs(history: list[torch.Tensor], mask_id: int) -> list[list[bool]]:
    """Per block of a single row's run, whether each edit-only step (its block had no mask
    before it) changed a token."""
    runs: list[list[bool]] = []
    prev = None
    for h in history:
        if prev is None or prev.shape != h.shape:  # a new block: its first step commits
            runs.append([])
        elif not bool((prev == mask_id).any()):
            runs[-1].append(bool((h != prev).any()))
        prev = h
    return runs


@pytest.mark.parametrize("policy", ["llada", "threshold"])
def test_a_row_stops_editing_at_a_step_that_changes_nothing(policy) -> None:
    """Once its block is filled, a row takes edit-only steps until one changes nothing or
    ``max_post_steps`` have run (``BlockRun._edit_round``), not ``max_post_steps`` always: a
    block whose edits change nothing costs one forward more than its commits, not
    ``max_post_steps`` more. Asserted on the forwards and steps, not only the tokens."""
    m = _model("pad")
    c = m.config
    seen = set()
    for edit in (0.99, 0.5, 0.3):
        for post in (1, 3, 16):
            config = SampleConfig(gen_length=12, steps=12, policy=policy, threshold=0.3,
                                  edit_threshold=edit, max_post_steps=post, decoder="bd3lm")
            r = BlockRun(m, [5, 6, 7], config, mask_id=c.mask_id, pad_id=c.pad_id,
                         eos_id=None, return_history=True).run()
            runs = _edit_only_runs(r.history, c.mask_id)
            assert len(runs) == 3 and r.nfe == r.steps == len(r.history), (edit, post)
            for changed in runs:
                assert 1 <= len(changed) <= post and all(changed[:-1]), (edit, post, runs)
                assert len(changed) == post or not changed[-1], (edit, post, runs)
                seen.add((len(changed) < post, changed[-1]))
            if edit == 0.99 and policy == "llada":  # no edit: 4 commit steps, 1 edit-only
                assert r.nfe == r.steps == 3 * (4 + 1), (post, r.nfe, r.steps)
    assert seen == {(True, False), (False, True), (False, False)}  # every way a block ends


def test_a_batch_takes_the_forwards_of_its_slowest_row_a_block() -> None:
    """Under a dynamic policy a batch's block takes as many forwards as its slowest row's
    takes alone (each row edits as alone, then waits unchanged), no more."""
    m = _model("pad")
    c = m.config
    prompts = PROMPTS["pad"]
    for edit, post in ((0.99, 16), (0.5, 3), (0.3, 16), (0.05, 2)):
        config = SampleConfig(gen_length=12, steps=16, policy="threshold", threshold=0.3,
                              edit_threshold=edit, max_post_steps=post, decoder="bd3lm")
        ids = {"mask_id": c.mask_id, "pad_id": c.pad_id, "eos_id": None}
        batch = BlockRun(m, prompts, config, **ids).run()
        per_block = []  # (rows, blocks): each row's forwards a block, alone
        for p in prompts:
            alone = BlockRun(m, p, config, return_history=True, **ids).run()
            shapes = [h.shape[1] for h in alone.history]
            per_block.append([shapes.count(s) for s in dict.fromkeys(shapes)])
        slowest = [max(row[b] for row in per_block) for b in range(3)]
        assert batch.nfe == batch.steps == sum(slowest), (edit, post, per_block, batch.nfe)


def test_api_generate_shares_one_run_for_seeded_rows_under_editing(tmp_path) -> None:
    """``api.generate`` with a seed and ``n`` under ``bd3lm``'s token editing and a dynamic
    policy: ``seeds_in_one_run`` says the seeded rows share a run, they do (forwards = nfe),
    and row ``k * n + j`` writes what its prompt writes alone under ``seed + j``."""
    from test_rowseeds30_commit import counted_forwards
    from test_seeds_rows import _checkpoint

    from unmask import api

    path = _checkpoint(tmp_path, objective="bd3lm", attention="block-causal", block_size=4)
    m = api.load_for_decoding(path, device="cpu", dtype="fp32")
    config = {"gen_length": 12, "steps": 12, "temperature": 1.0, "seed": 5, "policy": "threshold",
              "threshold": 0.5, "edit_threshold": 0.3, "max_post_steps": 3}
    assert api.seeds_in_one_run(m, config)
    prompts = ["ab", "The cat sat", ""]
    with counted_forwards(m.model) as calls:
        out = api.generate(m, prompts, config=config, n=2)
    assert len(calls) == out.nfe
    for k, p in enumerate(prompts):
        for j in range(2):
            alone = api.generate(m, p, config={**config, "seed": 5 + j})
            assert alone.texts == [out.texts[k * 2 + j]], (k, j)
