"""An SFT row longer than ``--seq-len`` (prompt, response and EOS) has its response cut, EOS
included, so it does not teach the model where to stop (a chat reply then runs on to
``gen_length``); that happened without a word. The run now says how many trained turns are
cut and the ``--seq-len`` that keeps them whole (or that the model's context cannot)."""

from __future__ import annotations

import json

import torch

from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.model import Transformer
from unmask.sft import SFTData, read_sft_jsonl
from unmask.tokenizer import byte_tokenizer


def _setup(tmp_path):
    tok = byte_tokenizer()
    torch.manual_seed(0)
    base = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=128,
                                     **tok.special_ids()))
    save_checkpoint(tmp_path / "base", model=base, tokenizer=tok)
    rows = [{"prompt": "q?", "response": "a" * n} for n in (4, 20, 90)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tok, data


def test_cut_rows_are_the_rows_longer_than_seq_len(tmp_path):
    tok, data = _setup(tmp_path)
    sft = SFTData(read_sft_jsonl(data), tok, eos_id=tok.eos_id, chat_template=None)
    lengths = [len(p) + len(r) for p, r in sft.rows]
    assert sft.cut_rows(64) == [n for n in lengths if n > 64] and len(sft.cut_rows(64)) == 1
    assert sft.cut_rows(max(lengths)) == []


def test_an_sft_run_says_how_many_turns_it_cuts(tmp_path, capsys):
    tok, data = _setup(tmp_path)
    sft = SFTData(read_sft_jsonl(data), tok, eos_id=tok.eos_id, chat_template=None)
    longest = max(len(p) + len(r) for p, r in sft.rows)
    flags = ["train", "--objective", "sft", "--data", str(data), "--init", str(tmp_path / "base"),
             "--batch-size", "2", "--steps", "1", "--warmup", "1"]
    assert main([*flags, "--seq-len", "64", "--out", str(tmp_path / "cut")]) == 0
    err = capsys.readouterr().err
    assert (f"note: 1 of the 3 trained turns are longer than --seq-len 64 (prompt, response and "
            f"EOS): their responses are cut, EOS included, so those rows do not teach the model "
            f"where to stop; --seq-len {longest} keeps them whole") in err
    assert main([*flags, "--seq-len", str(longest), "--out", str(tmp_path / "whole")]) == 0
    assert "note:" not in capsys.readouterr().err


def test_a_row_past_the_models_context_is_said_so():
    from unmask.config import TrainConfig
    from unmask.train import sft_cut_note

    note = sft_cut_note([300, 90], 1000, TrainConfig(seq_len=64), 256)
    assert note.endswith("the model's max_seq_len (256) cannot hold the longest (300 tokens): "
                         "shorten those lines")
    assert note.startswith("note: 2 of the 1,000 trained turns are longer than seq_len=64")
    assert "seq_len=256 keeps 1 of them whole; " in note  # the 90 fits the model's context
