"""Planning and reversal: solve rates of equal-size diffusion and AR models, side by side.

    python benchmarks/planning.py --run mdlm=RUN_A --run ar=RUN_B --task-file DIR \\
        [--limit N] [--json benchmarks/results/planning_TASK.json]

Each ``--run LABEL=PATH`` is decoded on the items of ``--task-file`` (an ``eval.jsonl`` of
``python -m unmask.tasks``) by ``unmask.tasks.score.score_items``, the code path of
``unmask eval --task-file``: greedy, the answer as one block, one token per step (a causal
model left to right). ``--sample-set KEY=VALUE`` changes that for every run, e.g.
``block_length=1`` decodes a diffusion model left to right too. Prints one row per model
and item group (reversal: forward and reverse), its solve rate with the 95% Wilson interval
(``low``, ``high``) and which items it solved (``outcomes``, in the file's order), then, for
each group and each two models, the paired comparison on the items they share: how many
only one of them solved, and the exact McNemar p-value (``unmask.tasks.score.mcnemar_p``)
that they solve equally often. Writes them as JSON (``rows``, ``paired``) for
``benchmarks/report.py``. Stopped by Ctrl-C, it writes the runs that finished (``meta``
says ``interrupted`` and which runs are ``missing``) and exits 130; the same command with
``--resume`` keeps those runs' rows and decodes the others. Recipes: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import output_file, positive_int

from unmask.api import check_option_names, choose
from unmask.checkpoint import load
from unmask.errors import UserError
from unmask.files import atomic_write_text
from unmask.report import find_run
from unmask.tasks import read_items
from unmask.tasks.score import item_groups, mcnemar_p, score_items, task_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, metavar="LABEL=PATH")
    p.add_argument("--task-file", required=True, metavar="FILE")
    p.add_argument("--limit", type=positive_int, default=None, help="first N items only")
    p.add_argument(
        "--sample-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a SampleConfig field for every run (e.g. block_length=1: left to right)",
    )
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--json", type=output_file, metavar="FILE")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows of the runs already in --json (same task, items, --sample-set "
        "and run path: an interrupted study's) and decode only the others",
    )
    args = p.parse_args(argv)
    if args.resume and not args.json:
        raise UserError("--resume keeps the runs of a --json file: give --json FILE")
    torch.set_num_threads(args.threads)
    runs = []
    for spec in args.run:
        label, eq, path = spec.partition("=")
        if not (eq and label and path):
            raise UserError(f"--run {spec}: expected LABEL=PATH (e.g. mdlm=runs/mdlm)")
        if label in {known for known, _ in runs}:  # two rows of one name in every table
            raise UserError(f"--run {spec}: the label {label} is given twice; give each run "
                            "its own")
        runs.append((label, path))
    items = read_items(args.task_file)[: args.limit]
    given = dict(_value(kv) for kv in args.sample_set)
    try:  # was said after the header, once the first model had loaded
        check_option_names(given)
    except UserError as e:
        raise UserError(f"--sample-set: {e}") from None
    # every run found before the first decodes: a missing second one was an error after the
    # first model's whole task had been decoded
    infos = [(label, find_run(path)) for label, path in runs]
    for label, info in infos:
        check_run(label, info.checkpoint, items, given)
    kept = _finished(args, items, given, runs) if args.resume else {}
    rows = []
    groups = [item_groups(item) for item in items]
    print(f"{'group':<20} {'model':<10} {'solved':>11} {'rate':>7} {'95% interval':>15} "
          f"{'steps':>6} {'sec':>7}")
    done: list[str] = []  # the runs whose rows are all in ``rows``
    try:
        for label, info in infos:
            if label in kept:  # decoded by an earlier, interrupted command
                for row in kept[label]:
                    _print_row(row)
            rows += kept.get(label) or _decode(label, info, items, given, groups)
            done.append(label)
    except KeyboardInterrupt as e:  # a long study stopped after some runs: keep theirs
        from unmask.cli import hold_signals

        hold_signals()  # a second Ctrl-C cannot break the write
        missing = [label for label, _ in infos if label not in done]
        if args.json and rows:
            _write(args, items, given, runs, rows, missing)
            said = f"wrote the runs that finished ({', '.join(done)}) to {args.json}"
            hint = " (the same command with --resume decodes them)"
        else:
            said, hint = ("no run finished" if not rows else "no --json given"), ""
        e.note = f"{said}; missing: {', '.join(missing)}{hint}"  # in run()'s one line
        raise
    _report(args, items, given, runs, rows)
    return 0


def _decode(label: str, info, items: list, given: dict, groups: list) -> list[dict]:
    """One run's rows (one per item group), printed as they come."""
    rows = []
    loaded = load(info.checkpoint)
    t0 = time.perf_counter()
    score = score_items(loaded, items, given=given)
    seconds = time.perf_counter() - t0
    params = sum(p.numel() for p in loaded.model.parameters())
    for group, (solved, total) in sorted(score.by_group.items()):
        low, high = score.intervals[group]
        row = {
            "group": group,
            "model": label,
            "objective": loaded.config.objective,
            "solved": solved,
            "total": total,
            "rate": solved / total,
            "low": round(low, 4),
            "high": round(high, 4),
            "steps": info.step,
            "params": params,
            "seconds": seconds,
            "sampling": score.sampling,
            "examples": score.examples,
            "outcomes": [int(ok) for ok, g in zip(score.outcomes, groups, strict=True)
                         if group in g],
        }
        rows.append(row)
        _print_row(row)
    return rows


