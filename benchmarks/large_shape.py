"""Large shapes: loading a sharded LLaDA-format folder and decoding speed (issue #7, Measure).

One run, one command, everything printed:

1. Writes a randomly initialised model of the chosen shape as a sharded safetensors folder in
   LLaDA's publisher layout (config.json, model-0000k-of-0000n.safetensors with
   model.safetensors.index.json, tokenizer.json), one shard per transformer block, in a child
   process, so this process's memory stays clean for step 2.
2. Loads it with ``unmask.load`` (model built on the meta device, shards memory-mapped and
   copied tensor by tensor) and reports the load time and the peak host RSS above the
   pre-load baseline next to the weight file size: a loader that held a second full copy
   would show a ratio near 2 (CPU) or 1 (CUDA); unmask's should be near 1 (CPU: the weights
   themselves live in RAM) or near 0 (CUDA: they live on the GPU).
3. Decodes a batch of random prompts with the one-token-per-step schedule (``llada``, one
   committed token per step, no cache) and with the fastest policy (``threshold`` 0.9 with
   the ``dual`` KV cache), semi-autoregressively in blocks, at each generation length, and
   reports seconds, tokens/s, model calls (NFE), the speed-up over the first row and the
   peak memory (GPU: ``torch.cuda.max_memory_allocated``; CPU: peak RSS).

Shapes: ``8b`` is LLaDA-8B (d_model 4096, 32 layers, 32 heads, MLP 12288, vocabulary 126464,
RoPE theta 500000, untied head; GSAI-ML/LLaDA-8B-Base config.json), the default on CUDA in
bf16 at gen lengths 256 and 512; ``1b`` (d_model 2048, 16 layers, 16 heads, MLP 5632, same
vocabulary) is the default on CPU in fp32 at gen length 64 with blocks of 32; ``tiny`` is for
checking that the script runs.

Random weights give near-uniform confidences, so the threshold policy commits about one token
per step here (NFE close to the gen length): the threshold row measures what the dual cache
saves per model call, not what the policy saves on a trained model (benchmarks/decoding.py).

    python benchmarks/large_shape.py                         # cuda: 8b, bf16; cpu: 1b, fp32
    python benchmarks/large_shape.py --shape 1b --device cpu --gen-lengths 64 --block-length 32
    python benchmarks/large_shape.py --shape tiny --gen-lengths 32 --block-length 16   # seconds

Results go to ``runs/bench/large_shape_<device>.json`` (``--json`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from _common import (
    default_output,
    non_negative_int,
    output_file,
    positive_int,
    write_results,
)

from unmask.config import DTYPE_NAMES, ModelConfig, SampleConfig, resolve_device, torch_dtype
from unmask.errors import UserError

SHAPES: dict[str, dict[str, Any]] = {
    # GSAI-ML/LLaDA-8B-Base config.json
    "8b": dict(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, ffn_hidden=12288,
               vocab_size=126464, max_seq_len=4096, rope_theta=500000.0),
    "1b": dict(d_model=2048, n_layers=16, n_heads=16, n_kv_heads=16, ffn_hidden=5632,
               vocab_size=126464, max_seq_len=4096, rope_theta=500000.0),
    "tiny": dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, ffn_hidden=128, vocab_size=512,
                 max_seq_len=1024, rope_theta=10000.0),
}  # fmt: skip
LLADA_IDS = {"mask_id": 126336, "pad_id": 126081, "eos_id": 126081, "bos_id": 126080}
"""LLaDA's special ids (config.json), used when the vocabulary is LLaDA's size."""
SPECIAL_NAMES = {"mask_id": "<|mdm_mask|>", "eos_id": "<|endoftext|>", "bos_id": "<|startoftext|>"}


def model_config(args: argparse.Namespace) -> ModelConfig:
    """The shape of ``--shape`` with the per-field overrides, LLaDA's facts (untied, no bias)."""
    shape = dict(SHAPES[args.shape])
    for name in ("d_model", "n_layers", "n_heads", "ffn_hidden", "vocab_size"):
        if getattr(args, name) is not None:
            shape[name] = getattr(args, name)
            if name == "n_heads":
                shape["n_kv_heads"] = args.n_heads
    return llada_like(shape)


def llada_like(shape: dict[str, Any]) -> ModelConfig:
    """A bidirectional, untied, bias-free ``ModelConfig`` of ``shape`` with LLaDA's special ids
    (or, for another vocabulary size, ids at its end)."""
    V = shape["vocab_size"]
    ids = (
        LLADA_IDS
        if V == 126464
        else {"mask_id": V - 1, "pad_id": V - 2, "eos_id": V - 2, "bos_id": V - 3}
    )
    return ModelConfig(**shape, **ids, tie_embeddings=False, attention="bidirectional")


# -- step 1: the folder -------------------------------------------------------------------------


