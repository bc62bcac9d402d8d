"""Structured output on ``/v1/completions``, ``/v1/chat/completions`` and ``/v1/infill``:
OpenAI's ``response_format`` (``json_object``, ``json_schema`` with ``strict``) and vLLM's
``guided_json`` / ``guided_regex`` / ``guided_choice``.

A constrained request is a form (``unmask.infill.schema.constraint_form``) filled after the
prompt in one diffusion pass (``unmask.infill.fill_form`` with ``prefix_ids``), or left to
right under the same automata on a causal (``ar``) checkpoint, alone on the worker, so every
answer parses and validates by construction. Streamed through the one
SSE streamer (``unmask.server.streaming.stream_job``), it sends the answer's text as it
becomes final (``AnswerSoFar``: the skeleton and each finished value, in order) and, with
``stream_denoising``, every denoising step (the form filling in); the streamed text ends
equal to the unstreamed answer.

Inside: ``guidance`` (the request's constraint, or None; 400 for bad ones), ``AnswerSoFar``,
``GuidedEvents``, ``run_guided``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from unmask import api
from unmask.errors import CONTEXT_WORDS, UserError
from unmask.messages import plural
from unmask.sampling.loop import StepCallback
from unmask.server.http import APIError, JSONResponse, sse
from unmask.server.plumbing import (
    TakesSeconds,
    account,
    alone,
    blaming,
    check_generation,
    check_names,
    check_text,
    checked,
    left_to_right,
    note,
    overflow_param,
    refuse_causal_masks,
    refuse_editing,
    refuse_repeated_keys,
    repair_calls,
    run_alone,
    sample_config,
    token_steps,
    usage,
    user_error,
)
from unmask.server.schemas import Guided, _Generation
from unmask.server.state import ServerState
from unmask.server.streaming import denoising_event, refuse_if_gone, stream_job


def guidance(req: Guided) -> dict[str, Any] | None:
    """The keyword arguments of ``constraint_form`` the request asks for (None: plain text).
    400 naming the field for a malformed ``response_format`` or two constraints at once."""
    given: list[tuple[str, dict[str, Any]]] = []
    if req.response_format is not None:
        kwargs = response_format(req.response_format)
        if kwargs is not None:
            given.append(("response_format", kwargs))
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


SCHEMA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A ``json_schema.name`` OpenAI accepts: letters, digits, ``_`` and ``-``, at most 64."""

_FORMAT_KEYS = {"text": {"type"}, "json_object": {"type"}, "json_schema": {"type", "json_schema"}}
_JSON_SCHEMA_KEYS = {"name", "description", "schema", "strict"}


def _format_error(message: str, param: str, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def response_format(rf: dict[str, Any]) -> dict[str, Any] | None:
    """The ``constraint_form`` keywords of OpenAI's ``response_format`` (None: ``text``), or a
    400 naming the field in OpenAI's words where OpenAI refuses it: a missing ``type``, an
    unknown key, ``json_schema`` without its ``name`` (required, ``[A-Za-z0-9_-]{1,64}``)
    or ``schema``, a ``strict`` or ``description`` of the wrong type."""
    kind = rf.get("type")
    if kind is None:
        raise _format_error("Missing required parameter: 'response_format.type'.",
                            "response_format.type", "missing_field")
    if not isinstance(kind, str) or kind not in _FORMAT_KEYS:
        raise _format_error(f"response_format type {kind!r} is not one of text, json_object, "
                            "json_schema", "response_format")
    extra = sorted(set(rf) - _FORMAT_KEYS[kind])
    if extra:
        raise _format_error(f"Unknown parameter: 'response_format.{extra[0]}' (with type "
                            f"{kind!r})", f"response_format.{extra[0]}", "unknown_field")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"json_object": True}
    spec = rf.get("json_schema")
    if spec is None:
        raise _format_error("Missing required parameter: 'response_format.json_schema'.",
                            "response_format.json_schema", "missing_field")
    if not isinstance(spec, dict):
        raise _format_error("response_format.json_schema must be an object with name and "
                            "schema", "response_format.json_schema")
    extra = sorted(set(spec) - _JSON_SCHEMA_KEYS)
    if extra:
        raise _format_error(f"Unknown parameter: 'response_format.json_schema.{extra[0]}'.",
                            f"response_format.json_schema.{extra[0]}", "unknown_field")
    name = spec.get("name")
    if name is None:
        raise _format_error("Missing required parameter: 'response_format.json_schema.name'.",
                            "response_format.json_schema.name", "missing_field")
    if not isinstance(name, str) or not SCHEMA_NAME.fullmatch(name):
        raise _format_error("Invalid 'response_format.json_schema.name': expected a string of "
                            "1 to 64 letters, digits, underscores or dashes "
                            "('^[a-zA-Z0-9_-]+$')", "response_format.json_schema.name")
    for key, kind_of, what in (("strict", bool, "a boolean"), ("description", str, "a string")):
        if spec.get(key) is not None and not isinstance(spec[key], kind_of):
            raise _format_error(f"Invalid type for 'response_format.json_schema.{key}': "
                                f"expected {what}", f"response_format.json_schema.{key}")
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise _format_error("response_format.json_schema.schema must be a JSON Schema object",
                            "response_format.json_schema.schema")
    return {"json_schema": schema}