def _print_row(row: dict) -> None:
    solved, total = row["solved"], row["total"]
    print(
        f"{row['group']:<20} {row['model']:<10} {solved:>5}/{total:<5} {solved / total:>7.1%} "
        f"{row['low']:>7.1%}-{row['high']:<7.1%} {row['steps'] or '-':>6} "
        f"{row['seconds']:>7.1f}",
        flush=True,
    )


def _meta(args: argparse.Namespace, items: list, given: dict) -> dict:
    """What the rows depend on, but the runs: a ``--resume`` keeps rows of the same (the
    items' own text too: a task file made again with other items of the same count would pair
    rows of other items)."""
    import hashlib

    text = json.dumps([[i.prompt, i.answer] for i in items], ensure_ascii=False)
    return {"task_file": args.task_file, "items": len(items),
            "items_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "sample_set": given}


def _finished(args: argparse.Namespace, items: list, given: dict,
              runs: list[tuple[str, str]]) -> dict[str, list[dict]]:
    """``--resume``: the rows in ``--json`` of each run given again with the same path, where
    the file was written for the same task, items and ``--sample-set`` (``_meta``); nothing
    where there is no file yet. A run's rows are in the file only once it finished."""
    path = Path(args.json)
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        meta, rows = old["meta"], old["rows"]
        same = {k: meta.get(k) for k in _meta(args, items, given)} == _meta(args, items, given)
        paths = meta.get("runs", {})
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"--resume: {path} is not results of planning.py") from None
    if not same:
        raise UserError(f"--resume: {path} was written for another task, --limit or "
                        "--sample-set; give another --json")
    return {label: [r for r in rows if r.get("model") == label] for label, at in runs
            if paths.get(label) == at and any(r.get("model") == label for r in rows)}


def _report(args: argparse.Namespace, items: list, given: dict, runs: list[tuple[str, str]],
            rows: list[dict]) -> None:
    """The paired comparison printed, and everything written to ``--json``."""
    paired = paired_rows(rows)
    if paired:
        print(f"\n{'group':<20} {'model a':<10} {'model b':<10} {'only a':>6} {'only b':>6} "
              f"{'both':>5} {'neither':>7} {'a - b':>7} {'p':>8}")
    for r in paired:
        print(f"{r['group']:<20} {r['a']:<10} {r['b']:<10} {r['only_a']:>6} {r['only_b']:>6} "
              f"{r['both']:>5} {r['neither']:>7} {r['difference']:>+7.1%} {r['p_value']:>8.3g}")
    if args.json:
        _write(args, items, given, runs, rows)


