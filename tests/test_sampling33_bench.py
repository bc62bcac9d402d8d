"""Session 33, sampling: the decoding benchmark's own runs."""

from __future__ import annotations

import argparse

import torch

from unmask.config import model_preset
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


def test_decoding_warm_up_fits_where_the_lengths_fit(benchmark) -> None:
    """run_section warmed every cache up with two blocks of --block-length, whatever the
    lengths: on a context that holds the prompt and one length but not two blocks (the demo's
    256 with --block-length 128 --gen-lengths 128) the warm-up was refused ("exceeds the
    model's max_seq_len") and the benchmark stopped before its first row."""
    decoding = benchmark("decoding")
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=24, mask_id=tok.mask_id,
                       pad_id=tok.pad_id, eos_id=tok.eos_id, bos_id=tok.bos_id)
    torch.manual_seed(0)
    sec = decoding.Section("tiny", Transformer(cfg).eval(), tok, cfg, trained=False)
    args = argparse.Namespace(gen_lengths=[16], block_length=16, segment_length=None,
                              temperature=0.0, seed=0, repetition_penalty=1.0,
                              no_repeat_ngram_size=0, repeats=1)
    prompts = ["ab", "cde"]
    sec.plan(prompts, args)
    assert sec.lengths == [16]  # 3 + 16 fits 24; two blocks of 16 do not
    decoding.run_section(sec, prompts, args, decoding.POLICY_SET[:1], ["none"], None,
                         torch.device("cpu"))
    assert [(r["gen_length"], r["nfe"]) for r in sec.rows] == [(16, 16)]