def schema_text(schema: Any) -> str:
    """A sent schema (or ``/v1/forms`` form) as the text ``max_prompt_chars`` holds to: as
    sent when a string, else compact JSON that keeps non-ASCII characters (``json.dumps``'s
    defaults counted a 19,354-character schema as 80,560: ``\\uXXXX`` escapes and spaces
    after separators)."""
    if isinstance(schema, str):
        return schema
    return json.dumps(schema, ensure_ascii=False, separators=(",", ":"))


def build_form(state: ServerState, kwargs: dict[str, Any], max_tokens: int, *,
               slow: bool = True, then: Callable[[], None] | None = None) -> tuple[Any, bool]:
    """``constraint_form`` for the served tokenizer, its automata compiled (``parse_form``:
    kept in ``cached_automaton``, so that the worker and a stream's ``AnswerSoFar`` find
    them built); a ``UserError`` becomes a 400 naming the field (an unenforceable keyword, a
    regex the engine rejects, a too large automaton). A schema is held to the size of a
    form's text (``limits.max_prompt_chars``, ``check_text``): it had no bound (an ``enum``
    of 5000 entries compiles for seconds). ``then``: a check run after that, before anything
    is looked up or compiled (``plumbing.refuse_repeated_keys``: a body over the size costs
    one parse, not two).

    A form compiled before is taken from ``state.forms`` (nothing compiles) while no
    automaton has been dropped from the cache since (``automaton.evictions``: its automata
    may be gone, and would compile outside the slow check); otherwise, unless ``slow``,
    ``TakesSeconds`` (``plumbing.checked``: the caller compiles it on a
    slow-check thread)."""
    from unmask.infill.automaton import evictions
    from unmask.infill.forms import parse_form
    from unmask.infill.schema import constraint_form

    schema = kwargs.get("json_schema")
    if schema is not None:  # as a form's text: its size bounds the compile work
        check_text(state, schema_text(schema), kwargs["source"])
    if then is not None:
        then()
    if "regex" in kwargs and not state.limits.allow_regex:
        raise APIError(
            400,
            "regex constraints are turned off on this server (guided_regex)",
            param="guided_regex",
            code="unsupported",
        )
    # (not sort_keys: a schema's property order is its answer's field order)
    key = json.dumps([kwargs, max_tokens], ensure_ascii=False)
    stamp = evictions()  # read before compiling: its own build may drop automata
    kept = state.forms.get(key)
    if kept is not None and kept[0] == stamp:  # its automata are all still cached
        return kept[1]  # type: ignore[no-any-return]
    if not slow:
        raise TakesSeconds
    try:
        form, parse = constraint_form(state.tok, max_tokens=max_tokens, **kwargs)
    except UserError as e:
        raise APIError(400, str(e), param=kwargs["source"], code="invalid_value") from None
    try:
        parse_form(form, state.tok, source=kwargs["source"])  # its automata compile here
    except UserError as e:
        raise user_error(e, kwargs["source"]) from None
    state.forms.put(key, (stamp, (form, parse)))
    return form, parse


