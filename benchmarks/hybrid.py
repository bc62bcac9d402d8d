"""The one-model hybrid (decoder ``hybrid``) against its own causal decoding, side by side.

Two tables, one run:

- **forward cost** of one decoding round on a randomly initialised hybrid model of
  ``--preset`` (default ``demo``, draft block ``--draft-block``), with a cached prefix of
  ``--prefix`` tokens: an AR step (1 position), the hybrid's TiDAR layout (``predraft="all"``:
  1 + k + (k + 1)·k positions) and the cheaper ``ends`` layout (1 + k + 2k), as seconds and
  as a ratio to the AR step; each also as the decoder runs it, with the head only on the
  2k + 1 columns a round reads (``HybridRun``). The hybrid is faster than AR when its tokens
  per forward exceed that ratio;
- with ``--model RUN`` (a checkpoint trained with ``--objective hybrid``): greedy decoding of
  ``--prompts`` validation windows of ``--data`` (32-token prompts) for each ``--gen-length``
  (a length past the model's context is skipped with the reason), batch 1 and ``--batch``:
  tokens/s (text tokens, cut at EOS) and its ratio to the checkpoint's own ``ar`` decoding,
  tokens per forward (tokens a row commits, its EOS included, per round it decodes: one
  forward each; ``ar`` makes one token per forward), draft acceptance, token identity with
  ``ar`` (each row the median of ``--decode-repeats`` passes, in cycles over the rows
  (``round_robin``), after an untimed call of each on the first batch); and **draft
  agreement** per draft position (``draft_agreement``): the share of one-step drafts equal
  to the held-out token and to the checkpoint's own greedy continuation (what greedy
  decoding keeps), on ``--prompts`` × 8 validation windows of 64 tokens, beside its causal
  next-token accuracy. It shows which
  positions of the draft block carry information: at the bench size only the first one or
  two do (docs/sampling.md).

    python benchmarks/hybrid.py [--model runs/hybrid] [--data data/bible] \
        [--json benchmarks/results/hybrid.json]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
from _common import (
    generated,
    output_file,
    positive_int,
    require_hybrid,
    round_robin,
    write_results,
)

from unmask import api
from unmask.config import SampleConfig, model_preset
from unmask.model import KVCache, Transformer
from unmask.objectives import draft_layout
from unmask.sampling.hybrid import HybridRun

PROMPT_LEN = 32
"""Tokens of each decoding prompt (a validation window's start)."""


@torch.no_grad()
def forward_cost(preset: str, k: int, prefix: int, batch: int, repeats: int) -> list[dict]:
    cfg = model_preset(preset, vocab_size=4100, attention="causal", draft_block=k)
    torch.manual_seed(0)
    m = Transformer(cfg).eval()
    x = torch.randint(4, 4000, (batch, prefix))
    kv = KVCache()
    m(x, cache=kv, start=0)

    def round_(tokens: torch.Tensor, **layout: Any) -> None:
        kv.length = prefix - 1  # roll back as the decoders do
        m(tokens, cache=kv, start=prefix - 1, **layout)

    rows: list[tuple[str, int, Callable[[], None]]] = [
        ("ar step", 1, lambda: round_(x[:, -1:]))]
    for name, ms in (("hybrid all", range(k + 1)), ("hybrid ends", (0, k))):
        pos, bias = draft_layout(1 + k, [prefix + j for j in ms], k, offset=prefix - 1)
        toks = torch.randint(4, 4000, (batch, pos.shape[0]))

        def whole(
            toks: torch.Tensor = toks, pos: torch.Tensor = pos, bias: torch.Tensor = bias
        ) -> None:
            round_(toks, positions=pos, attn_bias=bias)

        def read(
            toks: torch.Tensor = toks, pos: torch.Tensor = pos, bias: torch.Tensor = bias
        ) -> None:
            kv.length = prefix - 1  # the decoder's round: the head on the 2k + 1 columns it reads
            h = m(toks, cache=kv, start=prefix - 1, positions=pos, attn_bias=bias,
                  return_hidden=True)  # fmt: skip
            m.lm_head(h[:, : 2 * k + 1])

        n = int(pos.shape[0])
        rows += [(name, n, whole), (f"{name}, head on read columns", n, read)]
    for _, _, fn in rows:  # warm-up: the first calls pay one-time costs
        fn(), fn()
    timings = round_robin([fn for _, _, fn in rows], repeats)
    out = [{"layout": name, "positions": n, "seconds": t}
           for (name, n, _), (_, t) in zip(rows, timings, strict=True)]  # fmt: skip
    for r in out:
        r["batch"], r["vs_ar_step"] = batch, r["seconds"] / out[0]["seconds"]
    return out


AGREEMENT_LEN = 64
"""Tokens of each window of ``draft_agreement``."""


@torch.no_grad()
def draft_agreement(model: Any, mask_id: int, windows: torch.Tensor, k: int) -> dict[str, Any]:
    """Per draft position i = 1 .. k: the share of one-step drafts equal to the held-out token
    (``truth``) and to the model's own greedy continuation of the same prefix (``greedy``: what
    greedy decoding keeps), and the causal head's next-token accuracy (``causal``).

    Every window (B, L) is cut at boundaries b = 1 + j·k (``draft_layout``, as training): the
    block after b sees x[< b] and drafts x[b + 1 .. b + k] (so position 1 is two tokens past
    the prefix: the token at b is the causal head's). The greedy continuation runs the causal
    model from x[< b] for k + 1 tokens."""
    B, L = windows.shape
    bnd = torch.arange(1, L - k, k)  # (J,)
    positions, bias = draft_layout(L, bnd, k)
    masks = torch.full((B, bnd.shape[0] * k), mask_id, dtype=windows.dtype)
    logits = model(torch.cat([windows, masks], 1), positions=positions, attn_bias=bias)
    drafts = logits[:, L:].argmax(-1).view(B, -1, k)  # (B, J, k)
    truth = windows[:, positions[L:].view(-1, k)]  # (B, J, k)
    causal = (logits[:, : L - 1].argmax(-1) == windows[:, 1:]).float().mean().item()
    greedy = torch.zeros(k)
    for j, b in enumerate(bnd.tolist()):
        seq = windows[:, :b]
        for _ in range(k + 1):  # the token at b, then the k the block drafts
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], 1)
        greedy += (drafts[:, j] == seq[:, b + 1 :]).float().sum(0)
    n = B * bnd.shape[0]
    return {
        "truth": ((drafts == truth).float().sum((0, 1)) / n).tolist(),
        "greedy": (greedy / n).tolist(),
        "causal": causal,
        "drafts": n,
    }


