"""``POST /v1/completions``, and the generation it shares with chat.

Inside: ``prepare`` (validate a generation request, build its ``Job``), ``run_generation``
(answer it, plain or streamed), ``GenerationEvents`` (the streamed chunks: the text that
has become final, optionally every denoising step) and ``router``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.responses import Response

from unmask import api
from unmask.chat import ChatTemplate
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.messages import plural
from unmask.sampling import Decoder, choose_decoder, make_policy, validate
from unmask.sampling.penalties import exempting, given_penalties
from unmask.sampling.registry import check_penalty_decoder
from unmask.sampling.segments import segment_configs, segment_windows
from unmask.sampling.stops import TextEnd, first_end, stop_bounds, text_ended
from unmask.server.batching import GenOutput, Job
from unmask.server.engine import served_decoder
from unmask.server.http import APIError, JSONResponse, sse
from unmask.server.plumbing import (
    account,
    check_generation,
    check_names,
    max_tokens_room,
    overflow_param,
    refuse_causal_masks,
    sample_config,
    secured,
    sent_option,
    submit,
    usage,
    user_error,
    wait,
)
from unmask.server.schemas import CompletionRequest, _Generation
from unmask.server.state import ServerState
from unmask.server.streaming import denoising_event, refuse_if_gone, stream_job


def prepare(state: ServerState, req: _Generation, prompts: list[str],
            encode: Callable[[str], list[int]]) -> tuple[Job, list[list[int]]]:
    """The job for a generation request of ``prompts`` and their ids (``encode``), or a 400
    naming the option that cannot be served; its advice names only values this server then
    accepts (``advised``)."""
    try:
        return _prepare(state, req, prompts, encode)
    except APIError as e:
        raise advised(state, req, prompts, encode, e) from None


ADVICE = re.compile(r"[;:,]\s+(?:try|send|use)\b.*$")
"""Where a refusal's advice starts: the rest of the message."""

LENGTHS = ("steps", "block_length", "max_tokens")
"""The options a refusal about blocks and steps advises (``advised``)."""


TRIES = 24
"""The most ``prepare`` runs one refusal's advice may take (``advised``): each is a whole
check of the request, and all run before the 400 is sent."""


class _Budget:
    """What is left of ``TRIES`` for one refusal's advice (``accepts`` spends it)."""

    def __init__(self, left: int = TRIES) -> None:
        self.left = left


def advised(state: ServerState, req: _Generation, prompts: list[str],
            encode: Callable[[str], list[int]], e: APIError) -> APIError:
    """``e`` (a 400 of ``prepare``) with advice this server follows: where its advice names
    a ``steps``, ``block_length`` or ``max_tokens`` (a library refusal's "try 20", a cap's
    "send max_tokens <= 6") that the same request with that value would be refused too (steps
    past ``--max-steps``, a length that is not whole blocks, steps that do not split over
    them), that value is replaced by the one nearest the request's that ``prepare`` accepts,
    at most one of each option (none: no advice); the values it names that hold are kept.
    Other refusals, and advice that holds, are left as they are. All the checks together are
    at most ``TRIES`` runs of ``prepare``, so a refusal costs a bounded few checks."""
    m = ADVICE.search(e.message)
    if e.status != 400 or e.code != "invalid_value" or m is None \
            or not re.search(r"\bsteps\b|\bblocks?\b|block_", e.message[:m.start()]):
        return e  # not a refusal about steps and blocks
    encode = _encoded_once(encode)  # each try encodes the same prompts
    named = advice_values(m.group())
    budget = _Budget()
    held = [(k, v) for k, v in named if accepts(state, req, prompts, encode, {k: v}, budget)]
    if not named or len(held) == len(named):
        return e
    kept: list[tuple[str, int]] = []
    for k, v in held:  # one value of each option: the first the advice names that holds
        if k not in (o for o, _ in kept):
            kept.append((k, v))
    found = fitting(state, req, prompts, encode, budget, skip={k for k, _ in kept})
    ways = [f"{k} {v}" for k, v in sorted([*kept, *found], key=lambda w: LENGTHS.index(w[0]))]
    text = e.message[:m.start()]
    if ways:
        text += "; try " + (", ".join(ways[:-1]) + " or " if len(ways) > 1 else "") + ways[-1]
    param = e.param
    if param in LENGTHS and param not in req.model_fields_set:  # a value it never sent
        param = None
    return APIError(400, text, param=param, code=e.code)


def _encoded_once(encode: Callable[[str], list[int]]) -> Callable[[str], list[int]]:
    """``encode``, each prompt encoded once (a long prompt, checked with many options)."""
    done: dict[str, list[int]] = {}

    def once(prompt: str) -> list[int]:
        if prompt not in done:
            done[prompt] = encode(prompt)
        return list(done[prompt])
    return once


def advice_values(advice: str) -> list[tuple[str, int]]:
    """The (option, value) pairs ``advice`` names ("try 12 or 16": steps; "try max_tokens 4
    or 8"; "send steps <= 6, or max_tokens <= 6": the bound itself; "try 8 or 9 steps"): each
    alternative's number with the option named beside it, else the one named before it,
    else ``steps`` (the library's bare "try N"). Alternatives naming no number ("longer
    blocks") or another option are left out."""
    out: list[tuple[str, int]] = []
    field = "steps"
    for part in re.split(r",|\bor\b", advice):
        name = re.search(r"\b(steps|block_length|max_tokens|gen_length|[a-z_]+_[a-z_]+)\b", part)
        field = name.group(1) if name else field
        number = re.search(r"(?<![\w/.-])(\d+)(?![\w/.])", part)  # not in a path or name
        if number is not None and field in (*LENGTHS, "gen_length"):
            out.append(("max_tokens" if field == "gen_length" else field, int(number.group(1))))
    return out


