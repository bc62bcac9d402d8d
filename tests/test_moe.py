"""Mixture of experts in the one Transformer (``unmask.model.MoE``, ``qk_norm``) and the LLaDA-MoE
importer: routing as specified, tiny random checkpoints in LLaDA-MoE's published format that load,
match a plain forward pass written here from modeling_lladamoe.py's formulas (not by calling
unmask.model), generate, round-trip through native/export, and fail with one-line errors."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from convert_helpers import load_error as _error
from convert_helpers import rand as _rand
from convert_helpers import word_tokenizer_json
from safetensors.torch import save_file

import unmask
from unmask.cli import main
from unmask.config import ModelConfig, SampleConfig
from unmask.convert import export
from unmask.convert.hf_export import check_exportable
from unmask.errors import UserError
from unmask.model import KVCache, MoE, Transformer
from unmask.sampling import generate

D, LAYERS, HEADS, KV_HEADS, EXPERTS, TOP_K, EXPERT_HIDDEN, VOCAB = 32, 2, 4, 2, 4, 2, 24, 48
THETA, EPS = 50000.0, 1e-6
SPECIALS = ["<|endoftext|>", "<|role_end|>", "<|mask|>"]


def _tokenizer_json(path: Path) -> dict[str, int]:
    """Words, then the Ling tokenizer's specials (the mask is found by its name, <|mask|>)."""
    return word_tokenizer_json(path, SPECIALS)


def make_llada_moe(
    folder: Path,
    *,
    shared: int = 0,
    tie: bool = False,
    qk_norm: bool = True,
    n_shards: int = 1,
    **extra: object,
) -> dict[str, torch.Tensor]:
    """A tiny folder as inclusionAI/LLaDA-MoE-7B-A1B-Base: model_type "llada" with architectures
    LLaDAMoEModelLM, no mask_token_id in config.json, OLMoE tensor names. ``extra`` overrides
    config.json keys."""
    folder.mkdir(parents=True)
    vocab = _tokenizer_json(folder / "tokenizer.json")
    hd = D // HEADS
    config = {
        "architectures": ["LLaDAMoEModelLM"],
        "auto_map": {
            "AutoConfig": "configuration_lladamoe.LLaDAConfig",
            "AutoModel": "modeling_lladamoe.LLaDAMoEModelLM",
            "AutoModelForCausalLM": "modeling_lladamoe.LLaDAMoEModelLM",
        },
        "model_type": "llada",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "clip_qkv": None,
        "dense_intermediate_size": 64,
        "expert_intermediate_size": EXPERT_HIDDEN,
        "shared_expert_intermediate_size": shared or None,
        "hidden_act": "silu",
        "hidden_size": D,
        "initializer_range": 0.02,
        "max_position_embeddings": 64,
        "moe_layer_freq": [1] * LAYERS,
        "moe_router_enable_expert_bias": None,
        "moe_router_score_function": None,
        "norm_topk_prob": True,  # ignored by modeling_lladamoe.py (norm_topk_prob = False there)
        "num_attention_heads": HEADS,
        "num_experts": EXPERTS,
        "num_experts_per_tok": TOP_K,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "output_router_logits": False,
        "pad_token_id": vocab["<|endoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "partial_rotary_factor": 1.0,
        "qk_layernorm": qk_norm,
        "rms_norm_eps": EPS,
        "rope_scaling": None,
        "rope_theta": THETA,
        "router_aux_loss_coef": 0.01,
        "tie_word_embeddings": tie,
        "torch_dtype": "float32",
        "transformers_version": "4.46.2",
        "use_cache": False,
        "vocab_size": VOCAB,
        **extra,
    }
    (folder / "config.json").write_text(json.dumps(config))
    t = {
        "model.embed_tokens.weight": _rand(VOCAB, D, scale=1.0),
        "model.norm.weight": 1 + _rand(D, scale=0.1),
    }
    if not tie:
        t["lm_head.weight"] = _rand(VOCAB, D)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        t |= {
            p + "input_layernorm.weight": 1 + _rand(D, scale=0.1),
            p + "self_attn.q_proj.weight": _rand(HEADS * hd, D),
            p + "self_attn.k_proj.weight": _rand(KV_HEADS * hd, D),
            p + "self_attn.v_proj.weight": _rand(KV_HEADS * hd, D),
            p + "self_attn.o_proj.weight": _rand(D, HEADS * hd),
            p + "post_attention_layernorm.weight": 1 + _rand(D, scale=0.1),
            p + "mlp.gate.weight": _rand(EXPERTS, D, scale=1.0),
        }
        if qk_norm:
            t[p + "self_attn.q_norm.weight"] = 1 + _rand(hd, scale=0.2)
            t[p + "self_attn.k_norm.weight"] = 1 + _rand(hd, scale=0.2)
        for e in range(EXPERTS):
            q = f"{p}mlp.experts.{e}."
            t |= {
                q + "gate_proj.weight": _rand(EXPERT_HIDDEN, D),
                q + "up_proj.weight": _rand(EXPERT_HIDDEN, D),
                q + "down_proj.weight": _rand(D, EXPERT_HIDDEN),
            }
        if shared:
            t |= {
                p + "shared_expert.gate_proj.weight": _rand(shared, D),
                p + "shared_expert.up_proj.weight": _rand(shared, D),
                p + "shared_expert.down_proj.weight": _rand(D, shared),
            }
    _save(folder, t, n_shards)
    return t


def _save(folder: Path, tensors: dict[str, torch.Tensor], n_shards: int) -> None:
    """model.safetensors, or HF-named shards with model.safetensors.index.json."""
    if n_shards == 1:
        save_file(tensors, str(folder / "model.safetensors"))
        return
    keys, weight_map = list(tensors), {}
    for s in range(n_shards):
        name = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: tensors[k] for k in keys[s::n_shards]}
        save_file(part, str(folder / name))
        weight_map |= dict.fromkeys(part, name)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


