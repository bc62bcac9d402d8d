"""``unmask demo``: the shipped demo model, generating and filling blanks, live.

``unmask demo`` loads the checkpoint packaged in ``unmask/assets/demo`` (no network).
``unmask demo --train`` first prepares the packaged corpus and trains the same model
from scratch with a progress bar, then shows the same showcase on it. ``unmask demo
--model RUN`` shows a checkpoint of any family what it can do (``plan_showcase``): every
family continues the prompts (a chat checkpoint answers them, a latent one samples from
noise); the blanks are filled where the family can fill them, else one line says why.

Inside: ``Showcase``, ``plan_showcase``, ``DemoTrainPlan``, ``train_demo``, ``check_flags``,
``run``.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from shlex import quote
from typing import Any

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
from unmask.terminal import shown_text

PROMPTS = ("In the beginning, God", "Jesus said to his disciples,", "Yahweh is my shepherd;")
# Fill-in-the-blank templates: [MASK:a-b] is a gap of a to b tokens; the length is chosen
# by the model's own likelihood (unmask.infill). The space before an unconstrained gap
# moves inside it, since BPE tokens carry their leading space (docs/infill.md).
BLANKS = (
    "Yahweh is my [MASK:1-3]; I shall lack nothing.",
    "Honor your father and your [MASK:1-3].",
)
ANSWERS = ("shepherd", "mother")
"""The words of the verses in ``BLANKS``: a family that fills fixed-length gaps only gets
gaps of their length."""
# A chat checkpoint (fine-tuned with --objective sft) answers these as user messages.
CHAT_PROMPTS = ("Who created the heavens and the earth?", "What did Jesus teach his disciples?",
                "Who is my shepherd?")
DEFAULT_GEN_LENGTH = 48
OWN_TEXT = (
    "Train on your own text: {unmask} prepare my.txt --out data/mine && "
    "{unmask} train --data data/mine --out runs/mine --preset demo && "
    '{unmask} generate --model runs/mine "Once upon a time"'
)
"""The demo's last line (``{unmask}``: ``invoked_as``)."""


def invoked_as(argv0: str | None = None) -> str:
    """How to type the program again in this shell: ``unmask`` where that finds this program
    on ``PATH``, else the path it was run by (``.venv/bin/unmask demo``, as install.sh says
    to run it, with the environment not activated: ``unmask prepare`` there is "command not
    found"). ``argv0``: default ``sys.argv[0]``. ``python -m unmask`` (this package's own
    ``__main__.py``, not pytest's or a folder ``foounmask``'s; for an environment whose
    scripts folder is not on ``PATH``) is ``unmask`` where the ``unmask`` on ``PATH`` is this
    Python's, else ``PYTHON -m unmask`` with this Python (``python`` where Python cannot tell
    which it is: ``sys.executable`` empty or None)."""
    import os
    import shutil

    argv0 = sys.argv[0] if argv0 is None else argv0
    if _same(argv0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "__main__.py")):
        exe = sys.executable or ""  # "" or None where Python cannot tell which it is
        found, mine = shutil.which("unmask"), os.path.dirname(exe)
        return "unmask" if found is not None and _same(os.path.dirname(found), mine) \
            else f"{quote(exe or 'python')} -m unmask"
    if os.path.basename(argv0) != "unmask" or os.sep not in argv0:
        return "unmask"
    found = shutil.which("unmask")
    return "unmask" if found is not None and _same(found, argv0) else quote(argv0)


