"""lm-eval on the demo models, offline: one multiple-choice and one generation task.

No benchmark dataset can be downloaded here, so the two tasks are built from held-out
verses of the prepared corpus (``--data``, validation split) as local lm-eval task YAMLs
(``dataset_path: json``):

- ``verse_mc`` (multiple choice, ``acc``): the first words of a verse, and four endings,
  the true one and three endings of other verses;
- ``verse_gen`` (``generate_until``, ``exact_match`` on the first word): the next word. The
  model writes up to 4 tokens and the filter keeps the first word: a stop sequence " " would
  cut every answer to nothing, because the next word's first token starts with its space.

Each model given runs both through ``unmask.lm_eval.run_tasks`` (the path of ``unmask eval
--tasks``); the table gives accuracy and seconds per item.

    python benchmarks/lm_eval_demo.py [--model demo=PATH] [--model ar=PATH] [--limit 20]
        [--mc-samples N] [--no-greedy-check] [--json benchmarks/results/lm_eval_demo.json]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from _common import output_file, positive_int, write_results

MC = """task: verse_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
"""

GEN = """task: verse_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{next_word}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
filter_list:
  - name: strip
    filter:
      - function: regex
        regex_pattern: "(\\\\S+)"
      - function: take_first
metric_list:
  - metric: exact_match
    ignore_punctuation: true
"""


def build_tasks(data: str, folder: Path, n: int, seed: int) -> None:
    """Write the two task YAMLs and their jsonl data from held-out text of ``data``."""
    from unmask.data import TokenDataset
    from unmask.tokenizer import load_tokenizer

    tok = load_tokenizer(Path(data) / "tokenizer.json")
    # one verse (document) a line: the separators between documents decode to nothing, so
    # decoded windows ran verses together ("Jerusalem.Then") and an item was half a window
    docs: list[str] = []
    doc: list[int] = []
    for w in TokenDataset(data, "val").windows(512):
        for t in w.tolist():
            if not tok.is_special(t):
                doc.append(t)
            elif doc:
                docs.append(tok.decode(doc))
                doc = []
        if sum(map(len, docs)) > 40_000:
            break
    # the first may have lost its start where the split begins; the last its end (not kept)
    # each verse once: a repeated one passed the count below and then was not another verse
    # (random.sample's traceback when most were one text, else an ending offered twice)
    lines = list(dict.fromkeys(
        ln.strip() for d in docs[1:] for ln in d.splitlines() if len(ln.split()) >= 12))
    rng = random.Random(seed)
    rng.shuffle(lines)
    lines = lines[: n + 3]
    if len(lines) < 4:  # an item needs three other verses
        from unmask.errors import UserError
        from unmask.messages import plural

        raise UserError(f"--data {data}: its validation split holds "
                        f"{plural(len(lines), 'distinct verse')} of 12 words or more; the "
                        "multiple-choice items need 4 (a larger corpus)")
    mc, gen = [], []
    for i, ln in enumerate(lines[:n]):
        words = ln.split()
        cut = len(words) // 2
        context, ending = " ".join(words[:cut]), " " + " ".join(words[cut:])
        # three other verses drawn for each item: the first three others were the same three
        # for every item from the fourth on (the first three items' true endings)
        drawn = rng.sample([o for o in lines if o != ln], 3)
        others = [" " + " ".join(o.split()[len(o.split()) // 2 :]) for o in drawn]
        label = i % 4
        choices = others[:label] + [ending] + others[label:]
        mc.append({"context": context, "choices": choices, "label": label})
        gen.append({"context": context, "next_word": words[cut]})
    for name, rows, yaml in (("mc", mc, MC), ("gen", gen, GEN)):
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / f"{name}.yaml").write_text(yaml.format(data=path))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = Path(__file__).resolve().parents[1]
    p.add_argument("--model", action="append", metavar="[LABEL=]PATH",
                   help="a checkpoint, labelled LABEL (default: its folder name); repeatable")
    p.add_argument("--data", default=str(root / "data/bible"))
    p.add_argument("--limit", type=positive_int, default=20)
    p.add_argument("--mc-samples", type=positive_int, default=None)
    p.add_argument("--tasks", default="verse_mc,verse_gen", help="which of the two to run")
    p.add_argument(
        "--no-greedy-check",
        action="store_true",
        help="skip is_greedy (one forward per continuation token; multiple choice uses it only "
        "for exact_match)",
    )
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--json", type=output_file, metavar="FILE")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from unmask.checkpoint import load
    from unmask.errors import UserError
    from unmask.lm_eval import UnmaskLM, run_tasks

    models = []
    for spec in args.model or [f"demo={root / 'src/unmask/assets/demo'}"]:
        label, sep, path = spec.partition("=")
        if not sep or Path(spec).exists():  # PATH alone (or a path holding "=")
            label, path = Path(spec).name, spec
        if not label or not path:
            raise UserError(f"--model {spec}: expected LABEL=PATH or PATH")
        if not Path(path).exists():
            raise UserError(f"--model {spec}: {path}: no such file or folder")
        models.append((label, path))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        build_tasks(args.data, Path(tmp), args.limit, seed=0)
        for label, path in models:
            extra = {"mc_samples": args.mc_samples} if args.mc_samples else {}
            loaded = load(path)
            lm = UnmaskLM(loaded=loaded, greedy_check=not args.no_greedy_check, **extra)
            for task in args.tasks.split(","):
                t0, m0 = time.perf_counter(), lm.model_seconds
                res = run_tasks(lm, [task], include_path=tmp)
                sec, model_sec = time.perf_counter() - t0, lm.model_seconds - m0
                metrics = res["results"][task]
                metric = "acc,none" if task == "verse_mc" else "exact_match,strip"
                n = res["n-samples"][task]["effective"]
                row = {
                    "model": label,
                    "task": task,
                    "metric": metric.split(",")[0],
                    "value": metrics.get(metric),
                    "items": n,
                    "seconds": sec,
                    "seconds_per_item": model_sec / n,
                    "objective": loaded.config.objective,
                    "params": sum(p.numel() for p in loaded.model.parameters()),
                    "likelihood": res["unmask"],
                }
                rows.append(row)
                print(
                    f"{label:<8} {task:<10} {row['metric']:<12} {row['value']:.3f} "
                    f"{n:>4} items {model_sec / n:7.2f} s/item (model time)",
                    flush=True,
                )
    if args.json:
        meta = {
            "data": args.data,
            "limit": args.limit,
            "greedy_check": not args.no_greedy_check,
            "threads": args.threads,
            "torch": torch.__version__,
        }
        write_results(args.json, {"meta": meta, "rows": rows}, indent=2)
    return 0


if __name__ == "__main__":
    from _common import run

    run(main)
