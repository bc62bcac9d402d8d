"""Session 38 audit of the converters: what a user exporting a model back to a publisher's
layout, or converting one, meets."""

from __future__ import annotations

import json
from pathlib import Path

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