def fitting_choices(state: ServerState, choices: list[Any], max_tokens: int) -> list[Any]:
    """The ``guided_choice`` entries a sent ``max_tokens`` has room for (their tokens, as
    ``constraint_form`` counts a choice's width), or a 400 naming ``max_tokens`` when none
    fits: the answer was the longest choice whatever ``max_tokens`` said. A malformed list is
    left as it is (``build_form`` refuses it in its words)."""
    if not choices or not all(isinstance(c, str) and c for c in choices):
        return choices
    sizes = [len(state.tok.encode(c)) for c in choices]
    fits = [c for c, n in zip(choices, sizes, strict=True) if n <= max_tokens]
    if not fits:
        raise APIError(400, f"guided_choice: no choice fits in max_tokens ({max_tokens}): the "
                       f"shortest is {min(sizes)} tokens", param="max_tokens",
                       code="invalid_value")
    return fits


def room_check(holes: list[Any], automata: list[Any], source: str, width: int, bound: str,
               param: str) -> None:
    """A 400 naming ``param`` where a scalar hole's shortest answer takes over ``width``
    tokens (``bound`` names the limit in the message, with the hole's path). An array or
    object of any length is one hole whose punctuation is part of its tokens (``FormHole.
    composite``): each of its values may fit where the whole does not, so it is not held to
    ``width`` (an array of 3 integers under ``max_tokens`` 4 was refused)."""
    for hole, automaton in zip(holes, automata, strict=True):
        fewest = automaton.min_tokens() or 0
        if fewest > width and not hole.composite:
            raise APIError(400, f"{source}: at {hole.path}, a value's shortest answer takes "
                           f"{fewest} tokens; {bound} bounds each value", param=param,
                           code="invalid_value")


def piece_widths(tok: Any, items: list[Any], holes: list[Any], after_text: bool) -> list[int]:
    """The tokens each piece of a parsed form (``parse_form``'s items: skeleton text, holes)
    takes at its widest, laid as ``fill_form`` lays it: the first piece, when no text comes
    before it (``after_text`` False), starts a text (a SentencePiece word start: one token
    more on a Llama-style tokenizer); a hole its width."""
    from unmask.infill.template import segment_ids

    return [len(segment_ids(tok, v, first=k == 0 and not after_text)) if kind == "text"
            else holes[v].width for k, (kind, v) in enumerate(items)]


def check_answer_room(state: ServerState, items: list[Any], holes: list[Any], source: str,
                      prompt: int, after_text: bool, max_tokens: int) -> None:
    """A 400 in the request's words (``context_length_exceeded``) when a structured answer at
    its widest does not fit in the context after the ``prompt``'s tokens (``after_text``: the
    prompt holds text, not only a BOS: ``piece_widths``); found here, before the worker, where
    it read "the form needs 66 tokens (holes at their widest) ...; use fewer or shorter
    holes", words of ``/v1/forms`` that a completions or chat client has no use for."""
    from unmask.infill.ordered import form_span

    answer = sum(piece_widths(state.tok, items, holes, after_text))
    need = form_span(prompt, answer, causal=state.causal)
    if need > state.max_seq_len:
        raise APIError(400, f"{source}: its answer takes up to {answer} tokens at its widest "
                       f"(each open value up to max_tokens {max_tokens}, the skeleton on "
                       f"top), {need} with the prompt's {prompt}, more than {CONTEXT_WORDS} "
                       f"{state.max_seq_len}): send a smaller max_tokens, a shorter prompt or "
                       f"a smaller {source}", param=source, code="context_length_exceeded")


