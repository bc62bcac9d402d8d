"""``unmask demo``: the shipped demo model, generating and filling blanks, live.

``unmask demo`` loads the checkpoint packaged in ``unmask/assets/demo`` (no network).
``unmask demo --train`` first prepares the packaged corpus and trains the same model
from scratch with a progress bar, then shows the same showcase on it.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from unmask.commands import (
    add_model_flag,
    add_no_live_flag,
    add_runtime_flags,
    add_seed_flag,
    positive_int,
)
from unmask.errors import UserError
from unmask.files import asset_path
from unmask.messages import plural

PROMPTS = ("In the beginning, God", "Jesus said to his disciples,", "Yahweh is my shepherd;")
# Fill-in-the-blank templates: [MASK:a-b] is a gap of a to b tokens; the length is chosen
# by the model's own likelihood (unmask.infill). The space before an unconstrained gap
# moves inside it, since BPE tokens carry their leading space (docs/infill.md).
BLANKS = (
    "Yahweh is my [MASK:1-3]; I shall lack nothing.",
    "Honor your father and your [MASK:1-3].",
)
OWN_TEXT = (
    "Train on your own text: unmask prepare my.txt --out data/mine && "
    "unmask train --data data/mine --out runs/mine --preset demo && "
    'unmask generate --model runs/mine "Once upon a time"'
)


@dataclass(kw_only=True)
class DemoTrainPlan:
    """How ``unmask demo --train`` trains: sized to finish within ~15 minutes on 2 CPU cores
    (about 12 measured, README)."""

    preset: str = "demo"
    steps: int = 500
    batch_size: int = 16
    seq_len: int = 256
    lr: float = 2e-3
    warmup: int = 100
    vocab_size: int = 4096
    time_limit: float = 13.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="show the shipped demo model generating and filling blanks",
        description="Generate and fill in blanks with the demo model shipped with unmask (no "
                    "network).",
    )
    p.add_argument("--train", action="store_true",
                   help="first train the demo model from scratch on the packaged corpus (about 12 "
                        "min on 2 CPU cores, at most 13 of training)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="run directory for --train (default: runs/demo-train)")
    add_model_flag(p, required=False, default_help="the shipped demo model")
    p.add_argument("--gen-length", type=int, default=48, metavar="N",
                   help="tokens to generate per prompt (default: 48)")
    p.add_argument("--steps", type=positive_int, default=None, metavar="N",
                   help="denoising steps (default: the generation length)")
    add_seed_flag(p, what="sampling", default=0)
    # Not given: the model's own recommendation (sample_defaults in its config.json, chosen by
    # generative perplexity vs diversity: benchmarks/defaults.py, TRAINING.md), as generate.
    p.add_argument("--temperature", type=float, default=None, metavar="X",
                   help="Gumbel-max temperature (default: the model's recommendation)")
    p.add_argument("--block-length", type=int, default=None, metavar="N",
                   help="semi-autoregressive block length (default: the model's recommendation)")
    p.add_argument("--repetition-penalty", type=float, default=None, metavar="R",
                   help="penalty on tokens already in the text, > 0, 1 = off (default: the "
                        "model's recommendation)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=None, metavar="N",
                   help="never repeat an n-gram of this many tokens, 0 = off (default: the "
                        "model's recommendation)")
    add_no_live_flag(p)
    add_runtime_flags(p, decodes=True)
    p.set_defaults(func=run)


def train_demo(out: str, *, plan: DemoTrainPlan | None = None, progress: bool = True) -> Path:
    """Prepare the packaged corpus into ``out/data`` and train the demo preset into ``out``;
    when the time limit stops it short of its steps, one line on stderr says where and how to
    finish. ``TrainingStopped`` (Ctrl-C) as ``unmask.train.train`` raises it."""
    from unmask.checkpoint import checkpoint_dir
    from unmask.config import TrainConfig
    from unmask.data import prepare
    from unmask.train import train
    from unmask.train_guards import saved_progress

    plan = plan or DemoTrainPlan()
    run = Path(out)
    if run.exists() and any(run.iterdir()):
        raise UserError(f"{run} already exists; choose another --out or remove it")
    data = run.parent / f"{run.name}-data"
    if not (data / "index.json").is_file():
        print(f"preparing the demo corpus into {data} ...", file=sys.stderr)
        prepare([asset_path("web-bible.txt.gz")], data, vocab_size=plan.vocab_size,
                val_fraction=0.02, progress=progress)
    cfg = TrainConfig(
        data=str(data), out=str(run), preset=plan.preset, seq_len=plan.seq_len,
        batch_size=plan.batch_size,
        steps=plan.steps, lr=plan.lr, warmup=plan.warmup, ema=0.99, eval_every=100, eval_batches=4,
        save_every=100, time_limit=plan.time_limit, seed=0,
    )
    print(f"training the demo model: {plan.steps} steps of {plan.batch_size}×{plan.seq_len} tokens "
          f"(stops after {plan.time_limit:g} min at the latest; Ctrl-C saves and stops)",
          file=sys.stderr)
    done = train(cfg, progress=progress)
    step = saved_progress(checkpoint_dir(done)).step
    if step < plan.steps:
        print(f"unmask demo: the {plan.time_limit:g}-min limit stopped training at step {step} "
              f"of {plan.steps}, so the model below is less trained; finish it with: unmask "
              f"train --resume --out {done} --time-limit 0{_show(done)}", file=sys.stderr)
    return done


def _show(run: Path) -> str:
    """The end of a hint about a demo run: how to show it once trained."""
    return f", then: unmask demo --model {run}"


def run(args: argparse.Namespace) -> int:

    from unmask import api
    from unmask.checkpoint import shipped_model
    from unmask.config import SampleConfig, resolve_device
    from unmask.sampling import LiveView

    if args.gen_length <= 0:
        raise UserError(f"--gen-length must be positive, got {args.gen_length}")
    if args.block_length is not None and args.block_length <= 0:
        raise UserError(f"--block-length must be positive, got {args.block_length}")
    if args.out is not None and not args.train:
        raise UserError("--out is where --train puts its run; give --train too")
    if args.train:
        from unmask.train_guards import TrainingStopped, resume_hint

        try:
            path: Path | str = train_demo(args.out or "runs/demo-train")
        except TrainingStopped as e:  # saved: say where, and how to go on (as unmask train)
            hint = resume_hint(e, "train")
            print(f"unmask demo: {e}{hint}{_show(e.run) if hint else ''}", file=sys.stderr)
            return e.exit_code
    elif args.model:
        path = args.model
    else:
        path = shipped_model("demo")
    m = api.load_for_decoding(path, device=str(resolve_device(args.device)), dtype=args.dtype)
    tok, cfg = m.tokenizer, m.config
    steps = args.steps or args.gen_length
    flags = {"temperature": args.temperature, "block_length": args.block_length,
             "repetition_penalty": args.repetition_penalty,
             "no_repeat_ngram_size": args.no_repeat_ngram_size}
    given = {k: v for k, v in flags.items() if v is not None}
    configs = [api.sample_config(m, {"gen_length": args.gen_length, "steps": steps,
                                     "seed": args.seed + i, **given})
               for i in range(1, len(PROMPTS) + 1)]
    # a bad flag is refused before any output (the configs differ only in their seed)
    api.start(m, [api.encode_prompt(tok, max(PROMPTS, key=len))], configs[0])
    n_params = sum(p.numel() for p in m.model.parameters())
    print(f"unmask demo: a {n_params / 1e6:.1f}M-parameter masked diffusion LM "
          f"({cfg.n_layers} layers, d={cfg.d_model}, {api.weights_dtype(m)} weights) trained on "
          "the World English Bible\n")
    live_ok = not args.no_live and _terminal()

    def show(title: str, prompt: str, config: SampleConfig) -> None:
        print(title)
        view = LiveView(tok, start=0, total_steps=config.steps, enabled=live_ok)
        try:
            res = api.generate(m, prompt, config=config, step_callback=view)
        finally:  # Ctrl-C too: the frame goes, the one line starts on a line of its own
            view.close(clear=True)
        n, dt, text = config.gen_length, res.seconds, res.texts[0]
        print(f"  {prompt}\x1b[1m{text}\x1b[0m" if _color() else f"  {prompt}[{text}]")
        print(f"  {n} tokens, {res.steps} steps, NFE {res.nfe}, {dt:.2f} s, "
              f"{n / dt:,.0f} tokens/s\n")

    for i, (prompt, config) in enumerate(zip(PROMPTS, configs, strict=True), 1):
        show(f"[{i}/{len(PROMPTS) + len(BLANKS)}] continue: {prompt!r}", prompt, config)
    for j, template in enumerate(BLANKS, len(PROMPTS) + 1):
        shown = re.sub(r" ?\[MASK:[0-9-]+\]", " ____", template)
        print(f"[{j}/{len(PROMPTS) + len(BLANKS)}] fill in the blank: {shown}")
        view = LiveView(tok, start=0, enabled=live_ok)
        try:
            filled = api.infill(m, template, config=SampleConfig(steps=8, seed=args.seed),
                                step_callback=view)
        finally:
            view.close(clear=True)
        res, dt = filled.detail, filled.seconds
        text, n = res.text, sum(len(g.tokens) for g in res.gaps)
        if _color():  # the filled gaps in bold
            for g in sorted(res.gaps, key=lambda g: -g.start):
                text = f"{text[: g.start]}\x1b[1m{text[g.start : g.end]}\x1b[0m{text[g.end :]}"
        else:
            for g in sorted(res.gaps, key=lambda g: -g.start):
                text = f"{text[: g.start]}[{text[g.start : g.end]}]{text[g.end :]}"
        tried = len(res.candidates) if res.candidates else 1
        print(f"  {text}")
        print(f"  {plural(n, 'token')} chosen among {plural(tried, 'candidate length')}, "
              f"NFE {res.nfe}, {dt:.2f} s\n")
    print(OWN_TEXT)
    return 0


def _terminal() -> bool:
    """Whether stdout is a terminal that takes escape codes, as ``LiveView`` decides."""
    from unmask.sampling.live import is_terminal

    return is_terminal(sys.stdout)


def _color() -> bool:
    import os

    return _terminal() and not os.environ.get("NO_COLOR")
