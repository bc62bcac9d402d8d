"""Training-step throughput: unmask's ``mdlm`` objective vs a minimal plain-PyTorch causal LM.

Both sides have the same width, depth, heads, MLP width, vocabulary, batch and
sequence length, the same AdamW step and fp32 on CPU (bf16 autocast on CUDA). They
alternate in one process, round after round, so machine noise hits both alike; the
table reports the median tokens/s of each and the ratio (goal: mdlm / plain ≥ 0.95).

    python benchmarks/train_throughput.py [--preset demo] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from unmask.config import model_preset
from unmask.model import Transformer
from unmask.objectives import ObjectiveOptions, ar, mdlm
from unmask.schedules import LinearSchedule


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round and side")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = torch.bfloat16 if device.type == "cuda" else None
    cfg = model_preset(args.preset, vocab_size=args.vocab, max_seq_len=max(args.seq_len, 128))
    torch.manual_seed(0)
    diff = Transformer(cfg).to(device)
    ar_cfg = model_preset(
        args.preset, vocab_size=args.vocab, max_seq_len=max(args.seq_len, 128), attention="causal"
    )
    arm = Transformer(ar_cfg).to(device)
    plain = PlainLM(
        args.vocab, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.ffn_hidden, cfg.max_seq_len
    ).to(device)
    opts = ObjectiveOptions(schedule=LinearSchedule(1e-3), random_length_frac=0.01)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(4, args.vocab, (args.batch, args.seq_len), generator=gen).to(device)

    def step_fn(model: nn.Module, kind: str):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> None:
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                if kind == "plain":
                    logits = model(x)
                    loss = F.cross_entropy(
                        logits[:, :-1].reshape(-1, args.vocab).float(), x[:, 1:].reshape(-1)
                    )
                else:
                    fn = mdlm if kind == "mdlm" else ar
                    cfg_ = model.config
                    p = fn(model, cfg_, x, attention_mask=None, generator=gen, options=opts)
                    loss = p.loss_sum / p.n_tokens
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    sides = {"plain causal LM (PyTorch)": step_fn(plain, "plain"), "unmask ar": step_fn(arm, "ar"),
             "unmask mdlm": step_fn(diff, "mdlm")}
    for fn in sides.values():  # warm-up
        fn()
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
            times[name].append(args.batch * args.seq_len * args.steps / (time.perf_counter() - t0))
    base = statistics.median(times["plain causal LM (PyTorch)"])
    rows = []
    print(
        f"preset={args.preset} params={cfg.num_params() / 1e6:.2f}M batch={args.batch} "
        f"seq_len={args.seq_len} "
        f"device={device} threads={torch.get_num_threads()} rounds={args.rounds}"
    )
    print(f"{'side':<28} {'tokens/s (median)':>18} {'ratio vs plain':>15}")
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({"side": name, "tokens_per_s": med, "ratio": med / base})
        print(f"{name:<28} {med:>18,.0f} {med / base:>15.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