def accepts(state: ServerState, req: _Generation, prompts: list[str],
            encode: Callable[[str], list[int]], change: dict[str, int],
            budget: _Budget | None = None) -> bool:
    """Whether ``prepare`` takes ``req`` with ``change`` sent; False without a check once
    ``budget`` is spent."""
    if budget is not None:
        if budget.left <= 0:
            return False
        budget.left -= 1
    try:
        _prepare(state, req.model_copy(update=change), prompts, encode)
    except (APIError, UserError):
        return False
    return True


def _nearest(values: Iterable[int], own: int, first: Iterable[int] = ()) -> list[int]:
    """``first`` (those of them among ``values``), then ``values`` nearest ``own``, the
    smaller of two as near first; each once."""
    pool = set(values)
    out = [v for v in dict.fromkeys(first) if v in pool]
    return out + sorted(pool - set(out), key=lambda v: (abs(v - own), v))


def fitting(state: ServerState, req: _Generation, prompts: list[str],
            encode: Callable[[str], list[int]], budget: _Budget | None = None,
            skip: frozenset[str] | set[str] = frozenset()) -> list[tuple[str, int]]:
    """What ``req`` may send instead, the rest as it is, for ``advised`` (options in ``skip``
    left out: its advice holds for them): the ``steps`` nearest its own (the sent ones, else
    ``--max-steps``) up to ``--max-steps``, the nearest multiple of its blocks first; the
    ``block_length`` nearest its own that divides ``max_tokens`` (not for a checkpoint whose
    block size is fixed); and the longest ``max_tokens`` below its own that is whole blocks,
    then the most whole blocks within ``--max-steps`` (steps of one per token), then the
    nearest others (else the shortest above, up to the context): each the first ``prepare``
    accepts among a few, all within ``budget``."""
    most, G = state.limits.max_steps, req.max_tokens
    facts = api.facts_of(state.loaded)
    bs = facts.block_size or 1
    unit = req.block_length or bs
    out: list[tuple[str, int]] = []

    def first(name: str, values: list[int], tries: int) -> None:
        if name in skip:
            return
        for v in values[:tries]:
            if accepts(state, req, prompts, encode, {name: v}, budget):
                out.append((name, v))
                return

    if not state.causal:
        own = min(req.steps if req.steps is not None else most, most)
        bl = req.block_length or facts.sample_defaults.get("block_length") or facts.block_size
        n = G // bl if isinstance(bl, int) and 0 < bl <= G else 1  # the run's blocks
        # the multiple of its blocks nearest the steps first (of one more: absolute blocks)
        whole = [min(range(k, most + 1, k), key=lambda s: abs(s - own), default=0)
                 for k in (n, n + 1)]
        first("steps", _nearest(range(1, most + 1), own, whole), 6)
        if not facts.block_size:
            own = req.block_length or G
            first("block_length", sorted((b for b in range(1, G + 1) if G % b == 0),
                                         key=lambda b: (abs(b - own), -b)), 6)
    ctx = state.context[0]
    # the longest whole blocks below, the most whole blocks within --max-steps (one step per
    # token), then the nearest lengths below, then above
    whole = [next((k for k in range(G - 1, 0, -1) if k % unit == 0), 0),
             most - most % unit, most - most % bs]
    lengths = [*range(G - 1, 0, -1), *range(G + 1, ctx + 1)[:32]]
    first("max_tokens", [*(k for k in dict.fromkeys(whole) if 0 < k < G),
                         *(k for k in lengths if k not in whole)], 8)
    return out


