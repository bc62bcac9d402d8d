"""Load test of ``unmask serve``: throughput, latency and the speed-up from batching.

Starts the server twice as a subprocess on 127.0.0.1 (a free port): once with batching
(``--max-batch``) and once with ``--max-batch 1`` (requests one after another). Against
each, 1, 4, 16 and 64 concurrent clients send ``/v1/completions`` requests for
``--seconds`` each. Reports requests/s, generated tokens/s, p50/p95 latency, errors, the
server's RSS before and after, and per concurrency level the batched/sequential
throughput ratio. Prints a table and writes JSON.

    python benchmarks/serve_load.py [--model PATH] [--seconds 20] [--json out.json]
    python benchmarks/serve_load.py --quick     # a few seconds against a random tiny model
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

PROMPTS = ["And God said,", "In the beginning", "The LORD is my shepherd;", "Blessed are the meek:"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (Linux /proc; NaN elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def start_server(model: str, port: int, max_batch: int, threads: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "unmask.cli", "serve", "--model", model, "--port", str(port),
           "--max-batch", str(max_batch), "--max-queue", "1024", "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start in 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()  # only the process this script started
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


async def load(url: str, clients: int, seconds: float, body: dict[str, Any]) -> dict[str, Any]:
    """``clients`` loops sending requests until ``seconds`` pass; latency per request."""
    latencies: list[float] = []
    tokens = errors = 0
    deadline = time.perf_counter() + seconds

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens, errors
        k = i
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                r = await http.post(url, json={**body, "prompt": PROMPTS[k % len(PROMPTS)]})
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                    tokens += r.json()["usage"]["completion_tokens"]
                else:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            k += 1

    limits = httpx.Limits(max_connections=clients + 4)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    wall = time.perf_counter() - t0
    lat = sorted(latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    return {"clients": clients, "requests": len(lat), "errors": errors, "seconds": round(wall, 3),
            "requests_per_s": len(lat) / wall, "tokens_per_s": tokens / wall,
            "p50_s": pct(0.50), "p95_s": pct(0.95), "mean_s": statistics.fmean(lat) if lat else float("nan")}


def tiny_checkpoint(folder: Path) -> str:
    import torch

    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, **tok.special_ids()))
    return str(save_checkpoint(folder / "tiny", model=model, tokenizer=tok))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint (default: the demo model; --quick: a random tiny model)")
    ap.add_argument("--clients", default="1,4,16,64", help="concurrency levels (default: 1,4,16,64)")
    ap.add_argument("--seconds", type=float, default=20.0, help="duration of each level (default: 20)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: max-tokens)")
    ap.add_argument("--max-batch", type=int, default=16, help="server --max-batch of the batched run (default: 16)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server (default: 1)")
    ap.add_argument("--quick", action="store_true", help="1 and 4 clients, 2 s each, tiny model, 8 tokens")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            levels, args.seconds, args.max_tokens = [1, 4], 2.0, 8
            model = args.model or tiny_checkpoint(Path(tmp))
        else:
            from unmask.commands.demo import asset_path

            model = args.model or str(asset_path("demo"))
        body = {"max_tokens": args.max_tokens, "steps": args.steps or args.max_tokens}
        runs: dict[str, list[dict[str, Any]]] = {}
        rss: dict[str, tuple[float, float]] = {}
        for mode, max_batch in (("batched", args.max_batch), ("sequential", 1)):
            port = free_port()
            proc = start_server(model, port, max_batch, args.threads)
            try:
                before = rss_mb(proc.pid)
                url = f"http://127.0.0.1:{port}/v1/completions"
                runs[mode] = [asyncio.run(load(url, c, args.seconds, body)) for c in levels]
                rss[mode] = (before, rss_mb(proc.pid))
            finally:
                stop_server(proc)
    print(f"model {model}, {args.max_tokens} tokens/request, steps {body['steps']}, "
          f"{args.seconds:g} s per level, batched run --max-batch {args.max_batch}")
    print(f"{'mode':>10} {'clients':>7} {'req/s':>8} {'tok/s':>9} {'p50 s':>7} {'p95 s':>7} {'errors':>6}")
    for mode, rows in runs.items():
        for r in rows:
            print(f"{mode:>10} {r['clients']:>7} {r['requests_per_s']:>8.2f} {r['tokens_per_s']:>9.1f} "
                  f"{r['p50_s']:>7.3f} {r['p95_s']:>7.3f} {r['errors']:>6}")
    speedup = {}
    for b, s in zip(runs["batched"], runs["sequential"], strict=True):
        speedup[b["clients"]] = b["tokens_per_s"] / s["tokens_per_s"] if s["tokens_per_s"] else float("nan")
    print("batching speed-up (tokens/s batched / sequential): "
          + ", ".join(f"{c} clients {x:.2f}x" for c, x in speedup.items()))
    for mode, (before, after) in rss.items():
        print(f"server RSS ({mode}): {before:.0f} MiB before, {after:.0f} MiB after")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "model": model, "max_tokens": args.max_tokens, "steps": body["steps"], "seconds": args.seconds,
            "max_batch": args.max_batch, "runs": runs, "speedup": speedup,
            "rss_mb": {m: {"before": b, "after": a} for m, (b, a) in rss.items()},
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
