"""Session 31: an empty prompt given as token ids starts with the checkpoint's start token
(``ModelFacts.start_id``): a published model's BOS where it records one
(``prompt_bos_id``), as its empty text prompt ``""`` (encoded to [BOS]) does, else the EOS.
The commit loop, ``bd3lm`` and ``ar`` started it with the EOS whatever the checkpoint, so
``api.start(loaded, [[]])`` and a server request of token ids ``[]`` decoded another canvas
than the text prompt ``""`` of the same published model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unmask import api
from unmask.checkpoint import save_checkpoint
from unmask.config import SampleConfig, model_preset
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
BOS = TOK.special_ids()["bos_id"]

FAMILIES = {
    "llada": {},
    "bd3lm": {"objective": "bd3lm", "attention": "block-causal", "block_size": 4},
    "ar": {"objective": "ar", "attention": "causal"},
}


def _loaded(folder, bos, **extra):
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, init_std=0.3,
                       prompt_bos_id=bos, **TOK.special_ids(), **extra)
    torch.manual_seed(0)
    path = save_checkpoint(folder, model=Transformer(cfg).eval(), tokenizer=TOK)
    return api.load_for_decoding(str(path), device="cpu", dtype="fp32")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_an_empty_token_prompt_starts_with_the_published_bos(tmp_path, family):
    loaded = _loaded(tmp_path / family, BOS, **FAMILIES[family])
    config = SampleConfig(gen_length=8, steps=8, temperature=0.0)
    result = api.start(loaded, [[]], config).run()
    assert result.prompt_ids == [[BOS]]
    text = api.generate(loaded, "", config=dataclasses.replace(config, decoder="auto"))
    assert text.ids == result.gen_ids  # the text prompt "" is [BOS]: the same canvas
    # a batch: the empty row left-padded beside a longer one starts with it too
    both = api.start(loaded, [[], [65, 66]], config).run()
    assert both.prompt_ids[0] == [BOS]


def test_without_a_published_bos_an_empty_prompt_still_starts_with_the_eos(tmp_path):
    loaded = _loaded(tmp_path / "own", None)
    result = api.start(loaded, [[]], SampleConfig(gen_length=8, steps=8)).run()
    assert result.prompt_ids == [[TOK.special_ids()["eos_id"]]]