def _prepare(state: ServerState, req: _Generation, prompts: list[str],
             encode: Callable[[str], list[int]]) -> tuple[Job, list[list[int]]]:
    """``prepare``, its advice as the checks give it."""
    limits = state.limits
    top_p = check_generation(state, req, prompts)
    ids = [encode(p) for p in prompts]
    mask_id = state.cfg.mask_id
    refuse_causal_masks(state, req, ids)
    if req.segment_length is not None and mask_id is not None and any(mask_id in i for i in ids):
        # the segmented run's refusal, in the API's words (it said "fill it first (unmask
        # infill)", a command an HTTP client does not run, and named no field)
        raise APIError(400, "a [MASK] in the prompt cannot be filled when generating in "
                       "segments (the window moves past it); fill it first (POST /v1/infill) "
                       "or drop segment_length", param="prompt", code="invalid_value")
    facts = api.facts_of(state.loaded)
    # an empty prompt takes its start token's column where the run's decoder gives it one
    longest = max(facts.prompt_columns(len(i), served_decoder(facts)) for i in ids)
    ctx, who = state.context  # with a drafter, the smaller context of the two
    segmented = req.segment_length is not None
    if segmented and req.max_tokens > limits.max_steps:  # past the context: bounded by steps
        raise APIError(400, f"max_tokens must be <= {limits.max_steps} (the server's "
                       "--max-steps) with segment_length", param="max_tokens",
                       code="invalid_value")
    if longest + req.max_tokens > ctx and not segmented:
        fits = max_tokens_room(state, longest)  # whole blocks of a bd3lm checkpoint
        ways = [f"use max_tokens <= {fits}"] if fits >= 1 else ["shorten the prompt"]
        if not state.fixed_canvas:  # a continuous model writes one canvas: no segments
            ways.append(f"{'' if fits >= 1 else 'use '}segment_length (e.g. {ctx // 2}) to "
                        "write it in segments")
        started = longest > max(len(i) for i in ids)  # the decoder gave it a start token
        start = " (an empty prompt counts 1 token: its start token)" if started else ""
        raise APIError(400, f"prompt ({plural(longest, 'token')}) + max_tokens ({req.max_tokens}) "
                       f"exceeds the {who}'s context of {ctx} tokens{start}; {', or '.join(ways)}",
                       param=overflow_param(req, fits), code="context_length_exceeded")
    try:  # what the request did not send: the checkpoint's recommendation, as the CLI
        config = sample_config(req, req.max_tokens, req.max_tokens, segments=True,
                               loaded=state.loaded, prompt_lengths=[len(i) for i in ids])
    except UserError as e:
        raise request_error(req, e) from None
    config = dataclasses.replace(config, top_p=top_p)
    try:
        check_names(config)  # an unknown name first, whatever the decoder
        decoder = choose_decoder(facts, config)  # its refusals: a causal model's loop options
        check_penalties_apply(decoder, config)
        # LLaDA 2.x: prompts of unequal lengths modulo the block run in groups, one after
        # another, steps not sent fitted to each group's blocks (``api.block_groups``, as
        # api.generate and unmask generate); each group is checked as a request of its own
        groups = api.block_groups(state.loaded, ids, config, decoder.name, fit_steps=(
            req.steps is None and "steps" not in facts.sample_defaults))
        if len(groups) == 1:
            groups = [(groups[0][0], config)]  # fitted to all of them already
        groups = [(idx, _checked(state, req, decoder, cfg, [ids[i] for i in idx], longest, ctx))
                  for idx, cfg in groups]
        config = groups[0][1]
    except UserError as e:
        raise request_error(req, e) from None
    rows = [i for i in ids for _ in range(req.n)]
    noisy = api.draws_noise(decoder.name, config)
    if noisy and (shares_forward(decoder, config) or seeds_share_runs(state, config, rows)):
        # no seed sent: one drawn (as the CLI draws one), which the response reports so that
        # sending it repeats the text; free here, as the rows share each forward pass anyway
        # (the continuous batch, or seeded rows of a generator each in one whole-batch run)
        config = api.with_seed(config, decoder.name)
    seeded_sampling = config.seed is not None and noisy
    # with a seed and a run that draws random numbers, every row its own generator: choice
    # k of a prompt writes the same text whatever the other prompts of the request, and what
    # unmask generate and api.generate write (``api.row_seeds``). A seed that draws nothing
    # (greedy) changes no text: the rows share one run (one forward per step for all of
    # them, not one per row)
    seeds = None
    if seeded_sampling and len(rows) > 1:
        seeds = cast(list[int | None], api.row_seeds(config.seed, len(ids), req.n))
    n = req.n  # prompt k's choices are rows k * n to k * n + n - 1
    parted = None if len(groups) == 1 else [
        ([k * n + j for k in idx for j in range(n)], dataclasses.replace(cfg, seed=config.seed))
        for idx, cfg in groups]
    # its prompts share one (check_whole_blocks) but for a job in groups, which runs alone
    tail = api.block_tail(state.loaded, len(ids[0]), decoder.name)
    return Job(rows=rows, config=config, batchable=not seeded_sampling, seeds=seeds,
               block_tail=tail, groups=parted), ids


def _checked(state: ServerState, req: _Generation, decoder: Decoder, config: SampleConfig,
             ids: list[list[int]], longest: int, ctx: int) -> SampleConfig:
    """``config`` for a run of prompts ``ids`` (of equal lengths modulo a LLaDA 2.x block)
    within the server's limits (``cap_default_steps``, ``cap_prompt_masks``), or the
    ``UserError`` (or 400) of settings its decoder refuses, found before a stream starts."""
    facts = api.facts_of(state.loaded)
    segmented = req.segment_length is not None
    config = cap_default_steps(state, req, decoder, config, [len(i) for i in ids])
    config = cap_prompt_masks(state, req, decoder, config, ids)
    parts = [config]
    if segmented:  # every segment is a run of its own, on a window of the latest text
        # (a drafter's decoder uses no steps either)
        align = facts.block_size or 1
        parts = segment_configs(config, align=align, uses_steps=decoder.uses_steps(config))
        windows = segment_windows(parts, ctx, align=align)
        longest = min(longest, min(windows))
        shapes: list[SampleConfig] = []  # segments differ in seed and at most the last's
        for part in parts:  # lengths: each distinct shape checked once, not per segment
            shape = dataclasses.replace(part, seed=config.seed)
            if shape not in shapes:
                shapes.append(shape)
        parts = shapes
        for part in parts:  # a segment's own lengths
            choose_decoder(facts, part)
    for part in parts:
        if not state.causal:
            validate(part, prompt_length=longest, max_seq_len=ctx)
        check_whole_blocks(state, decoder, part, [len(i) for i in ids])
    return config


