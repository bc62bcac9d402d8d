"""One rule says which decoder a run runs for the user's ``decoder`` option
(``ModelFacts.decoder_for``): none given, the checkpoint's recommended one
(``sample_defaults``), else its objective's; ``auto``, the objective's. ``api.sample_config``
(and so ``api.choose``, the CLI and the API) and the server's ``served_decoder`` (and its launch
check) used two copies of it; they agree for every objective, attention and recommendation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from server_helpers import tiny_config

from unmask import api
from unmask.errors import UserError
from unmask.facts import ModelFacts
from unmask.loaded import Loaded
from unmask.model import Transformer
from unmask.objectives import OBJECTIVES
from unmask.server.engine import check_servable, served_decoder
from unmask.tokenizer import byte_tokenizer

ATTENTIONS = ("bidirectional", "block-causal", "causal")
RECOMMENDED = (None, "auto", "llada", "ar", "bd3lm", "sedd")


def _loaded(objective: str, attention: str, decoder: str | None) -> Loaded | None:
    extra = {"block_size": 4} if attention == "block-causal" else {}
    if objective == "hybrid":
        extra["draft_block"] = 4
    if objective == "sedd":
        extra["sedd_graph"] = "absorbing"
    defaults = {} if decoder is None else {"decoder": decoder}
    try:
        cfg = dataclasses.replace(tiny_config(), objective=objective, attention=attention,
                                  sample_defaults=defaults, **extra)
        model = Transformer(cfg).eval()
    except (UserError, ValueError, TypeError):
        return None  # a combination no checkpoint holds
    return Loaded(model=model, tokenizer=byte_tokenizer(), config=cfg, path=Path("ckpt"))


def _outcome(run) -> str:
    try:
        return f"runs {run()}"
    except UserError as e:
        return f"refused: {e}"


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_the_api_and_the_server_run_the_same_decoder(objective):
    checked = 0
    for attention in ATTENTIONS:
        for decoder in RECOMMENDED:
            loaded = _loaded(objective, attention, decoder)
            if loaded is None:
                continue
            facts = api.facts_of(loaded)
            served = served_decoder(facts)
            assert served == facts.decoder_for(None)
            own = facts.default_decoder
            assert served == (own if decoder in (None, "auto") else decoder)
            assert facts.decoder_for("auto") == own  # asked for: the objective's own
            # the API with no option given (the CLI's and the API's run) runs what is served ...
            asked = _outcome(lambda lm=loaded: api.choose(lm, {}))
            if asked.startswith("runs "):
                assert asked == f"runs {served}", (attention, decoder)
            # ... and the launch check refuses exactly what that run refuses, the same way
            try:
                check_servable(loaded)
            except UserError as e:
                assert asked.startswith("refused: "), (attention, decoder, str(e))
                assert asked.removeprefix("refused: ") in str(e)
                assert str(e).startswith("cannot serve ckpt: ") and "\n" not in str(e)
            else:
                assert asked == f"runs {served}", (attention, decoder, asked)
            checked += 1
    assert checked  # every objective has a checkpoint it trains


def test_recommended_options_are_those_a_run_that_names_no_decoder_keeps():
    """A recommendation that names a decoder is listed for that decoder, as ``sample_config``
    applies it: a causal decoder's run drops ``block_length`` (it listed it, for the
    objective's own ``llada``, which no run of it uses)."""
    loaded = _loaded("mdlm", "causal", "ar")
    assert loaded is not None
    loaded.config.sample_defaults.update(block_length=4, repetition_penalty=1.2)
    config = api.sample_config(loaded, {})
    assert config.block_length is None and config.repetition_penalty == 1.2
    listed = api.recommended_options(loaded)
    assert "block_length" not in listed and listed["repetition_penalty"] == 1.2
    assert api.recommended_options(loaded, "auto")["block_length"] == 4  # llada's, as asked


def test_decoder_for_reads_only_the_recommended_decoder():
    facts = ModelFacts.of(tiny_config())
    assert facts.decoder_for(None) == facts.decoder_for("auto") == "llada"
    assert facts.decoder_for("sedd") == "sedd"
    recommended = dataclasses.replace(facts, sample_defaults={"decoder": "bd3lm"})
    assert recommended.decoder_for(None) == "bd3lm"
    assert recommended.decoder_for("auto") == "llada" and recommended.decoder_for("ar") == "ar"