def _write(args: argparse.Namespace, items: list, given: dict, runs: list[tuple[str, str]],
           rows: list[dict], missing: list[str] | None = None) -> None:
    """``--json``, atomically (a Ctrl-C or a full disk leaves the old file or the new one).
    ``missing``: the runs that had not finished when it was interrupted (``meta``)."""
    meta = {
        **_meta(args, items, given),
        "torch": torch.__version__,
        "threads": args.threads,
        "runs": dict(runs),  # what a --resume keeps a run's rows for
    }
    if missing:
        meta |= {"interrupted": True, "missing": missing}
    paired = paired_rows(rows)
    text = json.dumps({"meta": meta, "rows": rows, "paired": paired}, indent=2) + "\n"
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)  # --json was checked by
    atomic_write_text(Path(args.json), text)  # output_file before anything ran


def check_run(label: str, checkpoint: Path, items: list, given: dict) -> None:
    """Refuse, before any run decodes, a run whose task settings ``score_items`` would refuse
    (``task_config``: the prompt and answer past its context, a ``--sample-set`` it cannot
    run), checked on the model's shape alone (a native checkpoint's weights are not read;
    a publisher's folder is checked as it loads). A second run too short for the task was
    refused after the first had decoded every item, in a line that did not say which run.
    The shape is ``checked_meta``'s, as ``load`` builds it (float32 on the CPU): an absurd
    config.json (``n_layers`` 1000000000) is one line, not minutes building meta layers."""
    from unmask.checkpoint import native_parts
    from unmask.convert.load import checked_meta, is_publisher_folder
    from unmask.loaded import Loaded

    if is_publisher_folder(checkpoint):
        return
    ckpt, config, tokenizer = native_parts(checkpoint)
    try:
        model = checked_meta(config, ckpt, torch.float32)
    except UserError as e:
        raise UserError(f"--run {label}: {e}") from None
    shape = Loaded(model=model, tokenizer=tokenizer, config=config, path=ckpt)
    try:
        choose(shape, task_config(shape, items, given))  # the decoder score_items runs
    except UserError as e:
        raise UserError(f"--run {label}: {e}") from None


def paired_rows(rows: list[dict]) -> list[dict]:
    """For each group and each two models (in the order run), the items solved by both, by
    one only, by neither, the difference of their rates and the exact McNemar p-value of
    that difference (``mcnemar_p``): the models are scored on the same items, so the test
    pairs them item by item (``outcomes``)."""
    out = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            if a["group"] != b["group"]:
                continue
            pairs = list(zip(a["outcomes"], b["outcomes"], strict=True))
            only_a = sum(x and not y for x, y in pairs)
            only_b = sum(y and not x for x, y in pairs)
            both = sum(x and y for x, y in pairs)
            out.append({"group": a["group"], "a": a["model"], "b": b["model"],
                        "items": len(pairs), "both": both, "only_a": only_a,
                        "only_b": only_b, "neither": len(pairs) - both - only_a - only_b,
                        "difference": round((only_a - only_b) / len(pairs), 4),
                        "p_value": mcnemar_p(only_a, only_b)})
    return sorted(out, key=lambda r: r["group"])


def _value(kv: str) -> tuple[str, object]:
    """``KEY=VALUE`` as (key, an int, float, None, bool or the string); a ``UserError`` when
    there is no ``=`` or no key (``block_length`` alone was the value ``''``, refused as
    "block_length must be int or None, not ''")."""
    key, eq, raw = kv.partition("=")
    if not (eq and key):
        raise UserError(f"--sample-set {kv}: expected KEY=VALUE (e.g. block_length=1)")
    for cast in (int, float):
        try:
            return key, cast(raw)
        except ValueError:
            pass
    return key, {"none": None, "true": True, "false": False}.get(raw.lower(), raw)


if __name__ == "__main__":
    from _common import run

    run(main)