def decode(ld: Any, data: str, n: int, gen: int, batch: int, repeats: int = 1) -> list[dict]:
    """Greedy decoding rows of the loaded hybrid checkpoint ``ld`` (module docstring): each
    row's seconds the median of ``repeats`` passes over the prompts, in cycles over the rows
    (``round_robin``), after an untimed call of each on the first batch."""
    from unmask.data import TokenDataset

    windows = TokenDataset(data, "val").windows(200)
    prompts = [w[:PROMPT_LEN].tolist() for _, w in zip(range(n), windows, strict=False)]
    rows, eos, names = [], ld.config.eos_id, ("ar", "all", "ends")

    def run(name: str, chunk: list[list[int]]) -> Any:
        if name == "ar":
            return api.start(ld, chunk, SampleConfig(gen_length=gen, decoder="ar")).run()
        return HybridRun(ld.model, chunk, max_new_tokens=gen, eos_id=eos, predraft=name).run()

    def one_pass(name: str, bs: int) -> tuple[list[list[int]], list[int]]:
        """Every prompt in batches of ``bs``: the ids, and for the hybrid its counts summed
        (row_rounds and committed are summed over rows: each row's own)."""
        ids, st = [], [0, 0, 0, 0]
        for i in range(0, len(prompts), bs):
            r = run(name, prompts[i : i + bs])
            if name != "ar":
                st = [a + b for a, b in zip(st, (r.row_rounds, r.committed, r.drafted,
                                                 r.accepted), strict=True)]  # fmt: skip
            ids += r.gen_ids
        return ids, st

    for bs in sorted({1, batch}):
        for name in names:  # untimed: the first calls' one-time costs fell on the first row
            run(name, prompts[:bs])  # (ar at batch 1) and inflated vs_ar
        calls = [lambda name=name, bs=bs: one_pass(name, bs) for name in names]
        timings = round_robin(calls, repeats)
        (ar_ids, _), ar_s = timings[0]
        ar_tok_s = sum(generated(r, eos) for r in ar_ids) / ar_s
        for name, ((ids, st), s) in zip(names, timings, strict=True):
            tok_s = sum(generated(r, eos) for r in ids) / s
            rows.append({
                "decoder": name, "batch": bs, "tok_s": tok_s, "repeats": repeats,
                "vs_ar": tok_s / ar_tok_s if ar_tok_s else float("nan"),  # tokens/s: rows
                # may end at EOS sooner than ar's
                "tokens_per_forward": st[1] / st[0] if st[0] else 1.0,
                "acceptance": st[3] / st[2] if st[2] else None,
                "identical": sum(a == b for a, b in zip(ids, ar_ids, strict=True)) / len(ids),
            })  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--draft-block", type=positive_int, default=8)
    p.add_argument("--prefix", type=positive_int, default=128)
    p.add_argument("--repeats", type=positive_int, default=20,
                   help="timed forwards per forward-cost row (median, round-robin)")
    p.add_argument("--decode-repeats", type=positive_int, default=3,
                   help="timed passes per decoding row (median, round-robin over the rows)")
    p.add_argument("--model")
    p.add_argument("--data", default="data/bible")
    p.add_argument("--prompts", type=positive_int, default=8)
    p.add_argument("--gen-length", type=positive_int, nargs="+", default=[128],
                   help="one or more; one past the context is skipped, saying why")  # fmt: skip
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--json", type=output_file)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ld = None
    if args.model:  # first: a wrong checkpoint is refused before minutes of forward costs
        from unmask.checkpoint import load
        from unmask.errors import UserError

        ld = load(args.model, device="cpu")
        require_hybrid(ld, f"--model {args.model}")
        ld.model.eval()
        from unmask.data import TokenDataset
        from unmask.tokenizer import reads_ids_of

        # the data too, before minutes of forward costs: a missing folder, or ids of another
        # tokenizer (an IndexError traceback in the embedding, or drafts judged on other text)
        if not reads_ids_of(ld.tokenizer, TokenDataset(args.data, "val").tokenizer()):
            raise UserError(f"--data {args.data}: tokenized by another tokenizer than "
                            f"--model {args.model}'s")
    context = model_preset(args.preset, vocab_size=4100).max_seq_len
    if args.prefix + 2 * args.draft_block >= context:
        p.error(f"--prefix {args.prefix} with --draft-block {args.draft_block} reaches position "
                f"{args.prefix + 2 * args.draft_block}, past preset {args.preset}'s context of "
                f"{context}; use --prefix 1 .. {context - 2 * args.draft_block - 1}")
    out: dict[str, Any] = {"args": vars(args), "forward_cost": []}
    print(f"forward cost, preset {args.preset}, k={args.draft_block}, prefix {args.prefix}")
    for b in (1, args.batch):
        for r in forward_cost(args.preset, args.draft_block, args.prefix, b, args.repeats):
            out["forward_cost"].append(r)
            print(f"  batch {b:2d}  {r['layout']:36s} {r['positions']:4d} positions  "
                  f"{r['seconds'] * 1e3:8.2f} ms  {r['vs_ar_step']:5.2f}x ar step")  # fmt: skip
    out["decode"], out["skipped"] = [], []
    if ld is not None:
        from unmask.data import TokenDataset

        wins = TokenDataset(args.data, "val").windows(AGREEMENT_LEN)
        n = 8 * args.prompts
        windows = torch.stack([w.long() for _, w in zip(range(n), wins, strict=False)])
        k = ld.config.draft_block
        ag = out["draft_agreement"] = draft_agreement(ld.model, ld.config.mask_id, windows, k)
        print(f"draft agreement, {ag['drafts']} blocks of {k} (position 1 = two tokens past "
              f"the prefix); causal next-token accuracy {ag['causal']:.3f}")
        for key, what in (("truth", "= held-out token"), ("greedy", "= own greedy text")):
            print(f"  {what:18s}" + " ".join(f"{v:6.3f}" for v in ag[key]))
    for gen in args.gen_length if ld is not None else []:
        limit = ld.config.max_seq_len
        if PROMPT_LEN + gen > limit:  # the decoders refuse it: say why here
            why = (f"gen {gen}: skipped ({PROMPT_LEN}-token prompts + {gen} new tokens exceed "
                   f"the model's context of {limit} tokens)")  # fmt: skip
            out["skipped"].append(why)
            print(why)
            continue
        rows = decode(ld, args.data, args.prompts, gen, args.batch, args.decode_repeats)
        out["decode"] += [{**r, "gen_length": gen} for r in rows]
        print(f"greedy decoding, {args.prompts} prompts x {gen} tokens")
        for r in rows:
            acc = "" if r["acceptance"] is None else f"{r['acceptance']:.3f}"
            print(f"  batch {r['batch']:2d}  {r['decoder']:5s} {r['tok_s']:8.1f} tok/s  "
                  f"{r['vs_ar']:5.2f}x ar  {r['tokens_per_forward']:5.2f} tok/forward  "
                  f"accept {acc:5s}  identical {r['identical']:.2f}")  # fmt: skip
    if args.json:
        write_results(args.json, out, indent=1)


if __name__ == "__main__":
    from _common import run

    run(main)
