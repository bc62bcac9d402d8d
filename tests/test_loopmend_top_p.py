"""top_p 1.0 is off everywhere (OpenAI's default; the server took it so), and a refusal of
top-k / top-p on a diffusion decoder names only the option given, as the user typed it."""

from __future__ import annotations

import pytest
import torch

from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.sampling import DECODERS, generate, sample_blocks
from unmask.sampling.registry import refuse_top_k, refuse_unused
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def _tiny(**overrides):
    return model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=48, **TOK.special_ids(),
                        **overrides)


def test_top_p_one_is_off_and_out_of_range_is_refused():
    assert SampleConfig(top_p=1.0).top_p is None
    assert SampleConfig(top_p=0.9).top_p == 0.9
    for bad in (0.0, -0.5, 2.0):
        with pytest.raises(UserError, match=r"^top_p must be in \(0, 1\], got"):
            SampleConfig(top_p=bad)
    with pytest.raises(UserError, match="^top_k must be >= 1, got 0"):
        SampleConfig(top_k=0)


def test_diffusion_decoders_take_top_p_one():
    torch.manual_seed(0)
    cfg = _tiny()
    model = Transformer(cfg).eval()
    config = SampleConfig(gen_length=4, steps=4, top_p=1.0)
    ids = dict(mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=cfg.eos_id)
    plain = generate(model, [[70, 71]], SampleConfig(gen_length=4, steps=4), **ids)
    assert torch.equal(generate(model, [[70, 71]], config, **ids).tokens, plain.tokens)
    torch.manual_seed(0)
    bcfg = _tiny(attention="block-causal", block_size=4)
    sample_blocks(Transformer(bcfg).eval(), [[70, 71]], config, **ids)
    for name in ("llada", "bd3lm", "sedd"):  # before: "top_k and top_p apply to ..."
        refuse_top_k(name, SampleConfig(decoder=name, top_p=1.0))
    refuse_unused(DECODERS["sedd"], SampleConfig(decoder="sedd", top_p=1.0))


def test_the_refusal_names_what_was_given():
    with pytest.raises(UserError, match=r"^top_p applies to autoregressive .* 'llada'$"):
        refuse_top_k("llada", SampleConfig(top_p=0.5))
    with pytest.raises(UserError, match=r"^top_k applies to autoregressive .* 'bd3lm'$"):
        refuse_top_k("bd3lm", SampleConfig(top_k=3))
    with pytest.raises(UserError, match=r"^top_k and top_p apply to autoregressive"):
        refuse_top_k("llada", SampleConfig(top_k=3, top_p=0.5))


def test_the_command_names_the_flag_given(tmp_path, capsys):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m", model=Transformer(_tiny()), tokenizer=TOK)
    base = ["generate", "--model", str(path), "--gen-length", "4", "--steps", "4"]
    assert main([*base, "--top-p", "0.5", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: --top-p applies to autoregressive" in err
    assert "top_k" not in err and "top-k" not in err  # before: "top_k and --top-p apply"
    assert main([*base, "--top-p", "2", "x"]) == 2
    assert "error: --top-p must be in (0, 1], got 2.0" in capsys.readouterr().err
    assert main([*base, "--top-p", "1", "x"]) == 0  # off, as the server's top_p 1.0
