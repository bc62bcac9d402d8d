"""An SFT run stopped and resumed (``unmask train --resume``) trains what the run that never
stopped trains: the same batches (conversations, and which of their turns), the same masks,
the same weights. SFT data is re-read and re-rendered on resume, so this guards that nothing
of a batch depends on state that is not saved."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


def test_an_sft_run_resumed_equals_the_run_uninterrupted(tmp_path):
    tok = byte_tokenizer()
    torch.manual_seed(0)
    base = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=128,
                                     **tok.special_ids()))
    save_checkpoint(tmp_path / "base", model=base, tokenizer=tok)
    rows = [{"prompt": f"q{i}?", "response": "a" * (i % 5 + 1)} for i in range(6)]
    rows.append({"messages": [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "hi"},
                              {"role": "assistant", "content": "yo"},
                              {"role": "user", "content": "and"},
                              {"role": "assistant", "content": "then"}]})
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    flags = ["--objective", "sft", "--data", str(data), "--init", str(tmp_path / "base"),
             "--seq-len", "96", "--batch-size", "3", "--seed", "1", "--log-every", "1",
             "--warmup", "2", "--no-progress"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert main(["train", *flags, "--out", str(whole), "--steps", "4"]) == 0
    assert main(["train", *flags, "--out", str(part), "--steps", "2"]) == 0
    assert main(["train", "--resume", "--out", str(part), "--steps", "4", "--no-progress"]) == 0

    def losses(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [r["loss"] for r in map(json.loads, lines) if "loss" in r]

    assert len(losses(whole)) == 4 and losses(part) == losses(whole)
    a = load_file(whole / "checkpoint" / "model.safetensors")
    b = load_file(part / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
