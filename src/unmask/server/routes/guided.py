"""Structured output on ``/v1/completions``, ``/v1/chat/completions`` and ``/v1/infill``:
OpenAI's ``response_format`` (``json_object``, ``json_schema`` with ``strict``) and vLLM's
``guided_json`` / ``guided_regex`` / ``guided_choice``.

A constrained request is a form (``unmask.infill.schema.constraint_form``) filled after the
prompt in one diffusion pass (``unmask.infill.fill_form`` with ``prefix_ids``), alone on the
worker, so every answer parses and validates by construction. Streamed, it sends the
denoising steps (``stream_denoising``: the form filling in) and then the answer as chunks.

Inside: ``guidance`` (the request's constraint, or None; 400 for bad ones), ``run_guided``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from unmask.errors import UserError
from unmask.sampling.loop import StepCallback
from unmask.server.http import APIError, sse
from unmask.server.plumbing import (
    alone,
    check_model,
    check_steps,
    diffusion_only,
    note,
    run_alone,
    sample_config,
)
from unmask.server.schemas import Guided, _Generation
from unmask.server.state import ServerState
from unmask.server.streaming import denoising_event, stream_job


def guidance(req: Guided) -> dict[str, Any] | None:
    """The keyword arguments of ``constraint_form`` the request asks for (None: plain text).
    400 naming the field for a malformed ``response_format`` or two constraints at once."""
    given: list[tuple[str, dict[str, Any]]] = []
    rf = req.response_format
    if rf is not None:
        kind = rf.get("type")
        if kind == "json_object":
            given.append(("response_format", {"json_object": True}))
        elif kind == "json_schema":
            spec = rf.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise APIError(
                    400,
                    "response_format.json_schema.schema must be a JSON Schema object",
                    param="response_format",
                    code="invalid_value",
                )
            given.append(("response_format", {"json_schema": schema}))
        elif kind != "text":
            raise APIError(
                400,
                f"response_format type {kind!r} is not one of text, json_object, json_schema",
                param="response_format",
                code="invalid_value",
            )
    if req.guided_json is not None:
        given.append(("guided_json", {"json_schema": req.guided_json}))
    if req.guided_regex is not None:
        given.append(("guided_regex", {"regex": req.guided_regex}))
    if req.guided_choice is not None:
        given.append(("guided_choice", {"choice": list(req.guided_choice)}))
    if len(given) > 1:
        raise APIError(
            400,
            f"give one structured-output constraint, not {len(given)} "
            f"({', '.join(g[0] for g in given)})",
            param=given[1][0],
            code="invalid_value",
        )
    if not given:
        return None
    param, kwargs = given[0]
    return {**kwargs, "source": param}


def build_form(state: ServerState, kwargs: dict[str, Any], max_tokens: int) -> tuple[Any, bool]:
    """``constraint_form`` for the served tokenizer; a ``UserError`` becomes a 400 naming
    the field (an unenforceable keyword, a regex the engine rejects, a too large automaton)."""
    from unmask.infill.schema import constraint_form

    if "regex" in kwargs and not state.limits.allow_regex:
        raise APIError(
            400,
            "regex constraints are turned off on this server (guided_regex)",
            param="guided_regex",
            code="unsupported",
        )
    try:
        return constraint_form(state.tok, max_tokens=max_tokens, **kwargs)
    except UserError as e:
        raise APIError(400, str(e), param=kwargs["source"], code="invalid_value") from None


class GuidedEvents:
    """A constrained completion streamed: ``denoising.step`` events (with
    ``stream_denoising``), then the answer as one content chunk and a closing chunk."""

    def __init__(
        self, state: ServerState, req: _Generation, rid: str, chat: bool, parse: bool
    ) -> None:
        self.state, self.req, self.rid, self.chat, self.parse = state, req, rid, chat, parse
        self.obj = "chat.completion.chunk" if chat else "text_completion"
        self.last: list[list[int]] | None = None

    def _chunk(self, text: str | None, reason: str | None, role: bool = False) -> str:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "finish_reason": reason,
                "logprobs": None,
            }
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}
        return sse(
            {
                "id": self.rid,
                "object": self.obj,
                "created": int(time.time()),
                "model": self.state.name,
                "choices": [choice],
            }
        )

    def opening(self) -> Iterable[str]:
        return [self._chunk("", None, role=True)] if self.chat else ()

    def step(self, step: int, rows: list[list[int]]) -> Iterable[str]:
        if not self.req.stream_denoising:
            return ()
        if self.last is not None and len(self.last) != len(rows):
            self.last = None
        event = denoising_event(self.state, self.rid, step, rows, self.last)
        self.last = rows
        return (event,)

    def result(self, result: Any) -> Iterable[str]:
        return (self._chunk(answer_text(result, self.parse), None), self._chunk(None, "stop"))


def answer_text(res: Any, parse: bool) -> str:
    """The answer of a filled constraint: JSON written compactly (no padding), or the text."""
    return json.dumps(res.value, ensure_ascii=False) if parse else res.text


async def run_guided(
    state: ServerState,
    request: Request,
    req: _Generation,
    prompt_ids: list[list[int]],
    kwargs: dict[str, Any],
    *,
    chat: bool,
) -> Response:
    """Answer a constrained completions / chat request (one prompt, ``n`` = 1)."""
    from unmask.infill import fill_form

    check_model(state, req.model)
    check_steps(state, req)
    diffusion_only(state, "structured output (response_format, guided_*)")
    if len(prompt_ids) != 1 or req.n != 1:
        raise APIError(
            400, "structured output takes one prompt and n = 1", param="n", code="invalid_value"
        )
    ids = prompt_ids[0]
    if len(ids) + req.max_tokens > state.max_seq_len:
        raise APIError(
            400,
            f"prompt ({len(ids)} tokens) + max_tokens ({req.max_tokens}) "
            f"exceeds the model's context of {state.max_seq_len} tokens",
            param="max_tokens",
            code="context_length_exceeded",
        )
    form, parse = build_form(state, kwargs, req.max_tokens)
    config = sample_config(req, 1, state.max_seq_len)
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]

    def run(on_step: StepCallback) -> Any:
        return fill_form(
            state.model,
            state.tok,
            form,
            config,
            step_callback=on_step,
            source=kwargs["source"],
            prefix_ids=ids,
            parse=parse,
        )

    if req.stream:
        events = GuidedEvents(state, req, rid, chat, parse)
        return await stream_job(state, request, alone(run), events, first_step=True)
    res = await run_alone(state, request, run)
    state.metrics.inc("nfe", res.nfe)
    note(request, nfe=res.nfe)
    text = answer_text(res, parse)
    completion = len(res.tokens)
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
            "logprobs": None,
        }
    else:
        choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
    return JSONResponse(
        {
            "id": rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": state.name,
            "choices": [choice],
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": completion,
                "total_tokens": len(ids) + completion,
            },
            "nfe": res.nfe,
        }
    )


__all__ = ["GuidedEvents", "build_form", "guidance", "run_guided"]
