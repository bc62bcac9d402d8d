"""LLaDA 2.x on this machine: memory, load time and decode speed at the LLaDA2.0-mini shape in
bf16 / int8 / int4, and int8 / int4 logit agreement with bf16 on a small shape.

Nothing is downloaded: the model has random weights at the published shape (``MINI``, mapped to
unmask's ``ModelConfig`` by the ``llada2`` importer's own ``config.json`` reader), built lazily:
on the meta device, then block by block materialised, filled with random values and quantised
(``unmask.quantize``) before the next, the way ``import_folder(..., quantize=...)`` loads a
folder. A machine of 24 GB cannot hold the 16B model in bf16 (~33 GB), and the per-row / per-
group int8 storage of torchao on CPU (~17 GB) does not fit beside other work either, so each
setting is measured on the first ``--layers`` blocks (1 dense + the rest MoE, at full width and
full vocabulary) in a fresh subprocess, and memory and forward time are extrapolated to the 20
blocks of mini from the per-block figures (measured RSS deltas, timed forwards of each block).
The fit check's estimate for the whole model (``unmask.quantize.estimate_bytes``) is printed
beside it.

Decode speed: a random model is never confident, so its threshold decoding commits one token
per forward; tokens/s per setting is therefore (seconds per block forward, measured with the
prefix cache) x (tokens per forward, TPF, published by the model card for a trained
LLaDA2.x-mini in that setting). The table says which numbers are measured and which published.

    nice -n 10 python benchmarks/llada2.py            # ~10 min on 2 busy cores
    nice -n 10 python benchmarks/llada2.py --layers 2 --skip-agreement

Prints a table and writes runs/bench/llada2.json (``--out``).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    child_json,
    default_output,
    json_text,
    output_file,
    positive_int,
    write_results,
)

MINI: dict[str, Any] = {
    "model_type": "llada2_moe",
    "vocab_size": 157184,
    "hidden_size": 2048,
    "intermediate_size": 5120,
    "num_hidden_layers": 20,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "num_experts": 256,
    "num_shared_experts": 1,
    "num_experts_per_tok": 8,
    "n_group": 8,
    "topk_group": 4,
    "moe_intermediate_size": 512,
    "first_k_dense_replace": 1,
    "routed_scaling_factor": 2.5,
    "partial_rotary_factor": 0.5,
    "rope_theta": 600000,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "use_bias": False,
    "use_qkv_bias": False,
    "use_qk_norm": True,
    "tie_word_embeddings": False,
}
"""inclusionAI/LLaDA2.0-mini's config.json shape keys (16.3B parameters, 1.4B active)."""

SMALL = {**MINI, "vocab_size": 4096, "hidden_size": 512, "intermediate_size": 1024,
         "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
         "head_dim": 128, "num_experts": 32, "n_group": 8, "topk_group": 4,
         "moe_intermediate_size": 256, "max_position_embeddings": 512}  # fmt: skip
"""A small LLaDA 2.x shape for the logit agreement of int8 / int4 with bf16."""

SETTINGS = [
    # (name, threshold, edit_threshold, published TPF of a trained mini in this setting)
    ("LLaDA2.0 t=0.95", 0.95, None, 2.60),
    ("LLaDA2.1 Q t=0.7 e=0.5", 0.7, 0.5, 3.12),
    ("LLaDA2.1 S t=0.5 e=0.0", 0.5, 0.0, 5.34),
]
"""Block-threshold settings; TPF: LLaDA2.1-mini model card (average over its benchmarks)."""

MASK_ID, EOS_ID = 156895, 156892


def config_of(hf: dict[str, Any], layers: int | None = None) -> Any:
    """``ModelConfig`` of a LLaDA 2.x ``config.json`` through the ``llada2`` importer."""
    from unmask.config import ModelConfig
    from unmask.convert.llada2 import LLADA2
    from unmask.convert.load import _shape_fields

    hf = dict(hf, num_hidden_layers=hf["num_hidden_layers"] if layers is None else layers)
    shape = _shape_fields(LLADA2, hf, Path("config.json"))
    ids = {"mask_id": hf["vocab_size"] - 1, "eos_id": hf["vocab_size"] - 2,
           "pad_id": hf["vocab_size"] - 2, "bos_id": None}  # fmt: skip
    if hf["vocab_size"] == MINI["vocab_size"]:
        ids.update(mask_id=MASK_ID, eos_id=EOS_ID, pad_id=EOS_ID)
    return ModelConfig(**ids, **shape)


