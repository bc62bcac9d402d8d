"""Training-step throughput and memory, side by side in one run.

``--compare plain`` (default): unmask's ``mdlm`` and ``ar`` steps vs a minimal plain-PyTorch
causal LM of the same width, depth, heads, MLP width, vocabulary, batch and sequence length,
the same AdamW step (goal: mdlm / plain ≥ 0.95).

``--compare precision``: the ``mdlm`` training step in fp32 eager (today's step), bf16
autocast eager, fp32 compiled and bf16 compiled (``unmask.parallel``), each as a ratio over
fp32 eager (goal: ≥ 1.5×). Use ``--activation-checkpointing`` to add the checkpointed step.

``--compare objectives``: the ``ar``, ``mdlm`` and ``hybrid`` (``--draft-block`` k) training
steps of the same model, batch and rows; the hybrid also with its attention as one dense
masked SDPA (``hybrid-dense``, as before ``draft_chunks``); and ``ar`` over rows as long as
the hybrid's real pass (the L clean tokens plus its draft blocks, about 2L): the cost a
hybrid step should come close to. Tokens/s count the tokens of a row (L; the last side's
longer rows), s/step the time of one whole step.

``--compare memory``: peak resident memory per process of 2-process ``torchrun`` training
(gloo on CPU, NCCL on GPUs) with DDP and with FSDP2, for a model that is large for the
machine (``--preset`` / ``--d-model`` / ``--layers``).

Sides alternate in one process, round after round, so machine noise hits all alike; the
table reports the median tokens/s of each and the ratio.

    python benchmarks/train_throughput.py [--compare plain|precision|objectives|memory]
        [--preset demo] [--batch 16] [--seq-len 256] [--threads 2] [--rounds 5]
        [--draft-block 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from _common import child_json, non_negative_int, output_file, positive_int, write_results
from torch import nn

from unmask.config import model_preset
from unmask.model import Transformer
from unmask.objectives import ObjectiveOptions, ar, hybrid, mdlm
from unmask.parallel import (
    Precision,
    apply_activation_checkpointing,
    compile_blocks,
    peak_memory_bytes,
    resolve_precision,
)
from unmask.schedules import LinearSchedule

hybrid_module = importlib.import_module("unmask.objectives.hybrid")  # (the package's `hybrid`
# attribute is the loss function)


class PlainBlock(nn.Module):
    def __init__(self, d: int, h: int, f: int) -> None:
        super().__init__()
        self.h = h
        self.n1, self.n2 = nn.RMSNorm(d), nn.RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.gate, self.up, self.down = (
            nn.Linear(d, f, bias=False),
            nn.Linear(d, f, bias=False),
            nn.Linear(f, d, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.n1(x)).view(B, L, 3, self.h, D // self.h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(y.transpose(1, 2).reshape(B, L, D))
        z = self.n2(x)
        return x + self.down(F.silu(self.gate(z)) * self.up(z))


class PlainLM(nn.Module):
    """The textbook causal LM: learned positions, MHA, SwiGLU, tied head."""

    def __init__(self, vocab: int, d: int, layers: int, heads: int, f: int, max_len: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        self.blocks = nn.ModuleList(PlainBlock(d, heads, f) for _ in range(layers))
        self.norm = nn.RMSNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tok(x) + self.pos(torch.arange(x.shape[1], device=x.device))
        for b in self.blocks:
            h = b(h)
        return self.norm(h) @ self.tok.weight.T


def make_step(
    model: nn.Module, kind: str, x: torch.Tensor, precision: Precision, vocab: int
) -> Callable[[], None]:
    """One training step (forward, loss, backward, clip, AdamW) of ``kind`` on batch ``x``."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    opts = ObjectiveOptions(schedule=LinearSchedule(1e-3), random_length_frac=0.0, draft_weight=1.0)
    losses = {"mdlm": mdlm, "ar": ar, "hybrid": hybrid, "hybrid-dense": hybrid_dense}
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        with precision.context(x.device.type):
            if kind == "plain":
                logits = model(x)
                loss = F.cross_entropy(
                    logits[:, :-1].reshape(-1, vocab).float(), x[:, 1:].reshape(-1)
                )
            else:
                fn = losses[kind]
                p = fn(model, model.config, x, attention_mask=None, generator=gen, options=opts)
                loss = p.loss_sum / p.n_tokens
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sides_plain(args: argparse.Namespace, device: torch.device, x: torch.Tensor):
    precision = resolve_precision("bf16" if device.type == "cuda" else "fp32", device)
    cfg = model_preset(args.preset, vocab_size=args.vocab, max_seq_len=max(args.seq_len, 128))
    torch.manual_seed(0)
    diff = Transformer(cfg).to(device)
    arm = Transformer(
        model_preset(
            args.preset,
            vocab_size=args.vocab,
            max_seq_len=max(args.seq_len, 128),
            attention="causal",
        )
    )
    plain = PlainLM(
        args.vocab, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.ffn_hidden, cfg.max_seq_len
    ).to(device)
    sides = {
        "plain causal LM (PyTorch)": make_step(plain, "plain", x, precision, args.vocab),
        "unmask ar": make_step(arm.to(device), "ar", x, precision, args.vocab),
        "unmask mdlm": make_step(diff, "mdlm", x, precision, args.vocab),
    }
    return cfg, sides


