"""The DiT options of the one Transformer (LayerNorm, GELU MLP, adaLN time conditioning, SEDD's
score head) and the MDLM / SEDD importers: tiny random checkpoints written in each family's
published format load, match a plain DiT forward pass written here from the reference
formulas (not by calling unmask.model), and generate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from convert_helpers import WORDS, word_tokenizer_json
from convert_helpers import load_error as _error
from convert_helpers import rand as _rand
from safetensors.torch import save_file

import unmask
from unmask.cli import main
from unmask.config import ModelConfig, SampleConfig
from unmask.errors import UserError
from unmask.model import KVCache, Transformer, denoiser_logits, masked_fraction_sigma
from unmask.sampling import generate

D, LAYERS, HEADS, COND = 32, 2, 4, 16
N_TOKENS = len(WORDS) + 2  # <unk>, words, <|endoftext|>: a GPT-2-like tokenizer without a mask
VOCAB = N_TOKENS + 1  # MDLM / SEDD append the absorbing [MASK] as the last row
MASK = VOCAB - 1


def _tokenizer_json(path: Path) -> dict[str, int]:
    """GPT-2's shape in miniature: plain tokens, <|endoftext|> last, no [MASK]."""
    return word_tokenizer_json(path, ["<|endoftext|>"])


def _dit_tensors(prefix: str) -> dict[str, torch.Tensor]:
    """Every tensor of a DDiT (models/dit.py, model/transformer.py) under its published name,
    adaLN weights non-zero (a trained model's), plus the saved rotary ``inv_freq`` buffer."""
    hd = D // HEADS
    t = {
        "vocab_embed.embedding": _rand(VOCAB, D, scale=1.0),
        "sigma_map.mlp.0.weight": _rand(COND, 256, scale=0.1),
        "sigma_map.mlp.0.bias": _rand(COND),
        "sigma_map.mlp.2.weight": _rand(COND, COND),
        "sigma_map.mlp.2.bias": _rand(COND),
        "rotary_emb.inv_freq": 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd)),
        "output_layer.norm_final.weight": 1 + _rand(D, scale=0.1),
        "output_layer.linear.weight": _rand(VOCAB, D),
        "output_layer.linear.bias": _rand(VOCAB),
        "output_layer.adaLN_modulation.weight": _rand(2 * D, COND),
        "output_layer.adaLN_modulation.bias": _rand(2 * D),
    }
    for i in range(LAYERS):
        b = f"blocks.{i}."
        t |= {
            b + "norm1.weight": 1 + _rand(D, scale=0.1),
            b + "attn_qkv.weight": _rand(3 * D, D),
            b + "attn_out.weight": _rand(D, D),
            b + "norm2.weight": 1 + _rand(D, scale=0.1),
            b + "mlp.0.weight": _rand(4 * D, D),
            b + "mlp.0.bias": _rand(4 * D),
            b + "mlp.2.weight": _rand(D, 4 * D),
            b + "mlp.2.bias": _rand(D),
            b + "adaLN_modulation.weight": _rand(6 * D, COND),
            b + "adaLN_modulation.bias": _rand(6 * D),
        }
    return {prefix + k: v for k, v in t.items()}


def make_mdlm(folder: Path, *, time_conditioning: bool = False) -> dict[str, torch.Tensor]:
    """A tiny folder as kuleshov-group/mdlm-owt (transformers wrapper: ``backbone.`` names)."""
    folder.mkdir(parents=True)
    _tokenizer_json(folder / "tokenizer.json")
    config = {
        "_name_or_path": "kuleshov-group/mdlm-owt",
        "architectures": ["MDLM"],
        "auto_map": {
            "AutoConfig": "configuration_mdlm.MDLMConfig",
            "AutoModelForMaskedLM": "modeling_mdlm.MDLM",
        },
        "cond_dim": COND,
        "dropout": 0.1,
        "hidden_dim": D,
        "model_length": 64,
        "model_type": "mdlm",
        "n_blocks": LAYERS,
        "n_heads": HEADS,
        "return_dict": False,
        "time_conditioning": time_conditioning,
        "torch_dtype": "float32",
        "transformers_version": "4.38.2",
        "vocab_size": VOCAB,
    }
    (folder / "config.json").write_text(json.dumps(config))
    tensors = _dit_tensors("backbone.")
    save_file(tensors, str(folder / "model.safetensors"))
    return tensors


