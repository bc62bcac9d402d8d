"""Importers of published checkpoints (unmask.convert): tiny random checkpoints written in
each family's exact format load, generate, and match an independent forward pass written
here from the family's formulas (not by calling unmask.model)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from convert_helpers import load_error as _error
from convert_helpers import rand as _rand
from convert_helpers import word_tokenizer_json as _tokenizer_json
from safetensors.torch import save_file

import unmask
from unmask.cli import main
from unmask.config import SampleConfig
from unmask.sampling import generate

D, LAYERS, HEADS, KV_HEADS, FFN, VOCAB = 32, 2, 4, 2, 48, 56
def _layer_tensors(qkv_bias: bool) -> dict[str, torch.Tensor]:
    """Generic per-layer weights under neutral names; each family renames them."""
    hd = D // HEADS
    t = {
        "attn_norm": 1 + _rand(D, scale=0.1),
        "q": _rand(HEADS * hd, D),
        "k": _rand(KV_HEADS * hd, D),
        "v": _rand(KV_HEADS * hd, D),
        "o": _rand(D, HEADS * hd),
        "mlp_norm": 1 + _rand(D, scale=0.1),
        "gate": _rand(FFN, D),
        "up": _rand(FFN, D),
        "down": _rand(D, FFN),
    }
    if qkv_bias:
        t |= {"bq": _rand(HEADS * hd), "bk": _rand(KV_HEADS * hd), "bv": _rand(KV_HEADS * hd)}
    return t


def _write_shards(folder: Path, tensors: dict[str, torch.Tensor], n_shards: int) -> None:
    """model.safetensors, or n shards named like HF's with model.safetensors.index.json."""
    if n_shards == 1:
        save_file(tensors, str(folder / "model.safetensors"))
        return
    keys = list(tensors)
    weight_map = {}
    for s in range(n_shards):
        name = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: tensors[k].contiguous() for k in keys[s::n_shards]}
        save_file(part, str(folder / name))
        weight_map |= {k: name for k in part}
    index = {
        "metadata": {"total_size": sum(t.numel() * 4 for t in tensors.values())},
        "weight_map": weight_map,
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def make_llada(folder: Path, *, n_shards: int = 2, tie: bool = False) -> dict:
    """A tiny LLaDA folder (names, config keys as GSAI-ML/LLaDA-8B-*); returns the generic
    weights."""
    folder.mkdir(parents=True)
    vocab = _tokenizer_json(
        folder / "tokenizer.json", ["<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>"]
    )
    config = {
        "architectures": ["LLaDAModelLM"],
        "model_type": "llada",
        "activation_type": "silu",
        "alibi": False,
        "attention_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "clip_qkv": None,
        "d_model": D,
        "embedding_size": VOCAB,
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
        "mask_token_id": vocab["<|mdm_mask|>"],
        "include_bias": False,
        "include_qkv_bias": False,
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "max_sequence_length": 64,
        "mlp_hidden_size": FFN,
        "n_heads": HEADS,
        "n_kv_heads": KV_HEADS,
        "n_layers": LAYERS,
        "rms_norm_eps": 1e-5,
        "rope": True,
        "rope_theta": 500000.0,
        "scale_logits": False,
        "vocab_size": VOCAB,
        "weight_tying": tie,
        "torch_dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(config))
    w = {"embed": _rand(VOCAB, D), "norm": 1 + _rand(D, scale=0.1), "out": _rand(VOCAB, D)}
    w["layers"] = [_layer_tensors(qkv_bias=False) for _ in range(LAYERS)]
    t = {"model.transformer.wte.weight": w["embed"], "model.transformer.ln_f.weight": w["norm"]}
    if tie:
        w["out"] = w["embed"]
    else:
        t["model.transformer.ff_out.weight"] = w["out"]
    for i, lw in enumerate(w["layers"]):
        b = f"model.transformer.blocks.{i}."
        t |= {
            b + "attn_norm.weight": lw["attn_norm"],
            b + "q_proj.weight": lw["q"],
            b + "k_proj.weight": lw["k"],
            b + "v_proj.weight": lw["v"],
            b + "attn_out.weight": lw["o"],
            b + "ff_norm.weight": lw["mlp_norm"],
            b + "ff_proj.weight": lw["gate"],  # LLaDA: ff_out(silu(ff_proj(x)) * up_proj(x))
            b + "up_proj.weight": lw["up"],
            b + "ff_out.weight": lw["down"],
        }
    _write_shards(folder, t, n_shards)
    return {"weights": w, "eps": 1e-5, "theta": 500000.0, "bias": False, "vocab": vocab}


def make_dream(folder: Path, *, n_shards: int = 1, tie: bool = False) -> dict:
    """A tiny Dream folder (Qwen2 names and config keys as Dream-org/Dream-v0-Base-7B)."""
    folder.mkdir(parents=True)
    vocab = _tokenizer_json(
        folder / "tokenizer.json", ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]
    )
    config = {
        "architectures": ["DreamModel"],
        "auto_map": {
            "AutoConfig": "configuration_dream.DreamConfig",
            "AutoModel": "modeling_dream.DreamModel",
        },
        "model_type": "Dream",
        "attention_dropout": 0.0,
        "bos_token_id": vocab["<|endoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
        "mask_token_id": vocab["<|mask|>"],
        "hidden_act": "silu",
        "hidden_size": D,
        "intermediate_size": FFN,
        "max_position_embeddings": 64,
        "max_window_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": tie,
        "torch_dtype": "float32",
        "use_cache": False,
        "use_sliding_window": False,
        "vocab_size": VOCAB,
    }
    (folder / "config.json").write_text(json.dumps(config))
    w = {"embed": _rand(VOCAB, D), "norm": 1 + _rand(D, scale=0.1), "out": _rand(VOCAB, D)}
    w["layers"] = [_layer_tensors(qkv_bias=True) for _ in range(LAYERS)]
    t = {"model.embed_tokens.weight": w["embed"], "model.norm.weight": w["norm"]}
    if tie:
        w["out"] = w["embed"]
    else:
        t["lm_head.weight"] = w["out"]
    for i, lw in enumerate(w["layers"]):
        b = f"model.layers.{i}."
        t |= {
            b + "input_layernorm.weight": lw["attn_norm"],
            b + "self_attn.q_proj.weight": lw["q"],
            b + "self_attn.q_proj.bias": lw["bq"],
            b + "self_attn.k_proj.weight": lw["k"],
            b + "self_attn.k_proj.bias": lw["bk"],
            b + "self_attn.v_proj.weight": lw["v"],
            b + "self_attn.v_proj.bias": lw["bv"],
            b + "self_attn.o_proj.weight": lw["o"],
            b + "post_attention_layernorm.weight": lw["mlp_norm"],
            b + "mlp.gate_proj.weight": lw["gate"],
            b + "mlp.up_proj.weight": lw["up"],
            b + "mlp.down_proj.weight": lw["down"],
        }
    _write_shards(folder, t, n_shards)
    return {"weights": w, "eps": 1e-6, "theta": 1000000.0, "bias": True, "vocab": vocab}


def reference_logits(ref: dict, tokens: list[int]) -> torch.Tensor:
    """Straight from the formulas, in float64, one unbatched sequence -> (L, V) logits.

    Pre-norm blocks: x += Wo·softmax(q·kᵀ/√hd)·v over all positions (bidirectional), with
    RoPE rotating the pairs (j, j + hd/2) of each head by angle p·θ^(-2j/hd); GQA query head
    h reads key/value head h // (H/H_kv); x += W_down·(silu(W_gate·h) ⊙ W_up·h); RMSNorm
    x / sqrt(mean(x²) + eps) · w; logits = W_out·norm(x).
    """
    w, eps, theta = ref["weights"], ref["eps"], ref["theta"]
    f64 = {}

    def g(t: torch.Tensor) -> torch.Tensor:
        return f64.setdefault(id(t), t.double())

    def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * g(weight)

    L, hd, half = len(tokens), D // HEADS, D // HEADS // 2
    pos = torch.arange(L, dtype=torch.float64)[:, None]
    freq = theta ** (-2 * torch.arange(half, dtype=torch.float64) / hd)
    cos, sin = torch.cos(pos * freq), torch.sin(pos * freq)  # (L, hd/2)

    def rope(x: torch.Tensor) -> torch.Tensor:  # (L, n, hd)
        a, b = x[..., :half], x[..., half:]
        c, s = cos[:, None, :], sin[:, None, :]
        return torch.cat([a * c - b * s, b * c + a * s], dim=-1)

    x = g(w["embed"])[torch.tensor(tokens)]  # (L, D)
    for lw in w["layers"]:
        h = rms(x, lw["attn_norm"])
        q, k, v = h @ g(lw["q"]).T, h @ g(lw["k"]).T, h @ g(lw["v"]).T
        if ref["bias"]:
            q, k, v = q + g(lw["bq"]), k + g(lw["bk"]), v + g(lw["bv"])
        q = rope(q.view(L, HEADS, hd))
        k = rope(k.view(L, KV_HEADS, hd))
        v = v.view(L, KV_HEADS, hd)
        heads = []
        for head in range(HEADS):
            kv = head // (HEADS // KV_HEADS)
            scores = q[:, head] @ k[:, kv].T / math.sqrt(hd)  # (L, L)
            heads.append(torch.softmax(scores, dim=-1) @ v[:, kv])
        x = x + torch.cat(heads, dim=-1) @ g(lw["o"]).T
        h = rms(x, lw["mlp_norm"])
        gate = h @ g(lw["gate"]).T
        x = x + (gate * torch.sigmoid(gate) * (h @ g(lw["up"]).T)) @ g(lw["down"]).T
    return rms(x, w["norm"]) @ g(w["out"]).T


FAMILIES = {
    "llada": (make_llada, {"n_shards": 2}),
    "llada-tied": (make_llada, {"n_shards": 1, "tie": True}),
    "dream": (make_dream, {"n_shards": 1}),
    "dream-sharded-tied": (make_dream, {"n_shards": 3, "tie": True}),
}


@pytest.mark.parametrize("case", list(FAMILIES))
def test_import_matches_reference_and_generates(tmp_path: Path, case: str) -> None:
    torch.manual_seed(0)
    make, kwargs = FAMILIES[case]
    ref = make(tmp_path / case, **kwargs)
    loaded = unmask.load(tmp_path / case)
    cfg = loaded.config
    family = case.split("-")[0]
    assert loaded.family == family
    # Facts read from config.json (and the tokenizer), not hard-coded at call sites.
    vocab = ref["vocab"]
    assert cfg.mask_id == vocab["<|mdm_mask|>" if family == "llada" else "<|mask|>"]
    assert cfg.eos_id == cfg.pad_id == vocab["<|endoftext|>"]
    assert cfg.logit_shift is (family == "dream")
    assert cfg.qkv_bias is (family == "dream")
    assert cfg.rope_theta == ref["theta"] and cfg.norm_eps == ref["eps"]
    assert cfg.tie_embeddings is kwargs.get("tie", False)
    assert (cfg.vocab_size, cfg.n_kv_heads, cfg.ffn_hidden) == (VOCAB, KV_HEADS, FFN)

    tokens = [
        vocab["w3"],
        vocab["w17"],
        cfg.mask_id,
        vocab["w5"],
        cfg.mask_id,
        vocab["w0"],
        vocab["w39"],
    ]
    with torch.no_grad():
        got = loaded.model(torch.tensor([tokens]))[0].double()  # (L, V)
    want = reference_logits(ref, tokens)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()

    prompt = loaded.tokenizer.encode("w1 w2 w3")
    assert prompt == [vocab["w1"], vocab["w2"], vocab["w3"]]
    res = generate(
        loaded.model,
        [prompt],
        SampleConfig(gen_length=6, steps=3),
        mask_id=cfg.mask_id,
        pad_id=cfg.pad_id,
        eos_id=cfg.eos_id,
    )
    out = res.tokens[0].tolist()
    assert out[:3] == prompt and len(out) == 9 and cfg.mask_id not in out


def test_dtype_and_convert_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(1)
    make_dream(tmp_path / "dream", n_shards=2)
    bf = unmask.load(tmp_path / "dream", dtype=torch.bfloat16)
    assert {p.dtype for p in bf.model.parameters()} == {torch.bfloat16}

    assert main(["convert", str(tmp_path / "dream"), str(tmp_path / "native")]) == 0
    native = unmask.load(tmp_path / "native")
    assert native.family == "unmask" and native.config.logit_shift and native.config.qkv_bias
    imported = unmask.load(tmp_path / "dream")
    tokens = torch.tensor([[1, 2, 3, imported.config.mask_id]])
    with torch.no_grad():
        assert torch.equal(native.model(tokens), imported.model(tokens))
    assert native.tokenizer.special_ids() == imported.tokenizer.special_ids()
    # ... and back to Dream's layout: the inverse of the weight map.
    assert (
        main(["convert", str(tmp_path / "native"), str(tmp_path / "again"), "--to", "dream"]) == 0
    )
    again = unmask.load(tmp_path / "again")
    assert again.family == "dream" and again.config == imported.config
    with torch.no_grad():
        assert torch.equal(again.model(tokens), imported.model(tokens))

    assert (
        main(["convert", str(tmp_path / "dream"), str(tmp_path / "half"), "--dtype", "bf16"]) == 0
    )
    assert {p.dtype for p in unmask.load(tmp_path / "half").model.parameters()} == {
        torch.float32
    }  # load casts back
    assert main(["convert", str(tmp_path / "dream"), str(tmp_path / "native")]) == 2  # not empty

    # The CLI takes the publisher folder directly.
    args = ["generate", "w1 w2", "--model", str(tmp_path / "dream"), "--json", "--gen-length", "3"]
    assert main([*args, "--steps", "3", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["results"][0]["tokens"]) == 3 and out["nfe"] == 3


def test_bad_folders_give_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(2)
    # A family's model_type with another family's keys: the first key it lacks.
    make_llada(tmp_path / "mdlm", n_shards=1)
    cfg = json.loads((tmp_path / "mdlm" / "config.json").read_text())
    (tmp_path / "mdlm" / "config.json").write_text(json.dumps({**cfg, "model_type": "mdlm"}))
    msg = _error(tmp_path / "mdlm")
    assert "config.json" in msg and "hidden_dim" in msg and "mdlm" in msg
    (tmp_path / "mdlm" / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt_neox"}))
    assert "gpt_neox" in _error(tmp_path / "mdlm") and "llada, dream" in _error(tmp_path / "mdlm")
    # SEDD's released config.json is a Hydra training config without model_type.
    (tmp_path / "mdlm" / "config.json").write_text(
        json.dumps({"model": {}, "graph": {}, "noise": {}, "tokens": 9})
    )
    assert "graph.type" in _error(tmp_path / "mdlm") and "sedd" in _error(tmp_path / "mdlm")
    (tmp_path / "mdlm" / "config.json").write_text(json.dumps({"d_model": 32, "n_layerz": 2}))
    assert "n_layerz" in _error(tmp_path / "mdlm")
    # An option unmask cannot reproduce.
    (tmp_path / "mdlm" / "config.json").write_text(json.dumps({**cfg, "block_type": "sequential"}))
    assert "block_type" in _error(tmp_path / "mdlm")
    # Special ids that are not token ids (a traceback before), and a broken config.json beside
    # a publisher's shards (it was "no config.json + model.safetensors")
    for key, value in (("eos_token_id", "<|endoftext|>"), ("mask_token_id", -1),
                       ("pad_token_id", 1.5), ("bos_token_id", True)):
        (tmp_path / "mdlm" / "config.json").write_text(json.dumps({**cfg, key: value}))
        assert f"{key}={value!r} is not a token id" in _error(tmp_path / "mdlm")
    make_llada(tmp_path / "broken", n_shards=2)
    (tmp_path / "broken" / "config.json").write_text("{not json")
    assert "config.json: not valid JSON" in _error(tmp_path / "broken")
    (tmp_path / "broken" / "config.json").write_text("{}")
    assert "neither an unmask ModelConfig (no fields)" in _error(tmp_path / "broken")

    # Missing shard.
    make_llada(tmp_path / "shards", n_shards=2)
    (tmp_path / "shards" / "model-00002-of-00002.safetensors").unlink()
    assert "model-00002-of-00002.safetensors" in _error(tmp_path / "shards")

    # Shapes that disagree with config.json.
    make_dream(tmp_path / "shape")
    cfg = json.loads((tmp_path / "shape" / "config.json").read_text())
    (tmp_path / "shape" / "config.json").write_text(
        json.dumps({**cfg, "intermediate_size": FFN + 8})
    )
    msg = _error(tmp_path / "shape")
    assert "model.safetensors" in msg and "mlp" in msg and "shape" in msg

    # A tensor the map does not know (e.g. a bias unmask has no place for) is not dropped silently.
    make_dream(tmp_path / "extra")
    cfg = json.loads((tmp_path / "extra" / "config.json").read_text())
    (tmp_path / "extra" / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 1}))
    assert "unexpected tensor model.layers.1." in _error(tmp_path / "extra")

    # Tokenizer vocabulary larger than the model's.
    make_llada(tmp_path / "vocab", n_shards=1)
    cfg = json.loads((tmp_path / "vocab" / "config.json").read_text())
    (tmp_path / "vocab" / "config.json").write_text(
        json.dumps({**cfg, "embedding_size": 40, "vocab_size": 40})
    )
    msg = _error(tmp_path / "vocab")
    assert "tokenizer.json" in msg and "40" in msg

    # A hub id that is not a local folder: no network, a hint to download first.
    assert "download" in _error(Path("GSAI-ML/LLaDA-8B-Instruct"))
    # The CLI prints the same one line with exit code 2.
    assert main(["generate", "w1", "--model", str(tmp_path / "shards"), "--no-live"]) == 2
    assert "model-00002-of-00002.safetensors" in capsys.readouterr().err


def test_write_safetensors_streams_a_file_safetensors_reads(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    from unmask.convert import write_safetensors

    tensors = {
        "w": torch.randn(5, 3).T,  # not contiguous
        "b.half": torch.randn(4).half(),
        "a.bf16": torch.randn(2, 2, 2).to(torch.bfloat16),
        "ids": torch.arange(3),
        "empty": torch.zeros(0),
    }
    write_safetensors(tensors, tmp_path / "x.safetensors", metadata={"source": "test"})
    back = load_file(str(tmp_path / "x.safetensors"))
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v)
    with safe_open(str(tmp_path / "x.safetensors"), framework="pt") as f:
        assert f.metadata() == {"source": "test"}


def test_export_native_to_family_layout_and_back(tmp_path: Path) -> None:
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    torch.manual_seed(3)
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids())
    save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    assert main(["convert", str(tmp_path / "run"), str(tmp_path / "llada"), "--to", "llada"]) == 0
    hf = json.loads((tmp_path / "llada" / "config.json").read_text())
    assert (
        hf["model_type"] == "llada"
        and hf["weight_tying"] is True
        and hf["mask_token_id"] == cfg.mask_id
    )
    assert hf["auto_map"]["AutoModel"] == "modeling_llada.LLaDAModelLM"
    back, native = unmask.load(tmp_path / "llada"), unmask.load(tmp_path / "run")
    assert back.family == "llada" and back.config == native.config
    tokens = torch.tensor([tok.encode("hello") + [cfg.mask_id]])
    with torch.no_grad():
        assert torch.equal(back.model(tokens), native.model(tokens))
    # Dream needs logit_shift and QKV biases, which this model does not have.
    assert main(["convert", str(tmp_path / "run"), str(tmp_path / "dream"), "--to", "dream"]) == 2
    assert not (tmp_path / "dream").exists()
    # a chat model's template travels (the exported SFT model could no longer chat)
    chat = dataclasses.replace(cfg, chat_template="{{ messages[0].content }}<reply>")
    save_checkpoint(tmp_path / "chat", model=Transformer(chat), tokenizer=tok)
    assert main(["convert", str(tmp_path / "chat"), str(tmp_path / "chat-llada"),
                 "--to", "llada"]) == 0
    assert (tmp_path / "chat-llada" / "chat_template.jinja").is_file()
    assert unmask.load(tmp_path / "chat-llada").config.chat_template == chat.chat_template


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_an_export_names_its_special_tokens_in_tokenizer_config(tmp_path: Path,
                                                               family: str) -> None:
    """A publisher's folder ships tokenizer_config.json (LLaDA's and Dream's do): an export
    without one gave AutoTokenizer a tokenizer with no mask, end or padding token."""
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    extra = dict(logit_shift=True, qkv_bias=True) if family == "dream" else {}
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids(), **extra,
                       chat_template="{{ messages[0].content }}<reply>")
    save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    out = tmp_path / family
    assert main(["convert", str(tmp_path / "run"), str(out), "--to", family]) == 0
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tok_cfg["mask_token"] == tok.id_to_token(cfg.mask_id)
    assert tok_cfg["eos_token"] == tok.id_to_token(cfg.eos_id)
    # also in tokenizer_config.json: transformers before 4.47 (the publishers' code needs
    # it) reads no chat_template.jinja. This key is what guards the 4.46 case under any
    # installed version: the AutoTokenizer check below passed without it under 5.x, which
    # reads chat_template.jinja first
    assert tok_cfg["chat_template"] == cfg.chat_template
    back = unmask.load(out)
    assert back.config.mask_id == cfg.mask_id and back.config.chat_template == cfg.chat_template
    transformers = pytest.importorskip("transformers")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert hf_tok.mask_token_id == cfg.mask_id and hf_tok.eos_token_id == cfg.eos_id
    assert hf_tok.chat_template == cfg.chat_template


