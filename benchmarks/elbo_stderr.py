"""Standard error of the Monte Carlo ELBO log-likelihood against its number of samples.

``unmask.evaluate.elbo_loglikelihood`` (what lm-eval's ``loglikelihood`` gets from a
diffusion checkpoint, ``unmask.lm_eval``) estimates log p(continuation | context) from
``n`` masked copies. This measures, on held-out text and the demo model, for each ``n``:

- ``reported``: the standard error the estimator reports (sample std / sqrt(n)), mean over items;
- ``actual``: the standard deviation of the estimate over ``--repeats`` seeds, mean over
  items: the real spread, which is smaller because the mask counts are stratified;
- ``seconds``: time per estimate.

The default of ``--mc-samples`` (``unmask.evaluate.DEFAULT_MC_SAMPLES``) is chosen from
this curve (docs/evaluation.md).

    python benchmarks/elbo_stderr.py [--model PATH] [--data DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _common import int_list, output_file, positive_int, write_results

from unmask.checkpoint import load
from unmask.commands import at_least
from unmask.data import TokenDataset
from unmask.errors import UserError
from unmask.evaluate import elbo_loglikelihood
from unmask.flag_checks import check_mc_samples_count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = Path(__file__).resolve().parents[1]
    p.add_argument("--model", default=str(here / "src/unmask/assets/demo"))
    p.add_argument("--data", default=str(here / "data/bible"), help="prepared dataset (val split)")
    p.add_argument("--items", type=positive_int, default=6)
    p.add_argument("--context", type=positive_int, default=32, help="context tokens per item")
    p.add_argument("--targets", default="8,32", help="continuation lengths in tokens")
    p.add_argument("--samples", default="1,2,4,8,16,32,64,128,256")
    p.add_argument("--repeats", type=at_least(2), default=6,
                   help="seeds per estimate, at least 2: their spread is the actual stderr")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--json", type=output_file, metavar="FILE")
    args = p.parse_args(argv)
    targets = int_list(args.targets, "--targets")  # before the model loads
    samples = [check_mc_samples_count(n, "--samples") for n in int_list(args.samples, "--samples")]
    torch.set_num_threads(args.threads)
    loaded = load(args.model)
    mask_id = loaded.config.mask_id
    window = args.context + max(targets)
    if window > loaded.config.max_seq_len:  # it failed inside the model's forward
        raise UserError(
            f"--context {args.context} + the longest of --targets ({max(targets)}) = {window} "
            f"tokens exceeds the model's max_seq_len ({loaded.config.max_seq_len})"
        )
    windows = []
    for w in TokenDataset(args.data, "val").windows(window):
        windows.append(w.tolist())
        if len(windows) == args.items:
            break
    rows = []
    print(f"{'target':>6} {'n':>5} {'estimate':>10} {'reported':>9} {'actual':>8} {'sec':>7}")
    for length in targets:
        for n in samples:
            est, reported, actual, secs = [], [], [], []
            for w in windows:
                ctx, tgt = w[: args.context], w[args.context : args.context + length]
                values = []
                for r in range(args.repeats):
                    t0 = time.perf_counter()
                    e = elbo_loglikelihood(
                        loaded.model,
                        ctx,
                        tgt,
                        mask_id=mask_id,
                        n_samples=n,
                        batch_size=32,
                        generator=torch.Generator().manual_seed(r),
                    )
                    secs.append(time.perf_counter() - t0)
                    values.append(e.logprob)
                    if n > 1:
                        reported.append(e.stderr)
                est.append(statistics.fmean(values))
                actual.append(statistics.stdev(values))
            row = {
                "target_tokens": length,
                "n": n,
                "estimate": statistics.fmean(est),
                "reported_stderr": statistics.fmean(reported) if reported else None,
                "actual_stderr": statistics.fmean(actual),
                "seconds": statistics.median(secs),
            }
            rows.append(row)
            rep = f"{row['reported_stderr']:9.3f}" if reported else f"{'-':>9}"
            print(
                f"{length:>6} {n:>5} {row['estimate']:>10.3f} {rep} "
                f"{row['actual_stderr']:>8.3f} {row['seconds']:>7.3f}",
                flush=True,
            )
    if args.json:
        meta = {
            "model": args.model,
            "data": args.data,
            "items": args.items,
            "context": args.context,
            "repeats": args.repeats,
            "threads": args.threads,
            "torch": torch.__version__,
        }
        # the measured results the report draws its curve from: a write cut short (a full
        # disk, Ctrl-C) left them half-written in place of the last run's
        write_results(args.json, {"meta": meta, "rows": rows}, indent=2)
    return 0


if __name__ == "__main__":
    from _common import run

    run(main)