def _same(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name the same file or folder (False where either is
    gone)."""
    import os

    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


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
                    "network), or with any checkpoint (--model RUN): each family shows what it "
                    "can do, and a family that fills no blanks says why in one line.",
    )
    p.add_argument("--train", action="store_true",
                   help="first train the demo model from scratch on the packaged corpus (about 12 "
                        "min on 2 CPU cores, at most 13 of training)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="run directory for --train (default: runs/demo-train)")
    add_model_flag(p, required=False, default_help="the shipped demo model")
    p.add_argument("--gen-length", type=int, default=None, metavar="N",
                   help=f"tokens to generate per prompt (default: {DEFAULT_GEN_LENGTH}, or as many "
                        "as fit after the prompt; a latent diffusion model: its window)")
    p.add_argument("--steps", type=positive_int, default=None, metavar="N",
                   help="denoising steps (default: the checkpoint's recommended steps, else "
                        "--gen-length: one token per step)")
    add_seed_flag(p, what="sampling", default=0)
    # Not given: the model's own recommendation (sample_defaults in its config.json, chosen by
    # generative perplexity vs diversity: benchmarks/defaults.py, TRAINING.md), as generate.
    p.add_argument("--temperature", type=float, default=None, metavar="X",
                   help="Gumbel-max temperature of the continuations (default: the model's "
                        "recommendation; the blanks are filled greedily)")
    p.add_argument("--block-length", type=int, default=None, metavar="N",
                   help="semi-autoregressive block length (default: the model's recommendation)")
    p.add_argument("--repetition-penalty", type=float, default=None, metavar="X",
                   help="penalty on tokens already in the text, > 0, 1 = off (default: the "
                        "model's recommendation)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=None, metavar="N",
                   help="never repeat an n-gram of this many tokens, 0 = off (default: the "
                        "model's recommendation)")
    add_no_live_flag(p)
    add_runtime_flags(p, decodes=True)
    # a first run waits seconds for torch to import (more on a cold disk) before any output
    p.set_defaults(func=run, check_flags=check_flags,
                   starting_note="starting (loading torch and the model)")


def train_demo(out: str, *, plan: DemoTrainPlan | None = None, progress: bool = True) -> Path:
    """Prepare the packaged corpus into ``OUT-data`` beside ``out`` (kept when ``out`` is
    removed, so a second run skips it) and train the demo preset into ``out``;
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
        trained = (run / "checkpoint" / "config.json").is_file()  # a run: say how to show it
        unmask, where = invoked_as(), quote(str(run))
        hint = (f" (a run: show it with {unmask} demo --model {where}, or train it on with "
                f"{unmask} train --resume --out {where})" if trained else "")
        raise UserError(f"{run} already exists{hint}; choose another --out or remove it")
    data = run.parent / f"{run.name}-data"
    if not (data / "index.json").is_file():
        corpus = asset_path("web-bible.txt.gz")
        if not corpus.is_file():  # was prepare's "...: no such file or directory"
            raise UserError(f"the demo corpus is not in this install (no {corpus}): "
                            "reinstall unmask")
        print(f"preparing the demo corpus into {data} ...", file=sys.stderr)
        prepare([corpus], data, vocab_size=plan.vocab_size, val_fraction=0.02,
                progress=progress)
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
              f"of {plan.steps}, so the model below is less trained; finish it with: "
              f"{invoked_as()} train --resume --out {quote(str(done))} --time-limit 0"
              f"{_show(done)}", file=sys.stderr)
    return done


def _show(run: Path) -> str:
    """The end of a hint about a demo run: how to show it once trained, as the program can be
    typed again (``invoked_as``: ``.venv/bin/unmask`` where the README's first command ran it,
    and ``unmask`` is "command not found")."""
    return f", then: {invoked_as()} demo --model {quote(str(run))}"


@dataclass(frozen=True, kw_only=True)
class Showcase:
    """What the demo shows a checkpoint doing, chosen once from its facts before any output:
    every family generates; the blanks are filled the way the family can, or skipped in one
    line that says why and what fills blanks instead."""

    family: str
    """What the model is, for the banner (``a masked diffusion LM``)."""
    prompts: tuple[str, ...]
    """The prompts continued (a chat model: user messages; a latent model: empty ones)."""
    chat: bool = False
    """The prompts are user messages, rendered by the model's chat template."""
    blanks: tuple[str, ...] = ()
    """The templates filled; empty when the family fills none (``skip`` says why)."""
    how: str = "elbo"
    """How the blanks get their length: ``elbo`` (the model's likelihood picks among the
    range), ``fim`` (an AR model ends the middle itself), ``fixed`` (the original word's
    length: the family fills fixed-length gaps only)."""
    skip: str = ""
    """Why the blanks are skipped, and what fills blanks instead."""


