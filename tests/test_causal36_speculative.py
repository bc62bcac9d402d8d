"""Speculative decoding, session 36's audit: a drafter that reads its noise level off the
canvas (no cache, one left-padded canvas for the batch) never gets a canvas wider than its
context when the rows of a batch drift apart."""

from __future__ import annotations

import pytest
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
                           mask_id=4, pad_id=3, eos_id=3, bos_id=3, time_conditioning=True,
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


def test_accept_sampled_draws_only_what_it_reads_and_gives_the_same_tokens(benchmark):
    """The correction and the bonus token are drawn only where a row reads them (one draw
    per row, not every position's residual over the vocabulary:
    ``benchmarks/speculative_accept.py``), from the same uniforms: the same accepted count
    and tokens up to each row's n_i + 1 as the reference that drew everywhere, and the
    generator left where it leaves it (seeded runs keep their tokens, up to float rounding:
    the residual's sum is reduced in another shape)."""
    from unmask.sampling.speculative import accept_sampled

    reference = benchmark("speculative_accept").every_position

    torch.manual_seed(0)
    for trial in range(300):
        B, k, V = int(torch.randint(1, 5, ())), int(torch.randint(0, 5, ())), 12
        p = torch.softmax(torch.randn(B, k + 1, V, dtype=torch.float64) * 3, dim=-1)
        p[..., : V // 3] *= trial % 2  # a top-k filtered p: zeros
        p = p / p.sum(dim=-1, keepdim=True)
        q = torch.softmax(torch.randn(B, k, V, dtype=torch.float64) * 3, dim=-1)
        if k and trial % 3 == 0:
            q[:, 0] = p[:, 0]  # p == q: no residual mass
        draft = torch.multinomial(q.reshape(-1, V), 1).reshape(B, k) if k else torch.zeros(
            B, 0, dtype=torch.long)  # fmt: skip
        lengths = torch.randint(0, k + 1, (B,))
        g_ref, g_new = (torch.Generator().manual_seed(trial) for _ in range(2))
        n_ref, out_ref = reference(draft, q, p, g_ref, lengths)
        n_new, out_new = accept_sampled(draft, q, p, g_new, lengths)
        assert torch.equal(n_new, n_ref), trial
        for i in range(B):
            m = int(n_ref[i]) + 1
            assert out_new[i, :m].tolist() == out_ref[i, :m].tolist(), (trial, i)
        assert torch.rand(1, generator=g_new).item() == torch.rand(1, generator=g_ref).item()


@pytest.mark.parametrize("bad", [600, -1])
def test_prompt_ids_outside_the_vocabulary_are_one_line_in_every_causal_run(bad):
    """``generate_ar``, ``SpeculativeRun`` and ``HybridRun`` given an id the model has no
    embedding for (another tokenizer's, a negative one) failed inside the embedding with an
    ``IndexError``; they refuse it in one line, as the masked-diffusion sampler does."""
    from test_hybrid import model as hybrid_model
    from test_speculative import transformer

    from unmask.errors import UserError
    from unmask.sampling.hybrid import HybridRun

    verifier, drafter = transformer("causal", 0), transformer("bidirectional", 1)
    calls = [
        lambda: generate_ar(verifier, [[5, 6], [bad]], max_new_tokens=3, eos_id=None),
        lambda: SpeculativeRun(verifier, drafter, [[5, bad]], max_new_tokens=3,
                               draft_length=2, eos_id=None),
        lambda: HybridRun(hybrid_model(0), [[4, bad]], max_new_tokens=3, eos_id=None),
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(UserError, match=f"token id {bad} is outside the model's vocabulary"):
            call()
