"""Session 32 checks of the causal decoders (``ar``, ``speculative``, ``hybrid``) through the
decoder registry, the entry the API, CLI and server share."""

from __future__ import annotations

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.facts import ModelFacts
from unmask.model import Transformer
from unmask.sampling import choose_decoder
from unmask.sampling.registry import Target

SPECIAL = dict(mask_id=0, pad_id=1, eos_id=2, bos_id=3)


def _model(attention: str = "causal", seed: int = 0, **kw) -> Transformer:
    ids = {**SPECIAL, **kw}
    draft = dict(draft_block=3) if attention == "causal" else {}
    cfg = model_preset("tiny", vocab_size=16, max_seq_len=64, attention=attention,
                       init_std=0.3, **draft, **ids)  # fmt: skip
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


def _decode(model: Transformer, decoder: str, prompts, *, drafter=None, **options):
    facts = ModelFacts.of(model)
    config = SampleConfig(decoder=decoder, gen_length=12, temperature=0.0, **options)
    aux = {} if drafter is None else {"drafter": drafter}
    run = choose_decoder(facts, config).start(Target(model, facts, aux), prompts, config)
    return run.run()


@pytest.mark.parametrize("decoder", ["hybrid", "speculative"])
def test_an_empty_prompt_starts_from_the_models_start_token_as_ar_does(decoder):
    """``ModelFacts.start_id`` (a published model's BOS, else the EOS) starts an empty prompt
    under every causal decoder; hybrid and speculative started from the EOS, the BOS
    ignored, so the same empty prompt wrote another text than under ``ar``."""
    model = _model(prompt_bos_id=3)
    drafter = _model("bidirectional", 1, prompt_bos_id=3) if decoder == "speculative" else None
    start = ModelFacts.of(model).start_id
    want = _decode(model, "ar", [[]])
    got = _decode(model, decoder, [[]], drafter=drafter)
    assert int(got.tokens[0, 0]) == start == int(want.tokens[0, 0])
    assert got.gen_ids == want.gen_ids