def rss() -> tuple[int, int]:
    """(resident, peak resident) bytes of this process (Linux)."""
    vals = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                vals[line.split(":")[0]] = int(line.split()[1]) * 1024
    return vals["VmRSS"], vals["VmHWM"]


def trim() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it otherwise, and RSS would count a
    block's bf16 weights after they were quantised and freed)."""
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def tensor_bytes(model: Any) -> int:
    """Bytes of the tensors a model holds (torchao's quantised weights by their inner tensors)."""

    def size(t: Any) -> int:
        if hasattr(t, "__tensor_flatten__") and type(t).__name__ not in ("Parameter", "Tensor"):
            names, _ = t.__tensor_flatten__()
            return sum(size(getattr(t, n)) for n in names)
        return t.numel() * t.element_size()

    return sum(size(p.data if type(p.data) is not type(p) else p) for p in model.parameters())


def build(config: Any, dtype: Any, quantize: str | None, seed: int = 0) -> tuple[Any, dict]:
    """Random-weight model built lazily: meta, then block by block materialised, initialised
    (N(0, 0.02), norms 1) and quantised. Returns it and the RSS delta of every group."""
    import torch

    from unmask.convert.stream import module_groups, quantizes
    from unmask.model import Transformer
    from unmask.quantize import quantize_module

    torch.manual_seed(seed)
    with torch.device("meta"):
        model = Transformer(config)
    model = model.to(dtype=dtype)
    deltas: dict[str, int] = {}
    for prefix, module in module_groups(model):
        before = rss()[0]
        module.to_empty(device="cpu")
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                elif name.endswith("expert_bias"):
                    p.zero_()
                else:
                    p.normal_(0.0, 0.02)
        if quantize is not None and quantizes(prefix, config.tie_embeddings):  # as a load does
            quantize_module(module, quantize, "cpu")
        trim()
        deltas[prefix] = rss()[0] - before
    model._rope = None
    return model.eval(), deltas


