"""What every sampling command shares: the ``SampleConfig`` flags and the live view.

``add_sample_flags`` / ``sample_config_from_args`` (one ``--flag`` per ``SampleConfig``
field), ``check_sample_flags`` (their refusals that need no torch), ``add_draft_flag`` /
``check_draft_flags`` / ``load_draft`` (``--draft PATH``, speculative decoding),
``make_live`` (a ``LiveView`` over the generation region when stdout is a terminal),
``with_seed`` (the seed a sampled run draws and reports) and ``note_empty_steps`` (the note
on steps past the masked tokens). ``unmask generate``, ``unmask chat`` and the infill
commands import them from here, so no command module imports another."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from unmask.commands import add_dataclass_flags, dataclass_from_args, model_choice
from unmask.config import (
    CACHE_NAMES,
    CONFIDENCE_NAMES,
    DECODE_COMPILES,
    DECODER_NAMES,
    DRAFT_CACHES,
    POLICY_NAMES,
    PREDRAFTS,
    PROMPT_MASKS,
    REMASKING_NAMES,
    SEDD_POLICY_ALIASES,
    SEDD_SAMPLERS,
    SampleConfig,
)
from unmask.errors import UserError


def _registry(module: str, name: str, builtin: tuple[str, ...],
              *extra: str) -> Callable[[], list[str]]:
    """The names of registry ``name`` of ``module`` (a module of ``unmask.sampling``, or the
    package), read only when its flag is given, without importing it (``registered_names``:
    ``--help`` and parsing stay torch-free; the registries live in torch modules), plus
    ``extra``."""

    def names() -> list[str]:
        return sorted({*registered_names(module, name, builtin), *extra})

    return names


def registered_names(module: str, registry: str, builtin: tuple[str, ...]) -> list[str]:
    """The names registered in ``registry`` (a dict) of ``module``, sorted: where ``module``
    is already imported, its registry as it is (entries a program registered at run time
    included); else ``builtin``, the torch-free tuple of ``unmask.config`` that names the
    built-in entries (``DECODER_NAMES``, ``POLICY_NAMES``, ...; the registry registers exactly
    these, a test checks). So the command line checks ``--policy Threshold`` against the
    registry's names without importing torch (importing ``unmask.sampling`` loads it). They
    were read from the registries' source by pattern, which missed
    ``@register_policy(name="entropy")`` or a name held in a variable."""
    import sys

    if module in sys.modules:  # loaded already: no import to spare, and entries added since
        return sorted(getattr(sys.modules[module], registry))
    return sorted(builtin)


def _sample_choices() -> dict[str, list[str] | Callable[[], list[str]]]:
    decoders = _registry("unmask.sampling", "DECODERS", DECODER_NAMES)
    return {
        "decoder": lambda: ["auto", *decoders()],
        # the old SEDD spellings stay accepted: aliases of --decoder sedd --sedd-sampler X
        "policy": _registry("unmask.sampling.policies", "POLICIES", POLICY_NAMES,
                            *SEDD_POLICY_ALIASES),
        "sedd_sampler": list(SEDD_SAMPLERS),
        "prompt_masks": list(PROMPT_MASKS),
        "draft_cache": list(DRAFT_CACHES),
        "predraft": list(PREDRAFTS),
        "compile": list(DECODE_COMPILES),
        "remasking": _registry("unmask.sampling.policies", "REMASKING", REMASKING_NAMES),
        "confidence": _registry("unmask.sampling.policies", "CONFIDENCES", CONFIDENCE_NAMES),
        "cache": _registry("unmask.sampling.cache", "CACHES", CACHE_NAMES),
    }


STEPS_PER_TOKEN = "the checkpoint's recommended steps, else --gen-length: one token per step"
"""What ``--steps`` not given is on the commands that generate (``unmask.api.sample_config``:
generate, chat, eval): the ``--help`` default of ``add_sample_flags``."""

STEPS_PER_MASK = f"{SampleConfig.steps}, at most the number of masked tokens"
"""What ``--steps`` not given is on the commands that fill masks of a text (infill, edit,
fill-form): the dataclass's steps, capped at the masks (``unmask.infill.fill``)."""


