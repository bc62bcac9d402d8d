"""``POST /v1/chat/completions``: messages rendered by the model's chat template, then the
generation of ``routes.completions``.

A model without a chat template is refused (400, ``code: "unsupported"``), as ``unmask
chat`` refuses it: a base model continues text, and chatting with it through an invented
format returns confident nonsense. The server's operator can choose a template
(``create_app(chat_template=...)``, ``unmask serve --chat-template``).

A reply ends where ``unmask chat`` and ``unmask.api.chat`` end it (``ChatTemplate.reply``): at
EOS or the template's end-of-turn token, and through a built-in template (``plain``,
``default``: plain-text markers) also where it starts another turn (``\\nUser:``;
``ChatTemplate.turn_start``, the one rule). Streamed, a reply's text is held back from where
such a marker may be starting until the tokens after it show whether it does, so no chunk
says what the cut drops.

Inside: ``chat_template`` (the template a server uses for a checkpoint), ``reply_finish``,
``reply_prefix``, ``TurnEvents``, ``run_chat`` and ``router``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from unmask.chat import ChatTemplate, template_arg
from unmask.checkpoint import Loaded
from unmask.errors import UserError
from unmask.server.batching import GenOutput, Job
from unmask.server.http import APIError, chat_messages, sse
from unmask.server.plumbing import (
    account,
    check_model,
    max_tokens_room,
    secured,
    submit,
    usage,
    wait,
)
from unmask.server.routes.completions import (
    GenerationEvents,
    Reply,
    default_length,
    finish,
    prefix_text,
    prepare,
    run_generation,
    stop_at,
    stop_may_start,
    tokens_through,
)
from unmask.server.routes.guided import guidance
from unmask.server.schemas import ChatRequest
from unmask.server.state import ServerState
from unmask.server.streaming import denoising_event, stream_job


def chat_template(loaded: Loaded, value: str | None = None) -> ChatTemplate | None:
    """The chat template for ``loaded``: ``value`` when given (a built-in name such as
    ``plain`` or ``default``, a Jinja or JSON file, or Jinja text: ``unmask.chat.template_arg``),
    else the checkpoint's own ``chat_template``, else None (chat is refused). Its
    ``bos_token`` / ``eos_token`` are the model's."""
    cfg, tok = loaded.config, loaded.tokenizer
    if value is not None:
        chosen = template_arg(value)
        source, origin = chosen.source, chosen.origin
    elif getattr(cfg, "chat_template", None):
        source, origin = cfg.chat_template, f"chat template of {loaded.shown}"
    else:
        return None
    return ChatTemplate.with_tokens(source, tok, bos_id=cfg.bos_id, eos_id=cfg.eos_id,
                                    origin=origin)


def reply_tokens(state: ServerState, req: ChatRequest, prompt_len: int) -> int:
    """A chat reply's length when the request sends no ``max_tokens``: what ``unmask chat``
    writes without ``--gen-length`` (the checkpoint's recommendation, else 64), at most
    ``--max-steps`` where its steps are one per token (no ``steps`` sent or recommended, no
    dynamic policy: ``default_length``; whole blocks of a bd3lm checkpoint), cut to the room
    the context leaves after the prompt (``max_tokens_room``: the drafter's context where it
    is shorter, whole blocks of a bd3lm checkpoint); with segments, or no room at all (the
    length check then names the messages), not cut to the room."""
    from unmask import api

    want = default_length(state, req, api.sample_config(state.loaded, {}).gen_length)
    if req.segment_length is not None:
        return want
    room = max_tokens_room(state, prompt_len)
    return min(want, room) if room >= 1 else want


def check_length(state: ServerState, chars: int) -> None:
    """400 naming ``messages`` when their text, or the prompt rendered from them, is longer
    than ``max_prompt_chars``: found before the prompt is tokenized (a megabyte of messages
    held the event loop for seconds, and the refusal named ``prompt``, a field chat has
    not)."""
    limit = state.limits.max_prompt_chars
    if chars > limit:
        raise APIError(400, f"messages are longer than {limit} characters (as the chat "
                       "template renders them)", param="messages", code="too_long")


def _decoded(state: ServerState, ids: list[int], reply: Reply) -> tuple[str, int]:
    """The text of ``ids`` up to the first token that ends a reply, and that token's index."""
    end = next((k for k, i in enumerate(ids) if i in reply.ends), len(ids))
    return state.tok.decode(ids[:end]), end


def reply_finish(state: ServerState, template: ChatTemplate, ids: list[int], stops: list[str],
                 reply: Reply) -> tuple[str, str, int]:
    """``completions.finish`` of a chat row, cut where the reply starts another turn of
    ``template`` (``ChatTemplate.turn_start``, as ``ChatTemplate.reply`` cuts it) unless a
    stop sequence begins before that: finish reason ``stop``, the completion tokens counted
    through the marker, as through a stop sequence."""
    text, reason, n_tokens = finish(state, ids, stops, reply)
    raw, end = _decoded(state, ids, reply)
    turn = template.turn_start(raw)
    if turn is None:
        return text, reason, n_tokens
    lead = len(raw) - len(raw.lstrip())
    at = stop_at(raw[lead:], stops)
    if at is not None and lead + at <= turn[0]:  # the client's stop sequence comes first
        return text, reason, n_tokens
    return raw[: turn[0]].strip(), "stop", tokens_through(state.tok, ids[:end], raw[: turn[1]])


