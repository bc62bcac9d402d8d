"""How good is a latent-diffusion checkpoint's denoiser? Held-out numbers in one unit.

A stage-2 run's training loss mixes reconstruction, latent error and text cross-entropy,
and its latent term is in the units of what the denoiser predicts (x0 or v), so it cannot
compare two parametrisations. This script encodes ``--windows`` held-out windows, noises
their latents to z_t at fixed times and reports, per t: the squared error of the z0
prediction per coordinate (``mse``; the latents have unit RMS), the error of the best
constant (``mse_mean``: the held-out mean latent, a floor any denoiser must beat), and the
cross-entropy of decoding the z0 prediction back to the window (``decode_ce``, nats per
token; with the prediction projected to unit RMS first: ``decode_ce_rms``). It also
reports the statistics of the latents themselves (the share of their energy in the mean
latent, the spread of each coordinate) and the decoder's robustness to noise on a clean
latent (decode cross-entropy at noise 0, 0.1, 0.3, 0.5 and 1 per coordinate). A
self-conditioned denoiser is run as the sampler runs it: a second pass refines the first
pass's estimate.

    python benchmarks/latent_denoise.py --model runs/latent --data data/corpus
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import output_file, positive_int, write_results

from unmask.checkpoint import load
from unmask.data import TokenDataset
from unmask.errors import UserError
from unmask.objectives.continuous import SqrtSchedule, rms_normalize
from unmask.objectives.latent import decode_logits, denoise, encode, text_room

TIMES = (0.05, 0.2, 0.4, 0.6, 0.8, 0.95)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a latent-diffusion (or latent-ae) checkpoint")
    ap.add_argument("--data", required=True, help="the prepared corpus it trained on")
    ap.add_argument("--windows", type=positive_int, default=64,
                    help="held-out windows (default: 64)")  # fmt: skip
    ap.add_argument("--seq-len", type=positive_int, default=None,
                    help="window in tokens (default: the one the model compresses, its "
                    "latent_window; else what its context holds beside its latent vectors)")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--json", type=output_file, default=None, help="write the numbers here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load(args.model, device="cpu")
    model, cfg = loaded.model.eval(), loaded.config
    if not cfg.latent_len:
        raise UserError(f"--model {args.model}: not a latent model (objective "
                        f"{cfg.objective!r}; latent-diffusion or latent-ae)")
    most = text_room(cfg)  # text, latent vectors (self-conditioned: twice) and time share it
    L = args.seq_len or cfg.latent_window or most
    if not 0 < L <= most:
        raise UserError(f"--seq-len {L}: this model reads windows of 1..{most} tokens "
                        f"(it was trained on {cfg.latent_window or 'unrecorded'})")
    val = TokenDataset(Path(args.data), "val")
    x = torch.stack([w for w, _ in zip(val.windows(L), range(args.windows), strict=False)])
    g = torch.Generator().manual_seed(0)
    sch = SqrtSchedule()

    def ce(z: torch.Tensor) -> float:
        return float(F.cross_entropy(decode_logits(model, cfg, z, L).flatten(0, 1), x.flatten()))

    with torch.no_grad():
        z = encode(model, cfg, x)  # (B, K, D), unit RMS
        mean = z.mean(dim=0, keepdim=True)  # (1, K, D): the best constant
        out = {
            "model": args.model,
            "mean_energy": float(mean.pow(2).mean() / z.pow(2).mean()),
            "coord_std": [float(v) for v in z.std(dim=0).quantile(torch.tensor([0, 0.5, 1]))],
            "decode_ce_at_noise": {
                s: ce(z + s * torch.randn(z.shape, generator=g)) for s in (0, 0.1, 0.3, 0.5, 1)
            },
            "times": [],
        }
        for t in TIMES:
            tt = torch.full((z.shape[0],), t)
            zt = sch.q_sample(z, tt, g)
            z0, _ = denoise(model, cfg, zt, tt, L)
            if cfg.latent_self_condition:  # as the sampler runs it: refine a first estimate
                z0, _ = denoise(model, cfg, zt, tt, L, z0)
            out["times"].append({
                "t": t, "mse": float((z0 - z).pow(2).mean()),
                "mse_mean": float((mean - z).pow(2).mean()),
                "decode_ce": ce(z0), "decode_ce_rms": ce(rms_normalize(z0)),
            })  # fmt: skip
    print(f"{args.model}: the mean latent holds "
          f"{out['mean_energy']:.3f} of the energy; coordinate std min/median/max "
          + " / ".join(f"{v:.2f}" for v in out["coord_std"]))  # fmt: skip
    print("decode CE at noise " + ", ".join(
        f"{s}: {v:.3f}" for s, v in out["decode_ce_at_noise"].items()))  # fmt: skip
    print("| t | mse | mse_mean | decode_ce | decode_ce_rms |")
    print("|---:|---:|---:|---:|---:|")
    for r in out["times"]:
        print(f"| {r['t']} | {r['mse']:.3f} | {r['mse_mean']:.3f} | {r['decode_ce']:.3f} "
              f"| {r['decode_ce_rms']:.3f} |")  # fmt: skip
    if args.json:
        write_results(args.json, out)  # whole or not at all
    return 0


if __name__ == "__main__":
    from _common import run

    run(main)
