"""Distinct-2 of two checkpoints at equal length: a causal model that ends at EOS writes
shorter texts than a diffusion model that fills its canvas, and a short text repeats fewer
bigrams, so per-text distinct-2 at one --gen-length favours it. Here each text of --model is
also cut to the words of --other's text for the same prompt, and both are compared there.

    python benchmarks/distinct_matched.py --other runs/twin/best --data data/bible \\
        --json benchmarks/results/NAME.json

Prompts: the validation split of --data (or the packaged corpus' tail, ``--prompt-source
corpus-tail``), as ``benchmarks/defaults.py`` takes them. Settings: each checkpoint's own
recommendation (``default``) and plain greedy decoding (``greedy``: temperature 0, no
penalties; --model in blocks of each --greedy-blocks length, each such row against --other's
one greedy run).
"""

from __future__ import annotations

import argparse

from _common import default_output, json_text, output_path, positive_int, run
from defaults import add_prompt_args, per_text_distinct2, prompt_pairs

GREEDY = {"temperature": 0.0, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}
"""Plain greedy decoding: no sampling, no penalties."""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo", help="diffusion checkpoint (default: the demo)")
    ap.add_argument("--other", required=True, help="the checkpoint to match lengths with")
    add_prompt_args(ap)  # --data and --prompt-source, as benchmarks/defaults.py takes them
    ap.add_argument("--prompts", type=positive_int, default=64)
    ap.add_argument("--prompt-words", type=positive_int, default=12)
    ap.add_argument("--gen-length", type=positive_int, default=64)
    ap.add_argument("--greedy-blocks", type=positive_int, nargs="+", default=[2], metavar="N",
                    help="--model's block lengths when greedy (default: 2, the demo's earlier "
                         "greedy rows)")
    ap.add_argument("--json", type=output_path, default=default_output("distinct_matched.json"))
    args = ap.parse_args(argv)

    from unmask import api
    from unmask.commands.demo import asset_path

    model = str(asset_path("demo")) if args.model == "demo" else args.model
    pairs, source = prompt_pairs(args, args.prompts, args.gen_length)
    prompts = [p for p, _ in pairs]
    texts: dict[tuple[str, str], list[str]] = {}
    settings: list[tuple[str, str]] = []  # (row name, --other's mode it is compared with)
    # both loaded before either decodes: a wrong --other was found after --model's decoding
    models = {name: api.load_for_decoding(path)
              for name, path in (("model", model), ("other", args.other))}  # fmt: skip
    for name, loaded in models.items():
        diffusion = name == "model" and api.facts_of(loaded).attention != "causal"
        runs: list[tuple[str, dict[str, object]]] = [("default", {}), ("greedy", dict(GREEDY))]
        if diffusion and len(args.greedy_blocks) > 1:
            runs = [("default", {})] + [(f"greedy, blocks of {b}", GREEDY | {"block_length": b})
                                        for b in args.greedy_blocks]
        elif diffusion:
            runs[1][1]["block_length"] = args.greedy_blocks[0]
        for mode, opts in runs:
            config = api.sample_config(loaded, {"gen_length": args.gen_length} | opts)
            texts[name, mode] = api.generate(loaded, prompts, config=config).texts
            if name == "model":
                settings.append((mode, mode.split(",")[0]))
    rows = []
    for mode, other_mode in settings:
        mine, theirs = texts["model", mode], texts["other", other_mode]
        cut = [" ".join(m.split()[:max(1, len(t.split()))]) for m, t in zip(mine, theirs,
                                                                          strict=True)]
        rows.append({
            "setting": mode,
            "other_words": sum(len(t.split()) for t in theirs) / len(theirs),
            "model_words": sum(len(m.split()) for m in mine) / len(mine),
            "other_dist2": per_text_distinct2(theirs),
            "model_dist2_matched": per_text_distinct2(cut),
            "model_dist2_whole": per_text_distinct2(mine),
        })
        r = rows[-1]
        print(f"{mode}: --other {r['other_words']:.1f} words a text, distinct-2 "
              f"{r['other_dist2']:.3f}; --model cut to those words {r['model_dist2_matched']:.3f}"
              f" (whole, {r['model_words']:.1f} words: {r['model_dist2_whole']:.3f})")
    from unmask.files import atomic_write_text

    args.json.parent.mkdir(parents=True, exist_ok=True)
    # whole or not at all: a full disk or Ctrl-C mid-write left a torn file in place of the
    # last measurement (the decoding of both checkpoints before it lost)
    atomic_write_text(args.json, json_text({
        "model": model, "other": args.other, "data": args.data, "prompt_source": source,
        "prompts": prompts, "gen_length": args.gen_length, "rows": rows}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    run(main)
