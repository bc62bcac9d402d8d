"""Eager vs compiled decoding (``SampleConfig.compile``): decode tokens/s and compile time.

Two rows per mode, each through ``unmask.api.start`` (the path every command and the server
take): the demo checkpoint (``--model``, default the packaged ``unmask/assets/demo``) under
the ``llada`` decoder with the prefix KV cache, and a randomly initialised causal model of the
demo's shape (objective ``ar``) under the ``ar`` decoder with its KV cache. Each mode runs
``--repeats + 1`` times: the first run pays the compile (``compile_s`` = first run minus the
median of the others), the median of the others gives ``tok_s``. The timed runs of the modes
are interleaved (one of each mode in turn), so a machine whose load drifts, as a shared one
does, slows every mode alike and ``vs_eager`` stays a fair ratio. One shape per row: a new
prompt length or batch size is a new compile.

    python benchmarks/compile_decode.py [--modes off inductor] [--json RESULT.json]
    python benchmarks/compile_decode.py --quick   # tiny shapes, aot_eager: does it run?
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

from _common import fill_defaults, generated, output_file, positive_int, write_results

from unmask.config import DECODE_COMPILES


def _time_modes(
    loaded: Any, prompt: list[list[int]], configs: dict[str, Any], repeats: int
) -> dict[str, dict[str, Any]]:
    """Each mode's first run (which pays its compile), then ``repeats`` timed runs taken
    round-robin over the modes, so that a load drift on a shared machine hits every mode
    alike; the median of a mode's timed runs is its steady time."""
    from unmask import api

    first: dict[str, float] = {}
    times: dict[str, list[float]] = {mode: [] for mode in configs}
    ids: dict[str, Any] = {}
    decoded: dict[str, int] = {}  # tokens of all rows: an ar row stops at its EOS

    def once(mode: str) -> float:
        t0 = time.perf_counter()
        res = api.start(loaded, prompt, configs[mode]).run()
        seconds = time.perf_counter() - t0
        ids[mode] = res.gen_ids
        decoded[mode] = (  # an ar row's text ends at its EOS (_common.generated)
            sum(generated(r, loaded.config.eos_id) for r in res.gen_ids)
            if configs[mode].decoder == "ar" else len(prompt) * configs[mode].gen_length
        )
        return seconds

    for mode in configs:
        first[mode] = once(mode)
    for _ in range(repeats):
        for mode in configs:
            times[mode].append(once(mode))
    rows = {}
    for mode in configs:
        steady = statistics.median(times[mode])
        rows[mode] = {
            "first_s": round(first[mode], 2),
            "steady_s": round(steady, 3),
            "tok_s": round(decoded[mode] / steady, 1),
            "ids": ids[mode],
        }
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="diffusion checkpoint (default: the demo)")
    ap.add_argument("--modes", nargs="+", default=None, choices=DECODE_COMPILES,
                    help="compile modes to time; eager (off) always runs first, the reference "
                    "of vs_eager (default: inductor; --quick: aot_eager)")  # fmt: skip
    ap.add_argument("--gen-length", type=positive_int, default=None, help="(default: 32)")
    ap.add_argument("--block-length", type=positive_int, default=None, help="(default: 8)")
    ap.add_argument("--prompt-length", type=positive_int, default=16)
    ap.add_argument("--repeats", type=positive_int, default=None, help="(default: 3)")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="defaults for a smoke run: gen 8, blocks of 4, 1 repeat, mode aot_eager, "
                    "a tiny random AR model (flags given still win)")  # fmt: skip
    ap.add_argument("--json", type=output_file, help="write the rows here")
    args = ap.parse_args(argv)
    fill_defaults(args, normal={"modes": ["inductor"], "gen_length": 32, "block_length": 8,
                                "repeats": 3},
                  quick={"modes": ["aot_eager"], "gen_length": 8, "block_length": 4,
                         "repeats": 1})  # fmt: skip
    args.modes = ["off", *dict.fromkeys(m for m in args.modes if m != "off")]

    import torch

    from unmask.checkpoint import load
    from unmask.config import SampleConfig, model_preset
    from unmask.loaded import Loaded
    from unmask.model import Transformer

    torch.set_num_threads(args.threads)
    demo = args.model or str(Path(__import__("unmask").__file__).parent / "assets" / "demo")
    diffusion = load(demo)
    diffusion.model.eval()
    if args.quick:
        cfg = model_preset(
            "tiny",
            vocab_size=diffusion.config.vocab_size,
            max_seq_len=256,
            attention="causal",
            objective="ar",
        )
    else:  # the demo's shape, causal: the AR twin's size
        cfg = dataclasses.replace(diffusion.config, attention="causal", objective="ar")
    torch.manual_seed(0)
    ar = Loaded(model=Transformer(cfg).eval(), tokenizer=None, config=cfg, path=Path("random"))
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(4, 200, (1, args.prompt_length), generator=g).tolist()
    rows: list[dict[str, Any]] = []
    cases = [
        (
            "demo mdlm, llada + prefix cache",
            diffusion,
            dict(
                decoder="llada",
                cache="prefix",
                block_length=args.block_length,
                steps=args.gen_length,
            ),
        ),
        (f"random ar ({'tiny preset' if args.quick else 'demo shape'}), ar + KV cache", ar,
         dict(decoder="ar")),  # fmt: skip
    ]
    for name, loaded, options in cases:
        n_params = sum(p.numel() for p in loaded.model.parameters())
        configs = {mode: SampleConfig(gen_length=args.gen_length, compile=mode, **options)
                   for mode in args.modes}  # fmt: skip
        with torch.no_grad():
            timed = _time_modes(loaded, prompt, configs, args.repeats)
        base, base_ids = timed["off"], timed["off"]["ids"]
        for mode, row in timed.items():
            ids = row.pop("ids")
            # eager compiles nothing: its first-minus-steady is warm-up noise, not a cost
            row["compile_s"] = None if mode == "off" else round(row["first_s"] - row["steady_s"], 2)
            row["vs_eager"] = round(row["tok_s"] / base["tok_s"], 3)
            row["same_ids"] = ids == base_ids
            rows.append({"model": name, "params_m": round(n_params / 1e6, 2), "mode": mode, **row})
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        write_results(args.json, rows, indent=1)
    return 0


if __name__ == "__main__":
    from _common import run

    run(main)