PRECISION_SIDES = ("fp32-eager", "bf16-eager", "fp32-compiled", "bf16-compiled",
                   "fp32-eager-ckpt")
"""The sides ``--compare precision`` can run (``--sides``); the last with
``--activation-checkpointing``."""


def sides_precision(args: argparse.Namespace, device: torch.device, x: torch.Tensor):
    cfg = model_preset(args.preset, vocab_size=args.vocab, max_seq_len=max(args.seq_len, 128))
    sides = {}
    variants = [
        ("fp32", False, False),
        ("bf16", False, False),
        ("fp32", True, False),
        ("bf16", True, False),
    ]
    if args.activation_checkpointing:
        variants.append(("fp32", False, True))
    for prec, compiled, ckpt in variants:
        key = f"{prec}-{'compiled' if compiled else 'eager'}" + ("-ckpt" if ckpt else "")
        if args.sides and key not in args.sides:
            continue
        torch.manual_seed(0)
        model = Transformer(cfg).to(device)
        if ckpt:
            apply_activation_checkpointing(model)
        if compiled:
            compile_blocks(model)
        name = f"mdlm {prec} {'compiled' if compiled else 'eager'}" + (" +ckpt" if ckpt else "")
        sides[name] = make_step(model, "mdlm", x, resolve_precision(prec, device), args.vocab)
    return cfg, sides


def hybrid_dense(*args, **kw):
    """The hybrid loss with its attention as one dense masked SDPA (before ``draft_chunks``)."""
    chunks = hybrid_module.draft_chunks
    hybrid_module.draft_chunks = lambda bias, *_: bias
    try:
        return hybrid(*args, **kw)
    finally:
        hybrid_module.draft_chunks = chunks


def sides_objectives(args: argparse.Namespace, device: torch.device, x: torch.Tensor):
    """ar, mdlm and hybrid steps on ``x``, and ar on rows as long as the hybrid's pass."""
    precision = resolve_precision("bf16" if device.type == "cuda" else "fp32", device)
    k = args.draft_block
    # the hybrid's pass: L clean columns + k per boundary b = 1 + j·k < L - k (offset 0: the
    # most blocks; other offsets have at most one block fewer)
    n_pass = args.seq_len + k * len(range(1, args.seq_len - k, k))
    base = model_preset(args.preset, vocab_size=args.vocab, max_seq_len=max(n_pass, 128))
    configs = {
        "ar": replace(base, attention="causal"),
        "mdlm": base,
        "hybrid": replace(base, attention="causal", draft_block=k),
        "hybrid-dense": replace(base, attention="causal", draft_block=k),
    }
    sides = {}
    for kind, cfg in configs.items():
        torch.manual_seed(0)
        model = Transformer(cfg).to(device)
        sides[f"unmask {kind}" + (f" (k={k})" if "hybrid" in kind else "")] = make_step(
            model, kind, x, precision, args.vocab
        )
    torch.manual_seed(0)
    long = torch.randint(4, args.vocab, (x.shape[0], n_pass), generator=torch.Generator())
    model = Transformer(configs["ar"]).to(device)
    args.row_len[f"unmask ar, rows of {n_pass}"] = n_pass
    sides[f"unmask ar, rows of {n_pass}"] = make_step(
        model, "ar", long.to(device), precision, args.vocab
    )
    return base, sides


