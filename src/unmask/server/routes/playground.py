"""``GET /`` (and ``HEAD /``): the playground, one static page
(``unmask/server/static/playground.html``) that calls the same API as any client; and
``GET /playground/options``: what the page's blank fields run, computed by the library's
rule (``api.sample_config``) within the server's ``--max-steps`` as ``/v1/completions`` applies
it, so the page keeps no copy of either."""

from __future__ import annotations

import asyncio
import functools
from importlib import resources
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from unmask import api
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.sampling import choose_decoder, validate
from unmask.server.http import APIError
from unmask.server.plumbing import check_names, check_steps, max_tokens_room, secured
from unmask.server.schemas import CompletionRequest, DiffusionOptions
from unmask.server.state import ServerState

SHOWN = ("steps", "block_length", "temperature", "policy", "threshold")
"""The options the page has fields for (``max_tokens`` is the length itself)."""


def blank_fields(state: ServerState, max_tokens: int | None, steps: int | None,
                 policy: str | None) -> dict[str, Any]:
    """What a playground request that sends only ``max_tokens``, ``steps`` and ``policy`` (each
    when given) runs with: ``complete`` as ``/v1/completions`` configures it (the checkpoint's
    recommendation over the defaults, a recommended ``block_length`` fitted to the length and
    steps: ``api.sample_config``; a ``max_tokens`` not sent and recommended steps cut to the
    server's ``--max-steps``), ``template`` as infill and forms do (the request defaults:
    no recommendation, whatever ``policy`` is given), the ``recommended`` options themselves
    (``GET /v1/models``), ``max_steps`` (the server's ``--max-steps``: the most ``steps`` any
    request may send) and ``refused``: the 400 that ``/v1/completions`` answers such a request
    whatever its prompt (a sent ``steps`` over ``--max-steps``; a ``max_tokens`` past the
    context; steps one per token of a ``max_tokens`` over ``--max-steps``), else None.
    ``complete``'s ``block_length`` of a block-diffusion checkpoint (none given nor
    recommended) is its ``block_size``, the blocks its decoder writes, as completions takes
    it (the page said "none": one block, the whole text)."""
    from unmask.server.routes.completions import default_length
    from unmask.server.routes.info import recommended

    sent = {k: v for k, v in (("max_tokens", max_tokens), ("steps", steps), ("policy", policy))
            if v is not None}
    req = CompletionRequest(prompt="", **sent)
    length = req.max_tokens if max_tokens is not None \
        else default_length(state, req, req.max_tokens)  # fmt: skip
    given: dict[str, Any] = {"gen_length": length}
    given.update({k: v for k, v in sent.items() if k != "max_tokens"})
    try:
        runs = api.sample_config(state.loaded, given)
    except UserError as e:
        raise APIError(400, str(e), code="invalid_value") from None
    check_names(runs)  # an unknown policy: a 400 naming it
    runs, refused = within_limits(state, req, runs, length)
    fields = DiffusionOptions.model_fields
    template = {k: fields[k].default for k in ("temperature", "policy", "threshold")}
    complete = {k: getattr(runs, k) for k in SHOWN}
    if complete["block_length"] is None:  # a block-diffusion checkpoint: its own blocks
        complete["block_length"] = api.facts_of(state.loaded).block_size
    return {"recommended": recommended(state),
            "complete": complete,
            "template": template,
            "max_steps": state.limits.max_steps,
            "refused": refused}


def within_limits(state: ServerState, req: CompletionRequest, runs: SampleConfig,
                  length: int) -> tuple[SampleConfig, str | None]:
    """``runs`` with recommended steps capped to ``--max-steps`` as ``/v1/completions`` caps
    them (``cap_default_steps``), and the first 400 it answers ``req`` whatever the prompt, in
    its order: a sent ``steps`` over ``--max-steps`` (``check_steps``), a ``length`` past the
    context even after an empty prompt (its start token's column where the served decoder
    gives it one: ``ModelFacts.prompt_columns``, as completions counts it), a sent option the
    decoder refuses (``steps`` or ``policy`` on a causal model), steps one per token over
    ``--max-steps``, steps that do not split over the blocks, a length that is not whole
    blocks of a bd3lm checkpoint; None when it runs."""
    from unmask.server.routes.completions import (
        cap_default_steps,
        check_whole_blocks,
        request_error,
        served_decoder,
    )

    refused = None
    try:
        check_steps(state, req)
    except APIError as e:
        refused = e.message
    ctx, who = state.context
    facts = api.facts_of(state.loaded)
    empty = len(facts.prompt_ids([]))  # the ids of a prompt "": a published model's BOS
    room = max_tokens_room(state, facts.prompt_columns(empty, served_decoder(facts)))
    if length > room and refused is None:
        refused = (f"max_tokens ({length}) exceeds the {who}'s context of {ctx} tokens; use "
                   f"max_tokens <= {room}, what an empty prompt leaves")
    try:  # /v1/completions' checks in its order (``prepare``), those no prompt changes
        decoder = choose_decoder(facts, runs)  # a causal model's loop
        runs = cap_default_steps(state, req, decoder, runs, [empty])
        if not state.causal:
            validate(runs)  # steps that do not split over the blocks
        # whole blocks of a bd3lm checkpoint; LLaDA 2.x counts its blocks from the first
        # prompt token: that refusal depends on the prompt, and its run's own 400 says it
        if getattr(state.cfg, "block_align", "pad") != "absolute":
            check_whole_blocks(state, decoder, runs, [empty])
    except APIError as e:  # steps one per token over --max-steps: the server's words
        refused = refused or follows(state, req, e)
    except UserError as e:  # the library's refusal, in the API's words
        refused = refused or follows(state, req, request_error(req, e))
    return runs, refused


def follows(state: ServerState, req: CompletionRequest, e: APIError) -> str:
    """The message of ``e`` with the advice ``/v1/completions`` gives (``advised``: only
    values it then accepts), for the playground's empty prompt."""
    from unmask.api import encode_prompt, facts_of
    from unmask.server.routes.completions import advised

    encode = functools.partial(encode_prompt, state.tok, facts=facts_of(state.loaded))
    return advised(state, req, [""], encode, e).message


def router(state: ServerState) -> APIRouter:
    r = APIRouter()

    @r.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)  # HEAD: `curl -I`
    async def playground() -> HTMLResponse:
        page = resources.files("unmask.server").joinpath("static/playground.html")
        text = page.read_text(encoding="utf-8") if page.is_file() else "<p>unmask server</p>"
        return HTMLResponse(text)

    @r.get("/playground/options", include_in_schema=False, dependencies=secured(state))
    async def options(max_tokens: int | None = Query(None, ge=1),
                      steps: int | None = Query(None, ge=1),
                      policy: str | None = Query(None, max_length=32)) -> dict[str, Any]:
        # off the event loop: a refusal's advice runs up to 24 checks of the request
        return await asyncio.to_thread(blank_fields, state, max_tokens, steps, policy or None)

    return r
