"""Forwards and speed of ``speculative`` and ``hybrid`` at batch > 1 against AR, greedy.

Counts what per-row acceptance changes: forwards per batch (independent of machine load)
and tokens/s as a ratio to AR decoding of the same model and prompts. Run it once with each
source tree to compare two versions (``PYTHONPATH=<tree>/src``); every row checks greedy
identity with AR. Each row's seconds are the median of ``--repeats`` runs, round-robin over
the rows, after an untimed run of each.

    python benchmarks/speculative_batch.py --ar-model runs/ar-fim/checkpoint \\
        --hybrid runs/hybrid/checkpoint --gen-length 64 --batch 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/decoding.py

from _common import json_text, positive_int, round_robin  # noqa: E402
from decoding import prompt_texts  # noqa: E402

from unmask.checkpoint import load  # noqa: E402
from unmask.commands.demo import asset_path  # noqa: E402
from unmask.sampling.ar import generate_ar  # noqa: E402
from unmask.sampling.hybrid import HybridRun  # noqa: E402
from unmask.sampling.speculative import SpeculativeRun, shared_vocabulary  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ar-model", required=True)
    ap.add_argument("--hybrid", required=True)
    ap.add_argument("--drafter", default=str(asset_path("demo")))
    ap.add_argument("--gen-length", type=positive_int, default=64)
    ap.add_argument("--batch", type=positive_int, default=8)
    ap.add_argument("--draft-length", type=positive_int, default=4)
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--repeats", type=positive_int, default=3,
                    help="timed runs per row (median), round-robin over the rows")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ar, hy, dr = (load(p, device="cpu") for p in (args.ar_model, args.hybrid, args.drafter))
    for m in (ar, hy, dr):
        m.model.eval()
    # the ids the two tokenizers share; another tokenizer is refused (one line)
    shared = shared_vocabulary(ar.tokenizer, dr.tokenizer)
    ids = [ar.tokenizer.encode(p) for p in prompt_texts(args.batch, 8)]
    g, out = args.gen_length, {"gen": args.gen_length, "batch": len(ids)}
    calls = {
        "ar": lambda: generate_ar(ar.model, ids, max_new_tokens=g, eos_id=ar.config.eos_id),
        "ar_hybrid": lambda: generate_ar(hy.model, ids, max_new_tokens=g,
                                         eos_id=hy.config.eos_id),  # fmt: skip
        "spec": lambda: SpeculativeRun(ar.model, dr.model, ids, max_new_tokens=g,
                                       draft_length=args.draft_length, eos_id=ar.config.eos_id,
                                       shared_vocab=shared).run(),  # fmt: skip
        **{f"hybrid_{pre}": (lambda pre=pre: HybridRun(hy.model, ids, max_new_tokens=g,
                                                       eos_id=hy.config.eos_id,
                                                       predraft=pre).run())  # fmt: skip
           for pre in ("all", "ends")},
    }
    with torch.no_grad():
        for fn in calls.values():  # untimed: one-time costs (the ar row, timed first, paid
            fn()  # the process's and inflated every vs_ar); a wrong checkpoint refused here
        timed = dict(zip(calls, round_robin(list(calls.values()), args.repeats), strict=True))
    for name, (r, s) in timed.items():
        out[name] = {"s": s, "nfe": r.nfe}
        if name.startswith("ar"):
            continue
        ref, ref_s = timed["ar" if name == "spec" else "ar_hybrid"]
        out[name].update(vs_ar=ref_s / s, identical=r.gen_ids == ref.gen_ids)
        if name == "spec":
            out[name]["rounds"] = r.steps
    print(json_text(out, indent=None), end="")


if __name__ == "__main__":
    from _common import run

    run(main)