def add_sample_flags(parser: argparse.ArgumentParser, *, steps: str = STEPS_PER_TOKEN) -> None:
    """One ``--flag`` per ``SampleConfig`` field; unset flags keep the dataclass defaults.
    ``steps``: what ``--steps`` not given is on this command, as ``--help`` says it
    (``STEPS_PER_TOKEN`` or ``STEPS_PER_MASK``)."""
    add_dataclass_flags(parser, SampleConfig, choices=_sample_choices(),
                        shown_defaults={"steps": steps})


def sample_config_from_args(args: argparse.Namespace) -> SampleConfig:
    """A ``SampleConfig`` from the flags that were given (others keep their defaults)."""
    return dataclass_from_args(SampleConfig, args)


def check_sample_flags(args: argparse.Namespace) -> None:
    """Refuse, without importing torch, the sampling flags that are wrong whatever the model:
    what ``SampleConfig`` refuses on its own (``--gen-length 0``, ``--block-length 0``,
    ``--temperature -1``, ``--top-p 2``, ...) and ``--draft-*`` without ``--draft``
    (``check_draft_flags``). A command sets it as its ``check_flags`` (``unmask.cli`` runs
    that before torch loads: such an error took seconds, torch imported first);
    ``check_given_options`` then checks the lengths by the decoders' rules (with torch)."""
    sample_config_from_args(args)
    check_draft_flags(args)


def check_given_options(args: argparse.Namespace) -> None:
    """Fail on impossible lengths and options before loading anything: the flags given,
    ``steps`` not given at one per token (``unmask.api.sample_config`` fills that in where the
    checkpoint recommends no ``steps``; the run checks again with the checkpoint's
    options: ``check_lengths``). The dataclass's 64 steps would refuse ``--gen-length 12
    --block-length 4``, a run that never takes 64 steps. ``--gen-length`` not given, the
    length is the one the checkpoint recommends where its config.json names one (the
    dataclass's 64 refused ``--block-length 8 --steps 4`` as 8 blocks on a checkpoint that
    writes 32 tokens: 4). ``--policy`` not given, the policy
    is the one the checkpoint recommends, read from its config.json
    (``recommended_options``): a dynamic one (a LLaDA 2.x conversion: ``threshold``) takes
    any steps at least the blocks, the scheduled ``llada`` a multiple of them. Where that
    cannot be read before loading (a publisher's folder), only the rule every policy keeps
    (steps at least the blocks) is checked here, the rest once the model is loaded."""
    config, policy = _given_lengths(args)
    check_lengths(config, split=policy is None)


def check_given_blocks(args: argparse.Namespace) -> None:
    """The first rule ``check_given_options`` checks, without importing torch: the blocks
    divide the length (``unmask.config.check_block_length``; the length the checkpoint
    recommends where ``--gen-length`` is not given), so that ``unmask generate`` and ``unmask
    chat`` refuse ``--block-length 5`` before torch loads (it took seconds), in the same line.
    A command's ``check_flags`` calls it."""
    from unmask.config import check_block_length

    config, _ = _given_lengths(args)
    check_block_length(config.gen_length, config.block_length)