def make_sedd(folder: Path, *, graph: str = "absorb") -> dict[str, torch.Tensor]:
    """A tiny folder as louaaron/sedd-small (the Hydra config as config.json, bare names)."""
    folder.mkdir(parents=True)
    _tokenizer_json(folder / "tokenizer.json")
    config = {
        "ngpus": 8,
        "tokens": N_TOKENS,
        "training": {"batch_size": 512, "accum": 1, "n_iters": 1300001, "ema": 0.9999},
        "data": {"train": "openwebtext", "valid": "wikitext103", "cache_dir": "data"},
        "graph": {"type": graph, "file": "data", "report_all": False},
        "noise": {"type": "loglinear", "sigma_min": 0.0001, "sigma_max": 20},
        "sampling": {"predictor": "euler", "steps": 128, "noise_removal": True},
        "model": {
            "name": "small",
            "type": "ddit",
            "hidden_size": D,
            "cond_dim": COND,
            "length": 64,
            "n_blocks": LAYERS,
            "n_heads": HEADS,
            "scale_by_sigma": True,
            "dropout": 0.1,
            "score_strategy": 0,
        },
        "work_dir": "absorb_small",
    }
    (folder / "config.json").write_text(json.dumps(config))
    tensors = _dit_tensors("")
    save_file(tensors, str(folder / "model.safetensors"))
    return tensors


