"""The cost of the repetition penalties and the n-gram ban in an AR step, old against new.

"Old" is the bookkeeping before session 24, kept here verbatim as the reference
(``RecomputedTextCounts``: the n-gram ban searched the whole text at every step with
``searched_ngram_bans``, the causal mode ``unmask.sampling.penalties.ngram_bans`` had until
session 25, kept here as only this reference used it; ``copying_forbid_id``: ``forbid_id``
copied the logits); "new" is the library's (``TextCounts`` with its incremental
``NgramIndex``, the logits written in place). Both run interleaved in one process on one
model (random weights of the demo model's shape, causal, ``max_seq_len`` long enough for the
longest text), greedy, under the causal default (repetition penalty 1.15, 4-gram ban), and
every pair must decode the same tokens. Per-step CPU time (``time.thread_time``: one thread,
and a busy host's waits for a core are not counted) is the median over repeats of the mean
of the steps after the prompt (the three run in turns, each first in a third of the
repeats); "off" decodes without penalties (the floor), so old - off and new - off are the
bookkeeping's cost. "Replayed" times the bookkeeping alone (forbid, penalise, commit the
argmax; random logits, no model), old and new in turns: the ratio the step's noise hides.

    python benchmarks/penalty_cost.py --lengths 64 256 1024 --batches 1 8 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py

from _common import json_text, output_path, positive_int, run  # noqa: E402

from unmask.config import SampleConfig, model_preset  # noqa: E402
from unmask.model import Transformer  # noqa: E402
from unmask.sampling import ar as ar_mod  # noqa: E402
from unmask.sampling import hybrid as hybrid_mod  # noqa: E402
from unmask.sampling import penalties as pen_mod  # noqa: E402
from unmask.sampling import speculative as spec_mod  # noqa: E402
from unmask.sampling.ar import ARRun  # noqa: E402
from unmask.sampling.penalties import (  # noqa: E402
    Penalties,
    TextCounts,
    ban,
    prefix_counts,
    special_ids,
    token_counts,
)

MASK, PAD, EOS, BOS = 0, 1, 2, 3  # the demo model's special ids

DEFAULT = dict(repetition_penalty=1.15, no_repeat_ngram_size=4)
"""The causal checkpoints' recommended penalties (``ar``, ``hybrid``; docs/sampling.md)."""


COMPARED = 1 << 24
"""Most token comparisons ``searched_ngram_bans`` holds at once (as the library's canvas
search: ``unmask.sampling.penalties._COMPARED``)."""