def _given_lengths(args: argparse.Namespace) -> tuple[SampleConfig, str | None]:
    """The ``SampleConfig`` that ``check_given_options`` checks (the flags given, over the
    checkpoint's recommended length and policy read from its config.json, no torch), and
    the policy where it is known before loading (None: not known)."""
    import dataclasses

    from unmask.commands import recommended_options

    config = sample_config_from_args(args)
    recommended = recommended_options(getattr(args, "model", None))
    length = (recommended or {}).get("gen_length")
    if getattr(args, "gen_length", None) is None and type(length) is int and length > 0:
        config = dataclasses.replace(config, gen_length=length)  # as api.sample_config
    if getattr(args, "steps", None) is None:
        config = dataclasses.replace(config, steps=config.gen_length)
    policy = getattr(args, "policy", None)
    if policy is None:  # the checkpoint's, where its config.json tells it
        if recommended is not None:
            policy = recommended.get("policy", SampleConfig.policy)
        if policy in POLICY_NAMES:
            config = dataclasses.replace(config, policy=policy)
        else:  # not known before loading, or a name loading refuses (it says why)
            policy = None
    return config, policy


def check_lengths(config: SampleConfig, *, split: bool = False) -> None:
    """Refuse lengths and steps the run of ``config`` cannot take
    (``unmask.sampling.validate``; ``split``: only steps at least the blocks, the rule of
    every policy, where the policy is not known yet), except steps over ``MAX_STEPS``: those
    are refused once the decoder is known, where one that takes none (``ar``) says so, the
    more useful line (``choose_decoder``). ``check_given_options`` checks the flags with it
    before loading; ``unmask generate`` and ``unmask chat`` check again, right after the model
    loads and before anything is decoded, ``config`` as ``unmask.api.sample_config``
    resolves the flags over the checkpoint's recommendation (no prompt lengths: steps not
    given nor recommended are one per token), under the policy the run takes. Without it
    ``unmask chat`` refused ``--gen-length 8 --block-length 4 --steps 3`` at every turn, in
    field names, and exited 0, and ``generate --segment-length 8`` refused it per segment,
    quoting a segment's steps and length as if they were the flags."""
    import dataclasses

    from unmask.sampling import validate
    from unmask.sampling.registry import MAX_STEPS

    validate(dataclasses.replace(config, steps=min(config.steps, max(MAX_STEPS,
                                                                     config.gen_length))),
             split=split)


def with_seed(config: SampleConfig, decoder: str | None = None) -> SampleConfig:
    """``config`` with a drawn ``seed`` where none was given and the run draws random numbers
    (``unmask.api.draws_noise``: a ``temperature`` above 0, ``remasking`` random, or a
    ``decoder`` that draws at any temperature, such as SEDD and the continuous ones), so that
    ``--json`` reports the seed that reproduces it (``--seed``); a greedy run keeps None (it
    needs none). Every command that samples calls it: generate, chat, infill, edit,
    fill-form; the server draws by the same rule (``unmask.api.with_seed``)."""
    from unmask.api import with_seed as drawn

    return drawn(config, decoder)


DRAFT_FIELDS = ("draft_length", "draft_threshold", "draft_steps", "draft_cache")
"""The ``SampleConfig`` fields of drafting: ``draft_steps`` and ``draft_cache`` only with a
drafter (``--draft``); ``draft_length`` and ``draft_threshold`` also set a hybrid
checkpoint's drafts."""

HYBRID_DRAFT_FIELDS = ("draft_length", "draft_threshold")
"""The drafting fields a hybrid checkpoint reads too (no ``--draft``): checked once the
decoder is known (``unmask.api``)."""


def add_stop_flag(parser: argparse.ArgumentParser, *, what: str) -> None:
    """``--stop TEXT`` (repeatable): where ``what`` ends, as ``stop=`` of ``api.generate`` and
    ``api.chat`` and the server's ``stop`` (one rule: ``unmask.chat.text_end``)."""
    parser.add_argument(
        "--stop", action="append", type=_stop_text, metavar="TEXT",
        help=f"end {what} before the first place this text appears in it (repeatable: the "
             "earliest found wins), as stop= of the Python API and the server; a newline is "
             "--stop $'\\n' in bash; --json's tokens stay what was decoded")


def _stop_text(text: str) -> str:
    """A ``--stop`` text: one character at least (an empty one would end every text at once,
    and ``api.generate`` refuses it)."""
    if not text:
        raise argparse.ArgumentTypeError("a stop text needs at least one character")
    return text