def plan_showcase(loaded: Any, name: str) -> Showcase:
    """The showcase of ``loaded`` (a checkpoint of any family ``unmask train`` writes or
    ``unmask convert`` imports); ``name`` is how the user named it, for the hints."""
    from unmask.api import facts_of, infill_decoder, refuse_continuous

    facts, cfg = facts_of(loaded), loaded.config
    decoder, objective = facts.default_decoder, facts.objective
    if decoder == "latent-diffusion":
        return Showcase(family="latent diffusion LM", prompts=("",) * len(PROMPTS),
                        skip="a latent diffusion model samples whole windows from noise and "
                             "fills no blanks; a masked diffusion model does (unmask demo)")
    chat = bool(facts.chat_template)
    prompts = CHAT_PROMPTS if chat else PROMPTS
    tuned = " fine-tuned for chat" if chat else ""
    if facts.attention == "causal":
        if decoder == "hybrid":
            family = (f"hybrid autoregressive/diffusion LM (TiDAR, drafts of "
                      f"{facts.draft_block}){tuned}")
            fim = "--init a hybrid from an ar run trained with --fim-rate 0.5"
        else:
            family = f"autoregressive (causal) LM{tuned}"
            fim = "train one with unmask train --objective ar --fim-rate 0.5"
        if getattr(cfg, "has_fim", False):
            return Showcase(family=f"{family} trained for fill-in-the-middle", prompts=prompts,
                            chat=chat, blanks=BLANKS, how="fim")
        return Showcase(family=family, prompts=prompts, chat=chat,
                        skip=f"this {'hybrid' if decoder == 'hybrid' else 'autoregressive'} "
                             "model writes left to right and was not trained for fill-in-the-"
                             f"middle; {fim} to fill blanks, or use a masked diffusion model "
                             "(unmask demo)")
    family = _FAMILIES.get(objective, "masked diffusion LM")
    if objective == "bd3lm":
        family = f"{family} (BD3-LM, blocks of {facts.block_size})"
    elif facts.sedd_graph is not None:
        family = f"{family} (SEDD, {facts.sedd_graph} graph)"
    family += tuned
    if facts.sedd_graph == "uniform":
        return Showcase(family=family, prompts=prompts, chat=chat,
                        skip="a uniform-graph SEDD model never saw a [MASK] gap to fill; write "
                             f"[MASK] per token in a prompt instead: unmask generate --model "
                             f"{quote(name)} {quote('Yahweh is my [MASK]; I shall lack nothing.')}")
    own = infill_decoder(loaded)  # embed-diffusion, a time-conditioned SEDD: fixed lengths
    if own is None:
        try:  # a checkpoint the commit loop cannot run: its line
            refuse_continuous(loaded, "infill")
        except UserError as e:
            return Showcase(family=family, prompts=prompts, chat=chat, skip=str(e))
    if facts.attention != "bidirectional" or own is not None:
        fixed = tuple(_fixed(t, w, loaded.tokenizer) for t, w in zip(BLANKS, ANSWERS, strict=True))
        return Showcase(family=family, prompts=prompts, chat=chat, blanks=fixed, how="fixed")
    return Showcase(family=family, prompts=prompts, chat=chat, blanks=BLANKS)


_FAMILIES = {
    "bd3lm": "block diffusion LM",
    "sedd": "score-entropy discrete diffusion LM",
    "embed-diffusion": "continuous (embedding) diffusion LM",
}


def _fixed(template: str, word: str, tokenizer: Any) -> str:
    """``template`` with its gap as long as ``word`` (its leading space included where the
    tokenizer joins spaces to words, as the gap takes the space before it: docs/infill.md)."""
    from unmask.infill.template import joins_spaces

    n = len(tokenizer.encode(f" {word}" if joins_spaces(tokenizer) else word))
    return re.sub(r"\[MASK:[0-9-]+\]", f"[MASK:{max(n, 1)}]", template)


def _label(n_params: int) -> str:
    """A parameter count as the banner writes it: 5.5M, or 39K for a test-sized model."""
    return f"{n_params / 1e6:.1f}M" if n_params >= 100_000 else f"{n_params / 1e3:.0f}K"