def reference_logits(
    t: dict[str, torch.Tensor], tokens: list[int], *, shared: bool, qk_norm: bool
) -> torch.Tensor:
    """LLaDA-MoE's forward in float64 for one sequence -> (L, V), from modeling_lladamoe.py.

    Blocks: x += o(attn(rope(qn(q)), rope(kn(k)), v)) over all positions, qn/kn an RMSNorm over each
    head's dims, RoPE rotating (j, j + hd/2) by p·θ^(-2j/hd), query head h on kv head h // (H/Hkv);
    then h = RMSNorm(x), p = softmax(W_gate·h), x += Σ over the top-k p_e of
    p_e·down_e(silu(gate_e·h) ⊙ up_e·h) (not renormalised) + the shared expert;
    logits = W_out·RMSNorm(x).
    """

    def g(name: str) -> torch.Tensor:
        return t[name].double()

    def rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + EPS) * w

    def swiglu(h: torch.Tensor, prefix: str) -> torch.Tensor:
        gate = h @ g(prefix + "gate_proj.weight").T
        return (gate * torch.sigmoid(gate) * (h @ g(prefix + "up_proj.weight").T)) @ g(
            prefix + "down_proj.weight"
        ).T

    L, hd, half = len(tokens), D // HEADS, D // HEADS // 2
    freq = THETA ** (-2 * torch.arange(half, dtype=torch.float64) / hd)
    ang = torch.arange(L, dtype=torch.float64)[:, None] * freq
    cos, sin = torch.cos(ang)[:, None], torch.sin(ang)[:, None]  # (L, 1, hd/2)

    def rope(x: torch.Tensor) -> torch.Tensor:  # (L, n, hd)
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)

    x = g("model.embed_tokens.weight")[torch.tensor(tokens)]  # (L, D)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        h = rms(x, g(p + "input_layernorm.weight"))
        q = (h @ g(p + "self_attn.q_proj.weight").T).view(L, HEADS, hd)
        k = (h @ g(p + "self_attn.k_proj.weight").T).view(L, KV_HEADS, hd)
        v = (h @ g(p + "self_attn.v_proj.weight").T).view(L, KV_HEADS, hd)
        if qk_norm:
            q, k = (
                rms(q, g(p + "self_attn.q_norm.weight")),
                rms(k, g(p + "self_attn.k_norm.weight")),
            )
        q, k = rope(q), rope(k)
        heads = []
        for head in range(HEADS):
            kv = head // (HEADS // KV_HEADS)
            heads.append(torch.softmax(q[:, head] @ k[:, kv].T / math.sqrt(hd), dim=-1) @ v[:, kv])
        x = x + torch.cat(heads, dim=-1) @ g(p + "self_attn.o_proj.weight").T
        h = rms(x, g(p + "post_attention_layernorm.weight"))
        probs = torch.softmax(h @ g(p + "mlp.gate.weight").T, dim=-1)  # (L, E)
        y = torch.zeros_like(h)
        for pos in range(L):
            for e in probs[pos].topk(TOP_K).indices.tolist():
                y[pos] += probs[pos, e] * swiglu(h[pos], f"{p}mlp.experts.{e}.")
        if shared:
            y = y + swiglu(h, p + "shared_expert.")
        x = x + y
    out = g("lm_head.weight") if "lm_head.weight" in t else g("model.embed_tokens.weight")
    return rms(x, g("model.norm.weight")) @ out.T