def run_sides(args: argparse.Namespace, sides: dict, device: torch.device) -> dict[str, float]:
    for name, fn in sides.items():  # warm-up (compiles the compiled sides)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            fn()
        print(f"warm-up {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.rounds):
        for name, fn in sides.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            row = args.row_len.get(name, args.seq_len)  # tokens per row of this side
            times[name].append(args.batch * row * args.steps / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


# ----------------------------------------------------------------------------- memory


def memory_worker(args: argparse.Namespace) -> None:
    """One torchrun process: build the model, wrap it (DDP or FSDP2), train a few steps,
    print this process's peak memory as JSON (rank 0 only)."""
    import torch.distributed as dist

    from unmask.parallel import apply_fsdp

    device = (
        torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    cfg = model_preset(
        args.preset,
        vocab_size=args.vocab,
        max_seq_len=max(args.seq_len, 128),
        **({"d_model": args.d_model} if args.d_model else {}),
        **({"n_layers": args.layers} if args.layers else {}),
    )
    torch.manual_seed(0)
    model: nn.Module = Transformer(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    if args.worker == "fsdp":
        apply_fsdp(model)
        wrapped = model
    else:
        wrapped = nn.parallel.DistributedDataParallel(model)
    x = torch.randint(4, args.vocab, (args.batch, args.seq_len)).to(device)
    wrapped.config = cfg  # the objective reads the config off the model it is given
    step = make_step(wrapped, "mdlm", x, resolve_precision("fp32", device), args.vocab)
    for _ in range(args.steps):
        step()
    peak = torch.tensor([float(peak_memory_bytes(device))])
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    if dist.get_rank() == 0:
        print(json.dumps({"mode": args.worker, "params": n_params, "peak_bytes": float(peak)}))
    dist.destroy_process_group()


def compare_memory(args: argparse.Namespace) -> list[dict]:
    rows = []
    for mode in ("ddp", "fsdp"):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(29700 + len(rows)),
            __file__,
            "--worker",
            mode,
            "--preset",
            args.preset,
            "--vocab",
            str(args.vocab),
            "--batch",
            str(args.batch),
            "--seq-len",
            str(args.seq_len),
            "--steps",
            str(args.steps),
        ]
        if args.d_model:
            cmd += ["--d-model", str(args.d_model)]
        if args.layers:
            cmd += ["--layers", str(args.layers)]
        env = dict(os.environ)
        if args.threads:  # 0 = torch's default: the children inherit OMP_NUM_THREADS as is
            env["OMP_NUM_THREADS"] = str(args.threads)
        rows.append(child_json(cmd, mode, env=env))  # a failure: one line, the child's error
    print(
        f"params={rows[0]['params'] / 1e6:.1f}M batch={args.batch} seq_len={args.seq_len} "
        f"processes=2 steps={args.steps}"
    )
    print(f"{'mode':<6} {'peak memory per process':>24} {'ratio vs ddp':>13}")
    for r in rows:
        r["ratio"] = r["peak_bytes"] / rows[0]["peak_bytes"]
        print(f"{r['mode']:<6} {r['peak_bytes'] / 2**30:>20.2f} GiB {r['ratio']:>13.3f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--compare", choices=("plain", "precision", "objectives", "memory"), default="plain",
        help="plain: unmask's mdlm and ar steps vs a plain-PyTorch causal LM; precision: the "
        "mdlm step in fp32/bf16, eager/compiled; objectives: the ar, mdlm and hybrid steps; "
        "memory: peak memory of 2-process DDP vs FSDP2 (default: plain)",
    )  # fmt: skip
    ap.add_argument("--draft-block", type=positive_int, default=8,
                    help="objectives: the hybrid's k")  # fmt: skip
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--vocab", type=positive_int, default=4096)
    ap.add_argument("--batch", type=positive_int, default=16)
    ap.add_argument("--seq-len", type=positive_int, default=128)
    ap.add_argument("--steps", type=positive_int, default=5, help="timed steps per round and side")
    ap.add_argument("--rounds", type=positive_int, default=5)
    ap.add_argument("--warmup", type=non_negative_int, default=2,
                    help="untimed steps per side first")  # fmt: skip
    ap.add_argument("--threads", type=non_negative_int, default=0,
                    help="torch threads (0 = default)")  # fmt: skip
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument(
        "--sides",
        default="",
        help="precision: only these, comma-separated, of fp32-eager, bf16-eager, fp32-compiled, "
        "bf16-compiled, fp32-eager-ckpt (the first is the ratios' base)",
    )
    ap.add_argument("--d-model", type=non_negative_int, default=0,
                    help="memory: override the preset's width (0: the preset's)")  # fmt: skip
    ap.add_argument("--layers", type=non_negative_int, default=0,
                    help="memory: override the preset's depth (0: the preset's)")  # fmt: skip
    ap.add_argument("--worker", choices=("ddp", "fsdp"), help=argparse.SUPPRESS)
    ap.add_argument("--json", type=output_file, help="write the results here")
    args = ap.parse_args()
    wanted = [w.strip() for w in args.sides.split(",")] if args.sides else []
    known = PRECISION_SIDES if args.activation_checkpointing else PRECISION_SIDES[:-1]
    if wanted and args.compare != "precision":  # was ignored: every side ran
        ap.error(f"--sides picks sides of --compare precision, not of --compare {args.compare}")
    if any(w not in known for w in wanted):  # was a StopIteration traceback or a side dropped
        bad = next(w for w in wanted if w not in known)
        hint = (" (with --activation-checkpointing)" if bad == PRECISION_SIDES[-1] else
                f"; choose from {', '.join(known)}")
        ap.error(f"--sides {args.sides}: no side {bad!r}{hint}")
    args.sides = wanted
    args.row_len = {}  # side -> tokens per row where not --seq-len (objectives' long ar)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        memory_worker(args)
        return
    if args.compare == "memory":
        rows = compare_memory(args)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(4, args.vocab, (args.batch, args.seq_len), generator=gen).to(device)
        build = {"plain": sides_plain, "precision": sides_precision}.get(
            args.compare, sides_objectives
        )
        cfg, sides = build(args, device, x)
        med = run_sides(args, sides, device)
        base = next(iter(med.values()))
        print(
            f"preset={args.preset} params={cfg.num_params() / 1e6:.2f}M batch={args.batch} "
            f"seq_len={args.seq_len} device={device} threads={torch.get_num_threads()} "
            f"rounds={args.rounds}"
        )
        first = next(iter(med))
        print(f"{'side':<28} {'tokens/s (median)':>18} {'s/step':>8} {'ratio vs ' + first:>30}")
        rows = []
        for name, tps in med.items():
            sec = args.batch * args.row_len.get(name, args.seq_len) / tps
            rows.append({"side": name, "tokens_per_s": tps, "s_per_step": sec, "ratio": tps / base})
            print(f"{name:<28} {tps:>18,.0f} {sec:>8.3f} {tps / base:>30.3f}")
    if args.json:
        write_results(args.json, {"args": vars(args), "rows": rows}, indent=2)


if __name__ == "__main__":
    from _common import run

    run(main)
