"""Masked-diffusion decoding with the output layer on the columns a step reads (the loop's
narrow head) vs on the whole canvas, side by side in one process.

Each setting decodes the same prompt both ways, alternating which goes first, checks that the
tokens are identical, and prints the median times and old/new (> 1: the narrow head is faster).
The whole-canvas side is the same ``Denoiser`` with its separated head switched off (what a
model without ``return_hidden`` gets). Settings: the shipped demo model (vocabulary 4,096) at
temperature 0 and 1 and in one block, and a tiny-dims model with a 32k and a 126k vocabulary,
where the head dominates. The narrow head runs for float32/float64 heads on CPU
(``unmask.sampling.loop``); elsewhere both sides are the whole canvas and the ratio is ~1.

    python benchmarks/narrow_head.py [--reps 5] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from _common import positive_int, run


def _once(model: Any, prompts: list[list[int]], config: Any, whole: bool) -> tuple[float, Any]:
    import torch

    from unmask.sampling.loop import Denoiser

    c = model.config
    den = Denoiser.for_prompts(model, prompts, config, mask_id=c.mask_id, pad_id=c.pad_id,
                               eos_id=c.eos_id)  # fmt: skip
    if whole:
        den._head = None  # the whole canvas through the model's own head
    t0 = time.perf_counter()
    with torch.no_grad():
        tokens = den.run().tokens
    return time.perf_counter() - t0, tokens


def _bench(label: str, model: Any, prompts: list[list[int]], config: Any, reps: int) -> dict:
    import torch

    _once(model, prompts, config, False)
    _once(model, prompts, config, True)  # warm-up, both sides
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(reps):
        got = {}
        for whole in ((False, True) if i % 2 == 0 else (True, False)):
            dt, got[whole] = _once(model, prompts, config, whole)
            times[whole].append(dt)
        if not torch.equal(got[False], got[True]):
            raise SystemExit(f"narrow_head.py: {label}: tokens differ (the narrow head must be "
                             "exact)")
    old, new = statistics.median(times[True]), statistics.median(times[False])
    print(f"{label}: whole {old * 1000:.0f} ms, narrow {new * 1000:.0f} ms, old/new "
          f"{old / new:.2f}x (medians of {reps}, tokens identical)", flush=True)
    return {"setting": label, "whole_s": old, "narrow_s": new, "ratio": old / new}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=positive_int, default=5,
                    help="timed decodes of each side per setting (default: 5)")  # fmt: skip
    ap.add_argument("--threads", type=positive_int, default=1,
                    help="torch CPU threads (default: 1)")  # fmt: skip
    ap.add_argument("--quick", action="store_true",
                    help="the demo model at temperature 0 and the 32k vocabulary only, 1 rep")
    args = ap.parse_args()
    import torch

    from unmask.checkpoint import load
    from unmask.config import SampleConfig, model_preset
    from unmask.files import asset_path
    from unmask.model import Transformer

    torch.set_num_threads(args.threads)
    reps = 1 if args.quick else args.reps
    prompts = [list(range(10, 42))]
    demo = load(asset_path("demo")).model.eval()
    demo_settings = [SampleConfig(gen_length=128, steps=128, block_length=32, seed=1)]
    if not args.quick:
        demo_settings += [
            SampleConfig(gen_length=128, steps=128, block_length=32, seed=1, temperature=1.0),
            SampleConfig(gen_length=128, steps=128, block_length=128, seed=1),
        ]
    for cfg in demo_settings:
        _bench(f"demo V=4096 gen 128 block {cfg.block_length} T={cfg.temperature}", demo,
               prompts, cfg, reps)  # fmt: skip
    for vocab in (32768,) if args.quick else (32768, 126464):
        torch.manual_seed(0)
        model = Transformer(model_preset("tiny", vocab_size=vocab, max_seq_len=256, d_model=128,
                                         n_layers=2, n_heads=4, ffn_hidden=256)).eval()
        temps = (0.0,) if args.quick else (0.0, 1.0)
        for t in temps:
            cfg = SampleConfig(gen_length=128, steps=32, block_length=32, seed=1, temperature=t)
            _bench(f"tiny dims V={vocab} gen 128 block 32 steps 32 T={t}", model, prompts, cfg,
                   reps)  # fmt: skip


if __name__ == "__main__":
    run(main)