def reference_dit(
    t: dict[str, torch.Tensor],
    prefix: str,
    tokens: list[int],
    sigma: float,
    *,
    sedd: bool,
    block: int | None = None,
) -> torch.Tensor:
    """A DDiT forward pass in float64 for one sequence -> (L, V), from the published formulas.

    c = silu(W2·silu(W1·[cos(σf), sin(σf)] + b1) + b2), f_j = 10000^(-j/128); per block the
    adaLN row W·c + b gives (shift, scale, gate) ×2 and x += gate·sublayer(LN(x)·(1+scale)+shift)
    with LN bias-free; attention from the fused [q; k; v] rows, RoPE rotating (j, j + hd/2) by
    p·10000^(-2j/hd) on q and k; MLP W2·gelu_tanh(W1·h + b1) + b2; output (LN(x)·(1+scale)+shift)
    ·Wᵀ + b. SEDD: minus log(e^σ - 1) and log(V - 1), then 0 at each position's own token.
    ``block``: BD3-LM's sampling mask, position p attends to position j iff j // block <=
    p // block.
    """

    def g(name: str) -> torch.Tensor:
        return t[prefix + name].double()

    def silu(x: torch.Tensor) -> torch.Tensor:
        return x / (1 + torch.exp(-x))

    def ln(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * w

    def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    L, hd = len(tokens), D // HEADS
    half = 128
    f = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
    feats = torch.cat([torch.cos(sigma * f), torch.sin(sigma * f)])  # (256,)
    c = silu(
        g("sigma_map.mlp.2.weight")
        @ silu(g("sigma_map.mlp.0.weight") @ feats + g("sigma_map.mlp.0.bias"))
        + g("sigma_map.mlp.2.bias")
    )

    pos = torch.arange(L, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-2 * torch.arange(hd // 2, dtype=torch.float64) / hd)
    cos, sin = torch.cos(pos * freq)[:, None], torch.sin(pos * freq)[:, None]  # (L, 1, hd/2)

    def rope(x: torch.Tensor) -> torch.Tensor:  # (L, H, hd)
        a, b = x[..., : hd // 2], x[..., hd // 2 :]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)

    x = g("vocab_embed.embedding")[torch.tensor(tokens)]  # (L, D)
    for i in range(LAYERS):
        b = f"blocks.{i}."
        mod = g(b + "adaLN_modulation.weight") @ c + g(b + "adaLN_modulation.bias")
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6)
        h = ln(x, g(b + "norm1.weight")) * (1 + scale1) + shift1
        qkv = (h @ g(b + "attn_qkv.weight").T).view(L, 3, HEADS, hd)
        q, k, v = rope(qkv[:, 0]), rope(qkv[:, 1]), qkv[:, 2]
        hidden = torch.zeros(L, L, dtype=torch.bool)
        if block is not None:
            p = torch.arange(L)
            hidden = p[None, :] // block > p[:, None] // block  # a later block's key
        heads = [
            torch.softmax(
                (q[:, j] @ k[:, j].T / math.sqrt(hd)).masked_fill(hidden, float("-inf")), dim=-1
            )
            @ v[:, j]
            for j in range(HEADS)
        ]
        x = x + gate1 * (torch.cat(heads, dim=-1) @ g(b + "attn_out.weight").T)
        h = ln(x, g(b + "norm2.weight")) * (1 + scale2) + shift2
        up = gelu_tanh(h @ g(b + "mlp.0.weight").T + g(b + "mlp.0.bias"))
        x = x + gate2 * (up @ g(b + "mlp.2.weight").T + g(b + "mlp.2.bias"))
    shift, scale = (
        g("output_layer.adaLN_modulation.weight") @ c + g("output_layer.adaLN_modulation.bias")
    ).chunk(2)
    h = ln(x, g("output_layer.norm_final.weight")) * (1 + scale) + shift
    out = h @ g("output_layer.linear.weight").T + g("output_layer.linear.bias")  # (L, V)
    if sedd:
        out = out - math.log(math.expm1(sigma)) - math.log(VOCAB - 1)
        out[torch.arange(L), torch.tensor(tokens)] = 0.0
    return out


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    finite = torch.isfinite(want)
    assert torch.equal(finite, torch.isfinite(got))
    assert torch.allclose(got[finite], want[finite], atol=1e-4, rtol=1e-4), (
        (got - want)[finite].abs().max()
    )


ROWS = [[3, 17, MASK, 5, MASK, 1, 39, MASK], [MASK, MASK, MASK, 8, 9, MASK, MASK, MASK]]
SIGMAS = [0.4, 2.5]


@pytest.mark.parametrize("case", ["mdlm", "mdlm-time", "sedd"])
def test_import_matches_reference(tmp_path: Path, case: str) -> None:
    torch.manual_seed(0)
    sedd = case == "sedd"
    t = (
        make_sedd(tmp_path / case)
        if sedd
        else make_mdlm(tmp_path / case, time_conditioning=case == "mdlm-time")
    )
    prefix = "" if sedd else "backbone."
    loaded = unmask.load(tmp_path / case)
    cfg = loaded.config
    assert loaded.family == ("sedd" if sedd else "mdlm")
    # Facts from the folder, kept in the config.
    assert (cfg.vocab_size, cfg.mask_id, cfg.eos_id, cfg.pad_id) == (
        VOCAB,
        MASK,
        N_TOKENS - 1,
        N_TOKENS - 1,
    )
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.cond_dim, cfg.ffn_hidden) == (
        D,
        LAYERS,
        HEADS,
        COND,
        4 * D,
    )
    assert (cfg.norm, cfg.mlp, cfg.head_bias, cfg.time_conditioning) == (
        "layer",
        "gelu",
        True,
        True,
    )
    assert cfg.output == ("sedd_log_score" if sedd else "logits")
    assert (
        cfg.sigma_input
        == {"mdlm": "zero", "mdlm-time": "masked_fraction", "sedd": "masked_fraction"}[case]
    )
    assert loaded.tokenizer.mask_id == MASK and loaded.tokenizer.vocab_size == VOCAB

    x, s = torch.tensor(ROWS), torch.tensor(SIGMAS)
    with torch.no_grad():
        given = loaded.model(x, sigma=s).double()  # (B, L, V)
        bare = loaded.model(x).double()  # as a sampler calls it: no noise level
    for b, row in enumerate(ROWS):
        level = 0.0 if case == "mdlm" else SIGMAS[b]  # mdlm-owt embeds sigma = 0 whatever it gets
        _close(given[b], reference_dit(t, prefix, row, level, sedd=sedd))
        # Without sigma: sigma = -log(1 - masked fraction) where the config says so, and SEDD's
        # log-score comes back as denoiser logits ([MASK] excluded).
        frac = sum(tok == MASK for tok in row) / len(row)
        level = 0.0 if case == "mdlm" else -math.log(1 - frac)
        want = reference_dit(t, prefix, row, level, sedd=sedd)
        if sedd:
            want[:, MASK] = float("-inf")
        _close(bare[b], want)
    if sedd:  # at a masked position the denoiser is the softmax of the score over tokens != [MASK]
        probs = torch.softmax(denoiser_logits(given, cfg)[0, 2], dim=-1)
        assert probs[MASK] == 0 and math.isclose(float(probs.sum()), 1.0, rel_tol=1e-6)


@pytest.mark.parametrize("case", ["mdlm", "sedd"])
def test_imported_dit_generates(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(1)
    (make_sedd if case == "sedd" else make_mdlm)(tmp_path / case)
    loaded = unmask.load(tmp_path / case)
    cfg = loaded.config
    prompt = loaded.tokenizer.encode("w1 w2 w3")
    assert prompt == [2, 3, 4]
    res = generate(
        loaded.model,
        [prompt],
        SampleConfig(gen_length=5, steps=5),
        mask_id=cfg.mask_id,
        pad_id=cfg.pad_id,
        eos_id=cfg.eos_id,
    )
    out = res.tokens[0].tolist()
    assert out[:3] == prompt and len(out) == 8 and MASK not in out and res.nfe == 5

    args = [
        "generate",
        "w1 w2",
        "--model",
        str(tmp_path / case),
        "--json",
        "--gen-length",
        "4",
        "--steps",
        "4",
    ]
    assert main([*args, "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["results"][0]["tokens"]) == 4
    # A KV cache sees only part of the canvas, from which SEDD cannot read its noise level.
    code = main([*args, "--device", "cpu", "--cache", "prefix", "--block-length", "2"])
    if case == "sedd":
        assert code == 2 and "noise level" in capsys.readouterr().err
    else:
        assert code == 0  # mdlm-owt ignores the noise level: the caches work as for LLaDA


def test_convert_dit_to_native_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(2)
    make_sedd(tmp_path / "sedd")
    assert main(["convert", str(tmp_path / "sedd"), str(tmp_path / "native")]) == 0
    native, imported = unmask.load(tmp_path / "native"), unmask.load(tmp_path / "sedd")
    assert native.family == "unmask" and native.config == imported.config
    x = torch.tensor(ROWS)
    with torch.no_grad():
        assert torch.equal(native.model(x), imported.model(x))
        assert torch.equal(
            native.model(x, sigma=torch.tensor(SIGMAS)),
            imported.model(x, sigma=torch.tensor(SIGMAS)),
        )


def test_bad_dit_folders_give_one_line_errors(tmp_path: Path) -> None:
    torch.manual_seed(3)
    # A missing tensor.
    t = make_mdlm(tmp_path / "missing")
    del t["backbone.blocks.1.adaLN_modulation.bias"]
    save_file(t, str(tmp_path / "missing" / "model.safetensors"))
    msg = _error(tmp_path / "missing")
    assert str(tmp_path / "missing") in msg and "backbone.blocks.1.adaLN_modulation.bias" in msg

    # A shape that disagrees with config.json (the fused QKV of a wider model).
    t = make_sedd(tmp_path / "shape")
    t["blocks.0.attn_qkv.weight"] = _rand(3 * D + 3, D)
    save_file(t, str(tmp_path / "shape" / "model.safetensors"))
    msg = _error(tmp_path / "shape")
    assert "model.safetensors" in msg and "blocks.0.attn_qkv.weight" in msg and "shape" in msg
    cfg = json.loads((tmp_path / "shape" / "config.json").read_text())
    cfg["model"]["cond_dim"] = COND * 2
    make_sedd(tmp_path / "cond")
    (tmp_path / "cond" / "config.json").write_text(json.dumps(cfg))
    assert "model.safetensors" in _error(tmp_path / "cond")

    # A rotary buffer of another base is not this family's model.
    t = make_mdlm(tmp_path / "rope")
    t["backbone.rotary_emb.inv_freq"] = t["backbone.rotary_emb.inv_freq"] ** 0.5
    save_file(t, str(tmp_path / "rope" / "model.safetensors"))
    assert "rotary_emb.inv_freq" in _error(tmp_path / "rope")
    # ... while a folder without the buffer loads.
    del t["backbone.rotary_emb.inv_freq"]
    save_file(t, str(tmp_path / "rope" / "model.safetensors"))
    assert unmask.load(tmp_path / "rope").family == "mdlm"

    # No tokenizer.json (the published folders have none): say which one to put there.
    make_sedd(tmp_path / "notok")
    (tmp_path / "notok" / "tokenizer.json").unlink()
    msg = _error(tmp_path / "notok")
    assert "tokenizer.json" in msg and "GPT-2" in msg
    # A tokenizer whose [MASK] does not land on the last row.
    make_mdlm(tmp_path / "maskid")
    cfg = json.loads((tmp_path / "maskid" / "config.json").read_text())
    (tmp_path / "maskid" / "config.json").write_text(json.dumps({**cfg, "vocab_size": VOCAB + 3}))
    msg = _error(tmp_path / "maskid")
    assert "tokenizer.json" in msg and "mask" in msg and str(VOCAB + 2) in msg

    # SEDD variants unmask cannot run.
    make_sedd(tmp_path / "uniform", graph="uniform")
    msg = _error(tmp_path / "uniform")
    # said once, of the file (was "...config.json: a value sedd cannot use (config.json: ...)")
    assert msg.startswith(f"{tmp_path / 'uniform' / 'config.json'}: graph.type='uniform' is not")
    cfg = json.loads((tmp_path / "uniform" / "config.json").read_text())
    cfg["graph"]["type"], cfg["model"]["scale_by_sigma"] = "absorb", False
    (tmp_path / "uniform" / "config.json").write_text(json.dumps(cfg))
    assert "scale_by_sigma" in _error(tmp_path / "uniform")
    del cfg["model"]["hidden_size"]
    cfg["model"]["scale_by_sigma"] = True
    (tmp_path / "uniform" / "config.json").write_text(json.dumps(cfg))
    assert "model.hidden_size" in _error(tmp_path / "uniform")


# -- BD3-LM: MDLM's DiT with block-causal attention -------------------------------------------

BLOCK = 4


def make_bd3lm(folder: Path, **config: object) -> dict[str, torch.Tensor]:
    """A tiny folder as kuleshov-group/bd3lm-owt-block_size4 (MDLM's ``backbone.`` names,
    BD3LMConfig's keys, and the ``sampling_eps_min`` / ``_max`` buffers of ``var_min``)."""
    folder.mkdir(parents=True)
    _tokenizer_json(folder / "tokenizer.json")
    hf = {
        "architectures": ["BD3LM"],
        "auto_map": {
            "AutoConfig": "configuration_bd3lm.BD3LMConfig",
            "AutoModelForMaskedLM": "modeling_bd3lm.BD3LM",
        },
        "attn_backend": "sdpa",
        "block_size": BLOCK,
        "cond_dim": COND,
        "cross_attn": True,
        "dropout": 0.1,
        "hidden_dim": D,
        "model_length": 64,
        "model_type": "bd3lm",
        "n_blocks": LAYERS,
        "n_heads": HEADS,
        "return_dict": False,
        "sampling_eps_max": 1.0,
        "sampling_eps_min": 0.001,
        "time_conditioning": False,
        "torch_dtype": "float32",
        "var_min": True,
        "vocab_size": VOCAB,
        **config,
    }
    (folder / "config.json").write_text(json.dumps(hf))
    tensors = _dit_tensors("backbone.")
    # trained clipping bounds: not what config.json says, and not used to sample
    tensors |= {"sampling_eps_min": torch.tensor(0.3), "sampling_eps_max": torch.tensor(0.8)}
    save_file(tensors, str(folder / "model.safetensors"))
    return tensors


def test_bd3lm_import_matches_reference_and_decodes_block_by_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(4)
    t = make_bd3lm(tmp_path / "bd3lm")
    loaded = unmask.load(tmp_path / "bd3lm")
    cfg = loaded.config
    assert loaded.family == "bd3lm"
    assert (cfg.attention, cfg.block_size, cfg.sigma_input, cfg.output) == (
        "block-causal", BLOCK, "zero", "logits"
    )
    assert (cfg.vocab_size, cfg.mask_id, cfg.max_seq_len, cfg.ffn_hidden) == (
        VOCAB, MASK, 64, 4 * D
    )
    x = torch.tensor(ROWS)
    with torch.no_grad():
        got = loaded.model(x).double()
    for b, row in enumerate(ROWS):  # time conditioning off: sigma = 0 whatever the noise
        want = reference_dit(t, "backbone.", row, 0.0, sedd=False, block=BLOCK)
        _close(got[b], want)
        # the mask matters: a later block changes nothing before it, bidirectional within one
        full = reference_dit(t, "backbone.", row, 0.0, sedd=False)
        assert not torch.allclose(want[:BLOCK], full[:BLOCK], atol=1e-3)

    args = ["generate", "w1 w2", "--model", str(tmp_path / "bd3lm"), "--json", "--device", "cpu"]
    assert main([*args, "--gen-length", "8", "--steps", "8"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["decoder"] == "bd3lm" and len(result["results"][0]["tokens"]) == 8

    # import only, as MDLM; a folder without its block size says so
    assert main(["convert", str(tmp_path / "bd3lm"), str(tmp_path / "native")]) == 0
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "native"), str(tmp_path / "back"), "--to", "bd3lm"]) == 2
    assert "import only" in capsys.readouterr().err
    make_bd3lm(tmp_path / "noblock", block_size=None)
    msg = _error(tmp_path / "noblock")
    assert "config.json" in msg and "block_size" in msg
    make_bd3lm(tmp_path / "noadaln", adaln=False)
    assert "adaln=False" in _error(tmp_path / "noadaln")
    make_bd3lm(tmp_path / "timed", time_conditioning=True)  # sigma of the block, not the canvas
    assert "time_conditioning=True is not supported for bd3lm" in _error(tmp_path / "timed")
    # no cross_attn: BD3LM's backbone builds no block mask, all positions attend to all
    make_bd3lm(tmp_path / "nocross", cross_attn=False)
    assert "cross_attn=False is not supported for bd3lm (needs True)" in _error(
        tmp_path / "nocross")


# -- the model options themselves ----------------------------------------------------------

DIT = dict(
    vocab_size=48, d_model=32, n_layers=2, n_heads=4, max_seq_len=32, norm="layer", mlp="gelu",
    head_bias=True, time_conditioning=True, cond_dim=16, tie_embeddings=False,
)  # fmt: skip


def _trained_like(cfg: ModelConfig, seed: int = 0) -> Transformer:
    """A model whose adaLN weights are non-zero (a fresh one starts at adaLN-Zero)."""
    torch.manual_seed(seed)
    m = Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "modulation" in name or name.endswith(".bias"):
                p.normal_(0, 0.2)
    return m


def test_default_config_is_unchanged() -> None:
    cfg = ModelConfig()
    assert (cfg.norm, cfg.mlp, cfg.head_bias, cfg.time_conditioning, cfg.output) == (
        "rms",
        "swiglu",
        False,
        False,
        "logits",
    )
    torch.manual_seed(0)
    m = Transformer(cfg).eval()
    names = {n for n, _ in m.named_parameters()}
    assert names == {"embed.weight", "norm.weight"} | {
        f"layers.{i}.{n}.weight"
        for i in range(cfg.n_layers)
        for n in (
            "attn_norm",
            "attn.q_proj",
            "attn.k_proj",
            "attn.v_proj",
            "attn.o_proj",
            "mlp_norm",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        )
    }
    x = torch.randint(4, cfg.vocab_size, (2, 9))
    with torch.no_grad():  # sigma is read only by time-conditioned models
        assert torch.equal(m(x), m(x, sigma=torch.tensor([0.5, 3.0])))


def test_dit_param_count_and_adaln_zero_init() -> None:
    cfg = ModelConfig(**DIT)
    torch.manual_seed(0)
    m = Transformer(cfg).eval()
    assert sum(p.numel() for p in m.parameters()) == cfg.num_params()
    assert cfg.ffn_hidden == 4 * 32  # the GELU MLP's default width
    x = torch.randint(4, 48, (2, 10))
    with torch.no_grad():
        # adaLN-Zero: every gate starts at 0, so a fresh model ignores sigma ...
        assert torch.equal(
            m(x, sigma=torch.tensor([0.1, 0.1])), m(x, sigma=torch.tensor([5.0, 5.0]))
        )
        trained = _trained_like(cfg)  # ... and a trained one does not.
        assert not torch.allclose(
            trained(x, sigma=torch.tensor([0.1, 0.1])), trained(x, sigma=torch.tensor([5.0, 5.0]))
        )


def test_dit_padding_and_cache() -> None:
    cfg = ModelConfig(**DIT)
    m = _trained_like(cfg)
    a, b = torch.randint(4, 48, (1, 12)), torch.randint(4, 48, (1, 7))
    batch = torch.full((2, 12), cfg.pad_id)
    batch[0], batch[1, 5:] = a, b  # left padding
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, :5] = False
    s = torch.tensor([0.7, 1.9])
    with torch.no_grad():
        out = m(batch, attention_mask=mask, sigma=s)
        torch.testing.assert_close(out[0], m(a, sigma=s[:1])[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[1, 5:], m(b, sigma=s[1:])[0], atol=1e-5, rtol=1e-5)
        # A causal DiT with a KV cache: chunked decoding equals the full pass.
        causal = _trained_like(ModelConfig(**{**DIT, "attention": "causal"}))
        kv = KVCache()
        parts = [
            causal(a[:, :5], sigma=s[:1], cache=kv, start=0),
            causal(a[:, 5:], sigma=s[:1], cache=kv, start=5),
        ]
        torch.testing.assert_close(
            torch.cat(parts, dim=1), causal(a, sigma=s[:1]), atol=1e-5, rtol=1e-5
        )


def test_noise_level_from_the_canvas() -> None:
    cfg = ModelConfig(**{**DIT, "sigma_input": "masked_fraction", "mask_id": 0})
    m = _trained_like(cfg)
    x = torch.randint(4, 48, (2, 8))
    x[0, :2] = 0  # 2 of 8 masked
    x[1, 2:] = 0  # 6 of 8 masked
    want = torch.tensor([-math.log(1 - 2 / 8), -math.log(1 - 6 / 8)])
    torch.testing.assert_close(masked_fraction_sigma(x, 0), want)
    # Padding does not count: 2 masks among 4 real tokens.
    pad = torch.tensor([[False] * 4 + [True] * 4, [True] * 8])
    torch.testing.assert_close(
        masked_fraction_sigma(torch.cat([x[:1, 4:], x[:1, :4]], 1), 0, pad)[0],
        torch.tensor(-math.log(0.5)),
    )
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x, sigma=want), atol=1e-6, rtol=1e-6)


def test_noise_level_errors() -> None:
    m = _trained_like(ModelConfig(**DIT))  # sigma_input='given'
    x = torch.randint(4, 48, (2, 6))
    with pytest.raises(UserError, match="sigma"):
        m(x)
    with pytest.raises(ValueError, match=r"sigma must have shape \(2,\)"):
        m(x, sigma=torch.tensor([1.0]))
    sedd = _trained_like(
        ModelConfig(**{**DIT, "sigma_input": "masked_fraction", "output": "sedd_log_score"})
    )
    with pytest.raises(UserError, match="cache"):
        sedd(x, cache=KVCache(), start=0)
    for bad, msg in [
        (dict(norm="batch"), "norm"),
        (dict(mlp="relu"), "mlp"),
        (dict(sigma_input="guess"), "sigma_input"),
        (dict(output="scores"), "output"),
        (dict(output="sedd_log_score"), "time_conditioning"),
    ]:
        with pytest.raises(UserError, match=msg):
            ModelConfig(**bad)
