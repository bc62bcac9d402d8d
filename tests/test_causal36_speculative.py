"""Speculative decoding, session 36's audit: a drafter that reads its noise level off the
canvas (no cache, one left-padded canvas for the batch) never gets a canvas wider than its
context when the rows of a batch drift apart."""

from __future__ import annotations

import torch
from torch import nn

from unmask.config import model_preset
from unmask.model import Transformer
from unmask.sampling import generate_ar
from unmask.sampling.speculative import SpeculativeRun

CONTEXT = 24


class OnesDrafter(nn.Module):
    """A real ``Transformer`` drafter of ``CONTEXT`` positions that reads its noise level off
    the canvas (``sigma_input='masked_fraction'``: no KV cache, no explicit layouts; it
    refuses a longer canvas as every such model does), its logits pushed to token 1 so that
    the Markov verifier of tests/test_speculative.py accepts every draft of a row that
    writes 1s and none of a row that writes 2s: the two rows drift apart."""

    def __init__(self) -> None:
        super().__init__()
        cfg = model_preset("tiny", vocab_size=5, max_seq_len=CONTEXT, attention="bidirectional",
                           mask_id=4, pad_id=4, eos_id=3, bos_id=3, time_conditioning=True,
                           sigma_input="masked_fraction")  # fmt: skip
        torch.manual_seed(0)
        self.inner = Transformer(cfg).double().eval()
        self.config, self.widths = cfg, []

    def forward(self, tokens, attention_mask=None):
        self.widths.append(tokens.shape[1])
        out = self.inner(tokens, attention_mask=attention_mask)
        return out + torch.tensor([0.0, 50.0, 0.0, 0.0, 0.0], dtype=out.dtype)


def test_rows_drifting_apart_keep_a_canvas_drafter_within_its_context():
    """Row 0 accepts every draft, row 1 none: the batch's canvas was row 0's text and k masks
    for row 1 (27 columns for a 24-position drafter: a ValueError mid-run). Now the least
    advanced row drafts what fits, and the output is still ``ar``'s."""
    from test_speculative import Cfg, Markov

    verifier = Markov(Cfg("causal", max_seq_len=CONTEXT))
    drafter = OnesDrafter()
    prompts, G = [[1], [2]], CONTEXT - 1
    want = generate_ar(verifier, prompts, max_new_tokens=G, eos_id=None).gen_ids
    r = SpeculativeRun(verifier, drafter, prompts, max_new_tokens=G, draft_length=8,
                       eos_id=None).run()  # fmt: skip
    assert r.gen_ids == want and r.drafter_cache == "none"
    assert max(drafter.widths) <= CONTEXT and r.accepted > 0