def searched_ngram_bans(tokens: Tensor, ok: Tensor, query: Tensor,
                        n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Where a token would repeat an n-gram of a left-to-right text, by searching all of it:
    (row, query index, token id) triples, each (M,). ``tokens`` (B, L) with ``ok`` (B, L)
    bool, the positions that are text; ``query`` (B, Q) long, the positions to be written
    (outside [0, L): nothing asked). The n - 1 positions before a query are its context, and
    a token is banned when context + token equals an n-gram of text that ends before the
    query (drafts included up to it). The causal mode of ``ngram_bans`` before session 25,
    its place fixed at the last one (n - 1): a (B, Q, L - n + 1, n - 1) comparison in chunks
    of queries of at most ``COMPARED`` elements."""
    B, L = tokens.shape
    W = L - n + 1
    empty = query.new_zeros(0)
    if n < 1 or W < 1 or query.numel() == 0:
        return empty, empty, empty
    win = tokens.unfold(1, n, 1)  # (B, W, n)
    whole = ok.unfold(1, n, 1).all(dim=-1)  # (B, W): n-grams of text
    start = query - (n - 1)  # (B, Q): the n-gram the query ends
    valid = (start >= 0) & (start < W) & (query >= 0) & (query < L)
    start = start.clamp(0, W - 1)
    pos = start[..., None] + torch.arange(n - 1, device=tokens.device)  # (B, Q, n - 1)
    flat = pos.reshape(B, -1)
    ctx = tokens.gather(1, flat).reshape(pos.shape)  # (B, Q, n - 1)
    valid = valid & ok.gather(1, flat).reshape(pos.shape).all(dim=-1)
    grams = win[:, :, : n - 1]  # (B, W, n - 1)
    out: list[tuple[Tensor, Tensor, Tensor]] = []
    chunk = max(1, COMPARED // max(1, grams.numel()))  # queries per comparison
    ends_before = torch.arange(W, device=tokens.device)  # (W,): only n-grams before the query
    for q0 in range(0, query.shape[1], chunk):
        part = slice(q0, q0 + chunk)
        seen = whole[:, None, :] & (ends_before < start[:, part, None])  # (B, q, W)
        same = (grams[:, None] == ctx[:, part, None]).all(dim=-1)  # (B, q, W)
        b, q, w = (same & seen & valid[:, part, None]).nonzero(as_tuple=True)
        out.append((b, q + q0, win[b, w, n - 1]))
    return tuple(torch.cat(parts) for parts in zip(*out, strict=True))  # type: ignore[return-value]


class RecomputedTextCounts:
    """``TextCounts`` as it was before the n-gram index (session 23), verbatim but for the
    ``inplace`` flag it ignores: the text is kept as tensors and the n-gram ban searches all
    of it at every step (``searched_ngram_bans``). The reference the tests compare with."""

    def __init__(self, penalties: Penalties, prompt: Tensor, keep: Tensor,
                 exempt: Sequence[int] = ()) -> None:
        self.penalties, self._prompt, self._keep = penalties, prompt, keep
        self.exempt = tuple(exempt)
        self.seen: Tensor | None = None  # (B, V)
        self.generated: Tensor | None = None  # (B, V)
        B, P = prompt.shape
        self._exempt_ids = torch.tensor(self.exempt, dtype=torch.long, device=prompt.device)
        self.text = prompt.clone()
        self.is_text = keep & ~self._special(prompt)
        self.end = torch.full((B,), P, dtype=torch.long, device=prompt.device)

    def _special(self, tokens: Tensor) -> Tensor:
        if not self.exempt:
            return torch.zeros_like(tokens, dtype=torch.bool)
        return torch.isin(tokens, self._exempt_ids)

    def _counts(self, vocab: int) -> tuple[Tensor, Tensor]:
        if self.seen is None or self.generated is None:
            self.seen = token_counts(self._prompt, self._keep, vocab, self.exempt)
            self.generated = torch.zeros_like(self.seen)
        return self.seen, self.generated

    def _room(self, n: int) -> None:
        need = int(self.end.max()) + n - self.text.shape[1]
        if need > 0:
            grow = max(need, self.text.shape[1])
            self.text = torch.cat([self.text, self.text.new_zeros(self.text.shape[0], grow)], 1)
            self.is_text = torch.cat([self.is_text, self.is_text.new_zeros(
                self.is_text.shape[0], grow)], 1)  # fmt: skip

    def _placed(self, tokens: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
        n = tokens.shape[1]
        self._room(n)
        pos = self.end[:, None] + torch.arange(n, device=tokens.device)
        return pos, keep & ~self._special(tokens)

    def add(self, tokens: Tensor, keep: Tensor | None = None) -> None:
        if self.penalties.ngram:
            keep = torch.ones_like(tokens, dtype=torch.bool) if keep is None else keep
            pos, real = self._placed(tokens, keep)
            self.text.scatter_(1, pos, torch.where(keep, tokens, self.text.gather(1, pos)))
            self.is_text.scatter_(1, pos, real)
            self.end += keep.sum(dim=1)
        if not self.penalties.counted:
            return
        if self.seen is None or self.generated is None:
            raise RuntimeError("TextCounts.add before the first penalise (V unknown)")
        new = token_counts(tokens, keep, self.seen.shape[-1], self.exempt)
        self.seen += new
        self.generated += new

    def penalise(self, logits: Tensor, drafts: Tensor | None = None,
                 live: Tensor | None = None, *, inplace: bool = False) -> Tensor:
        p = self.penalties
        out = logits
        if p.counted:
            seen, generated = self._counts(logits.shape[-1])
            if drafts is None:
                if logits.dim() == 3:
                    seen, generated = seen[:, None], generated[:, None]
                out = p.apply(logits, seen, generated)
            else:
                out = p.apply(logits, prefix_counts(seen, drafts, live, self.exempt),
                              prefix_counts(generated, drafts, live, self.exempt))
        if not p.ngram:
            return out
        out = out if p.counted else out.clone()
        K = 0 if drafts is None else drafts.shape[1]
        self._room(K + 1)
        text, is_text = self.text, self.is_text
        if K:
            assert drafts is not None
            live = torch.ones_like(drafts, dtype=torch.bool) if live is None else live
            pos, real = self._placed(drafts, live)
            text = self.text.scatter(1, pos, torch.where(live, drafts, self.text.gather(1, pos)))
            is_text = self.is_text.scatter(1, pos, real)
        query = self.end[:, None] + torch.arange(K + 1, device=self.end.device)
        bans = searched_ngram_bans(text, is_text, query, p.ngram)
        return ban(out if out.dim() == 3 else out[:, None], bans).reshape(out.shape)


def recomputed_text_counts(penalties: Penalties | None, prompt: Tensor, real: Tensor,
                           started: Sequence[bool], model_config: Any) -> Any:
    """``unmask.sampling.penalties.text_counts`` making a ``RecomputedTextCounts``."""
    if penalties is None:
        return None
    no_text = torch.tensor(list(started), dtype=torch.bool, device=prompt.device)
    return RecomputedTextCounts(penalties, prompt, real & ~no_text[:, None],
                                special_ids(model_config))  # fmt: skip


_FORBID = ar_mod.forbid_id


def copying_forbid_id(logits: Tensor, token_id: Any, *, inplace: bool = False) -> Tensor:
    """``forbid_id`` as it was: always a copy (``inplace`` ignored)."""
    return _FORBID(logits, token_id)


@contextlib.contextmanager
def old_code() -> Iterator[None]:
    """The causal decoders (``ar``, ``speculative``, ``hybrid``) with the old bookkeeping
    while inside: the modules' ``text_counts`` and ``forbid_id`` swapped, then restored."""
    mods = (ar_mod, spec_mod, hybrid_mod)
    saved = [(m, m.text_counts, m.forbid_id) for m in mods]
    try:
        for m in mods:
            m.text_counts, m.forbid_id = recomputed_text_counts, copying_forbid_id
        yield
    finally:
        for m, tc, fi in saved:
            m.text_counts, m.forbid_id = tc, fi


assert pen_mod.TextCounts is TextCounts  # the new code is the library's own


def demo_shaped(max_seq_len: int, seed: int = 0) -> Transformer:
    """A causal model of the demo model's shape with random weights."""
    cfg = model_preset("demo", vocab_size=4096, max_seq_len=max_seq_len, attention="causal",
                       objective="ar", mask_id=MASK, pad_id=PAD, eos_id=EOS,
                       bos_id=BOS)  # fmt: skip
    torch.manual_seed(seed)
    return Transformer(cfg).eval()


def prompts(batch: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    """``batch`` prompts of ``length`` tokens made of a few dozen recurring 6-token phrases
    with noise between them (text repeats its n-grams; uniform ids would not), rows one
    token shorter each (ragged rows, left-padded)."""
    g = torch.Generator().manual_seed(seed)
    phrases = torch.randint(4, vocab, (40, 6), generator=g).tolist()
    rows = []
    for b in range(batch):
        row: list[int] = []
        while len(row) < length - b:
            if torch.rand(1, generator=g).item() < 0.7:
                row += phrases[int(torch.randint(40, (1,), generator=g))]
            else:
                row.append(int(torch.randint(4, vocab, (1,), generator=g)))
        rows.append(row[: length - b])
    return rows


def timed_steps(model: Transformer, rows: list[list[int]], steps: int,
                penalties: Penalties | None) -> tuple[float, list[list[int]]]:
    """Mean CPU seconds per step after the prompt's (this thread's: on a busy host, time
    spent waiting for a core is not counted), and the generated tokens."""
    r = ARRun(model, rows, max_new_tokens=steps + 1, eos_id=None, penalties=penalties)
    r.advance()  # the prompt
    t = time.thread_time()
    while not r.done:
        r.advance()
    took = (time.thread_time() - t) / steps
    return took, r.result().gen_ids


def bookkeeping(rows: list[list[int]], vocab: int, steps: int, penalties: Penalties,
                old: bool) -> float:
    """CPU seconds per step of the bookkeeping alone, replayed without the model: forbid the
    special ids, penalise (B, V) random logits, take the argmax and commit it, ``steps`` times
    after ``rows`` (left-padded)."""
    P = max(len(r) for r in rows)
    prompt = torch.tensor([[PAD] * (P - len(r)) + r for r in rows])
    keep = prompt != PAD
    exempt = (MASK, PAD, EOS, BOS)
    counts = (RecomputedTextCounts if old else TextCounts)(penalties, prompt, keep, exempt)
    forbid = copying_forbid_id if old else ar_mod.forbid_id
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(len(rows), vocab, generator=g) for _ in range(steps + 1)]
    ones = torch.ones(len(rows), 1, dtype=torch.bool)
    counts.penalise(logits.pop())  # the prompt's counts, once
    t = time.thread_time()
    for x in logits:
        x = counts.penalise(forbid(x, exempt, inplace=True), inplace=True)
        counts.add(x.argmax(dim=-1)[:, None], ones)
    return (time.thread_time() - t) / steps


def main() -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=positive_int, nargs="+", default=[64, 256, 1024],
                    help="prompt lengths (the text's length at the timed steps)")
    ap.add_argument("--batches", type=positive_int, nargs="+", default=[1, 8])
    ap.add_argument("--steps", type=positive_int, default=32, help="timed steps per run")
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--json", type=output_path, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = demo_shaped(max(args.lengths) + args.steps + 8)
    pen = Penalties.of(SampleConfig(**DEFAULT))
    out = []
    print("| text | batch | step off ms | step old ms | step new ms | old / new | "
          "penalties old / new (share of the step) | replayed old / new ms | old / new |")
    print("|---:|---:|---:|---:|---:|---:|---|---|---:|")
    with torch.no_grad():
        for L in args.lengths:
            for B in args.batches:
                rows = prompts(B, L, model.config.vocab_size, seed=L + B)
                t: dict[str, list[float]] = {k: [] for k in ("off", "old", "new", "replay_old",
                                                             "replay_new")}
                got: dict[str, list[list[int]]] = {}
                for i in range(args.repeats):  # interleaved, in turns: load hits all alike
                    for k in ("off", "old", "new")[i % 3:] + ("off", "old", "new")[: i % 3]:
                        with old_code() if k == "old" else contextlib.nullcontext():
                            s, got[k] = timed_steps(model, rows, args.steps,
                                                    None if k == "off" else pen)
                        t[k].append(s)
                    if got["old"] != got["new"]:
                        raise AssertionError(f"old and new decoded differently at {L}, {B}")
                    for k in ("old", "new")[i % 2:] + ("old", "new")[: i % 2]:
                        t[f"replay_{k}"].append(bookkeeping(rows, model.config.vocab_size,
                                                            args.steps * 4, pen, k == "old"))
                ms = {k: 1e3 * statistics.median(v) for k, v in t.items()}
                row = dict(length=L, batch=B, steps=args.steps, **{f"{k}_ms": v
                                                                  for k, v in ms.items()})
                out.append(row)
                po, pn = ms["old"] - ms["off"], ms["new"] - ms["off"]
                print(f"| {L} | {B} | {ms['off']:.2f} | {ms['old']:.2f} | {ms['new']:.2f} | "
                      f"{ms['old'] / ms['new']:.2f} | {po:.2f} ({po / ms['old']:.0%}) / "
                      f"{pn:.2f} ({pn / ms['new']:.0%}) | {ms['replay_old']:.3f} / "
                      f"{ms['replay_new']:.3f} | {ms['replay_old'] / ms['replay_new']:.1f} |",
                      flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json_text(out, indent=1), encoding="utf-8")
    return out


if __name__ == "__main__":
    run(main)