def child_speed(args: argparse.Namespace) -> dict[str, Any]:
    """One setting in this (fresh) process: build, memory, timed block forwards, a decode."""
    import torch

    from unmask.config import SampleConfig
    from unmask.sampling.blocks import sample_blocks

    torch.set_num_threads(args.threads)
    quantize = None if args.quantize == "bf16" else args.quantize
    shape = SMALL if args.shape == "small" else MINI
    config = config_of(shape, args.layers)
    if quantize is not None:  # its import is not the model's memory
        import torchao  # noqa: F401
    start_rss = rss()[0]
    t0 = time.perf_counter()
    model, deltas = build(config, torch.bfloat16, quantize)
    load_s = time.perf_counter() - t0
    resident, peak = rss()
    held = tensor_bytes(model)
    if args.memory_only:
        return {"setting": args.quantize, "layers_built": args.layers, "load_s": load_s,
                "rss_built": resident, "peak_rss_built": peak, "tensor_bytes_built": held,
                "rss_start": start_rss, "group_rss_deltas": deltas}  # fmt: skip
    dense = deltas["layers.0"]
    moe = [v for k, v in deltas.items() if k.startswith("layers.") and k != "layers.0"]
    rest = sum(v for k, v in deltas.items() if not k.startswith("layers."))
    per_moe = sum(moe) / len(moe)
    full_rss = start_rss + rest + dense + per_moe * (shape["num_hidden_layers"] - 1)
    # forwards of one 32-token block after a 64-token prompt, prefix cache (as decoding does)
    times: dict[int, float] = {}
    hooks = []
    for i, layer in enumerate(model.layers):
        hooks.append(layer.register_forward_pre_hook(
            lambda m, a, i=i: times.__setitem__(-1 - i, time.perf_counter())))  # fmt: skip
        hooks.append(layer.register_forward_hook(
            lambda m, a, o, i=i: times.__setitem__(i, times.get(i, 0.0) + time.perf_counter()
                                                   - times[-1 - i])))  # fmt: skip
    from unmask.model import KVCache

    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, config.vocab_size - 8, (1, 64), generator=g)
    block = torch.full((1, 32), config.mask_id)
    with torch.no_grad():
        kv = KVCache()
        model(torch.cat([prompt, block], 1), cache=kv, start=0)  # the block's first (full) call
        for k in list(times):
            times.pop(k)
        n = args.forwards
        t0 = time.perf_counter()
        for _ in range(n):
            model(block, cache=kv, start=64)
        per_forward = (time.perf_counter() - t0) / n
    for h in hooks:
        h.remove()
    layer_s = {i: v / n for i, v in times.items() if i >= 0}
    moe_s = [v for i, v in layer_s.items() if i >= 1]
    other = per_forward - sum(layer_s.values())
    full_forward = other + layer_s[0] + sum(moe_s) / len(moe_s) * (shape["num_hidden_layers"] - 1)
    # the decoder path end to end (random weights: one token per forward); a 88-token prompt
    # leaves 8 positions in its last block of 32, which the 8 generated tokens complete
    long_prompt = torch.randint(0, config.vocab_size - 8, (88,), generator=g).tolist()
    config_s = SampleConfig(gen_length=8, policy="threshold", threshold=0.95, cache="prefix")
    t0 = time.perf_counter()
    out = sample_blocks(model, long_prompt, config_s, mask_id=config.mask_id,
                        pad_id=config.pad_id, eos_id=None)  # fmt: skip
    decode_s = time.perf_counter() - t0
    return {
        "setting": args.quantize, "layers_built": args.layers, "load_s": load_s,
        "rss_built": resident, "peak_rss_built": peak, "rss_full_extrapolated": full_rss,
        "s_per_forward_built": per_forward, "tensor_bytes_built": held,
        "s_per_forward_full_extrapolated": full_forward,
        "decode_tokens_per_s_built_random": 8 / decode_s, "decode_nfe_built_random": out.nfe,
        "load_s_full_extrapolated": load_s * (full_rss - start_rss) / (resident - start_rss),
    }  # fmt: skip


