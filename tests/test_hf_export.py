"""Export to Hugging Face transformers (``unmask convert --to transformers``): the folder loads
with AutoModelForMaskedLM / AutoModel / AutoTokenizer (trust_remote_code, local files only),
computes unmask's logits in every attention mode, drives unmask's sampler to the same tokens,
and imports back into unmask exactly."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import unmask
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import SampleConfig, model_preset
from unmask.convert import export
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.sampling import generate
from unmask.tokenizer import byte_tokenizer

# No network: set before transformers (huggingface_hub) reads it; every load is also
# local_files_only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

MODES = {
    # attention mode -> extra ModelConfig options, so that GQA, tied and untied heads and QKV
    # biases are each covered by some mode
    "bidirectional": {"tie_embeddings": True},
    "causal": {"tie_embeddings": False, "qkv_bias": True},
    "block-causal": {"tie_embeddings": False, "block_size": 4},
}


def _run(
    tmp_path: Path, mode: str, seed: int = 0, chat_template: str | None = None
) -> tuple[Path, Transformer, object]:
    """A tiny random checkpoint in ``mode``; every weight perturbed (norms too, biases too),
    so a wrongly mapped tensor cannot hide behind a default value."""
    torch.manual_seed(seed)
    tok = byte_tokenizer()
    cfg = model_preset(
        "tiny",
        vocab_size=tok.vocab_size,
        attention=mode,
        chat_template=chat_template,
        **MODES[mode],
        **tok.special_ids(),
    )
    model = Transformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    run = tmp_path / f"run-{mode}"
    save_checkpoint(run, model=model, tokenizer=tok)
    return run, model.eval(), tok


def _auto(cls_name: str, path: Path) -> torch.nn.Module:
    cls = getattr(transformers, cls_name)
    return cls.from_pretrained(str(path), trust_remote_code=True, local_files_only=True).eval()


@pytest.mark.parametrize("mode", list(MODES))
def test_transformers_loads_the_export_with_unmask_logits(tmp_path: Path, mode: str) -> None:
    run, model, tok = _run(tmp_path, mode)
    out = export(run, tmp_path / "hf", family="transformers")
    names = {p.name for p in out.iterdir()}
    assert names == {
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "configuration_unmask.py", "modeling_unmask.py",
    }  # fmt: skip
    assert not list(tmp_path.glob(".hf.tmp*"))  # the staging folder was renamed into place
    hf_cfg = json.loads((out / "config.json").read_text())
    assert hf_cfg["model_type"] == "unmask" and hf_cfg["attention"] == mode
    assert hf_cfg["mask_token_id"] == model.config.mask_id
    assert hf_cfg["auto_map"]["AutoModelForMaskedLM"] == "modeling_unmask.UnmaskForMaskedLM"

    mlm = _auto("AutoModelForMaskedLM", out)
    assert type(mlm).__name__ == "UnmaskForMaskedLM"
    assert mlm.config.attention == mode and mlm.config.hidden_size == model.config.d_model
    m = model.config.mask_id
    a, b = tok.encode("The cat sat"), tok.encode("on the mat, née")
    x = torch.tensor([a + [m, m] + b[:5], b[:11] + [m, m] + a[:5]])  # (2, 18), masks inside
    # Left-padded batch: the padded row must still match unmask at its real positions.
    pad = torch.ones_like(x, dtype=torch.bool)
    pad[0, :3] = False
    with torch.no_grad():
        want, got = model(x), mlm(input_ids=x).logits
        want_pad, got_pad = (
            model(x, attention_mask=pad),
            mlm(input_ids=x, attention_mask=pad.long()).logits,
        )
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_pad, want_pad, atol=1e-5, rtol=0)
    assert not torch.allclose(got_pad[0], got[0], atol=1e-3)  # the mask did change something

    # AutoModel: the final-norm hidden states, the input to unmask's output head.
    captured: list[torch.Tensor] = []
    hook = model.norm.register_forward_hook(lambda _m, _i, o: captured.append(o))
    with torch.no_grad():
        model(x)
        hidden = _auto("AutoModel", out)(input_ids=x).last_hidden_state
    hook.remove()
    assert hidden.shape == (2, x.shape[1], model.config.d_model)
    torch.testing.assert_close(hidden, captured[0], atol=1e-5, rtol=0)

    # MaskedLM loss over the labelled (masked) positions only.
    labels = torch.full_like(x, -100)
    labels[:, 3:5] = x[:, 3:5].flip(0)
    with torch.no_grad():
        loss = mlm(input_ids=x, labels=labels).loss
    torch.testing.assert_close(
        loss, F.cross_entropy(want[:, 3:5].reshape(-1, want.shape[-1]), labels[:, 3:5].reshape(-1))
    )

    # ... and the folder imports back into unmask with identical logits.
    back = unmask.load(out)
    assert back.family == "transformers" and back.config == model.config
    with torch.no_grad():
        assert torch.equal(back.model(x), want)


def test_transformers_model_drives_unmasks_sampler(tmp_path: Path) -> None:
    """unmask's sampler takes the transformers model as it is (``.logits``, its config's
    ``max_seq_len``/``logit_shift``): a left-padded batch decodes to the same tokens."""
    run, model, tok = _run(tmp_path, "bidirectional", seed=1)
    mlm = _auto("AutoModelForMaskedLM", export(run, tmp_path / "hf", family="transformers"))
    prompts = [tok.encode("In the beginning"), tok.encode("And")]
    cfg = model.config
    sc = SampleConfig(gen_length=8, steps=8, block_length=4)
    kw = {"mask_id": cfg.mask_id, "pad_id": cfg.pad_id, "eos_id": cfg.eos_id}
    with torch.no_grad():
        want, got = generate(model, prompts, sc, **kw), generate(mlm, prompts, sc, **kw)
    assert torch.equal(got.tokens, want.tokens) and cfg.mask_id not in got.tokens.tolist()[0]


def test_autotokenizer_round_trip(tmp_path: Path) -> None:
    template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    run, model, tok = _run(tmp_path, "bidirectional", chat_template=template)
    out = export(run, tmp_path / "hf", family="transformers")
    hf_tok = transformers.AutoTokenizer.from_pretrained(
        str(out), trust_remote_code=True, local_files_only=True
    )
    text = "Grüße, world — 1 + 1 = 2\n\tdone."
    ids = hf_tok(text, add_special_tokens=False)["input_ids"]
    assert ids == tok.encode(text)
    assert hf_tok.decode(ids) == text
    special = {
        "mask": model.config.mask_id,
        "pad": model.config.pad_id,
        "eos": model.config.eos_id,
        "bos": model.config.bos_id,
    }
    assert {k: getattr(hf_tok, f"{k}_token_id") for k in special} == special
    assert hf_tok.mask_token == "[MASK]"
    assert hf_tok.model_max_length == model.config.max_seq_len
    # The chat template travels in tokenizer_config.json, where both sides read it.
    chat = [{"role": "user", "content": "hi"}]
    assert (
        hf_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        == "<user>hi<assistant>"
    )
    assert unmask.load(out).config.chat_template == template


def test_cli_export_and_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run, model, _tok = _run(tmp_path, "block-causal")
    assert (
        main(["convert", str(run), str(tmp_path / "hf"), "--to", "transformers", "--dtype", "bf16"])
        == 0
    )
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.bfloat16}
    assert "model.layers.1.attn.o_proj.weight" in stored and "lm_head.weight" in stored
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    # Never overwrites; a publisher folder is not a native checkpoint to export.
    assert main(["convert", str(run), str(tmp_path / "hf"), "--to", "transformers"]) == 2
    assert (
        main(["convert", str(tmp_path / "hf"), str(tmp_path / "again"), "--to", "transformers"])
        == 2
    )
    err = capsys.readouterr().err
    assert "already a publisher folder" in err and f"unmask convert {tmp_path / 'hf'} NATIVE" in err

    # An option the modeling file does not implement is refused by name, nothing written.
    from unmask.convert import hf_export

    monkeypatch.setattr(
        hf_export, "SUPPORTED", tuple(f for f in hf_export.SUPPORTED if f != "block_size")
    )
    with pytest.raises(UserError) as e:
        export(run, tmp_path / "refused", family="transformers")
    assert "block_size=4" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "refused").exists() and not list(tmp_path.glob(".refused.tmp*"))


def test_trained_facts_survive_the_export(tmp_path: Path) -> None:
    import unmask

    torch.manual_seed(0)
    tok = byte_tokenizer()
    cfg = model_preset(
        "tiny", vocab_size=tok.vocab_size, objective="mdlm", schedule="cosine", schedule_eps=0.01,
        **tok.special_ids(),
    )  # fmt: skip
    save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    export(tmp_path / "run", tmp_path / "hf", family="transformers")
    back = unmask.load(tmp_path / "hf")
    assert back.family == "transformers"
    assert (back.config.objective, back.config.schedule, back.config.schedule_eps) == (
        "mdlm", "cosine", 0.01,
    )  # fmt: skip

    # A model trained with objective sedd: its graph says which samplers read its head (the
    # forward pass does not read it); it was refused as an option the modeling file lacks.
    for graph in ("uniform", "absorbing"):
        sedd = dataclasses.replace(cfg, objective="sedd", sedd_graph=graph)
        run = tmp_path / f"sedd-{graph}"
        save_checkpoint(run, model=Transformer(sedd), tokenizer=tok)
        back = unmask.load(export(run, tmp_path / f"hf-{graph}", family="transformers"))
        assert back.config == sedd
        assert _auto("AutoModelForMaskedLM", tmp_path / f"hf-{graph}").config.sedd_graph == graph
    # ... and where block decoding puts the prompt (LLaDA 2.x's blocks count from position 0)
    blocks = dataclasses.replace(cfg, attention="block-causal", block_size=4,
                                 block_align="absolute")
    save_checkpoint(tmp_path / "blocks", model=Transformer(blocks), tokenizer=tok)
    back = unmask.load(export(tmp_path / "blocks", tmp_path / "hf-blocks", family="transformers"))
    assert back.config == blocks


DIT = {
    # MDLM-style DiT: LayerNorm, GELU MLP with biases, head bias, adaLN on a given sigma
    "mdlm": {"sigma_input": "given", "output": "logits"},
    # MDLM's released checkpoints: time conditioning with sigma always 0
    "mdlm-zero": {"sigma_input": "zero", "output": "logits"},
    # SEDD: the log-score when sigma is given, denoiser logits (sigma read off the masks) when not
    "sedd": {"sigma_input": "masked_fraction", "output": "sedd_log_score"},
}


@pytest.mark.parametrize("kind", list(DIT))
def test_dit_options_export_with_unmask_outputs(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(4)
    tok = byte_tokenizer()
    cfg = model_preset(
        "tiny", vocab_size=tok.vocab_size, norm="layer", mlp="gelu", head_bias=True,
        tie_embeddings=False,
        time_conditioning=True, cond_dim=16, **DIT[kind], **tok.special_ids(),
    )  # fmt: skip
    model = Transformer(cfg)
    with torch.no_grad():  # adaLN-Zero starts at zero: perturb it, or conditioning is untested
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save_checkpoint(tmp_path / "run", model=model, tokenizer=tok)
    model.eval()
    out = export(tmp_path / "run", tmp_path / "hf", family="transformers")
    mlm = _auto("AutoModelForMaskedLM", out)
    m = cfg.mask_id
    x = torch.tensor([tok.encode("abcdefgh") + [m] * 4, [m] * 6 + tok.encode("ijklmn")])  # (2, 12)
    sigma = torch.tensor([0.3, 2.0])
    with torch.no_grad():
        torch.testing.assert_close(
            mlm(input_ids=x, sigma=sigma).logits, model(x, sigma=sigma), atol=1e-5, rtol=0
        )
        if cfg.sigma_input == "given":
            with pytest.raises(ValueError, match="sigma"):
                mlm(input_ids=x)
        else:
            torch.testing.assert_close(mlm(input_ids=x).logits, model(x), atol=1e-5, rtol=0)
        back = unmask.load(out)
        assert back.config == cfg and torch.equal(back.model(x, sigma=sigma), model(x, sigma=sigma))


def test_a_saved_export_keeps_its_modeling_code(tmp_path: Path) -> None:
    """``save_pretrained`` copies the modeling file only for a class registered for an Auto
    class: a model whose class came without the Auto loader's registration (every local load
    under transformers 4.x; here, the class read from the folder) was saved with
    ``modeling_unmask.py`` named in ``auto_map`` and missing, and the folder no longer loaded
    in transformers."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    run, model, _ = _run(tmp_path, "bidirectional")
    out = export(run, tmp_path / "hf", family="transformers")
    cls = get_class_from_dynamic_module("modeling_unmask.UnmaskForMaskedLM", str(out),
                                        local_files_only=True)
    saved = tmp_path / "saved"
    cls.from_pretrained(str(out), local_files_only=True).save_pretrained(str(saved))
    assert {"modeling_unmask.py", "configuration_unmask.py"} <= {p.name for p in saved.iterdir()}
    again = _auto("AutoModelForMaskedLM", saved)
    tokens = torch.randint(4, model.config.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(again(tokens).logits, model(tokens), rtol=1e-5, atol=1e-5)