def test_an_exported_empty_token_model_keeps_its_empty_id(tmp_path: Path) -> None:
    """A model trained with [EMPTY] (variable-length gaps) exported to a publisher layout: its
    config.json has no key for empty_id, which the export drops as kept by the tokenizer; the
    import did not read it back, so the model proposed [EMPTY] in plain generation and lost
    its variable-length infilling."""
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer, with_empty_token

    tok = with_empty_token(byte_tokenizer())
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids(),
                       **tok.empty_ids())
    assert cfg.empty_id is not None
    save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    assert main(["convert", str(tmp_path / "run"), str(tmp_path / "llada"), "--to", "llada"]) == 0
    back = unmask.load(tmp_path / "llada")
    assert back.config.empty_id == cfg.empty_id
    plain = model_preset("tiny", vocab_size=byte_tokenizer().vocab_size,
                         **byte_tokenizer().special_ids())
    save_checkpoint(tmp_path / "plain", model=Transformer(plain), tokenizer=byte_tokenizer())
    assert main(["convert", str(tmp_path / "plain"), str(tmp_path / "p"), "--to", "llada"]) == 0
    assert unmask.load(tmp_path / "p").config.empty_id is None


@pytest.mark.parametrize(("overrides", "family", "message", "holders"), [
    (dict(sedd_graph="uniform"), "llada", "the option sedd_graph='uniform' has no place",
     ["transformers"]),
    (dict(time_conditioning=True), "llada", "the option time_conditioning=True has no place",
     ["transformers"]),
    (dict(latent_len=4, latent_window=16), "llada", "the option latent_len=4 has no place", []),
    (dict(), "mdlm", "cannot export as mdlm: the family is import only",
     ["llada", "transformers"]),
    (dict(), "sedd", "cannot export as sedd: the family is import only",
     ["llada", "transformers"]),
])
def test_an_export_that_would_import_as_another_network_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: dict, family: str,
    message: str, holders: list[str],
) -> None:
    """A field the family's config.json cannot hold, which changes what the network computes,
    stops the export (it was dropped: a SEDD or latent model came back as a LLaDA mask
    predictor and decoded garbage); fields for samplers only (objective, sample_defaults) go.
    The message names the families that do hold the model, and only those (it said --to
    transformers, which refused a SEDD or latent model too)."""
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids(), **overrides)
    save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    assert main(["convert", str(tmp_path / "run"), str(tmp_path / "out"), "--to", family]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "out").exists()
    hint = " or ".join(f"--to {h}" for h in holders)
    assert err.endswith(f"; {hint} holds it\n" if holders else "another network)\n"), err
    assert err.count("--to") == len(holders), err
    for h in holders:  # the hint is true
        assert main(["convert", str(tmp_path / "run"), str(tmp_path / h), "--to", h]) == 0
    plain = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids(),
                         objective="sft", sample_defaults={"temperature": 0.5})
    save_checkpoint(tmp_path / "plain", model=Transformer(plain), tokenizer=tok)
    assert main(["convert", str(tmp_path / "plain"), str(tmp_path / "ok"), "--to", "llada"]) == 0