def agreement(threads: int) -> dict[str, Any]:
    """int8 / int4 vs bf16 logits on ``SMALL`` (same random weights): top-1 agreement, KL."""
    import torch

    from unmask.quantize import quantize_model

    torch.set_num_threads(threads)
    config = config_of(SMALL)
    base, _ = build(config, torch.bfloat16, None, seed=1)
    with torch.no_grad():
        for name, p in base.named_parameters():  # larger weights: peaked, not flat, logits
            if p.dim() == 2:
                p.mul_(40.0 if name == "lm_head.weight" else 4.0)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    tokens = torch.randint(0, 4000, (4, 128), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = base(tokens).float().log_softmax(-1)
    out: dict[str, Any] = {}
    for scheme in ("int8", "int4"):
        model, _ = build(config, torch.bfloat16, None, seed=1)
        model.load_state_dict(state)
        quantize_model(model, scheme, "cpu")
        with torch.no_grad():
            got = model(tokens).float().log_softmax(-1)
        out[scheme] = {
            "top1_agreement": (ref.argmax(-1) == got.argmax(-1)).float().mean().item(),
            "kl_bf16_to_q": (ref.exp() * (ref - got)).sum(-1).mean().item(),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=3,
                    help="blocks built (1 dense + MoE): 2 to the shape's 20 (small: 4)")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--forwards", type=positive_int, default=3, help="timed block forwards")
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument(
        "--shape",
        choices=["mini", "small"],
        default="mini",
        help="small: a quick smoke run of the script",
    )
    ap.add_argument("--child", choices=["speed", "agreement"])
    ap.add_argument("--memory-only", action="store_true", help="child: build and measure only")
    ap.add_argument("--quantize", default="bf16", choices=["bf16", "int8", "int4"])
    ap.add_argument("--out", type=output_file, default=str(default_output("llada2.json")),
                    help="write the results here (default: runs/bench/llada2.json)")
    args = ap.parse_args()
    blocks = (SMALL if args.shape == "small" else MINI)["num_hidden_layers"]
    if not 2 <= args.layers <= blocks:  # 0 built all 20 (33 GB), 1 had no MoE block to time
        from unmask.errors import UserError

        raise UserError(
            f"--layers {args.layers}: build 2 to {blocks} blocks (the dense one and at least one "
            "MoE block, whose figures are extrapolated)"
        )
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.child is None:  # int8 / int4 need torchao: say so before the bf16 child's minutes
        import torch

        from unmask.quantize import check_quantize

        for scheme in ("int8", "int4"):
            check_quantize(scheme, "cpu", torch.bfloat16)
    if args.child == "speed":
        print(json_text(child_speed(args), indent=None), end="")
        return
    if args.child == "agreement":
        print(json_text(agreement(args.threads), indent=None), end="")
        return
    rows = []
    for q in ("bf16", "int8", "int4"):
        cmd = [sys.executable, __file__, "--child", "speed", "--quantize", q,
               "--layers", str(args.layers), "--threads", str(args.threads),
               "--forwards", str(args.forwards), "--shape", args.shape]  # fmt: skip
        rows.append(child_json(cmd, q))
    import torch

    from unmask.model import Transformer
    from unmask.quantize import estimate_bytes

    shape = SMALL if args.shape == "small" else MINI
    with torch.device("meta"):  # the fit check's estimate of the whole model, per setting
        full = Transformer(config_of(shape)).to(torch.bfloat16)
    for r in rows:
        q = None if r["setting"] == "bf16" else r["setting"]
        r["fit_check_estimate_full"] = estimate_bytes(full, torch.bfloat16, q, "cpu")
        r["fit_check_estimate_full_cuda"] = estimate_bytes(full, torch.bfloat16, q, "cuda")
    agree = None
    if not args.skip_agreement:
        cmd = [sys.executable, __file__, "--child", "agreement", "--threads", str(args.threads)]
        agree = child_json(cmd, "agreement")
    gb = 1e9
    print(f"LLaDA2.0-{args.shape} shape, random weights, {args.layers} blocks built, "
          f"{args.threads} thread(s), shared machine")  # fmt: skip
    all_ = f"{blocks} blk"  # what the figures are extrapolated to: the shape's blocks
    print(f"{'setting':8} {'load s':>7} {'RSS built':>10} {'peak':>7} {'RSS ' + all_:>10} "
          f"{'estimate':>9} {'s/fwd ' + str(blocks):>9}")  # fmt: skip
    for r in rows:
        print(f"{r['setting']:8} {r['load_s']:7.1f} {r['rss_built'] / gb:9.2f}G "
              f"{r['peak_rss_built'] / gb:6.2f}G {r['rss_full_extrapolated'] / gb:9.2f}G "
              f"{r['fit_check_estimate_full'] / gb:8.2f}G "
              f"{r['s_per_forward_full_extrapolated']:9.2f}")  # fmt: skip
    print(f"\ndecode tokens/s at {args.shape} ({blocks} blocks) = published TPF / measured s "
          "per block forward")
    print(f"{'setting':26} {'TPF':>5} " + " ".join(f"{r['setting']:>8}" for r in rows))
    for name, _, _, tpf in SETTINGS:
        speeds = [tpf / r["s_per_forward_full_extrapolated"] for r in rows]
        print(f"{name:26} {tpf:5.2f} " + " ".join(f"{s:8.2f}" for s in speeds))
    if agree:
        print("\nlogit agreement with bf16 (small LLaDA2 shape, 4x128 tokens)")
        for k, v in agree.items():
            print(f"{k}: top-1 {v['top1_agreement']:.4f}  KL {v['kl_bf16_to_q']:.5f}")
    write_results(args.out, {"rows": rows, "agreement": agree, "settings": SETTINGS},
                  indent=2)


if __name__ == "__main__":
    from _common import run

    run(main)