def write_tokenizer(config: ModelConfig, folder: Path) -> None:
    """A word-level tokenizer.json with ``vocab_size`` tokens and the special tokens at the
    config's ids (the decoding rows use token ids, never text)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    names = {getattr(config, k): v for k, v in SPECIAL_NAMES.items()}
    vocab = {names.get(i, f"t{i}"): i for i in range(config.vocab_size)}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token="t0"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.add_special_tokens(list(names.values()))
    hf.save(str(folder / "tokenizer.json"))


def write_folder(
    config: ModelConfig, folder: Path, dtype: torch.dtype, seed: int, device: torch.device
) -> None:
    """Random weights (unmask's init: N(0, init_std), residual outputs scaled, unit norms) in
    LLaDA's layout, one shard per block plus one for the embedding and one for the head, each
    built and written before the next, so at most one shard is in memory."""
    from unmask.convert import IMPORTERS, export_config, weight_map, write_safetensors
    from unmask.model import Transformer

    llada = IMPORTERS["llada"]
    with torch.device("meta"):
        shapes = {n: tuple(p.shape) for n, p in Transformer(config).named_parameters()}
    to_llada = {v: k for k, v in weight_map(llada, config, set(shapes)).items()}
    groups: list[list[str]] = [["embed.weight"]]
    groups += [[n for n in shapes if n.startswith(f"layers.{i}.")] for i in range(config.n_layers)]
    groups.append(["norm.weight", "lm_head.weight"])
    gen = torch.Generator(device=device).manual_seed(seed)
    std, resid = config.init_std, config.init_std / (2 * config.n_layers) ** 0.5
    index: dict[str, str] = {}
    total = 0
    for k, names in enumerate(groups):
        shard = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for n in names:
            if n.endswith("norm.weight"):
                t = torch.ones(shapes[n], dtype=dtype)
            else:
                s = resid if n.endswith(("o_proj.weight", "down_proj.weight")) else std
                t = (torch.randn(shapes[n], generator=gen, device=device) * s).to(dtype).cpu()
            tensors[to_llada[n]] = t
            total += t.numel() * t.element_size()
        write_safetensors(tensors, folder / shard, metadata={"format": "pt"})
        index |= dict.fromkeys(tensors, shard)
        del tensors
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": index}, indent=2) + "\n"
    )
    write_tokenizer(config, folder)
    # config.json last, renamed into place: it marks a complete folder (``ensure_folder``
    # reuses one; a run stopped earlier, Ctrl-C, left one without its tokenizer to reuse)
    part = folder / "config.json.part"
    part.write_text(json.dumps(export_config(llada, config, dtype), indent=2) + "\n")
    os.replace(part, folder / "config.json")


# -- memory -------------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class PeakRSS:
    """Peak RSS while the ``with`` block runs, sampled every ``interval`` s in a thread."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.baseline = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.baseline = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def delta(self) -> int:
        return self.peak - self.baseline


# -- step 3: decoding ---------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> tuple[Any, float]:
    """(last result, median seconds of ``repeats`` calls)."""
    times, out = [], None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


ROWS = (
    ("llada 1/step", dict(policy="llada"), "none"),
    ("threshold .9", dict(policy="threshold", threshold=0.9), "dual"),
)
"""(label, SampleConfig policy fields, cache): the baseline first."""


def decode_rows(model: Any, config: ModelConfig, prompts: torch.Tensor, args: argparse.Namespace,
                device: torch.device) -> list[dict[str, Any]]:
    from unmask.sampling import generate

    kw = {"mask_id": config.mask_id, "pad_id": config.pad_id, "eos_id": config.eos_id}
    for _label, fields, cache in ROWS:  # first calls pay one-time costs (allocations, RoPE tables)
        warm = SampleConfig(
            gen_length=2 * args.block_length,
            steps=2,
            block_length=args.block_length,
            cache=cache,
            **fields,
        )
        generate(model, prompts, warm, **kw)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    rows: list[dict[str, Any]] = []
    for gen_length in args.gen_lengths:
        base: dict[str, Any] | None = None
        for label, fields, cache in ROWS:
            sc = SampleConfig(
                gen_length=gen_length,
                steps=gen_length,
                block_length=args.block_length,
                cache=cache,
                temperature=0.0,
                **fields,
            )
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with PeakRSS() as rss:
                res, seconds = timed(
                    lambda sc=sc: generate(model, prompts, sc, **kw), args.repeats, device
                )
            row: dict[str, Any] = {
                "gen_length": gen_length, "block_length": args.block_length,
                "prompt_tokens": prompts.shape[1], "batch": prompts.shape[0], "policy": label,
                "cache": cache, "nfe": res.nfe, "seconds": seconds,
                "tokens_per_s": prompts.shape[0] * gen_length / seconds, "peak_rss_bytes": rss.peak,
                "peak_gpu_bytes": (torch.cuda.max_memory_allocated(device)
                                   if device.type == "cuda" else None),
                "model_bytes": model_bytes,
            }  # fmt: skip
            base = base or row
            row["speedup"] = base["seconds"] / seconds
            rows.append(row)
            print_row(row)
    return rows


GIB = 1024**3
HEADER = (
    f"{'gen':>5} {'policy':<13} {'cache':<5} {'NFE':>5} {'sec':>9} {'tok/s':>9} {'speed-up':>8} "
    f"{'peak mem GiB':>12}"
)


def print_row(r: dict[str, Any]) -> None:
    mem = r["peak_gpu_bytes"] if r["peak_gpu_bytes"] is not None else r["peak_rss_bytes"]
    print(
        f"{r['gen_length']:>5} {r['policy']:<13} {r['cache']:<5} {r['nfe']:>5} "
        f"{r['seconds']:>9.3f} "
        f"{r['tokens_per_s']:>9.2f} {r['speedup']:>8.2f} {mem / GIB:>12.2f}",
        flush=True,
    )


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=SHAPES, help="model shape (default: 8b on cuda, 1b on cpu)")
    ap.add_argument(
        "--d-model", dest="d_model", type=positive_int, help="override the shape's width"
    )
    ap.add_argument(
        "--n-layers", dest="n_layers", type=positive_int, help="override the shape's depth"
    )
    ap.add_argument(
        "--n-heads", dest="n_heads", type=positive_int, help="override the shape's heads (no GQA)"
    )
    ap.add_argument(
        "--ffn-hidden", dest="ffn_hidden", type=positive_int, help="override the shape's MLP width"
    )
    ap.add_argument(
        "--vocab-size", dest="vocab_size", type=positive_int, help="override the vocabulary size"
    )
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda[:i]")
    ap.add_argument(
        "--dtype",
        choices=DTYPE_NAMES,
        help="weights on disk and in memory (default: bf16 on cuda, fp32 on cpu)",
    )
    ap.add_argument(
        "--gen-lengths", type=positive_int, nargs="+", help="default: 256 512 on cuda, 64 on cpu"
    )
    ap.add_argument(
        "--block-length", type=positive_int, default=32,
        help="semi-autoregressive block length of every row",
    )
    ap.add_argument(
        "--prompt-len", type=positive_int, default=32, help="random prompt tokens per row"
    )
    ap.add_argument("--batch", type=positive_int, default=1, help="prompts decoded together")
    ap.add_argument("--repeats", type=positive_int, default=1,
                    help="timed runs per row (median)")
    ap.add_argument(
        "--threads", type=non_negative_int, default=0,
        help="torch CPU threads (0 = torch's default)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--dir",
        help="write the model folder here and keep it; a folder that already holds this "
        "shape is reused (default: a temporary folder, removed after the run)",
    )
    ap.add_argument(
        "--json",
        type=output_file,
        help="results file (default: runs/bench/large_shape_<device>.json)",
    )
    ap.add_argument("--write-only", help=argparse.SUPPRESS)  # the child process of step 1
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    args.shape = args.shape or ("8b" if cuda else "1b")
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    args.gen_lengths = args.gen_lengths or ([256, 512] if cuda else [64])
    if any(g % args.block_length for g in args.gen_lengths):
        raise UserError(
            f"every --gen-lengths value must be a multiple of --block-length {args.block_length}"
        )
    args.device = str(device)
    return args