def add_draft_flag(parser: argparse.ArgumentParser) -> None:
    """``--draft PATH``: a diffusion checkpoint that drafts for a causal ``--model``."""
    parser.add_argument(
        "--draft", metavar="PATH", type=model_choice,
        help="a diffusion checkpoint of the same tokenizer that drafts tokens for a causal "
             "--model, which verifies them (decoder speculative: greedy output equals the "
             "causal model's own; see --draft-length, --draft-threshold, --draft-steps, "
             "--draft-cache)")


def check_draft_flags(args: argparse.Namespace) -> None:
    """Refuse ``--draft-*`` flags without ``--draft``: they would do nothing.
    ``HYBRID_DRAFT_FIELDS`` are checked once the decoder is known (``unmask.api``): a hybrid
    checkpoint reads them too. ``--decoder speculative`` without ``--draft`` says which flag it
    needs (the API's own message names its Python argument)."""
    if getattr(args, "draft", None) is not None:
        return
    if getattr(args, "decoder", None) == "speculative":
        raise UserError("--decoder speculative needs --draft CKPT: a masked-diffusion "
                        "checkpoint of the same tokenizer that drafts for the causal --model")
    for name in (f for f in DRAFT_FIELDS if f not in HYBRID_DRAFT_FIELDS):
        if getattr(args, name, None) is not None:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} applies with --draft (speculative decoding)")


def load_draft(path: str | None, device: str, dtype: str = "auto") -> Any:
    """The drafter checkpoint of ``--draft`` (``unmask.api.load_drafter``), or None without
    one."""
    if path is None:
        return None
    from unmask.api import load_drafter

    return load_drafter(path, device=device, dtype=dtype)


def make_live(tok: Any, config: SampleConfig, decoder: str) -> Any:
    """A ``LiveView`` of the generation region (a decoder run's ``view``) when stdout is a
    terminal, else None; the step count is shown against ``steps`` where the number of steps
    is fixed (not for ``ar``, ``speculative``, ``hybrid``, the dynamic commit policies, or
    token editing, ``edit_threshold``, whose edit-only steps come on top)."""
    from unmask.sampling import LiveView

    fixed = decoder == "sedd" or (
        decoder not in ("ar", "speculative", "hybrid") and config.policy == "llada"
        and config.edit_threshold is None
    )
    total = config.steps if fixed else None
    live = LiveView(tok, start=0, total_steps=total)
    return live if live.enabled else None


def note_empty_steps(label: str, config: SampleConfig, decoder: str,
                     prompt_ids: Sequence[Sequence[int]], mask_id: int | None, *,
                     skip_flag: bool = True) -> None:
    """``LABEL: note: ...`` on stderr when some step of LLaDA's scheduled policy will have no
    mask left to commit (it still runs the model): ``unmask generate`` and ``unmask demo``,
    one rule. A block's schedule has ``steps / blocks`` steps for its ``block_length`` masks,
    and the first block's also counts the prompts' ``[MASK]`` blanks (``prompt_masks`` fill),
    so with one block those blanks take up the extra steps. ``skip_flag``: the command has
    ``--skip-empty-steps`` to name; else the note names the steps that run none."""
    if decoder != "llada" or config.policy != "llada" or config.skip_empty_steps:
        return
    blocks = config.gen_length // (config.block_length or config.gen_length)
    blanks = 0
    if blocks == 1 and config.prompt_masks == "fill" and mask_id is not None:
        blanks = max((list(ids).count(mask_id) for ids in prompt_ids), default=0)
    masked = config.gen_length + blanks
    if config.steps > masked:
        how = ("--skip-empty-steps skips those" if skip_flag
               else f"--steps {masked} or fewer runs none")
        print(f"{label}: note: {config.steps} steps for {masked} masked tokens: a step past "
              f"the last one commits nothing but still runs the model ({how})", file=sys.stderr)
