"""FIM sentinels and the tokenizer, session 31: every fill-in-the-middle path checks that the
tokenizer is the model's (a constrained gap and a form with text after it did not)."""

from __future__ import annotations

import pytest
import torch

from unmask.config import model_preset
from unmask.errors import UserError
from unmask.gapset import GapSample, infill_exact_match
from unmask.infill import fill_form
from unmask.infill.fim import fill_middle, infill_causal
from unmask.infill.template import Gap
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer, with_fim_tokens

BYTES = byte_tokenizer()
FIM = with_fim_tokens(BYTES)  # sentinels at 260, 261, 262


def _model(pre: int, suf: int, mid: int) -> Transformer:
    torch.manual_seed(0)
    return Transformer(model_preset(
        "tiny", vocab_size=263, max_seq_len=64, attention="causal", objective="ar",
        fim_prefix_id=pre, fim_suffix_id=suf, fim_middle_id=mid, **BYTES.special_ids())).eval()


CALLS = {
    "plain gap": lambda m, t: fill_middle(m, t, "ab", "cd", max_new_tokens=3),
    "constrained gap": lambda m, t: infill_causal(m, t, ["ab ", Gap(regex="[0-9]{2}"), " cd"]),
    "form before text": lambda m, t: fill_form(m, t, '{"a": "<bool>"}', prefix_ids=t.encode("x"),
                                              suffix_ids=t.encode("y")),
    # the eval's gap set (``unmask eval --gaps``) scored a causal model without the check
    "gap set": lambda m, t: infill_exact_match(
        m, t, [GapSample(window=t.encode("abcdef"), start=2, length=2, lo=2, hi=2)]),
}


@pytest.mark.parametrize("call", list(CALLS), ids=list(CALLS))
def test_sentinels_at_other_ids_are_refused_on_every_path(call):
    swapped = _model(262, 261, 260)
    with pytest.raises(UserError, match="differ from the model's") as e:
        CALLS[call](swapped, FIM)
    assert "\n" not in str(e.value)
    CALLS[call](_model(260, 261, 262), FIM)  # the model's own tokenizer fills


@pytest.mark.parametrize("call", list(CALLS), ids=list(CALLS))
def test_a_tokenizer_whose_ordinary_tokens_have_the_sentinel_ids_is_refused(call):
    """Ids 100-102 are bytes of the byte tokenizer: the prompt read ``[FIM_PREFIX]`` where
    the tokenizer has ``'`` ``(`` ``)``; ids past its vocabulary (a tokenizer that never
    spells them) stay allowed."""
    with pytest.raises(UserError, match="no FIM sentinels") as e:
        CALLS[call](_model(100, 101, 102), BYTES)
    assert "\n" not in str(e.value)
    CALLS[call](_model(260, 261, 262), BYTES)
