"""Load test of ``unmask serve``: throughput, latency and the speed-up from continuous batching.

Starts the server twice as a subprocess on 127.0.0.1 (a free port), serving the packaged
demo model (``unmask/assets/demo``, loaded by ``unmask serve`` with ``unmask.load``): once
with continuous batching (``--max-batch``) and once with ``--max-batch 1`` (the same
requests served one at a time). Against each, 1, 4, 16 and 64 concurrent clients send
``/v1/completions`` requests for ``--seconds`` each (a client finishes the request it has
in flight at the deadline). Both servers run side by side: each answers a warm-up request
(one per ``--max-tokens`` length, untimed) before any timing, and at each level the two are
measured one after the other, the first alternating between levels, so neither pays the
first request's cost or always runs first. Reports per level requests/s, generated tokens/s, p50/p95
latency, errors (must be 0), rows per forward pass on the server (``/metrics``:
``forward_rows / nfe``), the server's RSS before and after, and the batched/sequential
throughput ratio. Prints a table and writes JSON (default ``runs/bench/serve_load.json``;
the committed results: ``--json benchmarks/results/serve_load.json``); exits 1 if any
request failed.

    python benchmarks/serve_load.py [--model PATH] [--seconds 20] [--max-tokens 32] \
        [--json out.json]
    python benchmarks/serve_load.py --max-tokens 16,32   # mixed lengths: short requests leave early
    python benchmarks/serve_load.py --quick    # smoke run: 1 and 4 clients, 1 s each
                                               # (no JSON unless --json)
    python benchmarks/serve_load.py --model runs/ar --temperature 0.8 --seeded
        # seeded sampled requests, each its own seed (a causal checkpoint: they share runs)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _common import (
    default_output,
    int_list,
    output_file,
    positive_float,
    positive_int,
    run,
    write_results,
)

from unmask.errors import UserError

PROMPTS = ["And God said,", "In the beginning", "The LORD is my shepherd;", "Blessed are the meek:"]
RESULTS = default_output("serve_load.json")


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


def start_server(
    model: str, port: int, max_batch: int, threads: int, device: str
) -> subprocess.Popen:
    """``unmask serve`` on ``port``, once it answers ``/healthz``. Its stderr goes to a
    temporary file (read when it exits early), not a pipe: nobody reads a pipe while the load
    runs, and a server that logs (a failing model logs a line per request) blocked on it once
    it held 64 KiB, and the benchmark hung."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "unmask.cli", "serve", "--model", model, "--port", str(port),
           "--max-batch", str(max_batch), "--max-queue", "1024", "--device", device,
           "--quiet"]  # no access log
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    LOGS[proc.pid] = log
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {server_log(proc)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_server(proc)
    raise SystemExit("server did not start in 120 s")


LOGS: dict[int, Any] = {}
"""The stderr file of each server started (``start_server``), by its pid."""


def server_log(proc: subprocess.Popen) -> str:
    """What the server ``proc`` wrote to stderr so far."""
    log = LOGS[proc.pid]
    log.seek(0)
    return log.read().decode(errors="replace")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()  # only the process this script started
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    LOGS.pop(proc.pid).close()


def server_counters(base: str) -> dict[str, float]:
    """``unmask_nfe_total`` and ``unmask_forward_rows_total`` from ``/metrics``."""
    out = {}
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("unmask_nfe_total", "unmask_forward_rows_total"):
            out[name] = float(value)
    return out


def request_body(k: int, n: int, steps: int | None, sampling: dict[str, Any]) -> dict[str, Any]:
    """Request ``k`` of ``n`` tokens: a prompt of ``PROMPTS``, ``steps`` (default one per
    token), and ``sampling`` (``temperature``; ``seeded``: seed ``k``, each request its own)."""
    body = {"prompt": PROMPTS[k % len(PROMPTS)], "max_tokens": n, "steps": steps or n}
    if sampling.get("temperature") is not None:
        body["temperature"] = sampling["temperature"]
    if sampling.get("seeded"):
        body["seed"] = k
    return body


def warm_up(base: str, lengths: list[int], steps: int | None,
            sampling: dict[str, Any] | None = None) -> None:
    """One untimed request per length: the server's first-request costs (allocations, lazy
    initialisation) land here, not in the first timed level."""
    for n in dict.fromkeys(lengths):
        body = request_body(0, n, steps, sampling or {})
        r = httpx.post(f"{base}/v1/completions", json=body, timeout=600)
        if r.status_code != 200:  # the options themselves (a length past the context): one
            # line, not an HTTPStatusError traceback
            raise UserError(f"the server refused a request of max_tokens {n}, steps "
                            f"{steps or n}: {error_message(r)}")


def error_message(r: httpx.Response) -> str:
    """The message of an error answer (``{"error": {"message": ...}}``), else its status."""
    try:
        return str(r.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {r.status_code}"


async def load(
    base: str, clients: int, seconds: float, lengths: list[int], steps: int | None,
    sampling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``clients`` loops sending requests until ``seconds`` pass; latency per request."""
    latencies: list[float] = []
    tokens = errors = 0
    messages: list[str] = []
    deadline = time.perf_counter() + seconds

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens, errors
        k = i
        while time.perf_counter() < deadline:
            n = lengths[k % len(lengths)]
            body = request_body(k, n, steps, sampling or {})
            t0 = time.perf_counter()
            try:
                r = await http.post(f"{base}/v1/completions", json=body)
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                    tokens += r.json()["usage"]["completion_tokens"]
                else:
                    errors += 1
                    messages.append(f"{r.status_code} {r.text[:200]}")
            except httpx.HTTPError as e:
                errors += 1
                messages.append(repr(e))
            k += 1

    before = server_counters(base)
    limits = httpx.Limits(max_connections=clients + 4)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    wall = time.perf_counter() - t0
    after = server_counters(base)
    nfe = after["unmask_nfe_total"] - before["unmask_nfe_total"]
    rows = after["unmask_forward_rows_total"] - before["unmask_forward_rows_total"]
    lat = sorted(latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    return {
        "clients": clients,
        "requests": len(lat),
        "errors": errors,
        "error_samples": messages[:3],
        "seconds": round(wall, 3),
        "requests_per_s": len(lat) / wall,
        "tokens_per_s": tokens / wall,
        "p50_s": pct(0.50),
        "p95_s": pct(0.95),
        "mean_s": statistics.fmean(lat) if lat else float("nan"),
        "forwards": nfe,
        "rows_per_forward": rows / nfe if nfe else float("nan"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint (default: the packaged demo model)")
    ap.add_argument(
        "--clients", default=None, help="concurrency levels (default: 1,4,16,64; --quick 1,4)"
    )
    ap.add_argument(
        "--seconds",
        type=positive_float,
        default=None,
        help="duration of each level (default: 20; --quick 1)",
    )
    ap.add_argument(
        "--max-tokens",
        default=None,
        help="tokens per request; a comma list is cycled over requests (default: 32; --quick 8)",
    )
    ap.add_argument(
        "--steps", type=positive_int, default=None, help="denoising steps (default: one per token)"
    )
    ap.add_argument(
        "--max-batch",
        type=positive_int,
        default=16,
        help="server --max-batch of the batched run (default: 16)",
    )
    ap.add_argument(
        "--threads", type=positive_int, default=1, help="torch threads of the server (default: 1)"
    )
    ap.add_argument("--device", default="cpu", help="server --device (default: cpu)")
    ap.add_argument("--temperature", type=float, default=None,
                    help="temperature of every request (default: the checkpoint's, else 0)")
    ap.add_argument("--seeded", action="store_true",
                    help="every request sends a seed of its own (with --temperature: seeded "
                    "sampling)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: the defaults become 1 and 4 clients, 1 s each, 8 tokens (flags given "
        "still win)",
    )
    ap.add_argument(
        "--json",
        type=output_file,
        help="write results here (default: runs/bench/serve_load.json; "
        "with --quick only when given)",
    )
    args = ap.parse_args()
    if args.clients is None:
        args.clients = "1,4" if args.quick else "1,4,16,64"
    if args.seconds is None:
        args.seconds = 1.0 if args.quick else 20.0
    if args.max_tokens is None:
        args.max_tokens = "8" if args.quick else "32"
    levels = int_list(args.clients, "--clients")
    lengths = int_list(args.max_tokens, "--max-tokens")
    if args.model:
        model = args.model
        if not Path(model).exists():
            raise UserError(f"--model {model}: no such file or folder")
    else:
        from unmask.commands.demo import asset_path

        model = str(asset_path("demo"))
    if args.temperature is not None and not (0 <= args.temperature <= 2):
        raise UserError(f"--temperature must be in 0..2, got {args.temperature:g}")
    sampling = {"temperature": args.temperature, "seeded": args.seeded}
    modes = {"batched": args.max_batch, "sequential": 1}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    rss: dict[str, tuple[float, float]] = {}
    procs: dict[str, subprocess.Popen] = {}
    bases: dict[str, str] = {}
    try:
        for mode, max_batch in modes.items():  # both up at once: the levels interleave
            port = free_port()
            procs[mode] = start_server(model, port, max_batch, args.threads, args.device)
            bases[mode] = f"http://127.0.0.1:{port}"
        before = {m: rss_mb(p.pid) for m, p in procs.items()}
        for mode in modes:
            warm_up(bases[mode], lengths, args.steps, sampling)
        for i, c in enumerate(levels):
            order = list(modes) if i % 2 == 0 else list(modes)[::-1]
            for mode in order:
                runs[mode].append(
                    asyncio.run(load(bases[mode], c, args.seconds, lengths, args.steps,
                                     sampling))
                )
        rss = {m: (before[m], rss_mb(p.pid)) for m, p in procs.items()}
    finally:
        for p in procs.values():
            stop_server(p)

    print(
        f"model {model}, max_tokens {args.max_tokens}, "
        f"steps {args.steps or 'one per token'}, temperature "
        f"{'default' if args.temperature is None else f'{args.temperature:g}'}"
        f"{', seeded' if args.seeded else ''}, {args.seconds:g} s per level, batched run "
        "--max-batch "
        f"{args.max_batch}, server threads {args.threads}, {args.device}"
    )
    print(
        f"{'mode':>10} {'clients':>7} {'req/s':>8} {'tok/s':>9} {'p50 s':>7} {'p95 s':>7} "
        f"{'rows/fwd':>8} "
        f"{'errors':>6}"
    )
    for mode, rows in runs.items():
        for r in rows:
            print(
                f"{mode:>10} {r['clients']:>7} {r['requests_per_s']:>8.2f} "
                f"{r['tokens_per_s']:>9.1f} "
                f"{r['p50_s']:>7.3f} {r['p95_s']:>7.3f} {r['rows_per_forward']:>8.2f} "
                f"{r['errors']:>6}"
            )
    speedup = {}
    for b, s in zip(runs["batched"], runs["sequential"], strict=True):
        speedup[b["clients"]] = (
            b["tokens_per_s"] / s["tokens_per_s"] if s["tokens_per_s"] else float("nan")
        )
    print(
        "batching speed-up (tokens/s batched / sequential): "
        + ", ".join(f"{c} clients {x:.2f}x" for c, x in speedup.items())
    )
    for mode, (before, after) in rss.items():
        print(f"server RSS ({mode}): {before:.0f} MiB before, {after:.0f} MiB after")
    errors = sum(r["errors"] for rows in runs.values() for r in rows)
    out = args.json or (None if args.quick else str(RESULTS))
    if out:
        import torch

        write_results(  # whole or not at all (a Ctrl-C, a full disk)
            out,
            {
                "meta": {
                    "model": model,
                    "max_tokens": lengths,
                    "steps": args.steps,
                    "temperature": args.temperature,
                    "seeded": args.seeded,
                    "seconds": args.seconds,
                    "max_batch": args.max_batch,
                    "threads": args.threads,
                    "device": args.device,
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "quick": args.quick,
                    "order": "both servers up, one warm-up request each; per level "
                    "both modes, the first alternating (batched first at even levels)",
                },
                "runs": runs,
                "speedup": speedup,
                "rss_mb": {m: {"before": b, "after": a} for m, (b, a) in rss.items()},
            },
            indent=2,
        )
        print(f"wrote {out}")
    if errors:  # (--quick writes no JSON unless asked: the first failures are shown here)
        samples = [m for rows in runs.values() for r in rows for m in r["error_samples"]]
        print(f"error: {errors} requests failed, e.g. {samples[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run(main)
