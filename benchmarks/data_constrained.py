"""The data-constrained regime: AR vs masked diffusion (and block diffusion) on a small corpus
seen for many epochs, side by side with the same model, batch and steps (issue 14, item 2).

Prabhudesai et al. 2025 ("Diffusion beats autoregressive in data-constrained settings") find
that when the data is small and repeated, AR overfits after a few epochs while masked
diffusion keeps improving for hundreds, so past some number of epochs diffusion wins. This
script measures that on a slice of a prepared corpus with unmask's own training API:

1. ``unmask.data.prepare_slice``: the first ``--tokens`` tokens of the corpus' train split, its
   whole validation split, the same tokenizer;
2. one run per objective (``unmask.train.train``): the same preset, ``seq_len``, batch, lr and
   number of steps (``--epochs`` passes over the slice), validated every ``--eval-epochs``
   epochs on the held-out split (``val_bpb``: exact for ``ar``, the ELBO bound for ``mdlm``
   and ``bd3lm``, so diffusion's numbers are upper bounds);
3. the curves, each objective's best epoch, and the crossover (the first evaluated epoch from
   which a diffusion objective's held-out bits/byte stays below AR's) go to a table, JSON
   (``--json``) and a matplotlib PNG (``--plot``).

Resumable: runs live in ``--work``; running the same command again continues each run from
its checkpoint (``train --resume``, exact) and skips finished ones, so a long study can be
stopped (Ctrl-C) and restarted; only ``--epochs``, ``--threads`` and ``--device`` may change
then (other settings, or another ``--data``, are refused: give another ``--work``). "Same
compute" is the same optimizer steps over the same tokens; a ``bd3lm`` step costs about twice
the FLOPs (its pass runs over [x_t ; x_0]).

    python benchmarks/data_constrained.py --tokens 50000 --epochs 200 --preset demo
    python benchmarks/data_constrained.py --quick   # seconds: does the script run?
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from _common import (
    default_output,
    fill_defaults,
    non_negative_int,
    output_file,
    positive_float,
    positive_int,
    write_results,
)

from unmask.config import TrainConfig, load_json
from unmask.errors import UserError
from unmask.files import as_number
from unmask.train_guards import RUNTIME_FIELDS

ROOT = Path(__file__).resolve().parent.parent
DIFFUSION = ("mdlm", "bd3lm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        default=str(ROOT / "data" / "bible"),
        help="prepared corpus to slice (default: data/bible)",
    )
    p.add_argument(
        "--tokens", type=positive_int, default=None,
        help="train tokens in the slice (default: 50000)"
    )
    p.add_argument("--epochs", type=positive_float, default=None,
                   help="passes over the slice (100)")  # fmt: skip
    p.add_argument(
        "--eval-epochs", type=positive_float, default=1,
        help="validate every this many epochs (default: 1)",
    )
    p.add_argument("--objectives", default="ar,mdlm,bd3lm")
    p.add_argument(
        "--preset",
        default=None,
        help="model preset (default: demo, 5.5M; bench: 0.26M at a 1,024-token vocabulary)",
    )
    p.add_argument("--seq-len", type=positive_int, default=None, help="(default: 128)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="(default: 16)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=non_negative_int, default=None, help="(default: 100)")
    p.add_argument("--block-size", type=positive_int, default=16, help="bd3lm block size")
    p.add_argument("--eval-batches", type=positive_int, default=None, help="(default: 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--work",
        default=None,
        help="folder of the slice and the runs (resumed when present; default: "
        "runs/bench/data_constrained; --quick: a temporary folder, removed at the end)",
    )
    p.add_argument("--json", type=output_file, default=None,
                   help="default: runs/bench/data_constrained.json (--quick: none)")
    p.add_argument("--plot", default=None,
                   help="default: docs/data_constrained.png (--quick: none)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="defaults for a smoke run: a tiny model, 4k tokens, 3 epochs, in a temporary "
        "folder, no JSON or plot unless asked (flags given still win)",
    )
    args = p.parse_args(argv)
    fill_defaults(
        args,
        normal={"tokens": 50_000, "epochs": 100, "preset": "demo", "seq_len": 128,
                "batch_size": 16, "warmup": 100, "eval_batches": 8,
                "work": str(default_output("data_constrained")),
                "json": str(default_output("data_constrained.json")),
                "plot": str(ROOT / "docs" / "data_constrained.png")},
        quick={"tokens": 4096, "epochs": 3, "preset": "tiny", "seq_len": 64, "batch_size": 8,
               "warmup": 5, "eval_batches": 2, "work": None, "json": None, "plot": None},
    )  # fmt: skip
    return args


def steps_per_epoch(args: argparse.Namespace) -> int:
    return max(1, math.ceil(args.tokens / (args.batch_size * args.seq_len)))


def train_config(args: argparse.Namespace, objective: str, data: Path, out: Path) -> TrainConfig:
    """One run of the study: everything but the objective (and bd3lm's block size) shared."""
    spe = steps_per_epoch(args)
    every = max(1, round(args.eval_epochs * spe))
    return TrainConfig(
        data=str(data), out=str(out), preset=args.preset, objective=objective,
        seq_len=args.seq_len, batch_size=args.batch_size, steps=max(1, round(args.epochs * spe)),
        lr=args.lr, warmup=args.warmup, eval_every=every, eval_batches=args.eval_batches,
        save_every=every, log_every=max(1, spe), seed=args.seed, device=args.device,
        threads=args.threads, block_size=args.block_size if objective == "bd3lm" else None,
    )  # fmt: skip


RESUMED_AS_ASKED = ("steps", *RUNTIME_FIELDS)
"""What a later command may change in a run it continues (``--epochs``, ``--device``,
``--threads``; ``out``, the run's folder, may be named another way); any other setting is the
study's."""


def _setting(cfg: TrainConfig, name: str) -> Any:
    """``cfg``'s field ``name``, a path (``data``) as the folder it names."""
    value = getattr(cfg, name)
    return str(Path(value).resolve()) if name == "data" and value is not None else value


def run_one(cfg: TrainConfig) -> None:
    """Train ``cfg``, continuing its run when one is there (the study is resumable). A run of
    other settings (another ``--lr``, ``--preset``, ``--seq-len`` ... with the same
    ``--work``) is refused: it was continued, or taken as done, with its own settings, and
    reported under the new ones."""
    from unmask.train import train

    out = Path(cfg.out)
    saved = out / "train_config.json"
    if saved.is_file() and not (out / "checkpoint").is_dir():
        shutil.rmtree(out)  # stopped before its first checkpoint: nothing to keep
    if (out / "checkpoint").is_dir():
        plan = load_json(TrainConfig, saved)
        changed = [f"{f.name} {getattr(plan, f.name)!r} (now {getattr(cfg, f.name)!r})"
                   for f in fields(TrainConfig) if f.name not in RESUMED_AS_ASKED
                   and _setting(plan, f.name) != _setting(cfg, f.name)]
        if changed:
            raise UserError(f"{out}: a run of other settings ({', '.join(changed)}); give "
                            "another --work for a new study, or the settings of this one")
        done = json.loads((out / "checkpoint" / "trainer.json").read_text())["step"]
        if done >= cfg.steps:
            print(f"{cfg.objective}: done ({done} steps)", file=sys.stderr)
            return
        train(replace(plan, steps=cfg.steps, device=cfg.device, threads=cfg.threads), resume=True)
    else:
        train(cfg)


def curve(run: Path, spe: int) -> list[dict[str, float]]:
    """Held-out records of a run's metrics.jsonl, by epoch."""
    out = []
    path = run / "metrics.jsonl"
    if not path.is_file():
        return out
    seen = set()
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if "val_bpb" in r and r["step"] not in seen:
            seen.add(r["step"])
            out.append({"epoch": r["step"] / spe, "step": r["step"],
                        "val_bpb": as_number(r["val_bpb"])})  # null: a NaN (files.json_line)
    return sorted(out, key=lambda r: r["step"])


def crossover(ar: list[dict[str, float]], dif: list[dict[str, float]]) -> float | None:
    """The first evaluated epoch from which ``dif``'s held-out bits/byte stays below ``ar``'s
    at every later common evaluation; None if it never does."""
    a = {r["step"]: r["val_bpb"] for r in ar}
    common = [(r["epoch"], r["val_bpb"] < a[r["step"]]) for r in dif if r["step"] in a]
    at = None
    for epoch, below in common:
        if below and at is None:
            at = epoch
        elif not below:
            at = None
    return at


def summarise(curves: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    best = {k: min(v, key=lambda r: r["val_bpb"]) for k, v in curves.items() if v}
    out: dict[str, Any] = {"best": best, "final": {k: v[-1] for k, v in curves.items() if v}}
    if "ar" in curves:
        out["crossover_epoch"] = {
            k: crossover(curves["ar"], curves[k]) for k in DIFFUSION if k in curves
        }
        if "ar" in best:
            out["best_ratio_to_ar"] = {
                k: best[k]["val_bpb"] / best["ar"]["val_bpb"] for k in DIFFUSION if k in best
            }
    return out


def plot(curves: dict[str, list[dict[str, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, pts in curves.items():
        if not pts:
            continue
        ax.plot([p["epoch"] for p in pts], [p["val_bpb"] for p in pts], label=name, marker=".")
        b = min(pts, key=lambda p: p["val_bpb"])
        ax.scatter([b["epoch"]], [b["val_bpb"]], s=60, edgecolors="black", zorder=3)
    ax.set_xlabel("epochs over the slice")
    ax.set_ylabel("held-out bits/byte (diffusion: ELBO bound)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.work is None:  # --quick without --work: a folder of its own, removed at the end
        import tempfile

        with tempfile.TemporaryDirectory(prefix="unmask-dc-") as tmp:
            args.work = tmp
            return main_in(args, argv)
    return main_in(args, argv)


def main_in(args: argparse.Namespace, argv: list[str] | None) -> int:
    """``main`` once ``args.work`` is known."""
    import torch

    from unmask.data import prepare_slice, read_index
    from unmask.train_guards import TrainingStopped

    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    work = Path(args.work)
    data = work / f"slice-{args.tokens}"
    if (data / "index.json").is_file():  # a study continued: of the same corpus
        source = read_index(data).get("sliced_from")
        if source != str(Path(args.data).resolve()):
            raise UserError(f"{data}: a slice of {source}, not of --data {args.data}; give "
                            "another --work for a study of another corpus")
    else:
        prepare_slice(args.data, data, train_tokens=args.tokens)
    spe = steps_per_epoch(args)
    t0 = time.perf_counter()
    stopped = False
    try:
        for obj in objectives:
            print(f"== {obj}: {args.epochs:g} epochs x {spe} steps", file=sys.stderr)
            run_one(train_config(args, obj, data, work / obj))
    except TrainingStopped as e:
        print(f"stopped ({e}); run the same command again to continue", file=sys.stderr)
        stopped = True
    curves = {o: curve(work / o, spe) for o in objectives}
    result = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "plot")},
        "steps_per_epoch": spe,
        "tokens_per_epoch": spe * args.batch_size * args.seq_len,
        "curves": curves,
        **summarise(curves),
        "complete": not stopped,
        "seconds_this_session": time.perf_counter() - t0,
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "threads": args.threads},
        "command": "python benchmarks/data_constrained.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
    }  # fmt: skip
    if args.json:
        write_results(args.json, result, indent=2)
    title = (
        f"{args.preset} preset, {args.tokens:,} train tokens, seq {args.seq_len}, "
        f"batch {args.batch_size}, lr {args.lr:g}"
    )
    try:
        if args.plot:
            plot(curves, Path(args.plot), title)
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
    print(f"\n{'objective':<10}{'best epoch':>11}{'best bpb':>10}{'final bpb':>11}")
    for o in objectives:
        if curves[o]:
            b, f = result["best"][o], result["final"][o]
            print(f"{o:<10}{b['epoch']:>11.1f}{b['val_bpb']:>10.4f}{f['val_bpb']:>11.4f}")
    for k, v in result.get("crossover_epoch", {}).items():
        ratio = result.get("best_ratio_to_ar", {}).get(k)
        said = f"epoch {v:g}" if v is not None else "none in this range"
        print(f"{k} below ar from: {said}" + (f"; best {k} / best ar = {ratio:.3f}" if ratio
                                              else ""))
    print(f"json: {args.json or '(none)'}\nplot: {args.plot or '(none)'}")
    return 130 if stopped else 0


if __name__ == "__main__":
    from _common import run

    run(main)
