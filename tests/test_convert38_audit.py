"""Session 38 audit of the converters: what a user exporting a model back to a publisher's
layout, or converting one, meets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from test_convert import make_dream, make_llada
from test_moe import make_llada_moe

import unmask
from unmask import api
from unmask.convert import convert, export

BOS_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
                "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                "{% endif %}")
"""A template that writes ``bos_token`` first, as LLaDA's does (a user's SFT template on a
Dream-based model)."""


def _dream_with_its_bos(folder: Path, **tokenizer_config: Any) -> Path:
    """A tiny Dream folder whose tokenizer has ``<|beginoftext|>``, which its
    ``tokenizer_config.json`` names as ``bos_token`` (with ``tokenizer_config``'s other
    keys), while its ``config.json``'s ``bos_token_id`` is its EOS, as Dream's folder."""
    from tokenizers import Tokenizer as HFTokenizer

    make_dream(folder)
    hf = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    hf.add_special_tokens(["<|beginoftext|>"])
    hf.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<|beginoftext|>", **tokenizer_config}))
    return folder


@pytest.mark.parametrize(("make", "family"), [(make_dream, "dream"), (make_llada, "llada"),
                                              (make_llada_moe, "llada-moe")])
def test_an_export_has_the_generation_config_the_publishers_code_reads(
        tmp_path: Path, make: Callable[[Path], Any], family: str) -> None:
    """Dream's modeling code loads ``generation_config.json`` in ``from_pretrained``
    (``DreamGenerationConfig.from_pretrained(folder)``; ``diffusion_generate`` then takes its
    ids from ``config.json``, the mask included): a ``--to dream`` export had none, so with the
    publisher's code copied in, as docs/models.md says, it failed to load ("does not appear to
    have a file named generation_config.json"). Every publisher layout gets one, with the
    special ids."""
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
def test_an_exported_dream_names_its_own_bos_in_tokenizer_config(tmp_path: Path,
                                                                 family: str) -> None:
    """Dream's folder names ``<|beginoftext|>`` as ``bos_token`` in tokenizer_config.json
    (what its evaluation puts before a prompt) while config.json's ``bos_token_id`` is its
    EOS: the export named the EOS, so a harness adding ``tokenizer.bos_token`` began an
    exported Dream's prompts with the end-of-text token. The import is unchanged by it."""
    folder = _dream_with_its_bos(tmp_path / "dream")
    native = convert(folder, tmp_path / "native")
    config = unmask.load(native).config
    out = export(native, tmp_path / "out", family=family)
    saved = json.loads((out / "tokenizer_config.json").read_text())
    assert saved["bos_token"] == "<|beginoftext|>" and saved["eos_token"] == "<|endoftext|>"
    back = unmask.load(out).config
    assert (back.bos_id, back.prompt_bos_id) == (config.bos_id, config.prompt_bos_id)
    assert back.bos_id != back.prompt_bos_id  # the folder's facts, as imported


@pytest.mark.parametrize("family", ["dream", "transformers"])
def test_a_dream_template_renders_the_bos_its_tokenizer_config_names(tmp_path: Path,
                                                                     family: str) -> None:
    """A template's ``{{ bos_token }}`` is the token ``tokenizer_config.json`` names as
    ``bos_token`` in unmask as in ``transformers``, for Dream's folder, its native checkpoint
    and its export: unmask rendered config.json's ``bos_token_id`` (Dream's EOS,
    ``<|endoftext|>``) where ``apply_chat_template`` over the same folder, and over the
    export, renders ``<|beginoftext|>``: a prompt ``unmask chat`` and the server sent began
    with another token than the one ``transformers`` users send."""
    from unmask.server.routes.chat import chat_template as served_template

    # a tokenizer class named, as Dream's names one (else transformers 4.46's AutoTokenizer
    # goes to config.json's auto_map, the remote code)
    folder = _dream_with_its_bos(tmp_path / "dream", chat_template=BOS_TEMPLATE,
                                 tokenizer_class="PreTrainedTokenizerFast")
    native = convert(folder, tmp_path / "native")
    out = export(native, tmp_path / "out", family=family)
    named = json.loads((out / "tokenizer_config.json").read_text())["bos_token"]
    assert named == "<|beginoftext|>"
    msgs = [{"role": "user", "content": "hi"}]
    for path in (folder, native, out):
        m = unmask.load(path)
        template = api.chat_template(m)
        assert template.bos_token == named and served_template(m).bos_token == named
        ids = template.prompt(m.tokenizer, msgs)[1]
        assert ids[0] == m.config.prompt_bos_id and ids.count(ids[0]) == 1
    transformers = pytest.importorskip("transformers")
    for path in (folder, out):
        hf = transformers.AutoTokenizer.from_pretrained(str(path))
        rendered = hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        assert rendered == api.chat_template(unmask.load(path)).render(msgs)


def test_sft_of_a_dream_trains_the_bos_unmask_chat_renders(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """SFT of a Dream checkpoint with a template that writes ``bos_token`` trains the prompts
    ``unmask chat`` sends (``<|beginoftext|>`` first, the token its tokenizer_config.json
    names): it rendered the tokenizer's BOS, Dream's EOS."""
    import unmask.sft
    from unmask.config import TrainConfig
    from unmask.train import train

    seen: list[unmask.sft.SFTData] = []

    class Recorded(unmask.sft.SFTData):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            seen.append(self)

    monkeypatch.setattr(unmask.sft, "SFTData", Recorded)
    native = convert(_dream_with_its_bos(tmp_path / "dream"), tmp_path / "native")
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": msgs}) + "\n")
    train(TrainConfig(data=str(data), out=str(tmp_path / "sft"), objective="sft",
                      init=str(native), chat_template=BOS_TEMPLATE, seq_len=32, batch_size=1,
                      steps=1, warmup=0, lr=0.0, eval_every=0, save_every=0, log_every=1,
                      ema=0.0), progress=False)
    m = unmask.load(native)
    chat = api.chat_template(m, BOS_TEMPLATE).prompt(m.tokenizer, msgs[:1])[1]
    assert chat[0] == m.config.prompt_bos_id != m.config.bos_id
    assert [prompt for prompt, _ in seen[0].rows] == [chat]