def run(args: argparse.Namespace) -> int:
    from unmask.files import require_stdout

    require_stdout("the demo's showcase")  # print() would drop it (`>&-`), after the run
    check_flags(args)  # for a caller of run() itself; the command line checked before torch
    from unmask import api
    from unmask.checkpoint import checkpoint_dir, shipped_model
    from unmask.commands.sample_options import note_empty_steps

    if args.train:
        from unmask.train_guards import TrainingStopped, resume_hint

        try:  # the options are refused before minutes of training, on the same preset
            shipped = shipped_model("demo")
        except UserError:  # not in this install: checked on the trained model instead
            pass
        else:
            _prepare(api.load_for_decoding(shipped, device="cpu"), args, str(shipped))
        try:
            path: Path | str = train_demo(args.out or "runs/demo-train")
        except TrainingStopped as e:  # saved: say where, and how to go on (as unmask train)
            hint = resume_hint(e, "train", program=invoked_as())
            print(f"unmask demo: {e}{hint}{_show(e.run) if hint else ''}", file=sys.stderr)
            return e.exit_code
    elif args.model:
        path = args.model
    else:
        path = shipped_model("demo")
    m = api.load_for_decoding(path, device=_device(args), dtype=args.dtype)
    show, configs, template = _prepare(m, args, str(args.model or path))
    cfg = m.config
    bible = args.train or checkpoint_dir(path) == checkpoint_dir(asset_path("demo"))
    n_params = sum(p.numel() for p in m.model.parameters())
    print(f"unmask demo: a {_label(n_params)}-parameter {show.family} ({cfg.n_layers} layers, "
          f"d={cfg.d_model}, {api.weights_dtype(m)} weights) "
          + ("trained on the World English Bible" if bible else f"from {path}") + "\n")
    decoder = api.choose(m, configs[0])
    print(legend(_color(), decoder) + "\n")
    note_empty_steps("unmask demo", configs[0], decoder,
                     [_prompt_ids(m, p, template) for p in show.prompts], m.tokenizer.mask_id,
                     skip_flag=False)
    live_ok = not args.no_live and _terminal()
    total = len(show.prompts) + len(show.blanks)
    for i, (prompt, config) in enumerate(zip(show.prompts, configs, strict=True), 1):
        _continue(m, f"[{i}/{total}]", prompt, config, template, live_ok)
    for j, blank in enumerate(show.blanks, len(show.prompts) + 1):
        shown = re.sub(r" ?\[MASK:[0-9-]+\]", " ____", blank)
        print(f"[{j}/{total}] fill in the blank: {shown}")
        _fill(m, blank, show.how, args.seed, live_ok)
    if show.skip:
        print(f"fill in the blank: skipped; {show.skip}\n")
    unmask = invoked_as()
    if args.model and not bible:  # the user's own model: the command that runs it
        own = "" if show.chat else ' ""' if not show.prompts[0] else ' "Once upon a time"'
        command = "chat" if show.chat else "generate"
        print(f"Try it: {unmask} {command} --model {quote(args.model)}{own}")
    print(OWN_TEXT.format(unmask=unmask))
    return 0


