"""Session 38 audit of the converters: what a user exporting a model back to a publisher's
layout, or converting one, meets."""

from __future__ import annotations

import json

import pytest
import torch
from test_convert import make_dream, make_llada
from test_moe import make_llada_moe

import unmask
from unmask.convert import convert, export


@pytest.mark.parametrize(("make", "family"), [(make_dream, "dream"), (make_llada, "llada"),
                                              (make_llada_moe, "llada-moe")])
def test_an_export_has_the_generation_config_the_publishers_code_reads(tmp_path, make,
                                                                       family) -> None:
    """Dream's modeling code loads ``generation_config.json`` in ``from_pretrained``
    (``DreamGenerationConfig.from_pretrained(folder)``; its ``diffusion_generate`` fills the
    canvas with that config's ``mask_token_id``): a ``--to dream`` export had none, so with
    the publisher's code copied in, as docs/models.md says, it failed to load ("does not
    appear to have a file named generation_config.json"). Every publisher layout gets one,
    with the special ids, as the publishers' folders ship it."""
    torch.manual_seed(0)
    make(tmp_path / "src")
    native = convert(tmp_path / "src", tmp_path / "native")
    out = export(native, tmp_path / "out", family=family)
    config = unmask.load(native).config
    saved = json.loads((out / "generation_config.json").read_text())
    assert saved["mask_token_id"] == config.mask_id
    assert saved["eos_token_id"] == config.eos_id and saved["pad_token_id"] == config.pad_id
    transformers = pytest.importorskip("transformers")
    generation = transformers.GenerationConfig.from_pretrained(out)  # as Dream's code does
    assert generation.mask_token_id == config.mask_id
    assert generation.eos_token_id == config.eos_id
    assert unmask.load(out).config.mask_id == config.mask_id  # and it still imports back


@pytest.mark.parametrize("family", ["dream", "transformers"])
def test_an_exported_dream_names_its_own_bos_in_tokenizer_config(tmp_path, family) -> None:
    """Dream's folder names ``<|beginoftext|>`` as ``bos_token`` in tokenizer_config.json
    (what its evaluation puts before a prompt) while config.json's ``bos_token_id`` is its
    EOS: the export named the EOS, so a harness adding ``tokenizer.bos_token`` began an
    exported Dream's prompts with the end-of-text token. The import is unchanged by it."""
    from tokenizers import Tokenizer as HFTokenizer

    folder = tmp_path / "dream"
    make_dream(folder)
    hf = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    hf.add_special_tokens(["<|beginoftext|>"])
    hf.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|beginoftext|>"}))
    native = convert(folder, tmp_path / "native")
    config = unmask.load(native).config
    out = export(native, tmp_path / "out", family=family)
    saved = json.loads((out / "tokenizer_config.json").read_text())
    assert saved["bos_token"] == "<|beginoftext|>" and saved["eos_token"] == "<|endoftext|>"
    back = unmask.load(out).config
    assert (back.bos_id, back.prompt_bos_id) == (config.bos_id, config.prompt_bos_id)
    assert back.bos_id != back.prompt_bos_id  # the folder's facts, as imported