def reply_prefix(state: ServerState, template: ChatTemplate, row: list[int], stops: list[str],
                 reply: Reply) -> tuple[str, bool]:
    """``completions.prefix_text`` of a chat row (the text of its committed prefix that the
    reply is sure to keep; True when final), cut where it starts another turn of
    ``template`` and held back where a marker of one may be starting (``\\nUs`` may become
    ``\\nUser:``), so no streamed chunk holds text ``reply_finish`` drops."""
    text, done = prefix_text(state, row, stops, reply)
    mask_id = state.cfg.mask_id
    k = row.index(mask_id) if mask_id in row else len(row)
    raw, _ = _decoded(state, row[:k], reply)
    turn = template.turn_start(raw)
    if turn is not None:  # final at the cut, unless the text is held back or cut before it
        cut = raw[: turn[0]].strip()
        return (text, done) if len(text) < len(cut) else (cut, True)
    if not done:
        held = raw[: stop_may_start(raw.rstrip("\ufffd"), list(template.turn_starts))].strip()
        if len(held) < len(text):
            text = held
    return text, done


class TurnEvents(GenerationEvents):
    """``GenerationEvents`` of a chat through a template whose reply may start another turn:
    its chunks are ``reply_prefix`` and its last ones ``reply_finish``."""

    def __init__(self, state: ServerState, request: Request, req: ChatRequest, job: Job,
                 reply: Reply, template: ChatTemplate) -> None:
        super().__init__(state, request, req, job, reply)
        self.template = template

    def step(self, step: int, rows: list[list[int]]) -> Iterable[str]:
        out = []
        if self.req.stream_denoising:
            out.append(denoising_event(self.state, self.reply.rid, step, rows, self.last))
        self.last = rows
        for i, row in enumerate(rows):
            if self.closed[i]:
                continue
            text, done = reply_prefix(self.state, self.template, row, self.stops, self.reply)
            sent = self.sent[i]
            if len(text) > len(sent) and text.startswith(sent):
                out.append(self.chunk(i, text[len(sent):], None))
                self.sent[i] = text
            self.closed[i] = done
        return out

    def result(self, result: GenOutput) -> Iterable[str]:
        out, completion = [], 0
        for i, row in enumerate(result.gen_ids):
            text, reason, n_tok = reply_finish(self.state, self.template, row, self.stops,
                                               self.reply)
            completion += n_tok
            sent = self.sent[i]
            rest = text[len(sent):] if text.startswith(sent) else ""
            out.append(self.chunk(i, rest or None, reason))
        account(self.state, self.request, self.reply.ids, self.req.n, completion)
        if self.usage_chunk:
            out.append(usage_event(self, completion))
        return out


def usage_event(events: GenerationEvents, completion: int) -> str:
    """The streamed ``usage`` chunk (``stream_options.include_usage``)."""
    return sse({"id": events.reply.rid, "object": events.obj, "created": events.reply.created,
                "model": events.state.name, "choices": [], "seed": events.seed,
                "usage": usage(events.reply.ids, completion)})


async def run_chat(state: ServerState, request: Request, req: ChatRequest, prompt: str,
                   ids: list[int]) -> Response:
    """Answer a chat request for the rendered ``prompt`` (its ``ids``): ``run_generation``'s
    answer, with the reply cut where it starts another turn of a built-in template
    (``reply_finish``, streamed: ``TurnEvents``). A structured answer (``response_format``)
    is the constraint's whole text, never cut."""
    template = state.chat
    if template is None or not template.turn_starts or guidance(req) is not None:
        return await run_generation(state, request, req, [prompt], lambda _: ids, chat=True)
    job, prompt_ids = prepare(state, req, [prompt], lambda _: ids)
    reply = Reply(rid="chatcmpl-" + uuid.uuid4().hex[:24], created=int(time.time()),
                  chat=True, ids=prompt_ids, ends=state.chat_ends)
    if req.stream:
        return await stream_job(state, request, job,
                                TurnEvents(state, request, req, job, reply, template))
    submit(state, job)
    out: GenOutput = await wait(state, job, request)
    stops = req.stops()
    choices, completion = [], 0
    for i, row in enumerate(out.gen_ids):
        text, reason, n_tok = reply_finish(state, template, row, stops, reply)
        completion += n_tok
        choices.append({"index": i, "message": {"role": "assistant", "content": text},
                        "finish_reason": reason, "logprobs": None})
    account(state, request, prompt_ids, req.n, completion)
    return JSONResponse({"id": reply.rid, "object": reply.object, "created": reply.created,
                         "model": state.name, "choices": choices,
                         "usage": usage(prompt_ids, completion), "nfe": out.nfe,
                         "steps": out.steps, "batch_rows": out.batch_rows,
                         "seed": job.config.seed if job.config is not None else None})


def router(state: ServerState) -> APIRouter:
    r = APIRouter(dependencies=secured(state))

    @r.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request) -> Response:
        check_model(state, req.model)
        chat = state.chat
        if chat is None:
            raise APIError(400, f"model {state.name!r} has no chat template (it was not "
                           "fine-tuned for chat), so chat is refused, as `unmask chat` refuses "
                           "it: use /v1/completions, or serve the model with a chat template "
                           "(unmask serve --chat-template plain, default or FILE)",
                           code="unsupported")
        messages = chat_messages(req.messages)
        try:  # a message's "[EOS]" or "<|im_start|>" is text; the template's markup is not
            check_length(state, sum(len(m["content"]) for m in messages))
            check_length(state, len(chat.render(messages)))  # before tokenizing it
            prompt, ids = chat.prompt(state.tok, messages)
        except UserError as e:  # unmask.chat turns every template failure into one line
            raise APIError(400, str(e), param="messages", code="invalid_value") from None
        if req.max_tokens is None:
            req.max_tokens = reply_tokens(state, req, len(ids))
        return await run_chat(state, request, req, prompt, ids)

    return r
