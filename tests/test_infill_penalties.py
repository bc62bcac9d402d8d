"""The repetition penalties act on infill, edit and form fills as on generation: a gap's
constraint moves its best allowed logit to 0, so a multiplicative penalty applied after it
could not demote the top token (``--repetition-penalty`` did nothing there)."""

from __future__ import annotations

import pytest
import torch

from unmask.canvas import Canvas
from unmask.config import SampleConfig, model_preset
from unmask.infill import Gap, edit, infill
from unmask.infill.forms import fill_form
from unmask.model import Transformer
from unmask.sampling import sample
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
V = TOK.vocab_size


class Prefers:
    """Every position favours ``chars`` in order (10, 9, ...): the top one is given text."""

    def __init__(self, chars: str) -> None:
        self.bias = torch.zeros(V)
        for k, c in enumerate(chars):
            self.bias[TOK.encode(c)[0]] = 10.0 - k

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        return self.bias.expand(*tokens.shape, V).clone()


@pytest.mark.parametrize("gap", [Gap(length=1), Gap(length=1, regex="[a-z]")])
def test_a_repetition_penalty_demotes_a_token_of_the_text_in_a_gap(gap):
    plain = infill(Prefers("ab"), TOK, ["aaaa ", gap], SampleConfig(steps=1))
    assert plain.gaps[0].text == "a"
    got = infill(Prefers("ab"), TOK, ["aaaa ", gap],
                 SampleConfig(steps=1, repetition_penalty=50.0))
    assert got.gaps[0].text == "b"  # 'a' (seen) falls to 10/50 below 'b' (9)


def test_a_repetition_penalty_changes_an_edit_and_a_form():
    text = "aaaa x"
    assert edit(Prefers("ab"), TOK, text, spans=[(5, 6)],
                config=SampleConfig(steps=1)).text == "aaaa a"
    assert edit(Prefers("ab"), TOK, text, spans=[(5, 6)],
                config=SampleConfig(steps=1, repetition_penalty=50.0)).text == "aaaa b"
    form = '{"k": "aaaa", "v": "<text:1>"}'
    assert fill_form(Prefers("ab"), TOK, form, SampleConfig(steps=2)).value["v"] == "a"
    assert fill_form(Prefers("ab"), TOK, form,
                     SampleConfig(steps=2, repetition_penalty=50.0)).value["v"] == "b"


def test_the_ngram_ban_still_leaves_a_gap_its_last_allowed_token():
    # every 1-gram 'a' is banned by no_repeat_ngram_size=1, but the gap allows only 'a'
    got = infill(Prefers("ab"), TOK, ["aaaa ", Gap(choices=["a"])],
                 SampleConfig(steps=1, no_repeat_ngram_size=1, repetition_penalty=50.0))
    assert got.gaps[0].text == "a"


@pytest.mark.parametrize("penalties", [
    {"repetition_penalty": 1.7},
    {"presence_penalty": 0.8, "frequency_penalty": 0.3},
    {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2},
])
def test_unconstrained_generation_applies_the_penalties_to_the_raw_logits(penalties):
    """Generation with penalties == the order the loop used before (the sampler's bans, then
    the penalties): moving r, a and f ahead of the bans changes no bit, as a ban only writes
    -inf, which every penalty keeps."""
    from unmask.sampling.loop import forbid_tokens
    from unmask.sampling.penalties import Penalties, PenaltyConstraint, special_ids

    cfg = model_preset("tiny", vocab_size=V, max_seq_len=64, **TOK.special_ids())
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    config = SampleConfig(steps=8, gen_length=16, temperature=0.9, seed=3,
                          forbid_eos=True, **penalties)
    prompt = TOK.encode("aaaa abab ")

    def canvas() -> Canvas:
        return Canvas.from_prompts([prompt], 16, mask_id=TOK.mask_id, pad_id=TOK.pad_id)

    got = sample(model, canvas(), config, eos_id=TOK.eos_id)
    c = canvas()
    exempt = sorted({*special_ids(cfg), TOK.mask_id, TOK.eos_id})
    c.constraints += [forbid_tokens([TOK.eos_id]), forbid_tokens([TOK.mask_id]),
                      PenaltyConstraint(Penalties.of(config), mask_id=c.mask_id,
                                        locked=c.locked, attention_mask=c.attention_mask,
                                        exempt=exempt)]
    ref = sample(model, c, SampleConfig(steps=8, gen_length=16, temperature=0.9, seed=3,
                                        forbid_eos=True), eos_id=TOK.eos_id)
    assert torch.equal(got.tokens, ref.tokens)
