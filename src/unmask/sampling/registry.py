"""Decoders by name, and the one choice of a decoder from a checkpoint's facts.

A decoder is a small class registered under a name (``register_decoder``): ``check(facts,
config)`` refuses, with one ``UserError`` line, what the checkpoint cannot do with it, and
``start(target, prompt_ids, config, on_view=...)`` returns its ``DecoderRun`` (the protocol of
``unmask.sampling.protocol``). ``choose_decoder(facts, config)`` is the only place that maps a
checkpoint (``unmask.facts.ModelFacts``) and the user's options (``SampleConfig.decoder``,
``auto`` = the checkpoint's own) to a decoder; the CLI, the server and the benchmarks reach
it through ``unmask.api``.

The decoders register themselves in their own modules (``loop``: ``llada``; ``blocks``:
``bd3lm``; ``sedd``: ``sedd``; ``ar``: ``ar``; ``speculative``: ``speculative``), which
``unmask.sampling`` imports. Adding a decoder = one new module with a ``Decoder`` subclass
under ``@register_decoder(name)``, its import in ``unmask.sampling`` and its name in
``unmask.config.DECODER_NAMES`` (docs/architecture.md has a worked example; ``speculative``
is one).

Inside: ``Target``, ``Decoder``, ``DECODERS``, ``COMMIT_LOOP_OPTIONS``, ``DEPENDENT_OPTIONS``,
``SIGMA_HINT``, ``register_decoder``, ``choose_decoder``, ``refuse_top_k``, ``option_given``,
``refuse_unused``, ``refuse_dependent``, ``check_penalty_decoder``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from torch import Tensor

from unmask.canvas import as_rows
from unmask.config import DECODER_NAMES, SampleConfig
from unmask.errors import UserError
from unmask.facts import ModelFacts
from unmask.sampling.protocol import DecoderRun, ViewCallback

Prompts = Sequence[Sequence[int]] | Sequence[int] | Tensor
"""One prompt (ids), a batch (a list of lists, left-padded), or a 2-D tensor."""


@dataclass(frozen=True)
class Target:
    """What a decoder runs on: the checkpoint's model and facts, and any further models a
    decoder needs by role (a speculative decoder's ``verifier``, say)."""

    model: Any
    """The mask predictor (or causal model): ``model(tokens, attention_mask=...) -> logits``."""
    facts: ModelFacts
    aux: Mapping[str, Any] = field(default_factory=dict)
    """Further models by role; empty for every single-model decoder."""


class Decoder:
    """One way of decoding a checkpoint (subclass it and ``@register_decoder(name)``)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    """One line for ``--help`` and docs."""
    penalties: ClassVar[bool] = False
    """It samples tokens from logits and applies the repetition penalties and the n-gram ban
    (``unmask.sampling.penalties``). Without it they are refused when given and left out of
    the checkpoint's recommendation (``unmask.api.sample_config``)."""

    unused: ClassVar[tuple[str, ...]] = ()
    """``SampleConfig`` fields this decoder has no use for (the commit loop's, on a decoder
    that commits nothing): given (``option_given``), ``refuse_unused`` refuses them in one
    line with ``unused_why``, before any model call."""
    unused_why: ClassVar[str] = ""
    """What the decoder does instead, for that line: "decoder 'x', which {unused_why}"."""

    def check(self, facts: ModelFacts, config: SampleConfig) -> None:
        """Refuse, with one ``UserError`` line, a combination this checkpoint cannot do."""

    def uses_steps(self, config: SampleConfig) -> bool:
        """Whether ``config.steps`` sets this decoder's work (a fixed schedule), so a run in
        segments must split it evenly (``unmask.sampling.segments``)."""
        return False

    row_seeds: ClassVar[bool] = False
    """Its ``start`` takes ``seeds``, one per row: one batched run in which row i draws from a
    generator of its own seeded ``seeds[i]``, exactly what the row draws alone under ``seed =
    seeds[i]`` (so seeded rows need not run one run each: ``unmask.api.generate``), under every
    config (and prompts) where ``takes_seeds`` says so."""

    def takes_seeds(
        self, config: SampleConfig, prompts: Prompts | None = None, mask_id: int | None = None,
    ) -> bool:
        """Whether its run under ``config`` takes ``seeds`` (``row_seeds``): a decoder whose
        rows draw as alone under some of its options only says which. With ``prompts`` (and
        the model's ``mask_id``): for a run of those rows, where their content decides too
        (the commit loop: ``unmask.sampling.loop.rows_apart``); without, for some prompts."""
        return self.row_seeds

    def rows_apart(self, config: SampleConfig, prompts: Prompts, mask_id: int) -> list[bool]:
        """Per row of ``prompts``: whether it must run a run of its own under ``config`` to
        write what it writes alone, seeded or greedy: in one run (or one shared forward) with
        other rows, it would write otherwise or make them write otherwise (the commit loop:
        ``unmask.sampling.loop.row_apart``). The other rows still share a run
        (``unmask.api.run_rows``). None of them by default."""
        return [False] * len(as_rows(prompts))

    def start(
        self,
        target: Target,
        prompt_ids: Prompts,
        config: SampleConfig,
        *,
        on_view: ViewCallback | None = None,
        seeds: Sequence[int] | None = None,
    ) -> DecoderRun:
        """The run for ``prompt_ids`` (``config.decoder`` is this decoder's name); ``seeds``
        (only where ``takes_seeds``): row i's seed, in place of ``config.seed``."""
        raise NotImplementedError


COMMIT_LOOP_OPTIONS = (
    "policy", "threshold", "factor", "entropy_bound", "remasking", "confidence", "prompt_masks",
    "skip_empty_steps", "cache", "edit_threshold", "max_post_steps",
)
"""Options only the masked-diffusion commit loop (``llada``, ``bd3lm``) reads: its commit
policy and their parameters, its KV caches, its token editing; a decoder that commits nothing
lists them in ``Decoder.unused``."""

SIGMA_HINT = (
    'a time-conditioned SEDD checkpoint with "sigma_input": "given" reads it only from its '
    "caller; sample it with decoder 'sedd' (a [MASK] in a generate prompt is filled too), or "
    'set "sigma_input": "masked_fraction" in its config.json (the level read off the [MASK] '
    "count, exact under the absorbing graph)"
)
"""What to do with a checkpoint whose forward needs the noise level (``ModelFacts.needs_sigma``)
where a loop calls it on token ids alone (the commit loop, the masked ELBO)."""

DECODERS: dict[str, Decoder] = {}
"""Registered decoders by name (``SampleConfig.decoder``)."""

D = TypeVar("D", bound=type[Decoder])


def register_decoder(name: str) -> Callable[[D], D]:
    """Class decorator: register one instance of a ``Decoder`` subclass under ``name``."""

    def deco(cls: D) -> D:
        if cls.__module__.startswith("unmask.") and name not in DECODER_NAMES:
            # a built-in decoder the command line would refuse (it checks --decoder against
            # the torch-free tuple before importing this): fail when the package imports
            raise AssertionError(f"built-in decoder {name!r} is not in "
                                 "unmask.config.DECODER_NAMES: add it there")
        cls.name = name
        DECODERS[name] = cls()
        return cls

    return deco


def refuse_top_k(decoder: str, config: SampleConfig) -> None:
    """top-k / top-p truncate one token's distribution: only the causal decoders have one.
    The refusal names the options given alone (``top_p`` 1.0 is off: ``SampleConfig``)."""
    given = [name for name in ("top_k", "top_p") if getattr(config, name) is not None]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise UserError(
            f"{' and '.join(given)} {verb} to autoregressive (causal) models only, "
            f"not decoder {decoder!r}"
        )


def option_given(config: SampleConfig, name: str, explicit: Collection[str] = ()) -> bool:
    """Whether option ``name`` of ``config`` is set to other than its default. ``steps`` and
    ``block_length`` count as unset at ``gen_length`` too (one step per token, one block:
    what a command fills in), and, where ``explicit`` (the options the caller named: a
    command's flags, a request's fields) holds them, as set at any other value: ``--steps
    64`` is a value a user types, not the dataclass's default (``unmask infill --steps 64``
    on a causal checkpoint ran and did nothing, where ``--steps 63`` was refused)."""
    value = getattr(config, name)
    if name in ("steps", "block_length") and value == config.gen_length:
        return False
    if name in explicit and name in ("steps", "block_length") and value is not None:
        return True
    return bool(value != getattr(SampleConfig, name))


def refuse_unused(
    decoder: Decoder, config: SampleConfig, explicit: Collection[str] = ()
) -> None:
    """Refuse, in one ``UserError`` line naming them and the decoder, the options of
    ``decoder.unused`` that ``config`` sets (``option_given``, ``explicit`` the options the
    caller named): the decoder would ignore them."""
    given = [name for name in decoder.unused if option_given(config, name, explicit)]
    if given:
        one = len(given) == 1
        raise UserError(
            f"{', '.join(given)} {'does' if one else 'do'} not apply to decoder "
            f"{decoder.name!r}, which {decoder.unused_why}; leave {'it' if one else 'them'} out"
        )


DEPENDENT_OPTIONS = {
    "max_post_steps": ("edit_threshold", "it bounds the edit-only steps of decoder bd3lm's "
                       "token editing", 0),
    "guide_scale": ("guide_words", "it sets the strength of the continuous decoders' guidance",
                    0.0),
}
"""Options that act only with another one set: option -> (that one, what it does, its value
that means off: without the other one, the run does what that value says)."""


def refuse_dependent(decoder: Decoder, config: SampleConfig) -> None:
    """Refuse, in one ``UserError`` line, an option of ``DEPENDENT_OPTIONS`` given without
    the option it acts with (at other than its default and its off value): the run would
    ignore it."""
    for name, (needs, what, off) in DEPENDENT_OPTIONS.items():
        value = getattr(config, name)
        if option_given(config, name) and value != off and not option_given(config, needs):
            raise UserError(
                f"{name} applies only with {needs} ({what}); this run of decoder "
                f"{decoder.name!r} has no {needs}"
            )


def applies_penalties(decoder: str) -> bool:
    """Whether the decoder named ``decoder`` applies the penalties (``Decoder.penalties``);
    an unknown name counts as yes: ``choose_decoder`` reports it."""
    known = DECODERS.get(decoder)
    return known is None or known.penalties


def penalty_decoders() -> list[str]:
    """The registered decoders that apply the penalties (``Decoder.penalties``)."""
    return sorted(name for name, d in DECODERS.items() if d.penalties)


def check_penalty_decoder(decoder: str, config: SampleConfig) -> None:
    """Refuse penalties for a decoder that has no logits to apply them to (one line)."""
    from unmask.sampling.penalties import given_penalties

    given = given_penalties(config)
    if given and not applies_penalties(decoder):
        raise UserError(
            f"{given[0]} applies to the decoders that sample from logits "
            f"({', '.join(penalty_decoders())}), not to decoder {decoder!r}"
        )


MAX_STEPS = 1 << 20
"""The most ``steps`` a decoder takes (more only as one step per token of a longer
``gen_length``, which its own checks bound): each step runs the model (a commit-loop step
past a block's last mask commits nothing; SEDD's and the continuous decoders' time steps
refine less and less), and a run's schedule is built up front, so ``steps`` of 10**9 (a
typo) was a list of 8 GB a row, and the kernel killed the process (10**6 on the tiny test
model: 19 s)."""


def check_steps(config: SampleConfig) -> None:
    """Refuse, in one line, ``steps`` over ``MAX_STEPS`` (and over ``gen_length``): the
    commit loop's ``validate``, and ``choose_decoder`` for every decoder that takes steps,
    after the refusal of a decoder that takes none (``steps does not apply ...``)."""
    if config.steps > max(MAX_STEPS, config.gen_length):  # one a token: the length's checks
        raise UserError(f"steps must be at most {MAX_STEPS}, got {config.steps} (each step "
                        "runs the model once)")


def choose_decoder(
    facts: ModelFacts, config: SampleConfig, explicit: Collection[str] = ()
) -> Decoder:
    """The decoder for a checkpoint with ``facts`` and the user's ``config``: ``config.decoder``,
    or the checkpoint's own for ``auto`` (``ModelFacts.default_decoder``). A combination the
    checkpoint cannot do is refused here with one ``UserError`` line: an unknown decoder, a
    decoder that needs other attention or another objective, a KV cache on a model without
    one, options the decoder has no use for (top_k on diffusion, cfg on AR, ``Decoder.unused``),
    and, for a decoder that takes steps, more than ``MAX_STEPS`` (``check_steps``).
    ``explicit``: the options the caller named (``option_given``: ``steps`` typed at 64)."""
    name = facts.decoder_for(config.decoder)
    if name not in DECODERS:
        known = ", ".join(["auto", *sorted(DECODERS)])
        raise UserError(f"unknown decoder {config.decoder!r}; choose one of {known}")
    if config.cache != "none" and not facts.has_kv_cache:
        raise UserError(
            f"cache {config.cache!r} needs a model with a KV cache "
            "(unmask.model.Transformer); this one has none: use cache 'none'"
        )
    decoder = DECODERS[name]
    decoder.check(facts, config)
    refuse_unused(decoder, config, explicit)
    refuse_dependent(decoder, config)
    if "steps" not in decoder.unused:
        check_steps(config)
    return decoder


__all__ = [
    "COMMIT_LOOP_OPTIONS",
    "DECODERS",
    "DEPENDENT_OPTIONS",
    "MAX_STEPS",
    "SIGMA_HINT",
    "Decoder",
    "Prompts",
    "Target",
    "applies_penalties",
    "check_penalty_decoder",
    "check_steps",
    "choose_decoder",
    "option_given",
    "penalty_decoders",
    "refuse_dependent",
    "refuse_top_k",
    "refuse_unused",
    "register_decoder",
]
