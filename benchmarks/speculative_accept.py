"""The sampled speculative acceptance, every position's residual drawn (before session 36)
against each row's one draw (now), side by side.

"Every position" is ``accept_sampled`` as it was written until session 36, kept here as the
reference (``every_position``; ``tests/test_causal36_speculative.py`` checks the library
against it): it built the residual max(0, p - q) over the whole vocabulary and drew from it
at all B x k positions, and drew the bonus token in every row, though each row reads one of
those draws. "One draw" is the library's ``unmask.sampling.speculative.accept_sampled``: the
same uniforms (the same stream, the generator left in the same state), but one draw per row,
at its first rejected position or the bonus. Every pair must give the same accepted counts
and the same tokens up to each row's n_i + 1 (they are the same up to float rounding: the
residual's sum is reduced in another shape), or the script stops.

- ``accept``: the acceptance step alone on random p and q (float64, as the decoders hand
  it), per ``--shapes`` B,k,V; the verifier's forward is not in it.
- ``run`` (``--runs``): a whole sampled ``SpeculativeRun`` (temperature 0.8,
  ``--gen-length`` tokens) with tiny random verifier and drafter over ``--run-vocab`` ids
  (GPT-2's 50257 by default, so the acceptance's share of a round shows), the reference
  swapped in for the library's ``accept_sampled``; the same tokens are checked.

Each row's time is the median over ``--repeats`` of the two sides called in turns
(``_common.round_robin``); with ``--threads 1`` (the default) the calling thread's CPU time
(``time.thread_time``: a busy host's waits for a core are not counted), else the wall clock.

    python benchmarks/speculative_accept.py [--runs] [--json runs/bench/accept.json]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py

from _common import (  # noqa: E402
    output_path,
    positive_int,
    round_robin,
    run,
    write_results,
)

from unmask.config import model_preset  # noqa: E402
from unmask.model import Transformer  # noqa: E402
from unmask.sampling import speculative as spec_mod  # noqa: E402
from unmask.sampling.policies import _rand  # noqa: E402

SHAPES = ["1,4,4100", "8,4,4100", "1,8,50257", "8,8,50257", "1,8,126464"]
"""B,k,V of the ``accept`` rows: batch, draft length, vocabulary (the demo's 4100 ids,
GPT-2's 50257, LLaDA's 126464)."""


def every_position(
    draft: Tensor, q: Tensor, p: Tensor, generator: torch.Generator | None = None,
    lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``accept_sampled`` as it was written until session 36, verbatim but for the comments:
    the residual and a draw at every one of the k positions of every row, the bonus draw in
    every row (the entries after each row's n_i are draws too, never read)."""
    draw = spec_mod._draw
    B, k = draft.shape
    device = p.device
    out = torch.empty(B, k + 1, dtype=torch.long, device=device)
    n = torch.full((B,), k, dtype=torch.long, device=device)
    if k:
        live = torch.ones(B, k, dtype=torch.bool, device=device)
        if lengths is not None:
            live = torch.arange(k, device=device)[None, :] < lengths[:, None]
        px = p[:, :k].gather(-1, draft[..., None])[..., 0]
        qx = q.gather(-1, draft[..., None])[..., 0]
        u = _rand((B, k), torch.float64, device, generator)
        ok = (u * qx < px) & live
        n = ok.long().cumprod(dim=1).sum(dim=1)
        resid = (p[:, :k] - q).clamp(min=0)
        mass = resid.sum(dim=-1, keepdim=True)
        resid = torch.where(mass > 0, resid / mass.clamp(min=1e-300), p[:, :k])
        resid = torch.where(live[..., None], resid, p[:, :k])
        fix = draw(resid.reshape(B * k, -1), generator).reshape(B, k)
        out[:, :k] = torch.where(ok, draft, fix)
    out[:, k] = draw(p[:, k], generator)
    return n, out


def read(n: Tensor, out: Tensor) -> list[list[int]]:
    """The tokens a decoder reads of an acceptance: each row's out[:n_i + 1]."""
    return [row[: int(m) + 1] for row, m in zip(out.tolist(), n.tolist(), strict=True)]


@contextlib.contextmanager
def reference_acceptance() -> Iterator[None]:
    """``SpeculativeRun`` with ``every_position`` as its ``accept_sampled``."""
    right = spec_mod.accept_sampled
    spec_mod.accept_sampled = every_position
    try:
        yield
    finally:
        spec_mod.accept_sampled = right


def shape(text: str) -> tuple[int, int, int]:
    """argparse type of one ``B,k,V``."""
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected B,k,V, got {text!r}")
    b, k, v = (positive_int(x) for x in parts)
    return b, k, v


