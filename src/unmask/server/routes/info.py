"""What the server serves and how it is doing: ``GET /v1/models`` (and ``/v1/models/{id}``),
``GET /healthz`` (and ``HEAD``), ``GET /metrics`` (Prometheus text) and ``POST /v1/tokenize``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from unmask import api
from unmask.errors import UserError
from unmask.server.http import JSONResponse
from unmask.server.plumbing import check_model, check_text, secured, user_error
from unmask.server.schemas import TokenizeRequest
from unmask.server.state import ServerState


def router(state: ServerState) -> APIRouter:
    r = APIRouter()
    guard = secured(state)

    @r.post("/v1/tokenize", dependencies=guard)
    async def tokenize(req: TokenizeRequest) -> dict[str, Any]:
        return await asyncio.to_thread(tokenized, req)  # off the event loop: 64k characters

    def tokenized(req: TokenizeRequest) -> dict[str, Any]:
        check_model(state, req.model)
        check_text(state, req.text, "text")
        facts = api.facts_of(state.loaded)
        try:  # as completions encode a prompt: a [MASK] is one blank, [MASK:3] a 400
            ids = api.encode_prompt(state.tok, req.text, infill="POST /v1/infill", facts=facts)
        except UserError as e:
            raise user_error(e, "text") from None
        # the special tokens a prompt's ids hold (a published model's BOS, a blank) show as
        # their own text, which decoding drops (an empty piece)
        shown = {i: state.tok.id_to_token(i) for i in (facts.prompt_bos_id, state.tok.mask_id)
                 if i is not None}
        return {"object": "tokens", "model": state.name, "tokens": ids, "count": len(ids),
                "pieces": [shown.get(i) or state.decode_one(i) for i in ids]}

    def served() -> dict[str, Any]:
        return {"id": state.name, "object": "model", "created": 0, "owned_by": "unmask",
                "max_seq_len": state.max_seq_len,
                "attention": getattr(state.cfg, "attention", None),
                "chat": state.chat is not None, "dtype": api.weights_dtype(state.loaded),
                "sample_defaults": recommended(state)}

    @r.get("/v1/models", dependencies=guard)
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [served()]}

    @r.get("/v1/models/{model:path}", dependencies=guard)
    async def model(model: str) -> dict[str, Any]:
        """OpenAI's "retrieve model" (``client.models.retrieve``): the served model, else a
        404 ``model_not_found``."""
        check_model(state, model)
        return served()

    # open without the key: load balancers probe it, some with HEAD (a 405 read as down;
    # a route of its own, out of the OpenAPI schema: one operation per path and method there)
    @r.head("/healthz", include_in_schema=False)
    @r.get("/healthz")
    async def healthz() -> JSONResponse:
        engine = state.engine
        up = engine.alive  # a dead model worker is a server that answers nothing: 503
        return JSONResponse({"status": "ok" if up else "down", "model": state.name,
                             "queue_depth": engine.queue_depth, "in_flight": engine.in_flight},
                            status_code=200 if up else 503)

    @r.get("/metrics", dependencies=guard)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(state.metrics.render(),
                                 media_type="text/plain; version=0.0.4")

    return r


def recommended(state: ServerState) -> dict[str, Any]:
    """The checkpoint's recommended sampling options (``sample_defaults`` in its config.json)
    that completions and chat completions apply to what a request does not send
    (``api.sample_config``), as ``api.recommended_options`` lists them for the decoder those
    requests run (``served_decoder``: the recommended one, else the objective's): those it has
    no use for left out (a recommended ``ar`` lists no ``block_length``, a decoder that applies
    no penalties none). A recommended ``block_length`` runs as the largest length up to it
    that divides the request's ``max_tokens`` (and, for policy llada, ``steps`` into whole
    blocks); ``steps`` not recommended is one per token. The template tasks (infill, forms) do
    not apply them."""
    from unmask.server.engine import served_decoder

    return api.recommended_options(state.loaded, served_decoder(api.facts_of(state.loaded)))
