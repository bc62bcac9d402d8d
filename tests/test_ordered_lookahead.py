"""Where a hole ends left to right (``unmask.infill.ordered.FormGuide``): only where the tokens
after an accepting point spell the WHOLE locked text that follows, so a field whose content
starts like that text is not cut at its first token."""

from __future__ import annotations

import re

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.infill.automaton import TokenAutomaton, vocab_of
from unmask.infill.ordered import fill_left_to_right
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
CONFIG = dict(vocab_size=TOK.vocab_size, max_seq_len=64, attention="causal", objective="ar")


class Script(torch.nn.Module):
    """A causal stand-in that writes ``script`` after its prompt (greedy: one logit high)."""

    supports_kv_cache = True

    def __init__(self, prompt_len: int, script: str) -> None:
        super().__init__()
        self.config = model_preset("tiny", **CONFIG, **TOK.special_ids())
        self.P, self.script = prompt_len, TOK.encode(script) + [TOK.eos_id]
        self.seen: list[int] = []

    def forward(self, tokens, attention_mask=None, *, cache=None, start=0):
        self.seen = self.seen[:start] + tokens[0].tolist()
        out = torch.zeros(1, tokens.shape[1], TOK.vocab_size)
        i = len(self.seen) - self.P
        out[0, -1, self.script[i] if 0 <= i < len(self.script) else TOK.eos_id] = 5.0
        return out


def _fill(model, regex: str, after: str, width: int = 6, seed: int | None = None) -> str:
    prompt = TOK.encode("x: ")
    if isinstance(model, Script):
        model.P = len(prompt)
    auto = TokenAutomaton.from_regex(regex, vocab_of(TOK))
    pieces = [("hole", 0), ("text", TOK.encode(after))]
    config = SampleConfig(temperature=0.0 if seed is None else 1.0, seed=seed)
    got = fill_left_to_right(model, [prompt], [pieces], [auto], [width], config,
                             eos_id=TOK.eos_id)
    return TOK.decode(got.holes[0][0])


@pytest.mark.parametrize(
    ("regex", "after", "script", "hole"),
    [
        ("a(,b)?", ", end", "a,b, end", "a,b"),  # starts like the text, then is not it
        ("a(,b)?", ", end", "a, end", "a"),  # the whole text: ends at the accepting point
        ("[ab,]{1,6}", ",b.", "a,a,b.", "a,a"),  # a partial match, then the text again
        ("[ab,]{1,6}", ",,b", "a,,,b", "a,"),  # the text overlaps itself (two readings)
        ("a|a,", ",", "a,,", "a"),  # a one-token text ends the hole at once, as before
    ],
)
def test_a_hole_ends_where_the_whole_following_text_is_written(regex, after, script, hole):
    assert _fill(Script(0, script), regex, after) == hole


def test_random_fills_end_each_hole_at_the_first_place_the_whole_text_follows():
    """A tiny random causal model sampling among ``[,c ]`` (every prefix accepting, the text
    after it `, c.` made of the same characters): every fill is in the hole's language, no
    earlier accepting point is followed by the whole text, and some fills hold the text's
    first token inside them (the old rule ended the hole at any comma)."""
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", **CONFIG, **TOK.special_ids())).eval()
    after, inner = ", c.", 0
    for seed in range(24):
        hole = _fill(model, "[,c ]{1,8}", after, width=8, seed=seed)
        assert re.fullmatch("[,c ]{1,8}", hole)
        stream = hole + after
        assert all(stream[p : p + len(after)] != after for p in range(1, len(hole)))
        inner += "," in hole[1:]
    assert inner >= 3


def test_two_holes_with_nothing_between_them_are_refused_before_any_model_call():
    model = Script(0, "ab")
    auto = TokenAutomaton.from_regex("a", vocab_of(TOK))
    with pytest.raises(UserError, match="two holes with no text between them"):
        fill_left_to_right(model, [TOK.encode("x")], [[("hole", 0), ("text", []), ("hole", 1)]],
                           [auto, auto], [1, 1], SampleConfig(), eos_id=TOK.eos_id)
    assert model.seen == []
