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