def shares_forward(decoder: Decoder, config: SampleConfig) -> bool:
    """Whether the request's rows run in the continuous batch, sharing each forward pass
    with other requests whatever their seeds (the commit loop ``llada`` without a KV cache:
    ``LLaDARun.shares_forward``): there a request that samples without a seed gets one drawn
    at no cost (so it does in whole-batch runs whose seeded rows share a run, a generator
    each: ``seeds_share_runs``). Elsewhere, where seeded rows cannot share a whole-batch run
    (16-bit weights, a plugin's commit policy, a [MASK] in a prompt under a KV cache, ...),
    a seeded request runs alone, row by row, while unseeded ones of the same settings share
    one run, so none is drawn: the rows keep sharing a run, and the response's ``seed`` is
    null."""
    return decoder.name == "llada" and config.cache == "none"


def seeds_share_runs(state: ServerState, config: SampleConfig, rows: list[list[int]]) -> bool:
    """Whether seeded requests of ``config`` and prompts ``rows`` share whole-batch runs, each
    row drawing from a generator of its own (``Engine.seeds_in_one_run``: every built-in
    decoder in float32, but the commit loop beside a prompt of [MASK]s alone or a [MASK] in a
    prompt under a KV cache), so that a seed costs a request nothing: one is drawn for a
    sampled request that sends none, as in the continuous batch (``shares_forward``)."""
    together = state.engine.seeds_in_one_run
    return together is not None and together(config, rows=rows)


def steps_follow_length(state: ServerState, req: _Generation, length: int) -> bool:
    """Whether the request's denoising steps, for a ``max_tokens`` of ``length``, are one
    per token, so that a longer ``max_tokens`` means more steps: it sends no ``steps``, the
    checkpoint recommends none, and its decoder's work is set by ``steps`` (not a dynamic
    policy such as ``threshold``, sent or recommended; not a causal model; not structured
    output, whose steps are its own). A request its options would refuse is False:
    ``prepare`` refuses it in its own words."""
    from unmask.server.routes.guided import guidance

    if req.steps is not None or state.causal:
        return False
    if "steps" in api.facts_of(state.loaded).sample_defaults:
        return False
    try:
        if guidance(req) is not None:
            return False
        config = sample_config(req, length, length, segments=True, loaded=state.loaded)
        return choose_decoder(api.facts_of(state.loaded), config).uses_steps(config)
    except (UserError, APIError):
        return False


def default_length(state: ServerState, req: _Generation, length: int) -> int:
    """The ``max_tokens`` of a request that does not send it (``length``: completions'
    16, chat's recommendation else 64), cut to the server's ``--max-steps`` (whole blocks of a
    bd3lm checkpoint) where its steps are one per token (``steps_follow_length``); else
    ``length``: its steps are sent, recommended or dynamic and do not grow with it."""
    if not steps_follow_length(state, req, length):
        return length
    block, most = api.facts_of(state.loaded).block_size or 1, state.limits.max_steps
    return min(length, max(block, most - most % block))


