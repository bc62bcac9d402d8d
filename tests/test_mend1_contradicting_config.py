"""A checkpoint whose config records objective ``mdlm`` (sampled by decoder ``llada``) but
causal attention: decoder ``llada``'s refusal offered "use decoder 'llada'", the decoder it
refused. It says the config contradicts itself and names the decoder that runs it."""

from __future__ import annotations

import dataclasses

import pytest
from server_helpers import loaded, tiny_config

from unmask import api
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.facts import ModelFacts
from unmask.model import Transformer
from unmask.sampling.registry import choose_decoder


def contradicting(attention: str) -> ModelFacts:
    extra = {"block_size": 4} if attention == "block-causal" else {}
    return ModelFacts.of(dataclasses.replace(tiny_config(32), attention=attention,
                                             objective="mdlm", **extra))


@pytest.mark.parametrize(("attention", "runs"), [("causal", "ar"), ("block-causal", "bd3lm")])
def test_the_refusal_names_the_contradiction_and_what_runs(attention, runs):
    facts = contradicting(attention)
    with pytest.raises(UserError) as e:
        choose_decoder(facts, SampleConfig())  # auto: the objective's llada
    message = str(e.value)
    assert "use decoder 'llada'" not in message, message
    assert "contradicts itself" in message and f"use decoder {runs!r}" in message, message
    assert "\n" not in message
    choose_decoder(facts, SampleConfig(decoder=runs))  # the way out offered is taken


def test_the_way_out_runs():
    lm = loaded(Transformer(dataclasses.replace(tiny_config(32), attention="causal",
                                                objective="mdlm")).eval())
    with pytest.raises(UserError, match="use decoder 'ar'"):
        api.generate(lm, "ab", config={"gen_length": 4})
    out = api.generate(lm, "ab", config={"gen_length": 4, "decoder": "ar"})
    assert out.decoder == "ar" and len(out.ids[0]) == 4


def test_a_consistent_checkpoint_keeps_its_own_way_out():
    facts = ModelFacts.of(dataclasses.replace(tiny_config(32), attention="causal",
                                              objective="ar"))
    with pytest.raises(UserError, match=r"this checkpoint is causal \(objective ar\): use "
                                        "decoder 'ar'$"):
        choose_decoder(facts, SampleConfig(decoder="llada"))


@pytest.mark.parametrize(("objective", "attention", "decoder", "runs"), [
    ("ar", "bidirectional", "ar", "llada"),  # ar's refusal offered "use decoder 'ar'"
    ("bd3lm", "bidirectional", "bd3lm", "llada"),
])
def test_every_attention_refusal_names_a_decoder_that_runs(objective, attention, decoder, runs):
    """The causal decoders' and bd3lm's refusals of a checkpoint's attention end the way
    llada's does (``ModelFacts.attention_way_out``): never a decoder that refuses it too."""
    facts = ModelFacts.of(dataclasses.replace(tiny_config(32), attention=attention,
                                              objective=objective))
    with pytest.raises(UserError) as e:
        choose_decoder(facts, SampleConfig(decoder=decoder))
    message = str(e.value)
    assert "contradicts itself" in message and f"use decoder {runs!r}" in message, message
    assert "\n" not in message