def check_flags(args: argparse.Namespace) -> None:
    """Refuse flags that are wrong whatever the model, without importing torch:
    ``--gen-length`` or ``--block-length`` below 1, ``--out`` without ``--train``, ``--train``
    with ``--model``, and the sampling options ``SampleConfig`` refuses on their own
    (``--temperature -1``, ``--no-repeat-ngram-size -1``).
    The command line runs it before torch loads (an argument error took seconds: torch and
    the model loaded first); the model's own checks follow in ``run``."""
    from unmask.config import SampleConfig

    if args.out is not None and not args.train:
        raise UserError("--out is where --train puts its run; give --train too")
    if args.train and args.model:
        raise UserError("--train shows the model it trains; --model shows another: give one")
    SampleConfig(**_given(args))  # --gen-length 0, --block-length 0, --temperature -1, ...


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling options given on the command line, as ``SampleConfig`` fields."""
    flags = {"gen_length": args.gen_length, "steps": args.steps,
             "temperature": args.temperature, "block_length": args.block_length,
             "repetition_penalty": args.repetition_penalty,
             "no_repeat_ngram_size": args.no_repeat_ngram_size}
    return {k: v for k, v in flags.items() if v is not None}


def legend(color: bool, decoder: str = "llada") -> str:
    """What the showcase's marks and numbers mean, printed once under the banner: a first run
    showed "48 tokens, 48 steps, NFE 48" and text [in brackets] with no word on either. What a
    step is depends on ``decoder`` (the one the continuations run, ``unmask.api.choose``): the
    commit loop's "fewer --steps commit more per step" is wrong for a causal checkpoint
    (``--steps`` is refused there) and for SEDD and the continuous decoders."""
    import textwrap

    marked = "in bold" if color else "[in brackets]"
    steps = _STEP_WORDS.get(decoder, _STEP_WORDS["llada"])
    return textwrap.fill(f"The model's text is {marked}; under it: the tokens written, {steps}, "
                         "NFE (forward passes of the model) and the time.", width=92)


_COMMIT_STEPS = ("the denoising steps (each commits the masked tokens the model is surest of; "
                 "fewer --steps commit more per step: faster, rougher)")
_STEP_WORDS = {
    "llada": _COMMIT_STEPS,
    "bd3lm": _COMMIT_STEPS,
    "sedd": "the denoising steps (each moves the whole text one step back along the model's "
            "reverse process, unmasking some tokens; fewer --steps take bigger steps: faster, "
            "rougher)",
    "embed-diffusion": "the denoising steps (each takes some of the noise off the written "
                       "tokens' embeddings; fewer --steps take bigger steps: faster, rougher)",
    "latent-diffusion": "the denoising steps (each takes some of the noise off the whole "
                        "window's latents; fewer --steps take bigger steps: faster, rougher)",
    "ar": "the steps (one forward pass per token: a causal model writes left to right)",
    "hybrid": "the steps (one forward pass each, which checks the tokens drafted last step and "
              "drafts the next ones: one token or more per step)",
    "speculative": "the steps (one forward pass of the causal model each, which checks the "
                   "drafter's tokens: one token or more per step)",
}
"""What one step of each decoder is, for ``legend`` (a decoder not listed: the commit
loop's words)."""


def _device(args: argparse.Namespace) -> str:
    from unmask.config import resolve_device

    return str(resolve_device(args.device))


def _prepare(m: Any, args: argparse.Namespace, name: str) -> tuple[Showcase, list[Any], Any]:
    """The showcase of ``m``, the sampling config of each continuation (the options given,
    the model's recommendation for the rest) and its chat template (None: plain prompts);
    an option the model's decoder cannot take is refused here, before any output."""
    from unmask import api
    from unmask.api import facts_of

    show = plan_showcase(m, name)
    given = _given(args)
    template = api.chat_template(m) if show.chat else None
    ids = _prompt_ids(m, max(show.prompts, key=len), template)
    if show.prompts[0]:  # a latent model samples its window (no prompt)
        room = _room(m, len(ids), name)
        if "gen_length" not in given:
            given["gen_length"] = _fitting(m, room)
        elif room is not None and room < given["gen_length"]:  # the demo has no other way
            raise UserError(f"--gen-length {given['gen_length']}: this model's rows hold "
                            f"{facts_of(m).max_seq_len} tokens and the demo's longest prompt "
                            f"takes {len(ids)}; use --gen-length <= {room}")
    # steps not given fit the blocks each prompt leaves (a checkpoint whose blocks start at
    # the first prompt token: api.fit_block_steps), as generate fits them
    configs = [api.sample_config(m, {**given, "seed": args.seed + i},
                                 prompt_lengths=api.prompt_lengths(m, prompt, template=template))
               for i, prompt in enumerate(show.prompts, 1)]
    for prompt, config in zip(show.prompts, configs, strict=True):  # refused before any output
        api.start(m, [_prompt_ids(m, prompt, template)], config)
    return show, configs, template


def _prompt_ids(m: Any, prompt: str, template: Any) -> list[int]:
    """The ids of one showcase prompt: a user message through ``template`` where given (a
    chat checkpoint), else the text (``api.encode_prompt``: after a published model's BOS,
    as ``api.prompt_lengths`` counts it)."""
    from unmask import api

    if template is not None:
        return template.prompt(m.tokenizer, [{"role": "user", "content": prompt}])[1]
    return api.encode_prompt(m.tokenizer, prompt, facts=api.facts_of(m))


def _room(m: Any, prompt_len: int, name: str) -> int | None:
    """The most tokens the model's canvas holds after the longest prompt (a model trained with
    a short --seq-len), whole blocks of a block-diffusion model as its decoder writes them
    (``room_after_prompt`` after ``ModelFacts.prompt_columns``: an empty prompt's start token
    counted; None: no limit known); none fitting is one line."""
    from unmask.api import facts_of
    from unmask.sampling.blocks import absolute_blocks, room_after_prompt

    facts = facts_of(m)
    columns = facts.prompt_columns(prompt_len, facts.default_decoder)  # the demo's decoder
    room = room_after_prompt(columns, facts.max_seq_len, block_size=facts.block_size,
                             absolute=absolute_blocks(m))
    if room is not None and room <= 0:
        raise UserError(f"this model's rows hold {facts.max_seq_len} tokens, and the demo's "
                        f"longest prompt takes {prompt_len}: no room to write after it; try "
                        f"unmask generate --model {quote(name)} with a shorter prompt")
    return room


def _fitting(m: Any, room: int | None) -> int:
    """The demo's own length (``DEFAULT_GEN_LENGTH``), or less where ``room`` is smaller; whole
    blocks, at least one, of a bd3lm model (its decoder refuses a length that is not; its
    ``room`` is whole blocks too)."""
    from unmask.api import facts_of
    from unmask.sampling.blocks import absolute_blocks

    want, block = DEFAULT_GEN_LENGTH, facts_of(m).block_size
    if block and not absolute_blocks(m):
        want = max(block, want - want % block)
    return want if room is None else min(want, room)


def _continue(m: Any, n: str, prompt: str, config: Any, template: Any, live_ok: bool) -> None:
    """Show one continuation (a chat reply, or a sample from noise), live where it can."""
    from unmask import api
    from unmask.sampling import LiveView

    if template is not None:
        print(f"{n} chat: {prompt!r}")
    elif prompt:
        print(f"{n} continue: {prompt!r}")
    else:
        print(f"{n} sample from noise (a latent diffusion model takes no prompt)")
    view = LiveView(m.tokenizer, start=0, total_steps=config.steps, enabled=live_ok)
    try:
        res = api.generate(m, prompt, config=config, template=template, step_callback=view)
    finally:  # Ctrl-C too: the frame goes, the one line starts on a line of its own
        view.close(clear=True)
    n_tokens, dt, text = res.n_tokens, res.seconds, shown_text(res.texts[0])  # no raw ESC
    shown = f"\x1b[1m{text}\x1b[0m" if _color() else f"[{text}]"
    print(f"  User: {prompt}\n  Assistant: {shown}" if template is not None
          else f"  {prompt}{shown}")
    rate = f", {shown_rate(n_tokens / dt)} tokens/s" if dt > 0 else ""
    print(f"  {plural(n_tokens, 'token')}, {res.steps} steps, NFE {res.nfe}, {dt:.2f} s{rate}\n")


def shown_rate(per_s: float) -> str:
    """A rate as the showcase writes it: whole numbers from 10 on (``1,234``), two significant
    digits below (``0.33``): 8 tokens over 1000 steps in 24 s read "0 tokens/s"."""
    return f"{per_s:,.0f}" if per_s >= 10 else f"{per_s:.2g}"


def _fill(m: Any, template: str, how: str, seed: int, live_ok: bool) -> None:
    """Fill the gaps of one template and show them, and how their lengths were chosen."""
    from unmask import api
    from unmask.config import SampleConfig
    from unmask.sampling import LiveView

    view = LiveView(m.tokenizer, start=0, enabled=live_ok)
    try:
        filled = api.infill(m, template, config=SampleConfig(steps=8, seed=seed),
                            step_callback=view)
    finally:
        view.close(clear=True)
    res, dt = filled.detail, filled.seconds
    text, n = res.text, sum(len(g.tokens) for g in res.gaps)
    for g in sorted(res.gaps, key=lambda g: -g.start):  # the filled gaps in bold, or [in]
        inner = shown_text(text[g.start : g.end])  # as generate prints a model's text
        inner = f"\x1b[1m{inner}\x1b[0m" if _color() else f"[{inner}]"
        text = f"{text[: g.start]}{inner}{text[g.end :]}"
    if how == "fim":
        chosen = ", a length the model chose by ending the middle (fill-in-the-middle)"
    elif how == "fixed":
        chosen = ", as long as the verse's own word (this model fills fixed-length gaps only)"
    else:
        tried = len(res.candidates) if res.candidates else 1
        chosen = f" chosen among {plural(tried, 'candidate length')}"
    print(f"  {text}")
    print(f"  {plural(n, 'token')}{chosen}, NFE {res.nfe}, {dt:.2f} s\n")


def _terminal() -> bool:
    """Whether stdout is a terminal that takes escape codes, as ``LiveView`` decides."""
    from unmask.terminal import is_terminal

    return is_terminal(sys.stdout)


def _color() -> bool:
    import os

    return _terminal() and not os.environ.get("NO_COLOR")