def side_by_side(
    old: Callable[[], Any], new: Callable[[], Any], repeats: int, threads: int
) -> tuple[float, float, bool]:
    """(old seconds, new seconds, same result) of two calls timed in turns."""

    def cpu(fn: Callable[[], Any]) -> tuple[Any, float]:
        t = time.thread_time() if threads == 1 else time.perf_counter()
        out = fn()
        return out, (time.thread_time() if threads == 1 else time.perf_counter()) - t

    old(), new()  # warm up: one-time costs
    (a, ta), (b, tb) = round_robin([old, new], repeats, cpu)
    return ta, tb, a == b


def accept_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for B, k, V in args.shapes:
        torch.manual_seed(args.seed)
        p = torch.softmax(torch.randn(B, k + 1, V, dtype=torch.float64) * 3, dim=-1)
        q = torch.softmax(torch.randn(B, k, V, dtype=torch.float64) * 3, dim=-1)
        draft = torch.multinomial(q.reshape(-1, V), 1).reshape(B, k)

        def call(fn: Callable[..., tuple[Tensor, Tensor]], p: Tensor = p, q: Tensor = q,
                 draft: Tensor = draft) -> tuple[list[int], list[list[int]]]:
            n, out = fn(draft, q, p, torch.Generator().manual_seed(args.seed))
            return n.tolist(), read(n, out)

        ta, tb, same = side_by_side(lambda c=call: c(every_position),
                                    lambda c=call: c(spec_mod.accept_sampled),
                                    args.repeats, args.threads)  # fmt: skip
        rows.append({"what": "accept", "batch": B, "k": k, "vocab": V, "old_ms": ta * 1e3,
                     "new_ms": tb * 1e3, "speedup": ta / tb, "same_tokens": same})  # fmt: skip
    return rows


def run_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    V = args.run_vocab

    def model(attention: str, seed: int) -> Transformer:
        cfg = model_preset("tiny", vocab_size=V, max_seq_len=128, attention=attention,
                           init_std=0.3, mask_id=V - 1, pad_id=V - 2, eos_id=V - 3)  # fmt: skip
        torch.manual_seed(seed)
        return Transformer(cfg).eval()

    verifier, drafter = model("causal", 0), model("bidirectional", 1)
    prompts = [[10, 20, 30, 40, 50], [7, 8], [100, 101, 102], [5, 6, 7, 8]]
    rows = []
    for B, k in ((1, 4), (1, 8), (4, 8)):
        def go(B: int = B, k: int = k) -> list[list[int]]:
            return spec_mod.SpeculativeRun(
                verifier, drafter, prompts[:B], max_new_tokens=args.gen_length, draft_length=k,
                temperature=0.8, eos_id=None, generator=torch.Generator().manual_seed(args.seed),
            ).run().gen_ids

        def old(go: Callable[[], list[list[int]]] = go) -> list[list[int]]:
            with reference_acceptance():
                return go()

        ta, tb, same = side_by_side(old, go, args.repeats, args.threads)
        rows.append({"what": "run", "batch": B, "k": k, "vocab": V, "old_ms": ta * 1e3,
                     "new_ms": tb * 1e3, "speedup": ta / tb, "same_tokens": same})  # fmt: skip
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", type=shape, nargs="+", default=[shape(s) for s in SHAPES],
                    help="B,k,V of the acceptance rows (default: %(default)s)")
    ap.add_argument("--runs", action="store_true",
                    help="also time whole sampled speculative runs (tiny random models)")
    ap.add_argument("--run-vocab", type=positive_int, default=50257,
                    help="vocabulary of the --runs models (default: GPT-2's 50257)")
    ap.add_argument("--gen-length", type=positive_int, default=32,
                    help="tokens per --runs row (default: 32)")
    ap.add_argument("--repeats", type=positive_int, default=9,
                    help="timed calls per side, the median kept (default: 9)")
    ap.add_argument("--threads", type=positive_int, default=1, help="torch threads (default: 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=output_path, help="also write the rows here")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{'what':<7} {'B':>3} {'k':>3} {'V':>7} {'old ms':>9} {'new ms':>9} "
          f"{'old/new':>8}  same")  # fmt: skip
    rows: list[dict[str, Any]] = []
    for part in (accept_rows, run_rows) if args.runs else (accept_rows,):
        for r in part(args):
            rows.append(r)
            print(f"{r['what']:<7} {r['batch']:>3} {r['k']:>3} {r['vocab']:>7} "
                  f"{r['old_ms']:9.2f} {r['new_ms']:9.2f} {r['speedup']:8.2f}  "
                  f"{r['same_tokens']}", flush=True)  # fmt: skip
    if args.json is not None:
        write_results(args.json, {"threads": args.threads, "repeats": args.repeats,
                                  "rows": rows}, indent=1)
    if not all(r["same_tokens"] for r in rows):
        print("speculative_accept.py: error: the two acceptances gave different tokens",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    run(main)