class AnswerSoFar:
    """The answer's text as far as a partly filled canvas has made it final: the skeleton
    and every hole from the form's start up to the first hole still masked (or not yet in
    its language), each written as the answer writes it (JSON values re-serialised as
    ``json.dumps`` does). A bare hole (regex, choice: no JSON) also gives its committed
    leading tokens, trailing spaces held back (they may be padding). On the finished canvas
    this is the answer (``answer_text``), so a stream of its growth ends in the answer.

    Committed tokens are final except in a repair (a hole broken by two commits in one
    step is refilled); a hole is only written once it satisfies its language, so a repair
    never takes back a whole hole, only, rarely, a bare hole's leading tokens."""

    def __init__(self, state: ServerState, form: Any, parse: bool, offset: int, source: str):
        from unmask.infill.automaton import vocab_of
        from unmask.infill.forms import parse_form

        items, self.holes, _ = parse_form(form, state.tok, source=source)
        self.vocab, self.mask_id, self.parse = vocab_of(state.tok), state.cfg.mask_id, parse
        # (start, end, skeleton text or hole index) of each layout piece on the canvas row
        self.pieces: list[tuple[int, int, str | int]] = []
        at = offset
        # the skeleton encoded as ``fill_form`` lays it on the canvas
        for (_, v), width in zip(items, piece_widths(state.tok, items, self.holes, offset > 0),
                                 strict=True):
            self.pieces.append((at, at + width, v))
            at += width

    def _hole(self, k: int, ids: list[int]) -> str | None:
        """Hole ``k``'s text in the answer, or None while it is not final."""
        hole = self.holes[k]
        if self.mask_id in ids:
            if self.parse or len(self.holes) > 1:
                return None
            lead = ids[: ids.index(self.mask_id)]  # a bare hole: its committed leading tokens
            return self.vocab.decode(lead).rstrip(" ").rstrip("\ufffd") or None
        raw = hole.written(self.vocab.decode(ids))
        body = raw.rstrip(" ")[1:] if hole.space else raw.rstrip(" ")
        if not hole.matches(body):
            return None
        if not self.parse:
            return body
        dumped = json.dumps(json.loads(('"' if hole.quoted else "") + body), ensure_ascii=False)
        return (" " if hole.space else "") + (dumped[1:] if hole.quoted else dumped)

    def text(self, row: list[int]) -> str:
        out: list[str] = []
        for start, end, piece in self.pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            done = self._hole(piece, row[start:end])
            if done is None:
                break
            out.append(done)
            if self.mask_id in row[start:end]:
                break
        return "".join(out)