CASES = {
    "plain-sharded": {"n_shards": 2},
    "shared-tied": {"shared": 20, "tie": True},
    "no-qk-norm": {"qk_norm": False},
}


@pytest.mark.parametrize("case", list(CASES))
def test_import_matches_reference_and_generates(tmp_path: Path, case: str) -> None:
    torch.manual_seed(0)
    kwargs = CASES[case]
    t = make_llada_moe(tmp_path / case, **kwargs)
    loaded = unmask.load(tmp_path / case)
    cfg, vocab = loaded.config, _tokenizer_json(tmp_path / "tok.json")
    assert loaded.family == "llada-moe"
    # Facts read from config.json (and the tokenizer), none fixed at a call site.
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size) == (
        D,
        LAYERS,
        HEADS,
        KV_HEADS,
        VOCAB,
    )
    assert (cfg.n_experts, cfg.experts_top_k, cfg.expert_hidden) == (EXPERTS, TOP_K, EXPERT_HIDDEN)
    assert cfg.shared_expert_hidden == kwargs.get("shared", 0)
    assert cfg.qk_norm is kwargs.get("qk_norm", True) and cfg.tie_embeddings is kwargs.get(
        "tie", False
    )
    assert cfg.norm_topk_prob is False  # config.json says true; the modeling code ignores it
    assert (cfg.rope_theta, cfg.norm_eps, cfg.max_seq_len, cfg.attention) == (
        THETA,
        EPS,
        64,
        "bidirectional",
    )
    assert cfg.mask_id == vocab["<|mask|>"] and cfg.eos_id == cfg.pad_id == vocab["<|endoftext|>"]

    rows = [
        [3, 17, cfg.mask_id, 5, cfg.mask_id, 1, 39, cfg.mask_id],
        [cfg.mask_id] * 3 + [8, 9, 10, 11, cfg.mask_id],
    ]
    with torch.no_grad():
        got = loaded.model(torch.tensor(rows)).double()  # (B, L, V)
    for b, row in enumerate(rows):
        want = reference_logits(
            t, row, shared="shared" in kwargs, qk_norm=kwargs.get("qk_norm", True)
        )
        assert torch.allclose(got[b], want, atol=1e-4, rtol=1e-4), (got[b] - want).abs().max()

    prompt = loaded.tokenizer.encode("w1 w2 w3")
    res = generate(
        loaded.model,
        [prompt],
        SampleConfig(gen_length=4, steps=2),
        mask_id=cfg.mask_id,
        pad_id=cfg.pad_id,
        eos_id=cfg.eos_id,
    )
    out = res.tokens[0].tolist()
    assert out[:3] == prompt and len(out) == 7 and cfg.mask_id not in out


def test_detection_by_architecture_and_renamed_model_type(tmp_path: Path) -> None:
    torch.manual_seed(1)
    # dllm's fine-tuning code renames model_type to "lladamoe"; both name the same family.
    make_llada_moe(tmp_path / "renamed", model_type="lladamoe")
    assert unmask.load(tmp_path / "renamed").family == "llada-moe"
    config = json.loads((tmp_path / "renamed" / "config.json").read_text())
    del config["model_type"]
    (tmp_path / "renamed" / "config.json").write_text(json.dumps(config))
    assert unmask.load(tmp_path / "renamed").family == "llada-moe"
    # Without the MoE architecture, model_type "llada" is the dense LLaDA, which needs its own keys.
    make_llada_moe(tmp_path / "dense", architectures=["LLaDAModelLM"])
    assert "not supported for llada " in _error(tmp_path / "dense")


