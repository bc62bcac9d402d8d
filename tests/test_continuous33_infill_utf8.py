"""Template infill with an ``embed-diffusion`` model keeps ``unmask.infill``'s promise that a
gap's text is well-formed UTF-8 and holds no special token: the last step rounded every
position at once, so a byte-level gap could end in half a character (U+FFFD in the text);
a broken gap is now rounded again left to right under its automaton, from the same scores."""

from __future__ import annotations

import pytest
import torch

from unmask.config import SampleConfig, TrainConfig, model_preset
from unmask.model import Transformer
from unmask.objectives import objective_spec
from unmask.tokenizer import byte_tokenizer


def _model(vocab: int) -> Transformer:
    cfg = model_preset("tiny", vocab_size=vocab, max_seq_len=64)
    cfg = objective_spec("embed-diffusion").configure(cfg, TrainConfig(seq_len=32))
    torch.manual_seed(0)
    return Transformer(cfg).eval()


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_gaps_are_well_formed_utf8_and_the_text_is_kept(temperature):
    from unmask.infill.continuous import infill_template

    tok = byte_tokenizer()
    model = _model(tok.vocab_size)
    specials = {tok.mask_id, tok.pad_id, tok.eos_id, getattr(tok, "bos_id", None)}
    for seed in range(6):
        config = SampleConfig(steps=3, seed=seed, temperature=temperature)
        res = infill_template(model, tok, "the lord [MASK:5] unto moses [MASK:4] go", config)
        assert "\ufffd" not in res.text, (seed, res.text)
        assert res.text.startswith("the lord ") and res.text.endswith(" go")
        assert " unto moses " in res.text  # the given text between the gaps too
        for gap in res.gaps:
            assert not specials & set(gap.tokens)
            assert gap.text == tok.decode(gap.tokens)
        again = infill_template(model, tok, "the lord [MASK:5] unto moses [MASK:4] go", config)
        assert again.tokens == res.tokens  # the same seed, the same fill
