"""An empty prompt on a ``logit_shift`` model takes a start token: the room helpers count it,
and a refusal it causes says so."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.sampling import generate
from unmask.sampling.blocks import sample_blocks

sys.path.insert(0, str(Path(__file__).parent))
from test_sampling_empty_prompt import IDS, NextToken  # noqa: E402


def test_the_commit_loop_names_the_start_token_it_adds():
    """gen_length 4 in a context of 4 with no prompt: the canvas is 5 (the start token); the
    refusal said "prompt (1 tokens)" of a prompt that was empty."""
    model = NextToken(max_seq_len=4)
    assert len(generate(model, [], SampleConfig(gen_length=3, steps=3), **IDS).gen_ids[0]) == 3
    with pytest.raises(UserError, match=r"start token.*gen_length <= 3$"):
        generate(model, [], SampleConfig(gen_length=4, steps=4), **IDS)


def test_absolute_blocks_say_why_an_empty_prompt_breaks_the_batch():
    """LLaDA 2.x's blocks start at the first prompt token: [[], [5, 6, 7, 8]] in blocks of 4
    is lengths 1 and 4 once the empty prompt has its start token; the refusal says so."""
    model = NextToken(attention="block-causal", block_size=4, block_align="absolute")
    config = SampleConfig(gen_length=4, steps=4)
    with pytest.raises(UserError, match=r"lengths \[1, 4\] \(an empty prompt counts 1 token "
                                        r"here: the decoder starts it with a start token"):
        sample_blocks(model, [[], [5, 6, 7, 8]], config, **IDS)


def test_check_fits_counts_the_start_token():
    """``api._check_fits`` offered the whole context to an empty prompt the decoder then
    refused (max_seq_len 4: gen_length 4 passed it)."""
    from unmask.api import _check_fits
    from unmask.facts import ModelFacts

    shift = {"facts": ModelFacts.of(SimpleNamespace(logit_shift=True)), "decoder": "llada"}
    _check_fits([[]], SampleConfig(gen_length=4, steps=4), 4)  # no start token: it fits
    _check_fits([[]], SampleConfig(gen_length=3, steps=3), 4, **shift)
    with pytest.raises(UserError, match=r"start token.*use gen_length <= 3 or segment_length"):
        _check_fits([[]], SampleConfig(gen_length=4, steps=4), 4, **shift)
    _check_fits([[], [5]], SampleConfig(gen_length=3, steps=3), 4, **shift)


def test_max_tokens_room_counts_the_start_token(monkeypatch):
    """The server's ``max_tokens`` room after an empty prompt is the context less the start
    token: ``max_tokens_room`` takes prompt columns, which its callers count by the one rule
    (``ModelFacts.prompt_columns``; it kept a copy of its own, for ``logit_shift`` models
    only; the routes' agreement: tests/test_startmend_empty_room.py)."""
    from unmask import api
    from unmask.facts import ModelFacts
    from unmask.server.plumbing import max_tokens_room

    monkeypatch.setattr(api, "facts_of", lambda loaded: SimpleNamespace(block_size=None))
    state = SimpleNamespace(cfg=SimpleNamespace(logit_shift=True), causal=False,
                            context=(8,), loaded=None)
    for shift in (True, False):  # the start token whatever the model, under llada
        facts = ModelFacts.of(SimpleNamespace(logit_shift=shift))
        assert max_tokens_room(state, facts.prompt_columns(0, "llada")) == 7
        assert max_tokens_room(state, facts.prompt_columns(3, "llada")) == 5
    assert max_tokens_room(state, 0) == 8  # columns, as given: no rule of its own
