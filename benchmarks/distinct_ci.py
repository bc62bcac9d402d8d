"""How sure is a distinct-2 comparison? A bootstrap over prompts of `benchmarks/decoding.py` rows.

    python benchmarks/distinct_ci.py RESULT.json [--rows 0 -1] [--resamples 2000] [--seed 0]
    python benchmarks/distinct_ci.py A.json --other B.json   # row A of one run, row B of another

Distinct-2 (``unmask.evaluate.distinct_n``) as the benchmarks report it is pooled over a
row's texts, so one looping text moves it a lot when there are few prompts. This reads a
``decoding.py --json`` file and takes two of its rows (by index over all sections, in file
order; default the first and the last: the diffusion model's first row and the AR twin's),
which continue the same prompts; with ``--other`` row B is read from a second file (each
model at its own temperature, say), whose prompts must be the same. It prints each row's
pooled distinct-2 (the benchmark's number), the mean over prompts of each text's own
distinct-2, and the paired difference of those means with a 95% percentile interval from
resampling the prompts with replacement (a per-prompt mean resamples soundly; the pooled
number does not, since a prompt drawn twice repeats its bigrams). A difference whose
interval holds 0 is not shown by these prompts.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from typing import Any

from _common import positive_int

from unmask.errors import UserError
from unmask.evaluate import distinct_n
from unmask.files import parse_json

DECODING_JSON = "a benchmarks/decoding.py --json file"
"""What ``read_rows`` reads, in its errors."""


def rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row of a ``decoding.py`` JSON, sections in order."""
    return [r for s in result["sections"] for r in s["rows"]]


def read_rows(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the JSON, its rows) of a ``decoding.py --json`` file; a file that is not one (not
    JSON, no ``sections`` of rows with their ``model``, ``policy`` and ``texts``, a list of
    strings; a ``meta`` that is no object) is a ``UserError`` naming it: each was a
    traceback (``KeyError: 'model'``, a ``ValueError`` of ``distinct_n``) after the file
    was read."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not {DECODING_JSON} (not UTF-8 text)") from None
    result = parse_json(text, path, what=DECODING_JSON)
    try:
        rows = rows_of(result)
        if not isinstance(result.get("meta", {}), dict) or not all(
            isinstance(r["texts"], list) and all(isinstance(t, str) for t in r["texts"])
            and {"model", "policy"} <= r.keys()
            for r in rows
        ):
            raise TypeError
    except (KeyError, TypeError, AttributeError):
        raise UserError(f"{path}: not {DECODING_JSON} (sections of rows with their model, "
                        "policy and texts)") from None
    return result, rows


def pick(rows: list[dict[str, Any]], index: int, path: str) -> dict[str, Any]:
    """Row ``index`` (negative from the end) of ``rows``; out of range: a ``UserError``."""
    if not -len(rows) <= index < len(rows):
        raise UserError(f"--rows {index}: {path} has {len(rows)} rows (0..{len(rows) - 1}, or "
                        "negative from the end)")
    return rows[index]


def bootstrap(
    a: Sequence[str], b: Sequence[str], *, resamples: int, seed: int
) -> dict[str, tuple[float, float, float]]:
    """(point, 2.5%, 97.5%) of the mean per-text distinct-2 of texts ``a``, of ``b`` and of
    the paired difference, the prompts (index i of both) resampled with replacement."""
    if not a or not b:  # was "different prompt sets (0 vs 0 texts)"
        raise UserError("a row has no texts: nothing to compare")
    if len(a) != len(b):
        raise UserError(f"the rows continue different prompt sets ({len(a)} vs {len(b)} texts)")
    xa = [distinct_n([t], 2) for t in a]
    xb = [distinct_n([t], 2) for t in b]
    rng = random.Random(seed)
    n = len(a)
    draws: dict[str, list[float]] = {"a": [], "b": [], "a - b": []}
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        ma, mb = sum(xa[i] for i in idx) / n, sum(xb[i] for i in idx) / n
        draws["a"].append(ma)
        draws["b"].append(mb)
        draws["a - b"].append(ma - mb)
    point = {"a": sum(xa) / n, "b": sum(xb) / n}
    point["a - b"] = point["a"] - point["b"]
    out = {}
    for key, d in draws.items():
        s = sorted(d)
        out[key] = (point[key], s[int(0.025 * (len(s) - 1))], s[int(0.975 * (len(s) - 1))])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("result", help="a benchmarks/decoding.py --json file")
    p.add_argument("--rows", type=int, nargs=2, default=[0, -1], metavar=("A", "B"))
    p.add_argument("--resamples", type=positive_int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--other", metavar="FILE", help="take row B from this decoding.py --json file")
    args = p.parse_args(argv)
    first, rows_a = read_rows(args.result)
    second, rows_b = first, rows_a
    if args.other:
        second, rows_b = read_rows(args.other)
        if first.get("meta", {}).get("prompts") != second.get("meta", {}).get("prompts"):
            raise UserError(f"{args.result} and {args.other} continue different prompts")
    ra = pick(rows_a, args.rows[0], args.result)
    rb = pick(rows_b, args.rows[1], args.other or args.result)
    out = bootstrap(ra["texts"], rb["texts"], resamples=args.resamples, seed=args.seed)
    names = {"a": f"{ra['model']} / {ra['policy']}", "b": f"{rb['model']} / {rb['policy']}",
             "a - b": "difference"}  # fmt: skip
    print(f"{len(ra['texts'])} prompts, {args.resamples} resamples of the prompts")
    for key, text in (("a", ra["texts"]), ("b", rb["texts"])):
        print(f"  pooled distinct-2 {names[key]}: {distinct_n(text, 2):.3f}")
    for key, (point, lo, hi) in out.items():
        print(f"  mean per-text distinct-2 {names[key]}: {point:.3f}  (95%: {lo:.3f} .. {hi:.3f})")
    pairs = zip(ra["texts"], rb["texts"], strict=True)
    wins = sum(distinct_n([x], 2) >= distinct_n([y], 2) for x, y in pairs)
    print(f"  prompts where a's text is at least as distinct as b's: {wins} of {len(ra['texts'])}")
    return 0


if __name__ == "__main__":
    from _common import run

    run(main)
