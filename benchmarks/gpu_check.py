"""The prepared GPU check: one run, one table, under 8 minutes on one H200.

Rows:

1. **train 125M**: MFU and tokens/s of the ``mdlm`` training step (AdamW, clip) of a ~135M
   model (d_model 768, 12 layers, vocab 32768, seq 1024) in bf16 autocast, eager and with
   ``torch.compile`` of every block (``unmask.parallel.compile_blocks``).
2. **FSDP2, one device**: the same step with the model under ``fully_shard`` (a one-process
   group), compiled: the FSDP code path's overhead where no sharding can help.
3. **decode 8B**: one cached decoding step at LLaDA-8B's shape (d_model 4096, 32 layers,
   ffn 12288, vocab 126464; random bf16 weights built on the device, nothing downloaded):
   a 32-token block against a 288-position KV cache, batch 1, eager, eager replayed as a CUDA
   graph (``torch.cuda.graph``), and ``torch.compile(mode="reduce-overhead")`` (inductor +
   CUDA graphs), against the weight-read floor (bytes of weights / HBM bandwidth).

Every row is timed as the median of repeated, synchronised runs after warm-up; a row that
fails prints its error in the table and the check goes on. Rows still to run when
``--budget-s`` is spent are skipped and say so.

``--dry-run`` runs every row on CPU at toy sizes (dynamo's ``eager`` backend instead of
inductor, no CUDA graphs) in seconds, so the script is known to run before a GPU is at hand
(tests/test_gpu_check.py).

    bash benchmarks/gpu_check.sh                 # on the GPU machine
    python benchmarks/gpu_check.py --dry-run     # anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import (
    default_output,
    json_text,
    non_negative_int,
    output_file,
    positive_float,
    positive_int,
)
from torch import nn

from unmask.config import model_preset
from unmask.model import KVCache, Transformer
from unmask.objectives import ObjectiveOptions, mdlm
from unmask.parallel import (
    apply_fsdp,
    compile_blocks,
    compile_for_decoding,
    device_peak_flops,
    flops_per_token,
    resolve_precision,
)
from unmask.schedules import LinearSchedule

HBM_BYTES_PER_S = {"h200": 4.8e12, "h100": 3.35e12, "a100": 2.0e12}
"""Memory bandwidth for the weight-read floor of the decoding step (vendor sheets)."""


class Check:
    """Collects rows, keeps the time budget, never lets one failing row end the check."""

    def __init__(self, budget_s: float) -> None:
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        self.rows: list[dict[str, Any]] = []

    def row(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        spent = time.perf_counter() - self.t0
        if spent > self.budget_s:
            rec = {"row": name, "error": f"skipped: budget of {self.budget_s:.0f} s spent"}
        else:
            t = time.perf_counter()
            try:
                rec = {"row": name, **fn()}
            except Exception as e:  # a GPU check reports, it does not stop
                traceback.print_exc(file=sys.stderr)
                rec = {"row": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
            rec["wall_s"] = round(time.perf_counter() - t, 1)
        self.rows.append(rec)
        print(json.dumps(rec), file=sys.stderr, flush=True)
        return rec


def timed(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` synchronised calls after ``warmup`` calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ----------------------------------------------------------------------------- training


def train_shape(dry: bool) -> dict[str, Any]:
    if dry:
        return {"cfg": model_preset("tiny", vocab_size=64, max_seq_len=32), "batch": 2, "seq": 32}
    cfg = model_preset("base", vocab_size=32768, max_seq_len=1024)
    return {"cfg": cfg, "batch": 16, "seq": 1024}


def train_row(
    args: argparse.Namespace, device: torch.device, *, compiled: bool, fsdp: bool
) -> dict[str, Any]:
    shape = train_shape(args.dry_run)
    cfg, B, L = shape["cfg"], shape["batch"], shape["seq"]
    torch.manual_seed(0)
    model = Transformer(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    if compiled:
        compile_blocks(model, backend="eager" if args.dry_run else "inductor")
    if fsdp:
        apply_fsdp(model)
    precision = resolve_precision("bf16", device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    opts = ObjectiveOptions(schedule=LinearSchedule(1e-3), random_length_frac=0.0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(4, cfg.vocab_size, (B, L), generator=gen).to(device)

    def step() -> None:
        with precision.context(device.type):
            p = mdlm(model, cfg, x, attention_mask=None, generator=gen, options=opts)
        (p.loss_sum / p.n_tokens).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sec = timed(step, device, warmup=args.warmup, repeats=args.repeats)
    tps = B * L / sec
    peak = device_peak_flops(_name(device), "bf16")
    out: dict[str, Any] = {
        "params_m": round(n_params / 1e6, 3),
        "step_ms": round(1e3 * sec, 2),
        "tokens_per_s": round(tps),
    }
    if peak:
        out["mfu"] = round(tps * flops_per_token(cfg, n_params, L) / peak, 4)
    if device.type == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def fsdp_row(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """FSDP2 needs a process group: one process, rank 0 of 1."""
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(args.port))
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1, device_id=(
            device if device.type == "cuda" else None)
    )  # fmt: skip
    try:
        return train_row(args, device, compiled=True, fsdp=True)
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- decoding


def decode_setup(args: argparse.Namespace, device: torch.device):
    if args.dry_run:
        cfg = model_preset("tiny", vocab_size=64, max_seq_len=64)
        prompt, gen, block, dtype = 8, 16, 8, torch.float32
    else:  # LLaDA-8B's shape (docs/large-models.md)
        cfg = model_preset(
            "base", d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, ffn_hidden=12288,
            vocab_size=126464, max_seq_len=4096,
        )  # fmt: skip
        prompt, gen, block, dtype = 32, 256, 32, torch.bfloat16
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random weights made in bf16 on the device: 16 GiB, not 32
    try:
        with torch.device(device):
            model = Transformer(cfg).eval()
    finally:
        torch.set_default_dtype(prev)
    model.requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    total = prompt + gen
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(4, cfg.vocab_size, (1, total), generator=g).to(device)
    cache = KVCache()
    with torch.no_grad():
        model(seq, cache=cache)  # dual cache: every position cached, as the llada decoder does
    start = prompt  # the first generated block
    tok = seq[:, start : start + block].clone()  # (1, block), a static input buffer
    info = {
        "params_b": round(n_params / 1e9, 3),
        "weight_gib": round(n_params * (2 if dtype == torch.bfloat16 else 4) / 2**30, 3),
        "block": block,
        "kv_len": total,
    }
    return model, cache, tok, start, info


def decode_row(args: argparse.Namespace, device: torch.device, mode: str, setup) -> dict[str, Any]:
    model, cache, tok, start, info = setup

    @torch.no_grad()
    def step() -> torch.Tensor:
        return model(tok, cache=cache, start=start)  # (1, block, V)

    fn: Callable[[], Any] = step
    if mode == "cuda graph":
        if device.type != "cuda":
            return {**info, "error": "skipped: CUDA graphs need a GPU"}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm up on a side stream, as capture requires
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        fn = graph.replay
    elif mode == "compiled":
        for k, v in cache.layers:  # updated in place each step: fixed addresses for the graphs
            torch._dynamo.mark_static_address(k)
            torch._dynamo.mark_static_address(v)
        # inductor + CUDA graphs on a GPU; traced by aot_eager alone in a dry run
        # (``step`` reads ``model`` when called: it runs the compiled twin from here on)
        model = compile_for_decoding(model, "aot_eager" if args.dry_run else "cuda-graphs")
    sec = timed(fn, device, warmup=args.warmup + 2, repeats=args.repeats * 3)
    out = {**info, "step_ms": round(1e3 * sec, 3)}
    bw = next((b for k, b in HBM_BYTES_PER_S.items() if k in _name(device).lower()), None)
    if bw:
        floor = info["weight_gib"] * 2**30 / bw
        out["floor_ms"] = round(1e3 * floor, 3)
        out["x_floor"] = round(sec / floor, 2)
    return out


def _name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on CPU: the script runs")
    ap.add_argument("--budget-s", type=positive_float, default=420.0,
                    help="skip rows after this")  # fmt: skip
    ap.add_argument("--warmup", type=non_negative_int, default=3)
    ap.add_argument("--repeats", type=positive_int, default=10)
    ap.add_argument("--port", type=int, default=29791, help="the one-process group's port")
    ap.add_argument("--json", type=output_file, help="write the table here (default on CUDA: "
                    "runs/bench/gpu_check_cuda.json)")  # fmt: skip
    ap.add_argument("--skip", action="append", default=[], choices=("train", "fsdp", "decode"))
    args = ap.parse_args(argv)
    if args.dry_run:
        device = torch.device("cpu")
        args.warmup, args.repeats = 1, 2
    elif not torch.cuda.is_available():
        from unmask.errors import UserError

        raise UserError("no CUDA device; run with --dry-run to check the script")
    else:
        device = torch.device("cuda", 0)
        torch.backends.cuda.matmul.allow_tf32 = True
    check = Check(args.budget_s)
    if "train" not in args.skip:
        check.row("train 125M bf16 eager", lambda: train_row(args, device, compiled=False,
                                                             fsdp=False))  # fmt: skip
        check.row("train 125M bf16 compiled", lambda: train_row(args, device, compiled=True,
                                                                fsdp=False))  # fmt: skip
    setup: list[Any] = []
    if "decode" not in args.skip:

        def build() -> dict[str, Any]:
            t = time.perf_counter()
            setup.append(decode_setup(args, device))
            return {**setup[0][4], "build_s": round(time.perf_counter() - t, 1)}

        check.row("decode 8B: build + prefill", build)
        for mode in ("eager", "cuda graph", "compiled"):
            if setup:
                check.row(f"decode 8B step {mode}", lambda m=mode: decode_row(args, device, m,
                                                                             setup[0]))  # fmt: skip
    if "fsdp" not in args.skip:
        setup.clear()  # the 8B model's memory back before the next model
        check.row("train 125M bf16 compiled, FSDP2 1 device", lambda: fsdp_row(args, device))
    meta = {
        "torch": torch.__version__,
        "device": _name(device),
        "dry_run": args.dry_run,
        "seconds": round(time.perf_counter() - check.t0, 1),
    }
    print(f"gpu_check on {meta['device']} (torch {meta['torch']}), {meta['seconds']} s")
    keys = ("step_ms", "tokens_per_s", "mfu", "peak_mem_gib", "floor_ms", "x_floor", "wall_s")
    print(f"{'row':<44} " + " ".join(f"{k:>12}" for k in keys) + "  note")
    for r in check.rows:
        cells = " ".join(f"{_cell(r.get(k)):>12}" for k in keys)
        print(f"{r['row']:<44} {cells}  {r.get('error', '')}")
    path = args.json or (str(default_output("gpu_check_cuda.json")) if device.type == "cuda"
                         else "")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json_text({"meta": meta, "rows": check.rows}))
    failed = [r for r in check.rows if "error" in r and not r["error"].startswith("skipped")]
    return 1 if failed else 0


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


if __name__ == "__main__":
    from _common import run

    run(main)
