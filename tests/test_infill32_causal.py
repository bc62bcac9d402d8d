"""Gap filling by a causal (AR-FIM) checkpoint keeps the diffusion path's guarantees (review of
session 32)."""

from __future__ import annotations

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.infill import infill_causal
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer, with_fim_tokens

TOK = with_fim_tokens(byte_tokenizer())


def _byte_id(b: int) -> int:
    return next(i for i in range(TOK.vocab_size) if TOK.token_bytes(i) == bytes([b]))


def _fim_model(favour: bytes) -> Transformer:
    """A tiny causal FIM Transformer whose every position favours the byte tokens of
    ``favour`` (the first most), whatever it reads: its head's weights are zero, its bias
    the favour."""
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, attention="causal",
                       objective="ar", head_bias=True, tie_embeddings=False,
                       **TOK.special_ids(), **TOK.fim_ids())
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.bias.zero_()
        for k, b in enumerate(favour):
            model.lm_head.bias[_byte_id(b)] = 8.0 - k
    return model


@pytest.mark.parametrize("template", ["a [MASK:3] b", "a [MASK:1-4] b", "[MASK:2]"])
def test_an_unconstrained_causal_fill_is_well_formed_utf8(template):
    """An unconstrained gap (no space taken, not at the start: every gap with a byte
    tokenizer) was written by the free ``fill_middle``, which took any byte: a model
    favouring 0xC0 (no character has it) gave ``"a \\ufffd\\ufffd\\ufffd b"``, a text its
    ``tokens`` did not decode to. The diffusion path never writes such a gap
    (docs/infill.md, Guarantees), and the causal one now holds it to the same automaton."""
    model = _fim_model(b"\xc0\xc3a")
    for seed in range(3):
        r = infill_causal(model, TOK, template, SampleConfig(temperature=1.0, seed=seed))
        assert "\ufffd" not in r.text, r.text
        assert TOK.decode(r.tokens) == r.text
        for g in r.gaps:
            assert r.text[g.start : g.end] == g.text and TOK.decode(g.tokens) == g.text
        assert r.text.startswith("a ") == template.startswith("a ")


def test_a_greedy_infill_on_a_sedd_checkpoint_reports_no_seed(tmp_path, capsys):
    """The fill runs the commit loop on every masked-diffusion checkpoint, SEDD's too (not
    its reverse steps), so at temperature 0 it draws nothing: ``--json`` reported a drawn
    seed that changed nothing (two runs, two seeds, one text), unlike an MDLM checkpoint's
    ``null`` (tests/test_infill_seed.py)."""
    import json

    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, objective="sedd",
                       **tok.special_ids())
    torch.manual_seed(0)
    ckpt = str(save_checkpoint(tmp_path, model=Transformer(cfg).eval(), tokenizer=tok))
    argv = ["infill", "--model", ckpt, "--json", "--device", "cpu", "ab [MASK:4] cd"]
    outs = []
    for _ in range(2):
        assert main(argv) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert outs[0]["text"] == outs[1]["text"]
    assert outs[0]["config"]["seed"] is None and outs[1]["config"]["seed"] is None
    assert main([*argv, "--temperature", "1"]) == 0  # a sampled one still reports its seed
    assert isinstance(json.loads(capsys.readouterr().out)["config"]["seed"], int)
