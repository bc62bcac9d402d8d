"""What decoding each task item as it decodes alone costs: one run per batch (one generator
for the batch, what ``unmask eval`` did before 2026-12-06) against ``unmask.api.run_rows``
(a generator per row where the decoder has one, else a run per row: what ``decode_each``,
the task scorer and lm-eval's ``generate_until`` do for a run that draws random numbers).

Untrained tiny checkpoints of each family are built in a temporary folder (nothing is read
from the disk): SEDD, an ``mdlm`` model at temperature 1 and ``embed-diffusion``. The items
are countdown prompts of a few lengths, ``--items`` of them in batches of ``--batch``, the
settings ``unmask eval`` picks for them (``task_config``), each prompt after the start token
``unmask eval`` decodes it after (``ModelFacts.start_id``). Each way runs ``--repeats``
times, the two ways taking turns (``_common.round_robin``: until 2026-12-07 every run of
the batched way came before every run of the other, so a machine whose speed drifted moved
the ratio); the table shows the median CPU seconds of the process (one thread unless
``--threads``; the JSON records the repeats and the statistic), and the ratio of the
per-row way to the batched one. On a GPU, where a batch costs about what one row does, the
ratio approaches the batch size for the decoders that run a row at a time.

    python benchmarks/eval_rows.py [--items 64] [--batch 32] [--repeats 3]
        [--families sedd,mdlm,embed-diffusion] [--json runs/bench/eval_rows.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    default_output,
    output_path,
    positive_int,
    round_robin,
    run,
    write_results,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

FAMILIES = ("sedd", "mdlm", "embed-diffusion")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=positive_int, default=64, metavar="N",
                    help="task items decoded (default: 64)")
    ap.add_argument("--batch", type=positive_int, default=32, metavar="N",
                    help="items a batch (default: 32, unmask eval's --batch-size)")
    ap.add_argument("--repeats", type=positive_int, default=3, metavar="N",
                    help="runs of each way, taking turns; the median CPU seconds count "
                    "(default: 3: the median of 2 is their mean, one slow run moves it)")
    ap.add_argument("--threads", type=positive_int, default=1, metavar="N",
                    help="torch threads (default: 1)")
    ap.add_argument("--families", default=",".join(FAMILIES), metavar="LIST",
                    help=f"comma list of {', '.join(FAMILIES)} (default: all)")
    ap.add_argument("--json", type=output_path, default=None, metavar="FILE",
                    help="where the rows go (default: runs/bench/eval_rows.json)")
    args = ap.parse_args(argv)
    names = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in names if f not in FAMILIES]
    if unknown or not names:
        ap.error(f"--families {args.families}: expected a comma list of "
                 f"{', '.join(FAMILIES)}")
    args.families = list(dict.fromkeys(names))
    if args.json is None:  # checked now, as a given path is, not after the measurements
        args.json = output_path(str(default_output("eval_rows.json")))
    return args


def items(n: int) -> list[Any]:
    """``n`` countdown items of a few prompt lengths (a left-padded batch)."""
    from unmask.tasks import Item

    out = []
    for k in range(n):
        a, b, c = 2 + k % 7, 10 + 3 * k % 50, 1 + k % 30
        out.append(Item("countdown3", f"{a},{b},{c}>{a + b + c}:",
                        f"{a}+{b}={a + b},{a + b}+{c}={a + b + c}",
                        {"numbers": [a, b, c], "target": a + b + c}))
    return out


def checkpoint(folder: Path, family: str) -> Any:
    """An untrained tiny checkpoint of ``family`` saved in ``folder``, loaded."""
    import torch

    from unmask.checkpoint import load, save_checkpoint
    from unmask.config import TrainConfig, model_preset
    from unmask.model import Transformer
    from unmask.objectives import objective_spec
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64)
    if family != "mdlm":
        cfg = objective_spec(family).configure(cfg, TrainConfig(seq_len=16))
    save_checkpoint(folder, model=Transformer(cfg), tokenizer=tok)
    return load(folder)


def measure(loaded: Any, family: str, args: argparse.Namespace) -> dict[str, Any]:
    """CPU seconds of the items decoded a batch per run and by ``run_rows``, the two ways
    taking turns (``round_robin``)."""
    from unmask.api import facts_of, run_rows, run_to_end, start
    from unmask.tasks.score import repeat_seeds, task_config

    batch = items(args.items)
    given = {"temperature": 1.0} if family == "mdlm" else {}
    config = task_config(loaded, batch, given)
    tok = loaded.tokenizer
    head = [facts_of(loaded).start_id]  # as score_items decodes them: a document's start
    prompts = [head + tok.encode(i.prompt) for i in batch]
    seeds = repeat_seeds(config.seed or 0, [i.prompt for i in batch])
    chunks = range(0, len(prompts), args.batch)

    def batched() -> None:
        for lo in chunks:
            run_to_end(start(loaded, prompts[lo : lo + args.batch], config))

    def per_row() -> None:
        for lo in chunks:
            run_rows(loaded, prompts[lo : lo + args.batch], config, seeds[lo : lo + args.batch])

    def cpu(way: Any) -> tuple[None, float]:
        t0 = time.process_time()
        way()
        return None, time.process_time() - t0

    batched()  # warm-up: the first forward pays for allocations, as do the first per-row runs
    per_row()
    (_, one), (_, each) = round_robin([batched, per_row], args.repeats, cpu)
    return {"family": family, "items": args.items, "batch": args.batch,
            "gen_length": config.gen_length, "steps": config.steps,
            "temperature": config.temperature, "batched_cpu_s": round(one, 4),
            "per_row_cpu_s": round(each, 4), "ratio": round(each / one, 2) if one else None}


def main() -> int:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'family':16} {'batched s':>10} {'per row s':>10} {'ratio':>6}")
    with tempfile.TemporaryDirectory(prefix="eval_rows.") as tmp:
        for family in args.families:
            loaded = checkpoint(Path(tmp) / family, family)
            row = measure(loaded, family, args)
            rows.append(row)
            print(f"{family:16} {row['batched_cpu_s']:10.3f} {row['per_row_cpu_s']:10.3f} "
                  f"{row['ratio']:6.2f}", flush=True)
    # how the seconds were taken: files of the fewest of the runs (before 2026-12-07) carry
    # neither key
    write_results(args.json, {"threads": args.threads, "repeats": args.repeats,
                              "statistic": "median", "rows": rows}, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run(main)
