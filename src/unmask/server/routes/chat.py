"""``POST /v1/chat/completions``: messages rendered by the model's chat template, then the
generation of ``routes.completions``.

A model without a chat template is refused (400, ``code: "unsupported"``), as ``unmask
chat`` refuses it: a base model continues text, and chatting with it through an invented
format returns confident nonsense. The server's operator can choose a template
(``create_app(chat_template=...)``, ``unmask serve --chat-template``).

A reply ends where ``unmask chat`` and ``unmask.api.chat`` end it (``ChatTemplate.reply``): at
EOS or the template's end-of-turn token, and through a built-in template (``plain``,
``default``: plain-text markers) also where it starts another turn (``\\nUser:``;
``ChatTemplate.turn_start``, the one rule, applied by ``completions.finish`` and, streamed,
``completions.prefix_text``). Streamed, a reply's text is held back from where such a marker
may be starting until the tokens after it show whether it does, so no chunk says what the
cut drops. A structured answer (``response_format``) is the constraint's whole text, never
cut.

Inside: ``chat_template`` (the template a server uses for a checkpoint), ``chat_prompt``
(a request's prompt, rendered and tokenized off the event loop) and ``router``.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from unmask.chat import ChatTemplate, template_arg, template_bos_id
from unmask.checkpoint import Loaded
from unmask.errors import UserError
from unmask.server.http import APIError, chat_messages
from unmask.server.plumbing import check_model, max_tokens_room, secured
from unmask.server.routes.completions import default_length, run_generation, served_decoder
from unmask.server.schemas import ChatRequest
from unmask.server.state import ServerState


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
    return ChatTemplate.with_tokens(source, tok, bos_id=template_bos_id(cfg), eos_id=cfg.eos_id,
                                    origin=origin)


def reply_tokens(state: ServerState, req: ChatRequest, prompt_len: int) -> int:
    """A chat reply's length when the request sends no ``max_tokens``: what ``unmask chat``
    writes without ``--gen-length`` (the checkpoint's recommendation, else 64), at most
    ``--max-steps`` where its steps are one per token (no ``steps`` sent or recommended, no
    dynamic policy: ``default_length``; whole blocks of a bd3lm checkpoint), cut to the room
    the context leaves after the prompt (``max_tokens_room``: the drafter's context where it
    is shorter, whole blocks of a bd3lm checkpoint; an empty prompt counts its start token,
    ``ModelFacts.prompt_columns``, as the length check does); with segments, or no room at
    all (the length check then names the messages), not cut to the room."""
    from unmask import api

    want = default_length(state, req, api.sample_config(state.loaded, {}).gen_length)
    if req.segment_length is not None:
        return want
    facts = api.facts_of(state.loaded)
    room = max_tokens_room(state, facts.prompt_columns(prompt_len, served_decoder(facts)))
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


def chat_prompt(state: ServerState, chat: ChatTemplate, req: ChatRequest
                ) -> tuple[str, list[int]]:
    """The prompt of ``req``'s messages rendered by ``chat`` and its ids (a 400 naming
    ``messages`` for messages too long or a template that fails on them); a ``max_tokens``
    not sent is set (``reply_tokens``). Thread-safe: it reads the state and tokenizes."""
    try:  # a message's "[EOS]" or "<|im_start|>" is text; the template's markup is not
        messages = chat_messages(req.messages)
        check_length(state, sum(len(m["content"]) for m in messages))
        # before tokenizing it, and before the name probe (one more rendering, in prompt)
        check_length(state, len(chat.render(messages, check_names=False)))
        prompt, ids = chat.prompt(state.tok, messages)
    except UserError as e:  # unmask.chat turns every template failure into one line
        raise APIError(400, str(e), param="messages", code="invalid_value") from None
    if req.max_tokens is None:
        req.max_tokens = reply_tokens(state, req, len(ids))
    return prompt, ids


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
        # off the event loop: rendering and tokenizing 64k characters of messages held
        # every other client (/healthz, streams) meanwhile
        prompt, ids = await asyncio.to_thread(chat_prompt, state, chat, req)
        return await run_generation(state, request, req, [prompt], lambda _: ids, chat=True)

    return r
