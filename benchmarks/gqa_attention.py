"""Grouped-query attention: ``scaled_dot_product_attention(enable_gqa=True)`` vs repeating K/V.

``unmask.model`` shares each K/V head across its group of query heads through SDPA's
``enable_gqa`` (torch >= 2.5) instead of ``repeat_interleave`` copies. This runs both in one
process on the same inputs, for the attention op alone at decode shapes and for a whole
``ar`` decode (``unmask.api.start``, KV cache) of a random GQA model, and prints the ratio
(repeat time / enable_gqa time) and whether the outputs agree.

    python benchmarks/gqa_attention.py [--threads 1] [--gen 64] [--json RESULT.json]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from pathlib import Path
from typing import Any

from _common import output_file, positive_int, write_results


def _median_time(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _pair(q: Any, k: Any, v: Any, mask: Any, rep: int) -> tuple[Any, Any]:
    """The two ways to attend with grouped K/V heads, as argument-free callables."""
    import torch.nn.functional as F

    def repeat() -> Any:
        kr, vr = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)  # (B, H, Lk, hd)
        return F.scaled_dot_product_attention(q, kr, vr, attn_mask=mask)

    def grouped() -> Any:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    return repeat, grouped


def op_rows(repeats: int) -> list[dict[str, Any]]:
    """The attention op at decode/prefill shapes (B, H, Hkv, L, Lk, hd)."""
    import torch

    rows = []
    shapes = [(1, 32, 8, 1, 1024, 128), (8, 32, 8, 1, 512, 128), (1, 16, 4, 64, 512, 64)]
    for b, h, hkv, lq, lk, hd in shapes:
        g = torch.Generator().manual_seed(0)
        q = torch.randn(b, h, lq, hd, generator=g)
        k, v = (torch.randn(b, hkv, lk, hd, generator=g) for _ in range(2))
        mask = torch.ones(lq, lk, dtype=torch.bool)

        repeat, grouped = _pair(q, k, v, mask, h // hkv)
        diff = (repeat() - grouped()).abs().max().item()
        t_rep, t_gqa = _median_time(repeat, repeats), _median_time(grouped, repeats)
        rows.append({"shape": f"B{b} H{h}/{hkv} L{lq} Lk{lk} hd{hd}", "repeat_ms":
                     round(t_rep * 1e3, 3), "gqa_ms": round(t_gqa * 1e3, 3),
                     "speedup": round(t_rep / t_gqa, 2), "max_abs_diff": diff})
    return rows


def decode_row(gen: int, repeats: int) -> dict[str, Any]:
    """A random causal GQA model (d 512, 8 layers, 16 heads over 4 K/V heads) decoding
    ``gen`` tokens after 256 prompt tokens, both ways; greedy tokens must agree."""
    import torch

    from unmask import api, model
    from unmask.config import SampleConfig, model_preset
    from unmask.loaded import Loaded
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, d_model=512, n_layers=8, n_heads=16,
                       n_kv_heads=4, max_seq_len=512, attention="causal", objective="ar",
                       **tok.special_ids())
    net = model.Transformer(cfg).eval()
    loaded = Loaded(model=net, tokenizer=tok, config=cfg, path=Path("random-gqa"))
    prompt = [list(torch.randint(3, 250, (256,)).tolist())]
    config = SampleConfig(gen_length=gen, temperature=0.0)
    out: dict[str, Any] = {}
    ids: dict[str, Any] = {}

    def run(name: str) -> None:
        with torch.inference_mode():
            ids[name] = api.start(loaded, prompt, config).run()

    saved = model._SDPA_GQA
    try:
        for name, flag in (("repeat", False), ("gqa", True), ("repeat", False), ("gqa", True)):
            model._SDPA_GQA = flag
            out[name + "_s"] = round(_median_time(functools.partial(run, name), repeats), 3)
    finally:
        model._SDPA_GQA = saved
    same = ids["repeat"].gen_ids == ids["gqa"].gen_ids
    return {"decode": f"ar, d512 L8 16/4 heads, prompt 256, gen {gen}", **out,
            "speedup": round(out["repeat_s"] / out["gqa_s"], 2), "same_tokens": same}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--gen", type=positive_int, default=64)
    ap.add_argument("--repeats", type=positive_int, default=3)
    ap.add_argument("--json", type=output_file, default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = op_rows(max(args.repeats, 20))
    for r in rows:
        print(f"{r['shape']:<32} repeat {r['repeat_ms']:>8} ms  enable_gqa {r['gqa_ms']:>8} ms  "
              f"{r['speedup']}x  max|diff| {r['max_abs_diff']:.1e}")
    dec = decode_row(args.gen, args.repeats)
    print(f"{dec['decode']}: repeat {dec['repeat_s']} s, enable_gqa {dec['gqa_s']} s, "
          f"{dec['speedup']}x, same tokens: {dec['same_tokens']}")
    if args.json:
        write_results(args.json, {"ops": rows, "decode": dec, "threads": args.threads},
                      indent=1)
    return 0


if __name__ == "__main__":
    from _common import run

    run(main)