def test_llada_moe_export_of_dense_first_blocks_names_dense_layers(tmp_path, capsys) -> None:
    """A mixture of experts with dense first blocks cannot be a LLaDA-MoE folder; the refusal
    named ffn_hidden (the dense width the folder has no key for), not the option the user set."""
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids(), n_experts=4,
                       experts_top_k=2, expert_hidden=32, dense_layers=1)
    save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    assert main(["convert", str(tmp_path / "run"), str(tmp_path / "out"),
                 "--to", "llada-moe"]) == 2
    err = capsys.readouterr().err
    assert "dense_layers=1" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra", [[], ["--to", "llada"], ["--to", "transformers"]])
def test_a_cut_short_checkpoint_is_one_line_for_convert_and_export(tmp_path, capsys,
                                                                   extra: list[str]) -> None:
    """A native checkpoint whose model.safetensors was cut short (an interrupted copy) was a
    SafetensorError traceback from reading its stored dtype; it is load's one line."""
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids())
    save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    weights = next((tmp_path / "run").rglob("model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:5000])
    assert main(["convert", str(tmp_path / "run"), str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert "cut short" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_a_destination_that_cannot_be_written_is_one_line_before_any_work(tmp_path, capsys):
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids())
    save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    for dst, message in ((tmp_path / "link", "is a link; give the path of a new folder"),
                         (tmp_path / "file" / "out", "is not a writable folder")):
        for extra in ([], ["--to", "llada"]):
            assert main(["convert", str(tmp_path / "run"), str(dst), *extra]) == 2
            err = capsys.readouterr().err
            assert message in err and err.count("\n") == 1, err


def test_convert_native_checkpoint_to_fp16(tmp_path):
    """A native checkpoint re-saved in fp16 (how the demo model ships) loads back in fp32."""
    from safetensors.torch import load_file

    from unmask.checkpoint import load, save_checkpoint
    from unmask.cli import main
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids()))
    save_checkpoint(tmp_path / "run", model=model, tokenizer=tok)
    assert main(["convert", str(tmp_path / "run"), str(tmp_path / "half"), "--dtype", "fp16"]) == 0
    stored = load_file(str(tmp_path / "half" / "model.safetensors"))
    assert all(v.dtype == torch.float16 for v in stored.values())
    back = load(tmp_path / "half")
    assert back.model.embed.weight.dtype == torch.float32
    x = torch.randint(4, tok.vocab_size, (1, 12))
    torch.testing.assert_close(back.model(x), model.eval()(x), atol=2e-3, rtol=1e-2)
    assert main(["convert", str(tmp_path / "run"), str(tmp_path / "half")]) == 2  # never overwrites
    # without --dtype a conversion or an export keeps the stored fp16 (it wrote fp32: twice
    # the folder; the shipped demo model exported --to transformers was 22 MB, not 11)
    for extra in ([], ["--to", "llada"], ["--to", "transformers"]):
        out = tmp_path / f"again{len(extra)}{extra[-1] if extra else ''}"
        assert main(["convert", str(tmp_path / "half"), str(out), *extra]) == 0
        again = load_file(str(out / "model.safetensors"))
        assert all(v.dtype == torch.float16 for v in again.values()), extra


def test_an_index_naming_no_shard_of_this_folder_is_one_line(tmp_path: Path) -> None:
    torch.manual_seed(2)
    make_llada(tmp_path / "f", n_shards=2)
    index = tmp_path / "f" / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    names = sorted(set(data["weight_map"].values()))
    for bad in (None, "../" + names[0], "/etc/passwd", ""):
        wm = dict(data["weight_map"])
        wm[next(iter(wm))] = bad
        index.write_text(json.dumps({**data, "weight_map": wm}))
        assert "weight_map values must be shard file names in this folder" in _error(tmp_path / "f")
    index.write_text(json.dumps(data))
    (tmp_path / "f" / "config.json").write_bytes(b"\xff\xfe{}")
    assert _error(tmp_path / "f") == f"{tmp_path / 'f' / 'config.json'}: not UTF-8 text"


def test_llada_config_defaults_and_multi_query_attention_as_llada_reads_them(
    tmp_path: Path,
) -> None:
    """Keys LLaDA's own ModelConfig fills in when config.json omits them: ``weight_tying``
    (true there), and the deprecated ``multi_query_attention`` (one key/value head)."""
    from safetensors.torch import load_file

    torch.manual_seed(3)
    make_llada(tmp_path / "tied", n_shards=1, tie=True)
    cfg = json.loads((tmp_path / "tied" / "config.json").read_text())
    del cfg["weight_tying"]
    (tmp_path / "tied" / "config.json").write_text(json.dumps(cfg))
    loaded = unmask.load(tmp_path / "tied")  # was: missing tensor model.transformer.ff_out
    assert loaded.config.tie_embeddings
    make_llada(tmp_path / "untied", n_shards=1, tie=False)  # its own head, no weight_tying key
    cfg = json.loads((tmp_path / "untied" / "config.json").read_text())
    del cfg["weight_tying"]
    (tmp_path / "untied" / "config.json").write_text(json.dumps(cfg))
    msg = _error(tmp_path / "untied")  # the error says why the head is unexpected
    assert "unexpected tensor model.transformer.ff_out.weight" in msg, msg
    assert 'ties the head to the embedding (weight_tying absent or true): set "weight_tying": ' \
           'false' in msg, msg

    make_llada(tmp_path / "mqa", n_shards=1)
    hd = D // HEADS
    file = tmp_path / "mqa" / "model.safetensors"
    t = load_file(str(file))
    for i in range(LAYERS):  # one key/value head: the first of the two
        for n in ("k", "v"):
            key = f"model.transformer.blocks.{i}.{n}_proj.weight"
            t[key] = t[key][:hd].contiguous()
    save_file(t, str(file))
    cfg = json.loads((tmp_path / "mqa" / "config.json").read_text())
    cfg_path = tmp_path / "mqa" / "config.json"
    cfg_path.write_text(json.dumps({**cfg, "n_kv_heads": None, "multi_query_attention": True}))
    assert unmask.load(tmp_path / "mqa").config.n_kv_heads == 1  # was: a k_proj shape error
    cfg_path.write_text(json.dumps({**cfg, "n_kv_heads": 2, "multi_query_attention": True}))
    msg = _error(tmp_path / "mqa")
    assert msg.startswith(f"{cfg_path}: n_kv_heads=2 disagrees with multi_query_attention=True")
    cfg_path.write_text(json.dumps({**cfg, "multi_query_attention": "yes"}))
    assert "multi_query_attention='yes' should be true or false" in _error(tmp_path / "mqa")