class GuidedEvents:
    """A constrained completion streamed: ``denoising.step`` events (with
    ``stream_denoising``), a content chunk whenever the answer's final text grows
    (``AnswerSoFar``), the rest of the answer, a closing chunk and ``usage`` on request."""

    def __init__(
        self,
        state: ServerState,
        request: Request,
        req: _Generation,
        rid: str,
        chat: bool,
        so_far: AnswerSoFar,
        ids: list[int],
        prompt_columns: int,
        *,
        seed: int | None = None,
    ) -> None:
        self.state, self.request, self.req, self.rid, self.chat = state, request, req, rid, chat
        self.so_far, self.ids = so_far, ids
        self.prompt_columns = prompt_columns
        """The prompt's columns of a step's rows (its BOS hidden): its ``denoising.step``
        events show the answer's positions only, as an unguided completion's (they sent the
        whole prompt's tokens with every step)."""
        self.obj = "chat.completion.chunk" if chat else "text_completion"
        self.last: list[list[int]] | None = None
        self.sent = ""
        self.created = int(time.time())  # one for every chunk of the stream, as at OpenAI
        self.usage_chunk = bool(req.stream_options and req.stream_options.include_usage)
        self.seed = seed  # the seed it ran with, in every chunk (as a completion's stream)

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
        return sse(self._body([choice]))

    def _body(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        body = {
            "id": self.rid,
            "object": self.obj,
            "created": self.created,
            "model": self.state.name,
            "choices": choices,
            "seed": self.seed,
        }
        if self.usage_chunk:  # OpenAI: every chunk before the usage chunk has "usage": null
            body["usage"] = None
        return body

    def opening(self) -> Iterable[str]:
        return [self._chunk("", None, role=True)] if self.chat else ()

    def step(self, step: int, rows: list[list[int]]) -> Iterable[str]:
        out = []
        if self.req.stream_denoising:
            answer = [row[self.prompt_columns :] for row in rows]
            if self.last is not None and len(self.last) != len(answer):
                self.last = None
            out.append(denoising_event(self.state, self.rid, step, answer, self.last))
            self.last = answer
        text = self.so_far.text(rows[0])
        if len(text) > len(self.sent) and text.startswith(self.sent):
            out.append(self._chunk(text[len(self.sent) :], None))
            self.sent = text
        return out

    def result(self, result: Any) -> Iterable[str]:
        answer, completion = settle(self.state, self.request, self.ids, result,
                                    self.so_far.parse)
        rest = answer[len(self.sent) :] if answer.startswith(self.sent) else ""
        out = [self._chunk(rest, None)] if rest else []
        out.append(self._chunk(None, "stop"))
        if self.usage_chunk:
            out.append(sse({**self._body([]), "usage": usage([self.ids], completion)}))
        return out


def answer_text(res: Any, parse: bool) -> str:
    """The answer of a filled constraint: JSON written compactly (no padding), or the text."""
    return json.dumps(res.value, ensure_ascii=False) if parse else res.text


def settle(state: ServerState, request: Request, ids: list[int], res: Any, parse: bool
           ) -> tuple[str, int]:
    """The answer of a finished constrained request (prompt ``ids``) and its completion
    tokens: the returned text's tokens, as a plain completion counts its text (not the
    canvas, padding included). Counted in the metrics and the access log as every
    completion (``account``), with its NFE in the log (the ``nfe`` metric counted its forwards
    when its run ended: ``batching.ForwardCount``)."""
    text = answer_text(res, parse)
    completion = len(state.tok.encode(text))
    note(request, nfe=res.nfe)
    account(state, request, [ids], 1, completion)
    return text, completion


async def run_guided(
    state: ServerState,
    request: Request,
    req: _Generation,
    prompts: list[str],
    encode: Callable[[str], list[int]],
    kwargs: dict[str, Any],
    *,
    chat: bool,
) -> Response:
    """Answer a constrained completions / chat request (one prompt of ids ``encode``,
    ``n`` = 1), after the checks every completions request passes."""
    from unmask.infill import fill_form
    from unmask.infill.forms import parse_form
    from unmask.infill.ordered import form_span

    top_p = check_generation(state, req, prompts)
    try:
        api.refuse_continuous(state.loaded, "structured output")
    except UserError as e:
        raise user_error(e, "response_format") from None
    left_to_right(state, req, req.max_tokens)  # a causal model's fill: no denoising loop
    if len(prompts) != 1 or req.n != 1:  # the field that broke it (it named n for prompts)
        raise APIError(400, "structured output takes one prompt and n = 1",
                       param="n" if len(prompts) == 1 else "prompt", code="invalid_value")
    # not the checkpoint's recommendation (no ``loaded``): its penalties, measured on free
    # text, would fight the constraint (a structured answer repeats on purpose); steps not
    # sent: one per masked token, at most --max-steps, as a plain completion's (``token_steps``;
    # /v1/infill and /v1/forms run the library's default, as their commands do)
    config = dataclasses.replace(sample_config(req, 1, token_steps(state)), top_p=top_p)
    check_names(config)
    # a form is filled without token editing: edit_threshold and max_post_steps would do
    # nothing, a 400 as on /v1/forms (they were silently ignored; 0, off, passes as in a
    # plain completion); before its automata compile, for seconds
    refuse_editing(req, config, "structured output")
    ids = encode(prompts[0])
    refuse_causal_masks(state, req, [ids])
    # the one rule of a form's room (the end-of-text token after a full answer takes none)
    need = form_span(len(ids), req.max_tokens, causal=state.causal)
    if need > state.max_seq_len:
        room = state.max_seq_len - (need - req.max_tokens)
        eot = " + the end-of-text token" if need > len(ids) + req.max_tokens else ""
        raise APIError(
            400,
            f"prompt ({plural(len(ids), 'token')}) + max_tokens ({req.max_tokens}){eot} "
            f"exceeds the model's context of {state.max_seq_len} tokens",
            param=overflow_param(req, room),
            code="context_length_exceeded",
        )
    source = kwargs["source"]
    # a published model's BOS leads as fill_form's ``start_ids`` (as /v1/forms lays it):
    # hidden from the steps streamed, and after it alone (an empty prompt) the answer starts
    # a text, as the tokenizer encodes one (it was laid as a continuation, "<s>{" on a
    # Llama-style tokenizer, not "<s>▁{")
    bos = api.facts_of(state.loaded).prompt_ids([])
    start = bos if bos and ids[: len(bos)] == bos else []
    prefix = ids[len(start) :]

    bound = req.max_tokens if "max_tokens" in req.model_fields_set else None
    body = await request.body()

    def compiled(slow: bool) -> tuple[Any, bool, AnswerSoFar | None]:
        """The form, and what a stream writes the answer with: their automata compile for
        seconds the first time (a slow check: on the loop, they held every client), then
        are cached (``build_form``: no slow check); a schema sent as an object with a key
        given twice is a 400 after its size check (``refuse_repeated_keys``, at the first
        call)."""
        given = kwargs
        if "choice" in given and bound is not None:
            given = {**given, "choice": fitting_choices(state, given["choice"], bound)}
        form, parse = build_form(state, given, req.max_tokens, slow=slow, then=None if slow
                                 else lambda: refuse_repeated_keys(body, req))
        items, holes, automata = parse_form(form, state.tok, source=source)  # (cached)
        if bound is not None:
            room_check(holes, automata, source, bound, f"max_tokens ({bound})", "max_tokens")
        check_answer_room(state, items, holes, source, len(ids), bool(prefix), req.max_tokens)
        if not req.stream:
            return form, parse, None
        try:  # its refusal before the stream starts names the field, as the plain one
            return form, parse, AnswerSoFar(state, form, parse, len(prefix), source)
        except UserError as e:
            raise user_error(e, source) from None

    form, parse, so_far = await checked(state, request, compiled, on=state.compiles)
    # a sampled request sent no seed: one drawn and reported, as for a completion (it runs
    # alone on the worker, so the seed costs nothing); sending it back repeats the answer
    config = api.with_seed(config)
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]

    def run(on_step: StepCallback) -> Any:  # its automata compiled in ``compiled``
        return fill_form(state.model, state.tok, form, config, step_callback=on_step,
                         source=kwargs["source"], start_ids=start, prefix_ids=prefix,
                         parse=parse, max_repair_calls=repair_calls(state, config))

    # "the form needs 625 tokens": response_format
    work = blaming(run, req, kwargs["source"], most=state.limits.max_steps)
    if so_far is not None:
        events = GuidedEvents(state, request, req, rid, chat, so_far, ids, len(prefix),
                              seed=config.seed)
        return await stream_job(state, request, alone(work), events, first_step=True)
    await refuse_if_gone(state, request)  # left while its checks ran: not run
    res = await run_alone(state, request, work)
    text, completion = settle(state, request, ids, res, parse)
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
            "usage": usage([ids], completion),
            "nfe": res.nfe,
            "steps": res.nfe,  # alone on the worker: every step one forward of its own row
            "batch_rows": 1,
            "seed": config.seed,
        }
    )


__all__ = [
    "AnswerSoFar", "GuidedEvents", "build_form", "check_answer_room",
    "fitting_choices", "guidance", "piece_widths", "response_format", "room_check", "run_guided",
]
