"""A gap too long for the context was told to "lower default_max_len", a field the server's
infill request does not take (400 unknown field): ``GapRoomError.message(default_hint=False)``
leaves it out, the CLI names its flag (review of session 29)."""

from __future__ import annotations

import pickle

import pytest
import torch

from unmask.config import InfillOptions, model_preset
from unmask.infill import Gap, infill
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


class Small:
    config = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=16)

    def __call__(self, tokens, attention_mask=None):
        return torch.zeros(*tokens.shape, TOK.vocab_size)  # (B, L, V)


def test_a_gap_too_long_for_the_context_names_default_max_len_only_where_it_is_set():
    from unmask.infill.template import GapRoomError

    with pytest.raises(GapRoomError) as e:
        infill(Small(), TOK, ["a", Gap(regex="b+"), "c"],
               options=InfillOptions(default_max_len=100))
    err = e.value
    assert str(err).endswith("give it a maximum ([MASK:1-n]) or lower default_max_len")
    # a caller whose users cannot set default_max_len (the server's clients)
    server = err.message(default_hint=False)
    assert server.endswith("give it a maximum ([MASK:1-n])") and "default_max_len" not in server
    assert err.message(spell=lambda f: "--" + f.replace("_", "-")).endswith(
        "or lower --default-max-len")
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) and copy.message(default_hint=False) == server
    # a maximum of its own: the advice is to lower it, wherever it was set
    with pytest.raises(GapRoomError) as e:
        infill(Small(), TOK, "a[MASK:1-100]c")
    assert e.value.message(default_hint=False) == str(e.value)
    assert str(e.value).endswith("lower its maximum")