def cap_default_steps(state: ServerState, req: _Generation, decoder: Decoder,
                      config: SampleConfig, prompt_lengths: list[int]) -> SampleConfig:
    """``config`` within the server's ``--max-steps`` when the request does not send
    ``steps`` (the limit bounds the work of every request, not only of those that send
    ``steps``: ``check_steps``). Steps the checkpoint recommends are capped: the most within
    the limit that split over the run's blocks (the client chose no number to change; a
    recommended ``block_length`` it did not send is lengthened where none do). Steps
    of one per token of a ``max_tokens`` the client sent over the limit are a 400 that says
    what to send (a ``max_tokens`` not sent was cut already: ``default_length``). A dynamic
    policy's steps (``threshold``, ``factor``, ``entropy``: the most it may run, it stops
    sooner once every mask is committed) are capped to the limit, the length kept, unless
    its blocks are more (a step each): a 400 naming ``block_length`` (``max_tokens`` where
    the checkpoint's block size is fixed). They were left at one per token: 48 tokens under
    ``--max-steps 16`` ran 48 forwards. So are the steps of a continuous decoder
    (``embed-diffusion``, ``latent-diffusion``: its denoising steps, not tied to tokens;
    they ran whatever their number)."""
    most = state.limits.max_steps
    if req.steps is not None or config.steps <= most:
        return config
    if bounded_by_steps(decoder, config):
        return cap_dynamic_steps(state, decoder, fit_blocks(state, req, config),
                                 prompt_lengths)
    if "steps" in decoder.unused:  # a causal decoder: a token a forward, max_tokens bounds it
        return config
    if not decoder.uses_steps(config):  # continuous diffusion: its steps set its work, not
        return dataclasses.replace(config, steps=most)  # per token (it ran them all)
    if "steps" in api.facts_of(state.loaded).sample_defaults:
        G, bl = config.gen_length, config.block_length
        # the scheduled policy's steps are a multiple of its blocks (``validate``): only
        # those are tried, the most first (each try is a whole check; the rest fail anyway)
        n = G // bl if bl else 1  # not whole blocks (G % bl): validate refuses every steps
        tries = [] if bl and G % bl else [dataclasses.replace(config, steps=s)
                                          for s in range(most - most % n, 0, -n)]
        # then longer blocks (a recommended block length, not sent), each with the most
        # steps that split over them
        tries += [dataclasses.replace(config, steps=most - most % (G // b), block_length=b)
                  for b in longer_blocks(state, req, config) if bl is not None and b > bl]
        for capped in tries:  # the recommended block length first, with any steps
            try:
                validate(capped)
                check_whole_blocks(state, decoder, capped, prompt_lengths)
            except UserError:
                continue
            return capped
        raise APIError(400, f"the checkpoint recommends {config.steps} steps, over the "
                       f"server's --max-steps {most}, and no fewer split over its blocks: "
                       f"send steps <= {most}", param="steps", code="invalid_value")
    rounded = "" if config.steps == config.gen_length else ", rounded to its blocks"
    raise APIError(400, f"steps must be <= {most} (the server's --max-steps); without steps "
                   f"this request runs {config.steps} (one per token of max_tokens{rounded}): send "
                   f"steps <= {most}, or max_tokens <= {most}", param="max_tokens",
                   code="invalid_value")  # the value it sent: its steps were not


def cap_prompt_masks(state: ServerState, req: _Generation, decoder: Decoder,
                     config: SampleConfig, ids: list[list[int]]) -> SampleConfig:
    """``config`` within ``--max-steps`` when the prompt holds ``[MASK]`` tokens under a
    dynamic policy: its first block may take a forward per prompt mask on top of its share
    of the steps (so that one step per token never binds: ``Denoiser._enter_block``), so the
    steps are cut by them where the sum would pass the limit; a 400 naming the prompt where
    what is left is fewer than the run's blocks (a step each)."""
    most, mask_id = state.limits.max_steps, state.cfg.mask_id
    masks = max((i.count(mask_id) for i in ids), default=0) if mask_id is not None else 0
    if not masks or not bounded_by_steps(decoder, config) or config.steps + masks <= most:
        return config
    capped = dataclasses.replace(config, steps=max(1, most - masks))
    try:
        if most - masks < 1:
            raise UserError("no step left")
        validate(capped)  # a step a block at least
        check_whole_blocks(state, decoder, capped, [len(i) for i in ids])
    except UserError:
        raise APIError(400, f"the prompt's {masks} [MASK] tokens take up to {masks} forwards "
                       f"of the {config.policy} policy on top of its steps, and the server's "
                       f"--max-steps is {most}: send fewer [MASK]s, fewer or longer blocks, "
                       "or the llada policy", param="messages" if hasattr(req, "messages")
                       else "prompt", code="invalid_value") from None
    return capped


def bounded_by_steps(decoder: Decoder, config: SampleConfig) -> bool:
    """Whether ``config.steps`` bounds ``decoder``'s work without setting it: the commit loop
    (``llada``, ``bd3lm``: ``policy`` not among its unused options) under a dynamic policy,
    which runs each block for at most its share of ``steps`` (``unmask.sampling.policies``)."""
    if "policy" in decoder.unused:
        return False
    try:
        return make_policy(config).dynamic
    except UserError:  # an unknown policy or a bar out of range: prepare's own 400
        return False


def longer_blocks(state: ServerState, req: _Generation, config: SampleConfig) -> list[int]:
    """The block lengths at or above the one the checkpoint recommends (``config``'s, not
    sent) that divide ``max_tokens`` into at most ``--max-steps`` blocks, shortest first:
    what a recommendation may grow to under the limit (``fit_blocks``, ``cap_default_steps``).
    None where the client sent ``block_length`` (its choice), nothing is recommended, the run
    is segmented or the checkpoint's block size is fixed."""
    G, bl, most = config.gen_length, config.block_length, state.limits.max_steps
    if req.block_length is not None or bl is None or config.segment_length is not None \
            or api.facts_of(state.loaded).block_size:  # fmt: skip
        return []
    return [b for b in range(bl, G + 1) if G % b == 0 and G // b <= most]


def fit_blocks(state: ServerState, req: _Generation, config: SampleConfig) -> SampleConfig:
    """``config`` whose ``block_length`` the checkpoint recommends (not sent), made the
    shortest at or above it that divides ``max_tokens`` into at most ``--max-steps`` blocks,
    as a dynamic policy under the limit needs (a step a block): the client chose no block
    length, so none is refused (``api.sample_config`` fits it to sent steps the same way)."""
    G, bl = config.gen_length, config.block_length
    if bl is None or G % bl or G // bl <= state.limits.max_steps:
        return config
    fits = longer_blocks(state, req, config)
    return dataclasses.replace(config, block_length=fits[0]) if fits else config


def cap_dynamic_steps(state: ServerState, decoder: Decoder, config: SampleConfig,
                      prompt_lengths: list[int]) -> SampleConfig:
    """``config`` (a dynamic policy, steps not sent) with its steps cut to ``--max-steps``,
    or a 400 where the run has more blocks than that: each block takes a step."""
    most = state.limits.max_steps
    capped = dataclasses.replace(config, steps=most)
    G = config.gen_length
    bs = api.facts_of(state.loaded).block_size
    if decoder.name == "bd3lm" and bs:
        from unmask.sampling.blocks import plan_blocks

        facts = api.facts_of(state.loaded)  # an empty prompt: its start token's column too
        columns = [facts.prompt_columns(n, decoder.name) for n in prompt_lengths]
        try:
            plan = plan_blocks(config, bs, columns, absolute=getattr(
                state.cfg, "block_align", "pad") == "absolute")
        except UserError:  # another refusal: prepare's own 400 (check_whole_blocks)
            return capped
        if plan.num_blocks <= most:
            return capped
        raise APIError(400, f"max_tokens ({G}) spans {plan.num_blocks} blocks of the model's "
                       f"block_size {bs}, more than the server's --max-steps ({most}); a "
                       f"{config.policy} policy takes a step per block at least: send "
                       f"max_tokens <= {plan.first_new + (most - 1) * bs}", param="max_tokens",
                       code="invalid_value")
    bl = config.block_length or G
    blocks = G // bl if bl > 0 and G % bl == 0 else 1  # not whole blocks: prepare's 400
    if blocks <= most:
        return capped
    fewer = next(d for d in range(-(-G // most), G + 1) if G % d == 0)  # whole blocks
    raise APIError(400, f"max_tokens ({G}) in blocks of {bl} is {blocks} blocks, more than the "
                   f"server's --max-steps ({most}); a {config.policy} policy takes a step "
                   f"per block at least: send block_length {fewer}, or max_tokens "
                   f"<= {most * bl}", param="block_length", code="invalid_value")


def request_error(req: _Generation, e: UserError) -> APIError:
    """The 400 for a library refusal ``e`` of a completions or chat request, in the API's
    words: the library's ``gen_length`` is the request's ``max_tokens`` (the message named an
    option the client never sent, and had no ``param``), named as the client sent it (chat's
    ``max_completion_tokens`` too)."""
    message = re.sub(r"(?<![-\w])gen_length\b", "max_tokens", str(e))
    param = sent_option(req, e)
    if param is None and message.startswith("max_tokens"):
        param = ("max_completion_tokens" if getattr(req, "max_completion_tokens", None)
                 is not None else "max_tokens")
    return APIError(400, message, param=param, code="invalid_value")


def check_whole_blocks(state: ServerState, decoder: Decoder, config: SampleConfig,
                       prompt_lengths: list[int]) -> None:
    """A ``UserError`` for what decoder bd3lm refuses when it starts (``blocks.plan_blocks``,
    the same check): a canvas that is not whole blocks of the checkpoint's ``block_size``, or
    for LLaDA 2.x (blocks counted from the first prompt token) a batch of prompts of unequal
    lengths modulo it; steps that do not split evenly over its blocks; an empty prompt counted
    as its start token (``ModelFacts.prompt_columns``, as the decoder lays it out). Found here
    so that a streamed request is a 400 too, not an error event after a 200."""
    from unmask.sampling.blocks import absolute_blocks, plan_blocks

    facts = api.facts_of(state.loaded)
    if decoder.name != "bd3lm" or not facts.block_size:
        return
    plan_blocks(config, facts.block_size,
                [facts.prompt_columns(n, decoder.name) for n in prompt_lengths],
                absolute=absolute_blocks(state.cfg),
                started=[facts.prompt_columns(n, decoder.name) > n for n in prompt_lengths])


def check_token_prompts(state: ServerState, prompts: list[list[int]]) -> None:
    """A 400 for a token-id prompt with an id outside the served tokenizer's vocabulary
    (the mask id is a blank the model fills, as ``[MASK]`` in a text prompt)."""
    vocab = state.cfg.vocab_size
    for k, ids in enumerate(prompts):
        bad = next((i for i in ids if not 0 <= i < vocab), None)
        if bad is not None:
            where = "prompt" if len(prompts) == 1 else f"prompt.{k}"
            raise APIError(400, f"{where}: token id {bad} is not in the vocabulary (0 to "
                           f"{vocab - 1})", param="prompt", code="invalid_value")


def check_penalties_apply(decoder: Decoder, config: SampleConfig) -> None:
    """A 400 naming the penalty that the served checkpoint's ``decoder`` cannot apply (SEDD,
    the continuous families), before a stream starts."""
    given = given_penalties(config)
    if not given:
        return
    try:
        check_penalty_decoder(decoder.name, config)
    except UserError as e:
        raise APIError(400, str(e), param=given[0], code="invalid_value") from None


def finish(state: ServerState, ids: list[int], stops: list[str], reply: Reply
           ) -> tuple[str, str, int]:
    """(text, finish_reason, completion tokens) of one generated row: up to EOS (for chat,
    also the template's end-of-turn tokens, and stripped, as ``ChatTemplate.reply``), then
    up to the first stop sequence (in chat, the first one in the reply's text: whitespace
    before it, which the reply drops, is not searched) or, in a chat through a built-in
    template, where the reply starts another turn (``ChatTemplate.turn_start``), whichever
    starts first: finish reason ``stop``.

    The completion tokens are the generated tokens up to and including the one that ended
    the text: the EOS or end-of-turn token (as OpenAI and vLLM count the token that ends a
    completion, and ``unmask generate`` counts it: ``api.Generation.n_tokens``), or the last
    token of the stop sequence or turn marker found; all of the row when it ran to
    ``max_tokens``."""
    rule = TextEnd(tuple(stops), reply.ends, reply.template if reply.chat else None)
    text, span, by_id, n_tokens = text_ended(state.tok, ids, rule)
    if span is not None:
        text = text[: span[0]]
    reason = "stop" if by_id or span is not None else "length"
    return (text.strip() if reply.chat else text), reason, n_tokens


def prefix_text(state: ServerState, row: list[int], stops: list[str], reply: Reply,
                hold: int = 0) -> tuple[str, bool]:
    """Text of the committed prefix of a generation row that ``finish`` is sure to keep
    (chat holds back trailing whitespace); True when it is final.

    A stop sequence found in the prefix cuts the text there, as ``finish`` cuts it, but it
    is final only when no stop starting earlier may still be completed by the tokens to
    come (``finish`` cuts at the earliest start, not the first stop completed): until then
    the text is held back where that stop starts, as it is wherever one may start. So does
    a chat reply's turn marker (``\\nUs`` may become ``\\nUser:``), so no chunk holds text
    that ``finish`` drops.

    ``hold``: the last tokens of the committed prefix that may still change (token editing,
    ``edit_threshold``: the block decoder rewrites committed tokens of its current block, at
    most a block, while it runs and in edit-only steps after its last mask): left out, and
    the row is final only at an end-of-text token before them (earlier blocks are final),
    not when it has no mask left (its last block may still be edited)."""
    mask_id = state.cfg.mask_id
    k = row.index(mask_id) if mask_id in row else len(row)
    prefix = row[: max(0, k - hold)]
    end = first_end(prefix, reply.ends)
    done = (k == len(row) and not hold) or end < len(prefix)
    text = state.tok.decode(prefix[:end])
    if not done:
        text = text.rstrip("\ufffd")  # an incomplete multi-byte character
    # where the text ends, and where a stop sequence or a turn marker may still be starting
    at, may = stop_bounds(text, stops, reply.template if reply.chat else None)
    if done:
        may = len(text)
    if at is not None and at <= may:
        text, done = text[:at], True
    else:
        text = text[:may]
    if reply.chat:
        text = text.strip()  # a reply ends stripped: a trailing space may turn out its end
    return text, done


@dataclasses.dataclass
class Reply:
    """Who a generation answers: its id, time, kind and prompts."""

    rid: str
    created: int
    chat: bool
    ids: list[list[int]]
    ends: frozenset[int] = frozenset()
    """Tokens that end a row's text: EOS, and for chat the template's end-of-turn tokens."""
    template: ChatTemplate | None = None
    """A chat's template: a reply also ends at the text that ends its turns
    (``ChatTemplate.turn_start``: where it starts another turn of a built-in template, the end
    of turn another writes as markup), the rule of ``unmask chat`` and ``api.chat``."""

    @property
    def object(self) -> str:
        return "chat.completion" if self.chat else "text_completion"


class GenerationEvents:
    """Streamed completions and chat: a chunk whenever a row's final text grows (the
    longest committed run from the start, held back where a stop sequence may start:
    ``prefix_text``), a ``denoising.step`` event per step with ``stream_denoising``, the
    last chunks with ``finish_reason``, and ``usage`` on request."""

    def __init__(self, state: ServerState, request: Request, req: _Generation, job: Job,
                 reply: Reply) -> None:
        self.state, self.request, self.req, self.reply = state, request, req, reply
        self.stops = req.stops()
        self.obj = "chat.completion.chunk" if reply.chat else "text_completion"
        self.sent = [""] * len(job.rows)
        self.closed = [False] * len(job.rows)
        self.last: list[list[int]] | None = None
        self.usage_chunk = bool(req.stream_options and req.stream_options.include_usage)
        self.seed = job.config.seed if job.config is not None else None
        self.hold = 0  # token editing rewrites the current block's committed tokens: they
        # are held back (the streamed text said tokens the edits then changed, not the result's)
        if job.config is not None and job.config.edit_threshold is not None:
            self.hold = api.facts_of(state.loaded).block_size or job.config.gen_length

    def chunk(self, i: int, text: str | None, reason: str | None, *, role: bool = False,
              extra: dict[str, Any] | None = None) -> str:
        choice: dict[str, Any]
        if self.reply.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": i, "delta": delta, "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": i, "text": text or "", "finish_reason": reason, "logprobs": None}
        choice.update(extra or {})
        body = {"id": self.reply.rid, "object": self.obj, "created": self.reply.created,
                "model": self.state.name, "choices": [choice], "seed": self.seed}
        if self.usage_chunk:  # OpenAI: every chunk before the usage chunk has "usage": null
            body["usage"] = None
        return sse(body)

    def opening(self) -> Iterable[str]:
        if self.reply.chat:
            return [self.chunk(i, "", None, role=True) for i in range(len(self.sent))]
        return ()

    def step(self, step: int, rows: list[list[int]]) -> Iterable[str]:
        out = []
        if self.req.stream_denoising:
            out.append(denoising_event(self.state, self.reply.rid, step, rows, self.last))
        self.last = rows
        for i, row in enumerate(rows):
            if self.closed[i]:
                continue
            text, done = prefix_text(self.state, row, self.stops, self.reply, self.hold)
            sent = self.sent[i]
            if done:
                self.closed[i] = True
                if text[len(sent):]:
                    out.append(self.chunk(i, text[len(sent):], None))
                self.sent[i] = text
                continue
            if len(text) > len(sent) and text.startswith(sent):
                out.append(self.chunk(i, text[len(sent):], None))
                self.sent[i] = text
        return out

    def result(self, result: GenOutput) -> Iterable[str]:
        out, completion = [], 0
        for i, row in enumerate(result.gen_ids):
            text, reason, n_tok = finish(self.state, row, self.stops, self.reply)
            completion += n_tok
            sent = self.sent[i]
            rest = text[len(sent):] if text.startswith(sent) else ""
            filled = {} if self.reply.chat else filled_prompt(self.state, result,
                                                               self.reply.ids, self.req.n, i)
            out.append(self.chunk(i, rest or None if self.reply.chat else rest, reason,
                                  extra=filled))
        account(self.state, self.request, self.reply.ids, self.req.n, completion)
        if self.usage_chunk:
            out.append(sse({"id": self.reply.rid, "object": self.obj,
                            "created": self.reply.created, "model": self.state.name,
                            "choices": [], "seed": self.seed,
                            "usage": usage(self.reply.ids, completion)}))
        return out


def filled_prompt(state: ServerState, out: GenOutput, ids: list[list[int]], n: int,
                  i: int) -> dict[str, str]:
    """``{"filled_prompt": ...}`` for choice ``i`` of a completion whose prompt held a
    ``[MASK]`` (a blank the model filled: what the prompt became, as ``unmask generate
    --json`` gives it), else ``{}``; in the answer's choice, and streamed in the choice's
    closing chunk (it was in the plain answer only: a streaming client never saw it)."""
    if i < len(out.prompt_ids) and state.cfg.mask_id in ids[i // max(n, 1)]:
        return {"filled_prompt": state.tok.decode(out.prompt_ids[i])}
    return {}


async def run_generation(state: ServerState, request: Request, req: _Generation,
                         prompts: list[str], encode: Callable[[str], list[int]], *,
                         chat: bool) -> Response:
    """Answer a completions or chat request for ``prompts`` (ids: ``encode``), plain or
    streamed; with ``response_format`` / ``guided_*``, ``routes.guided``."""
    from unmask.server.routes.guided import guidance, run_guided

    guided = guidance(req)
    if guided is not None:
        if req.stops():
            raise APIError(400, f"stop does not apply with {guided['source']}: a structured "
                           "answer is the constraint's whole text (cutting it would break it)",
                           param="stop", code="unsupported")
        return await run_guided(state, request, req, prompts, encode, guided, chat=chat)
    # off the event loop: tokenizing 16 long prompts, and the few dozen checks a refusal's
    # advice may run, held every other client (/healthz, streams) for their whole time
    job, ids = await asyncio.to_thread(prepare, state, req, prompts, encode)
    ends = state.chat_ends if chat else frozenset({state.cfg.eos_id} - {None})
    if chat and job.config is not None:  # a turn's end is never penalised, as api.chat
        job.config = exempting(job.config, ends, state.cfg.eos_id)
    reply = Reply(rid=("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24],
                  created=int(time.time()), chat=chat, ids=ids, ends=ends,
                  template=state.chat if chat else None)
    # a stop sequence ends the work too, not only the text, and so does a chat reply's turn
    # marker (with or without stops: as the library's ``chat``)
    if req.stops() or reply.template is not None:
        job.text_end = TextEnd(tuple(req.stops()), ends, reply.template)
    if req.stream:  # headers at once (the first step may take long); a decoder's refusal at
        # its start arrives as the stream's error event
        return await stream_job(state, request, job,
                                GenerationEvents(state, request, req, job, reply))
    await refuse_if_gone(state, request)  # left while its checks ran: not run
    submit(state, job)
    out: GenOutput = await wait(state, job, request)
    stops = req.stops()
    choices, completion = [], 0
    for i, row in enumerate(out.gen_ids):
        text, reason, n_tok = finish(state, row, stops, reply)
        completion += n_tok
        if chat:
            choices.append({"index": i, "message": {"role": "assistant", "content": text},
                            "finish_reason": reason, "logprobs": None})
        else:
            choice = {"index": i, "text": text, "finish_reason": reason, "logprobs": None}
            choices.append(choice | filled_prompt(state, out, ids, req.n, i))
    account(state, request, ids, req.n, completion)
    return JSONResponse({"id": reply.rid, "object": reply.object, "created": reply.created,
                         "model": state.name, "choices": choices,
                         "usage": usage(ids, completion), "nfe": out.nfe,
                         "steps": out.steps, "batch_rows": out.batch_rows,
                         "seed": job.config.seed if job.config is not None else None})


def router(state: ServerState) -> APIRouter:
    r = APIRouter(dependencies=secured(state))

    @r.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Response:
        if "max_tokens" not in req.model_fields_set:  # 16, within --max-steps
            cut = default_length(state, req, req.max_tokens)
            if cut != req.max_tokens:  # (an assignment counts as sent: only when it changes)
                req.max_tokens = cut
        given = req.token_prompts()
        if given is not None:  # token ids: the prompts are their numbers, encoded as given
            await asyncio.to_thread(check_token_prompts, state, given)  # up to 1 MB of ids
            return await run_generation(state, request, req, [str(k) for k in range(len(given))],
                                        lambda k: given[int(k)], chat=False)
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)  # type: ignore
        return await run_generation(state, request, req, prompts, prompt_encoder(state),
                                    chat=False)

    return r


def prompt_encoder(state: ServerState) -> Callable[[str], list[int]]:
    """The ids of a completions text prompt: a ``[MASK]`` in it is a blank, and a published
    model's BOS leads, as in the CLI (``api.encode_prompt``); a gap of the infill syntax
    (``[MASK:3]``) is a 400 naming ``prompt``, plain, streamed or structured (it named no
    field, where ``/v1/tokenize`` names its ``text``)."""
    encode = functools.partial(api.encode_prompt, state.tok, infill="POST /v1/infill",
                               facts=api.facts_of(state.loaded))

    def encoded(prompt: str) -> list[int]:
        try:
            return encode(prompt)
        except UserError as e:
            raise user_error(e, "prompt") from None

    return encoded
