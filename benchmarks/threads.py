"""How many CPU threads should decoding use? One row of greedy AR decoding per model size,
timed at each thread count in one process (``OMP_WAIT_POLICY`` is read when torch loads,
so the script sets ``PASSIVE``, unmask's default, before importing torch unless told).

Random causal models of the ``--presets`` (``unmask.config.MODEL_PRESETS``; the demo
preset is the shipped model's shape), a 16-token prompt, ``--tokens`` generated, the median
of ``--repeats`` runs per setting, settings taken round-robin so load drifts hit every row
alike. Prints tokens/s and the ratio to the fewest threads given (``vs_first``: the counts
run in increasing order; one thread by default): what ``unmask.commands.decode_threads``
(one thread for weights under 100 MB) was chosen from.

    python benchmarks/threads.py [--presets demo small base] [--threads 1 2]
    OMP_WAIT_POLICY=ACTIVE python benchmarks/threads.py   # another wait policy
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence

from _common import output_file, positive_int, write_results

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, as `unmask` does

import torch  # noqa: E402

from unmask.config import model_preset  # noqa: E402
from unmask.model import Transformer  # noqa: E402
from unmask.sampling.ar import generate_ar  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["demo", "small", "base"])
    ap.add_argument("--threads", type=positive_int, nargs="+", default=[1, 2])
    ap.add_argument("--tokens", type=positive_int, default=64)
    ap.add_argument("--repeats", type=positive_int, default=3)
    ap.add_argument("--json", type=output_file, default=None, help="write the rows here")
    args = ap.parse_args(argv)
    args.threads = sorted(set(args.threads))  # the first, the ratios' base, is the fewest
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, float | int | str]]:
    args = parse_args(argv)
    rows: list[dict[str, float | int | str]] = []
    print(f"torch {torch.__version__}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    fewest = args.threads[0]
    base_label = f"x{fewest} thread{'s' if fewest > 1 else ''}"
    print(f"{'preset':>8} {'params':>8} {'threads':>7} {'tok/s':>8} {base_label:>10}")
    for name in args.presets:
        cfg = model_preset(name, vocab_size=8192, attention="causal")
        torch.manual_seed(0)
        model = Transformer(cfg).eval()
        params = sum(p.numel() for p in model.parameters())
        prompt = [[5] * 16]
        times: dict[int, list[float]] = {n: [] for n in args.threads}
        for n in args.threads:  # warm-up at every count
            torch.set_num_threads(n)
            generate_ar(model, prompt, max_new_tokens=8, eos_id=None)
        for _ in range(args.repeats):
            for n in args.threads:
                torch.set_num_threads(n)
                t = time.perf_counter()
                generate_ar(model, prompt, max_new_tokens=args.tokens, eos_id=None)
                times[n].append(time.perf_counter() - t)
        base = None
        for n in args.threads:
            tok_s = args.tokens / statistics.median(times[n])
            base = base or tok_s
            rows.append({"preset": name, "params": params, "threads": n, "tok_s": tok_s,
                         "vs_first": tok_s / base})  # fmt: skip
            print(f"{name:>8} {params / 1e6:>7.1f}M {n:>7} {tok_s:>8.1f} {tok_s / base:>10.2f}")
    if args.json:
        write_results(args.json, {"argv": sys.argv[1:], "rows": rows}, indent=1)
    return rows


if __name__ == "__main__":
    from _common import run

    run(main)
