"""The ``hybrid`` decoder's greedy text is ``ar``'s up to the context end (session 34's audit):
its draft block past the last position never changes a committed token."""

from __future__ import annotations

import pytest
from test_hybrid import trained  # noqa: F401  (the module's fixture: a tiny trained hybrid)

from unmask.sampling import generate_ar
from unmask.sampling.hybrid import HybridRun


@pytest.mark.parametrize("predraft", ["all", "ends"])
@pytest.mark.parametrize("eos", [None, 7])
def test_greedy_equals_ar_up_to_the_context_end(trained, predraft, eos):  # noqa: F811
    """Prompts of 2, 3 and 7 tokens and gen_length filling the 64-token context: each row
    accepts its own drafts (the cycle, a wrong start, a broken one), an EOS ends some rows
    (eos 7), and the text is ``ar``'s token for token."""
    m = trained[0]
    prompts = [[4, 5], [9, 8, 7], [6, 7, 8, 9, 4, 6, 5]]
    gen = m.config.max_seq_len - max(len(p) for p in prompts)
    want = generate_ar(m, prompts, max_new_tokens=gen, eos_id=eos, pad_id=1)
    r = HybridRun(m, prompts, max_new_tokens=gen, eos_id=eos, pad_id=1, predraft=predraft).run()
    assert r.gen_ids == want.gen_ids
    assert 0 < r.accepted < r.drafted
