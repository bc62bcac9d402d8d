"""An SFT checkpoint keeps the sampling options its ``--init`` model recommends
(``ModelConfig.sample_defaults``): with none, ``unmask generate`` / ``chat`` decoded its replies
in one greedy block without a penalty, which the base's recommendation was measured to avoid."""

from __future__ import annotations

import json

import torch

from unmask.api import sample_config
from unmask.checkpoint import load, save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

RECOMMENDED = {"temperature": 0.0, "block_length": 4, "repetition_penalty": 1.3,
               "no_repeat_ngram_size": 3}


def _sft_flags(tmp_path, defaults):
    tok = byte_tokenizer()
    torch.manual_seed(0)
    base = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64,
                                    objective="mdlm", sample_defaults=defaults,
                                    **tok.special_ids()))
    save_checkpoint(tmp_path / "base", model=base, tokenizer=tok)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}?", "response": "ab" * (i + 1)}) + "\n"
                            for i in range(4)))
    return ["--objective", "sft", "--data", str(data), "--init", str(tmp_path / "base"),
            "--seq-len", "48", "--batch-size", "2", "--warmup", "1", "--no-progress"]


def test_an_sft_checkpoint_keeps_the_recommendation_of_its_init_model_also_on_resume(tmp_path):
    flags = _sft_flags(tmp_path, RECOMMENDED)
    run = tmp_path / "chat"
    assert main(["train", *flags, "--out", str(run), "--steps", "1"]) == 0
    loaded = load(run, device="cpu")
    assert loaded.config.sample_defaults == RECOMMENDED
    config = sample_config(loaded, {})  # what `unmask chat` with no flags decodes with
    assert (config.block_length, config.repetition_penalty, config.no_repeat_ngram_size) == (
        4, 1.3, 3)
    assert main(["train", "--resume", "--out", str(run), "--steps", "2", "--no-progress"]) == 0
    assert load(run, device="cpu").config.sample_defaults == RECOMMENDED


def test_an_sft_of_a_model_without_a_recommendation_has_none(tmp_path):
    run = tmp_path / "chat"
    assert main(["train", *_sft_flags(tmp_path, {}), "--out", str(run), "--steps", "1"]) == 0
    assert load(run, device="cpu").config.sample_defaults == {}