def test_bad_folders_give_one_line_errors(tmp_path: Path) -> None:
    torch.manual_seed(2)
    # A missing expert tensor: the folder and the tensor are named.
    t = make_llada_moe(tmp_path / "missing")
    del t["model.layers.1.mlp.experts.3.up_proj.weight"]
    save_file(t, str(tmp_path / "missing" / "model.safetensors"))
    msg = _error(tmp_path / "missing")
    assert str(tmp_path / "missing") in msg and "model.layers.1.mlp.experts.3.up_proj.weight" in msg
    # An expert more than config.json declares is not in the weight map.
    t["model.layers.1.mlp.experts.3.up_proj.weight"] = _rand(EXPERT_HIDDEN, D)
    t["model.layers.0.mlp.experts.4.up_proj.weight"] = _rand(EXPERT_HIDDEN, D)
    save_file(t, str(tmp_path / "missing" / "model.safetensors"))
    msg = _error(tmp_path / "missing")
    assert (
        "model.safetensors" in msg
        and "unexpected tensor model.layers.0.mlp.experts.4.up_proj.weight" in msg
    )
    # A router of the wrong shape (config.json's num_experts disagrees with the weights).
    make_llada_moe(tmp_path / "router", num_experts=EXPERTS + 2)
    msg = _error(tmp_path / "router")
    assert "model.safetensors" in msg and "mlp.gate.weight" in msg and "shape" in msg
    # Variants the modeling code allows but unmask's llada-moe cannot reproduce.
    for name, extra, words in [
        ("dense-layer", {"moe_layer_freq": [0, 1]}, "moe_layer_freq"),
        ("expert-bias", {"moe_router_enable_expert_bias": True}, "moe_router_enable_expert_bias"),
        ("partial-rope", {"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
        ("attn-bias", {"attention_bias": True}, "attention_bias"),
        ("top-k", {"num_experts_per_tok": EXPERTS + 1}, "experts_top_k"),
    ]:
        make_llada_moe(tmp_path / name, **extra)
        msg = _error(tmp_path / name)
        assert "config.json" in msg and words in msg, msg


def test_moe_routes_as_specified() -> None:
    torch.manual_seed(3)
    cfg = ModelConfig(d_model=16, n_heads=2, n_experts=4, experts_top_k=4, expert_hidden=8)
    moe = MoE(cfg).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    each = torch.stack([expert(x) for expert in moe.experts])  # (E, B, L, D)
    with torch.no_grad():
        # An equal router with every expert chosen: the plain mean of the experts.
        moe.router.weight.zero_()
        assert torch.allclose(moe(x), each.mean(0))
        # Top-1 behind a router that prefers expert 2: only expert 2 contributes, weighted by its
        # probability (or by 1 once renormalised); the other experts' weights do not matter.
        moe.top_k = 1
        x[..., 0] = 5.0  # a feature every token shares, which only expert 2's router row reads
        each = torch.stack([expert(x) for expert in moe.experts])
        moe.router.weight[2, 0] = 0.3
        p2 = torch.softmax(moe.router(x), dim=-1)[..., 2:3]  # (B, L, 1), e^1.5 / (e^1.5 + 3)
        assert torch.allclose(p2, torch.full_like(p2, math.exp(1.5) / (math.exp(1.5) + 3)))
        assert torch.allclose(moe(x), p2 * each[2])
        for e in (0, 1, 3):
            moe.experts[e].down_proj.weight.mul_(-7)
        assert torch.allclose(moe(x), p2 * each[2])
        moe.norm_topk_prob = True
        assert torch.allclose(moe(x), each[2])
        # Top-2 of a random router: the grouped gather/scatter equals a dense sum over all experts
        # with the weights of the unchosen ones set to zero.
        moe.top_k, moe.norm_topk_prob = 2, False
        moe.router.weight.normal_()
        each = torch.stack([expert(x) for expert in moe.experts])
        probs = torch.softmax(moe.router(x), dim=-1)  # (B, L, E)
        keep = torch.zeros_like(probs).scatter(-1, probs.topk(2, dim=-1).indices, 1.0)
        assert torch.allclose(moe(x), torch.einsum("ble,ebld->bld", probs * keep, each))


def test_moe_transformer_cache_and_export(tmp_path: Path) -> None:
    torch.manual_seed(4)
    # MoE and qk_norm are position-wise: a KV-cached pass over the whole sequence equals no cache,
    # and a padded row gives the row's own logits.
    cfg = ModelConfig(
        vocab_size=40,
        d_model=32,
        n_heads=4,
        n_kv_heads=2,
        n_experts=3,
        experts_top_k=2,
        expert_hidden=16,
        shared_expert_hidden=8,
        qk_norm=True,
    )
    model = Transformer(cfg).eval()
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params()
    x = torch.randint(4, 40, (2, 9))
    with torch.no_grad():
        plain = model(x)
        assert torch.allclose(model(x, cache=KVCache()), plain, atol=1e-6)
        pad = torch.cat([x[:1], torch.ones(1, 3, dtype=torch.long)], dim=1)
        mask = torch.cat([torch.ones(1, 9), torch.zeros(1, 3)], dim=1).bool()
        assert torch.allclose(model(pad, attention_mask=mask)[:, :9], plain[:1], atol=1e-5)
    # The transformers exporter's modeling file has neither experts nor q/k norms: refused by name.
    with pytest.raises(UserError, match="qk_norm=True"):
        check_exportable(cfg)
    with pytest.raises(UserError, match="n_experts=3"):
        check_exportable(dataclasses.replace(cfg, qk_norm=False))

    # Publisher folder -> native checkpoint -> llada-moe layout: the same function each time.
    make_llada_moe(tmp_path / "pub", shared=20)
    assert main(["convert", str(tmp_path / "pub"), str(tmp_path / "native")]) == 0
    export(tmp_path / "native", tmp_path / "again", family="llada-moe")
    hf = json.loads((tmp_path / "again" / "config.json").read_text())
    assert hf["architectures"] == ["LLaDAMoEModelLM"] and hf["moe_layer_freq"] == [1] * LAYERS
    pub, native, again = (unmask.load(tmp_path / n) for n in ("pub", "native", "again"))
    assert (native.family, again.family) == ("unmask", "llada-moe") and pub.config == again.config
    tokens = torch.tensor([[3, 7, pub.config.mask_id, 9]])
    with torch.no_grad():
        assert torch.equal(pub.model(tokens), native.model(tokens))
        assert torch.equal(pub.model(tokens), again.model(tokens))
    with pytest.raises(UserError, match="transformers"):
        export(tmp_path / "native", tmp_path / "hf", family="transformers")


def test_a_refused_moe_export_names_the_family_that_holds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--to llada and --to transformers both refuse a qk_norm MoE; the hint names llada-moe,
    which writes it (it said '--to transformers keeps what it supports', refused as well)."""
    make_llada_moe(tmp_path / "pub")
    assert main(["convert", str(tmp_path / "pub"), str(tmp_path / "native")]) == 0
    capsys.readouterr()
    for family in ("llada", "transformers", "dream"):
        out = tmp_path / family
        assert main(["convert", str(tmp_path / "native"), str(out), "--to", family]) == 2
        err = capsys.readouterr().err
        assert err.endswith("; --to llada-moe holds it\n") and err.count("--to") == 1, err
        assert not out.exists()
    assert main(["convert", str(tmp_path / "native"), str(tmp_path / "ok"),
                 "--to", "llada-moe"]) == 0


def test_a_release_quantised_by_its_publisher_is_refused(tmp_path: Path) -> None:
    """A GPTQ / FP8 llada-moe release: config.json's ``quantization_config`` is refused in one
    line saying what to load instead; with plain tensors beside it, it loaded without a word
    (weights of another scale), with its own tensors it failed on the first ``qweight``."""
    make_llada_moe(tmp_path / "q", quantization_config={"quant_method": "gptq", "bits": 4})
    msg = _error(tmp_path / "q")
    assert "quantised by its publisher (gptq)" in msg and "--quantize int8 or int4" in msg, msg
    make_llada_moe(tmp_path / "odd", quantization_config=["not", "a", "mapping"])
    assert "quantised by its publisher;" in _error(tmp_path / "odd")