def complete(folder: Path) -> bool:
    """Whether ``folder`` holds every file ``write_folder`` writes: the index, each shard it
    names, the tokenizer (beside config.json, which it writes last)."""
    index = folder / "model.safetensors.index.json"
    if not (index.is_file() and (folder / "tokenizer.json").is_file()):
        return False
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (ValueError, KeyError, TypeError):
        return False
    return all((folder / s).is_file() for s in shards)


def ensure_folder(args: argparse.Namespace, config: ModelConfig, folder: Path) -> float:
    """Write the folder in a child process (or reuse it); returns the seconds it took."""
    expect = {"d_model": config.d_model, "n_layers": config.n_layers,
              "vocab_size": config.vocab_size, "mlp_hidden_size": config.ffn_hidden,
              "n_heads": config.n_heads,
              "torch_dtype": DTYPE_NAMES[args.dtype]}  # fmt: skip
    cfg_path = folder / "config.json"
    if cfg_path.is_file():
        have = json.loads(cfg_path.read_text())
        if not all(have.get(k) == v for k, v in expect.items()):
            raise UserError(f"{folder}: holds another model; pass an empty --dir")
        if complete(folder):
            print(f"reusing {folder}", flush=True)
            return 0.0
        print(f"{folder}: incomplete (a stopped run?), writing it again", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, __file__, "--write-only", str(folder), "--shape", args.shape,
            "--dtype", args.dtype, "--device", args.device, "--seed", str(args.seed)]  # fmt: skip
    for name in ("d_model", "n_layers", "n_heads", "ffn_hidden", "vocab_size"):
        if getattr(args, name) is not None:
            argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = model_config(args)
    dtype = torch_dtype(args.dtype)
    if args.write_only:  # the child process of step 1
        write_folder(config, Path(args.write_only), dtype, args.seed, device)
        return

    import unmask

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(
        f"torch {torch.__version__}, {device}{f' ({gpu})' if gpu else ''}, {args.dtype}, threads "
        f"{torch.get_num_threads()}, shape {args.shape}: d_model {config.d_model}, "
        f"{config.n_layers} layers, "
        f"{config.n_heads} heads, MLP {config.ffn_hidden}, vocab {config.vocab_size}, "
        f"{config.num_params() / 1e9:.2f}B params",
        flush=True,
    )
    tmp = None if args.dir else tempfile.mkdtemp(prefix="unmask-large-shape-")
    folder = Path(args.dir) if args.dir else Path(tmp) / f"llada-{args.shape}-{args.dtype}"
    try:
        write_s = ensure_folder(args, config, folder)
        file_bytes = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
        n_shards = len(list(folder.glob("*.safetensors")))
        print(
            f"folder {folder}: {n_shards} shards, {file_bytes / GIB:.2f} GiB, "
            f"written in {write_s:.1f} s",
            flush=True,
        )

        # The imports and one-time setup the first load pays (and the CUDA context) are not the
        # loader's memory: load a tiny folder of the same format first.
        with tempfile.TemporaryDirectory() as d:
            write_folder(llada_like(SHAPES["tiny"]), Path(d), dtype, args.seed, torch.device("cpu"))
            unmask.load(d, device=str(device), dtype=dtype)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            loaded = unmask.load(folder, device=str(device), dtype=dtype)
            sync(device)
            load_s = time.perf_counter() - t0
        model = loaded.model
        model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        load = {
            "seconds": load_s, "file_bytes": file_bytes, "model_bytes": model_bytes,
            "shards": n_shards,
            "largest_shard_bytes": max(f.stat().st_size for f in folder.glob("*.safetensors")),
            "rss_baseline_bytes": rss.baseline, "rss_peak_bytes": rss.peak,
            "rss_delta_bytes": rss.delta,
            "rss_delta_over_file": rss.delta / file_bytes,
            "gpu_peak_bytes": (torch.cuda.max_memory_allocated(device)
                               if device.type == "cuda" else None),
            "family": loaded.family,
        }  # fmt: skip
        print(
            f"load: {load_s:.1f} s ({file_bytes / GIB / load_s:.2f} GiB/s), "
            f"host RSS +{rss.delta / GIB:.2f} GiB "
            f"over the baseline = {load['rss_delta_over_file']:.2f} x the file size "
            f"(largest shard {load['largest_shard_bytes'] / GIB:.2f} GiB)"
            + (
                f", GPU peak {load['gpu_peak_bytes'] / GIB:.2f} GiB"
                if load["gpu_peak_bytes"] is not None
                else ""
            ),
            flush=True,
        )

        gen = torch.Generator().manual_seed(args.seed)
        low = min(config.mask_id, config.pad_id, config.eos_id, config.bos_id or config.vocab_size)
        prompts = torch.randint(0, low, (args.batch, args.prompt_len), generator=gen).to(device)
        print(
            f"\nbatch {args.batch}, prompt {args.prompt_len} tokens, "
            f"blocks of {args.block_length}, temperature 0; "
            f"speed-up vs '{ROWS[0][0]}' at the same gen length; peak mem = "
            f"{'torch.cuda.max_memory_allocated' if device.type == 'cuda' else 'process RSS'}"
        )
        print(HEADER, flush=True)
        with torch.no_grad():
            rows = decode_rows(model, config, prompts, args, device)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    out = Path(args.json or default_output(f"large_shape_{device.type}.json"))
    result = {
        "meta": {"torch": torch.__version__, "python": platform.python_version(),
                 "device": str(device), "gpu": gpu,
                 "threads": torch.get_num_threads(), "dtype": args.dtype, "shape": args.shape,
                 "config": {k: getattr(config, k) for k in ("d_model", "n_layers", "n_heads",
                                                            "n_kv_heads", "ffn_hidden",
                                                            "vocab_size", "rope_theta")},
                 "params": config.num_params(), "prompt_len": args.prompt_len, "batch": args.batch,
                 "block_length": args.block_length, "gen_lengths": args.gen_lengths,
                 "repeats": args.repeats, "write_seconds": write_s},
        "load": load,
        "rows": rows,
    }  # fmt: skip
    write_results(out, result, indent=2)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    from _common import run

    run(main)
