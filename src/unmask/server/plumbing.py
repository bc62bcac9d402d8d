"""Request plumbing shared by every route: errors in OpenAI's shape, auth, limits, jobs.

Inside: ``install_error_handlers`` (every error, pydantic's included, answered as
``{"error": {"message", "type", "param", "code"}}``), ``secured`` (the Bearer check as a route
dependency; the key itself is checked by ``limits.check_api_key``), the request checks
(``check_model``, ``check_text``, ``check_steps``, ``diffusion_only``, ``check_generation``,
``check_names``),
``sample_config``, ``blaming`` (the field a refusal found on the worker names), the job life
cycle (``submit``, ``wait``, ``alone``, ``run_alone``, ``job_failure``, ``timed_out``),
``deadline``, ``checked`` and ``slow_check`` (checks that may take seconds, on threads of
their own) and ``note`` (fields for the access log).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from unmask import api
from unmask.checkpoint import Loaded
from unmask.config import SampleConfig
from unmask.errors import CONTEXT_WORDS, UserError
from unmask.infill.options import ConstraintError
from unmask.model import NonFiniteOutput
from unmask.sampling.cache import check_cache_name
from unmask.sampling.loop import StepCallback
from unmask.sampling.policies import make_policy
from unmask.server.batching import Cancelled, Job, QueueFull, WorkerDown, worker_traceback
from unmask.server.http import _STATUS_TYPES, _TYPE_TAGS, ACCESS_FIELDS, APIError, JSONResponse
from unmask.server.schemas import MAX_STOP, DiffusionOptions, _Generation
from unmask.server.state import ServerState, SlowChecks

log = logging.getLogger("unmask.server")

T = TypeVar("T")

_CODES = {"json_invalid": "invalid_json", "extra_forbidden": "unknown_field",
          "missing": "missing_field"}


# -- errors ----------------------------------------------------------------------------------


async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    return exc.response()


def _field(error: Any) -> list[str]:
    """Where a pydantic error is, as the request spells it: without "body" and pydantic's
    union-member tags (``str``, ``list[constrained-str]``, ``function-after[...]``). A key
    of a mapping the request sent is kept whatever its spelling (an infill gap ``"1"``: its
    choice was named ``choices.0``, the gap dropped), and so is the part after a dict-valued
    field (``choices``, ``regex``, ``charset``): a gap named ``float`` is a key as sent, not
    a tag (``choices.float.1`` was ``choices.1``)."""
    loc = [p for p in error.get("loc", ()) if p != "body"]
    return [str(p) for i, p in enumerate(loc)
            if isinstance(p, int) or not _tag(str(p)) or (i and loc[i - 1] in _KEYED)]


_KEYED = ("choices", "regex", "charset")
"""Request fields whose value may be a dict keyed by gap names (``/v1/infill``)."""


def _tag(part: str) -> bool:
    """Whether ``part`` of a pydantic error's location is a union member's tag."""
    return part in _TYPE_TAGS or "[" in part or part.startswith(("constrained-", "function-"))


def _telling(errors: list[Any]) -> Any:
    """The error to report: pydantic lists one per member of a union, the first often of a
    member whose type the value does not have ("Input should be a valid string" for a list);
    then the first error of the same field that is not such a type mismatch, if any (the
    member whose type matched: "should have at least 1 item")."""
    first = errors[0]
    if not str(first.get("type", "")).endswith("_type"):
        return first
    field = _field(first)
    for e in errors[1:]:
        at = _field(e)
        if at[: len(field)] == field and not (at == field and e["type"].endswith("_type")):
            return e
    return first


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = _telling(errors) if errors else {"type": "invalid", "loc": (), "msg": "invalid request"}
    code = _CODES.get(first.get("type", ""), "invalid_value")
    loc = _field(first)
    param = None if code == "invalid_json" else ".".join(loc) or None
    msg = first.get("msg", "invalid request").removeprefix("Value error, ")  # our validators'
    if first.get("type") == "value_error" and msg.startswith("unsupported"):
        code = "unsupported"  # an OpenAI field at a value unmask does not do (schemas.NEUTRAL)
    if first.get("type") == "value_error" and not loc:  # a check of the whole request's
        pass  # fields together (ours: max_tokens against max_completion_tokens): as it says
    elif tuple(first.get("loc", ())) == ("body",):  # the body as a whole
        if code == "missing_field":
            msg = "the request body is empty: send a JSON object"
        elif "json" not in request.headers.get("content-type", ""):
            msg = "send the body as JSON, with the header Content-Type: application/json"
        else:
            msg = f"the request body must be a JSON object ({msg})"
    elif code == "invalid_json":
        msg = f"request body is not valid JSON ({first.get('ctx', {}).get('error', msg)})"
    elif code == "unknown_field":
        msg = f"unknown field {param!r}"
    elif param:
        msg = f"{param}: {msg}"
    return APIError(400, msg, param=param, code=code).response()


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind = _STATUS_TYPES.get(exc.status_code, "invalid_request_error")
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        # FastAPI's words for a body json.loads refused beyond a syntax error
        return APIError(400, "request body is not valid JSON (not UTF-8, nested too deep, or "
                        "a number too long)", code="invalid_json").response()
    return APIError(exc.status_code, str(exc.detail), type=kind, code=None).response()


async def _user_error(request: Request, exc: UserError) -> JSONResponse:
    """A library ``UserError`` a route did not turn into an ``APIError`` itself (found while
    preparing a request): still the user's mistake, a 400, not a 500 with a logged trace."""
    return user_error(exc).response()


async def _crash(request: Request, exc: Exception) -> JSONResponse:
    return crashed(request).response()


def crashed(request: Request) -> APIError:
    """The 500 of an error nothing caught (a bug), logged with its traceback (call it in the
    ``except``): the client sees no internals."""
    log.exception("unhandled error on %s", request.url.path)
    return APIError(500, "internal server error", type="server_error", code="internal_error")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error in OpenAI's shape; no traceback reaches the client."""
    app.add_exception_handler(APIError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(UserError, _user_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _crash)


_INNER_HOLE = re.compile(r"hole \$ <(?:regex|choice|json_object)>: ")
"""The label the form library gives the one hole of a ``guided_regex`` / ``guided_choice`` /
``json_object`` constraint (its root path ``$`` and internal spec): the client wrote neither."""


def spoken(message: str) -> str:
    """A library message in the request's words: without the internal label of a structured
    output constraint's hole (``"guided_regex: hole $ <regex>: no sequence of 2 tokens
    satisfies it"`` reads ``"guided_regex: no sequence of 2 tokens satisfies it"``)."""
    return _INNER_HOLE.sub("", message)


def user_error(e: UserError, param: str | None = None) -> APIError:
    """A 400 for a ``UserError`` of the library (a bad template, impossible settings); a bad
    gap constraint names its field (``choices.city``). A refusal of something too long for
    the model's context (its message says ``CONTEXT_WORDS``: a form, schema or template) is
    coded ``context_length_exceeded``, as a too-long prompt is, on every endpoint (structured
    output on completions and chat said ``invalid_value`` where ``/v1/forms`` said that).
    A model that gave NaN or infinite outputs (``NonFiniteOutput``) is the server's failure,
    not the request's: a 500 ``server_error`` (logged), not a 400 telling a client that its
    valid request was invalid."""
    if isinstance(e, NonFiniteOutput):
        log.error("model execution failed: %s", e)
        return APIError(500, str(e), type="server_error", code="model_error")
    if param is None and isinstance(e, ConstraintError):
        param = e.option if e.key is None else f"{e.option}.{e.key}"
    message = spoken(str(e))
    code = "context_length_exceeded" if CONTEXT_WORDS in message else "invalid_value"
    return APIError(400, message, param=param, code=code)


def sent_option(opts: DiffusionOptions, e: UserError) -> str | None:
    """The request field a library refusal ``e`` is about, for ``param``: the option its
    message starts with, when the request sent it (else None: the checkpoint's
    recommendation, or several options together). A field is named as the request spells
    it (``schema``, not ``schema_``)."""
    first = re.match(r"[A-Za-z_]*", str(e)).group(0)  # "steps: ..." or "steps (7) ..."
    fields = type(opts).model_fields
    sent = {fields[k].alias or k for k in opts.model_fields_set if k in fields}
    return first if first in sent else None


def blaming(fn: Callable[[StepCallback], Any], opts: DiffusionOptions,
            default: str | None = None, *, most: int | None = None
            ) -> Callable[[StepCallback], Any]:
    """``fn`` (work for the worker), its ``UserError`` a 400 whose ``param`` names the field
    the message starts with when the request sent it (``sent_option``), else ``default``; a
    gap constraint's error names its own field (``user_error``). Without this, a refusal found
    on the worker (a template too long for the context, a form's bad JSON) had no ``param``.
    ``most``: the server's ``--max-steps``, which a refusal's advice must not pass
    (``max_steps_blocks``)."""

    def run(on_step: StepCallback) -> Any:
        try:
            return fn(on_step)
        except ConstraintError as e:
            raise user_error(e) from None
        except UserError as e:
            raise (max_steps_blocks(opts, e, most)
                   or user_error(e, sent_option(opts, e) or default)) from None

    return run


def max_steps_blocks(opts: DiffusionOptions, e: UserError,
                     most: int | None = None) -> APIError | None:
    """The 400 for a fill's refusal of fewer steps than blocks (``FewerStepsThanBlocks``) where the
    steps it advises are more than the client may send: where the request sent no ``steps`` they
    were the server's ``--max-steps`` (``with_default_steps``), which the client cannot raise,
    so the answer says so and offers the longer blocks only (it said "steps (3) ... try 4 steps"
    to a client that sent none); where it sent them and the advice passes ``most``
    (``--max-steps``), the same (``steps`` 8 at ``--max-steps`` 8 was told "try 15 steps", a 400
    of its own). None for any other refusal, or advice the server would run."""
    from unmask.infill.fill import FewerStepsThanBlocks

    if not isinstance(e, FewerStepsThanBlocks):
        return None
    param = "block_length" if "block_length" in opts.model_fields_set else None
    fit = f"block_length {e.fitting_block_length}"
    if "steps" not in opts.model_fields_set:
        return APIError(400, f"steps ({e.steps}: the server's --max-steps, none sent) "
                        f"{e.rule()}; send {fit}", param=param, code="invalid_value")
    if most is None or e.blocks <= most:
        return None
    return APIError(400, f"steps ({e.steps}) {e.rule()}, and the server's --max-steps is {most}: "
                    f"send {fit}", param=param, code="invalid_value")


def template_steps(state: ServerState) -> int:
    """The ``steps`` of a template task (``/v1/infill``, ``/v1/forms``, ``/v1/edit``) that
    sends none: the library's default (``SampleConfig.steps``, which the fill caps at the
    masked tokens), as ``unmask infill`` / ``fill-form`` / ``edit`` and ``api.infill`` /
    ``fill_form`` / ``edit`` run it, within ``--max-steps``: the same text as the command line
    and the API for the same seed."""
    return min(SampleConfig.steps, state.limits.max_steps)


def token_steps(state: ServerState) -> int:
    """The ``steps`` of a fill that sends none where the server runs one per masked token
    (the fill caps them at its masks), up to ``--max-steps``: structured output on
    ``/v1/completions`` and ``/v1/chat/completions``, as a plain completion there runs a step
    per token (no command or API entry fills a schema after a prompt), and a template task
    whose blocks the library's default cannot cover (``with_default_steps``)."""
    return min(state.max_seq_len, state.limits.max_steps)


def with_default_steps(state: ServerState, opts: DiffusionOptions, config: SampleConfig,
                       call: Callable[[SampleConfig], T], *, least_blocks: int = 0) -> T:
    """``call(config)``; where the request sent no ``steps`` and the fill refuses the default
    (``template_steps``) as fewer than its blocks with a gap (``FewerStepsThanBlocks``, typed
    by the library: a sent ``block_length`` of more blocks than that, which the command line
    refuses too), ``call`` again with one step per masked token up to ``--max-steps``, as the
    server ran such a request before: a request it served is not refused for a number the
    client never sent. The fill refuses before its first step, but after an edit's ``lowest``
    has scored the text: ``least_blocks``, the fewest blocks with a gap the work can have
    (``lowest`` k tokens fill at least k / ``block_length`` blocks), more than the default
    steps goes to the second call at once (the text was scored twice, and the forwards of
    the first scoring were neither counted in ``nfe`` nor held to ``--max-steps``)."""
    from unmask.infill.fill import FewerStepsThanBlocks

    more = dataclasses.replace(config, steps=token_steps(state))
    if "steps" in opts.model_fields_set or more.steps <= config.steps:
        return call(config)  # the steps the client or the operator chose
    if least_blocks > config.steps:  # refused for certain
        return call(more)
    try:
        return call(config)
    except FewerStepsThanBlocks:
        pass  # (out of the except: a refusal of the second call is not chained to it)
    return call(more)


UNIQUE_KEYS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("form",), "form"), (("schema",), "schema"), (("guided_json",), "schema"),
    (("response_format", "json_schema", "schema"), "schema"),
    (("choices",), "keys"), (("regex",), "keys"), (("charset",), "keys"))
"""The request fields whose JSON objects' keys mean something (their path in the body) and
which of their objects do (``refuse_repeated_keys``): a form's every object, a schema's as
the library reads them (not inside an annotation), a gap mapping's own keys."""


def _walk(node: Any, keys: tuple[str, ...]) -> Any:
    """``node[keys[0]][keys[1]]...``, None where a step is no object or lacks its key."""
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def refuse_repeated_keys(body: bytes, req: DiffusionOptions) -> None:
    """A 400 naming the field where a form, a schema or a gap mapping (``UNIQUE_KEYS``) that
    ``req`` sent as a JSON object gives a key twice in one object, as the same JSON sent as
    text is refused (``unmask.infill.forms.load_json``, as ``unmask fill-form`` reads a
    file), with the line and column in the request ``body``. The body's parser kept the last
    value in silence: a form's first field of that name vanished from the answer, a schema's
    first ``properties`` went unenforced, a gap's first ``choices`` were dropped. Only where
    such a field was sent as an object (one more parse of the body; the text of one is
    checked where it is read)."""
    from unmask.infill.forms import _objects, load_json
    from unmask.infill.schema import _read_objects

    readers: dict[str, Callable[[Any], Any]] = {
        "form": _objects, "schema": _read_objects, "keys": lambda node: [node]}
    names = {f.alias or k: k for k, f in type(req).model_fields.items()}
    text = None
    for path, kind in UNIQUE_KEYS:
        sent = getattr(req, names[path[0]], None) if path[0] in names else None
        if not isinstance(_walk(sent, path[1:]), (dict, list)):
            continue
        if text is None:
            text = body.decode(json.detect_encoding(body), "surrogatepass")

        def read(doc: Any, path: tuple[str, ...] = path, kind: str = kind) -> Any:
            node = _walk(doc, path)
            return readers[kind](node) if isinstance(node, (dict, list)) else ()

        try:
            load_json(text, ".".join(path), read=read, within=" of the request body")
        except UserError as e:
            raise APIError(400, str(e), param=path[0], code="invalid_value") from None


# -- auth and checks -------------------------------------------------------------------------


def secured(state: ServerState) -> list[Any]:
    """Route dependencies that require ``Authorization: Bearer <api key>`` when the server
    has a key (``check_api_key``; compared in constant time, as the header's bytes)."""
    key = state.api_key

    async def auth(request: Request) -> None:
        if key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token_bytes = token.strip().encode("latin-1")  # as sent (Starlette decodes latin-1)
        if scheme.lower() != "bearer" or not hmac.compare_digest(token_bytes, key):
            raise APIError(401, "invalid or missing API key (Authorization: Bearer ...)",
                           type="authentication_error", code="invalid_api_key")

    return [Depends(auth)]


def check_model(state: ServerState, requested: str | None) -> None:
    """404 unless ``requested`` is the served id (or absent)."""
    if requested is not None and requested != state.name:
        raise APIError(404, f"model {requested!r} is not served here (this server serves "
                       f"{state.name!r})", type="not_found_error", param="model",
                       code="model_not_found")


def check_text(state: ServerState, text: str, param: str) -> None:
    """400 for a prompt, template or text over ``max_prompt_chars``."""
    if len(text) > state.limits.max_prompt_chars:
        raise APIError(400, f"{param} is longer than {state.limits.max_prompt_chars} characters",
                       param=param, code="too_long")


def check_steps(state: ServerState, opts: DiffusionOptions) -> None:
    if opts.steps is not None and opts.steps > state.limits.max_steps:
        raise APIError(400, f"steps must be <= {state.limits.max_steps}", param="steps",
                       code="invalid_value")


def repair_calls(state: ServerState, config: SampleConfig | Mapping[str, Any]) -> int:
    """The model calls a refill of constrained spans that broke may make (``max_repair_calls``
    of ``unmask.infill.fill_canvas``): what ``--max-steps`` leaves after the sampler's own
    steps, so that a request runs at most ``--max-steps`` forwards in all (past it the
    broken spans are completed from their automata without the model). It was one call per
    re-masked token on top of the steps: a form at ``--max-steps 10`` ran 46 forwards."""
    steps = config.get("steps") if isinstance(config, Mapping) else config.steps
    if steps is None:  # the library's (embed-diffusion: no refill)
        steps = state.limits.max_steps
    return max(0, state.limits.max_steps - int(steps))


def diffusion_only(state: ServerState, what: str) -> None:
    """400 when the served checkpoint is autoregressive and ``what`` needs masks."""
    if state.causal:
        raise APIError(400, f"{what} needs a masked diffusion checkpoint; this one is "
                       "autoregressive (causal)", code="unsupported")


def left_to_right(state: ServerState, opts: DiffusionOptions, gen_length: int) -> None:
    """On a causal checkpoint, a 400 naming the denoising loop's options that ``opts`` sends
    (``steps`` other than ``gen_length``, ``block_length``, ``policy``, ``cache``, ...: the
    served decoder's ``unused``, refused as a plain completion refuses them) where a request
    is filled left to right (structured output, ``/v1/forms``, a fill-in-the-middle
    ``/v1/infill``): they would do nothing, and were accepted in silence."""
    if not state.causal:
        return
    from unmask.infill.ordered import refuse_loop_options

    sample_config(opts, gen_length, gen_length)  # its refusals first (segment_length, ...)
    try:  # the library's check of the options sent, as unmask infill and fill-form make it
        refuse_loop_options(api.facts_of(state.loaded), sent_options(opts), gen_length)
    except UserError as e:
        raise user_error(e, sent_option(opts, e)) from None


def refuse_editing(opts: DiffusionOptions, config: SampleConfig, task: str) -> None:
    """A 400 naming a generation-only option that ``config`` sets (``api.GENERATION_ONLY``:
    token editing's ``edit_threshold``, ``max_post_steps``) where ``task`` fills a form, which
    edits no tokens: it would do nothing (structured output accepted them in silence)."""
    try:
        api.refuse_generation_only(config, task)
    except UserError as e:
        raise user_error(e, sent_option(opts, e)) from None


def check_generation(state: ServerState, req: _Generation, prompts: list[str]) -> float | None:
    """The checks of a completions or chat request that need only the request itself, with
    structured output or without: a 400 naming the field. Returns its ``top_p`` (None: off)."""
    limits = state.limits
    check_model(state, req.model)
    check_steps(state, req)
    if req.n > limits.max_n:
        raise APIError(400, f"n must be <= {limits.max_n}", param="n", code="invalid_value")
    if len(prompts) > limits.max_prompts:
        raise APIError(400, f"at most {limits.max_prompts} prompts per request", param="prompt",
                       code="invalid_value")
    if len(req.stops()) > MAX_STOP:
        raise APIError(400, f"at most {MAX_STOP} stop sequences", param="stop",
                       code="invalid_value")
    if req.stream_denoising and not req.stream:
        raise APIError(400, "stream_denoising needs stream: true", param="stream_denoising",
                       code="invalid_value")
    if req.stream_options is not None and not req.stream:  # as OpenAI
        raise APIError(400, "The 'stream_options' parameter is only allowed when 'stream' is "
                       "enabled", param="stream_options", code="invalid_value")
    top_p = None if req.top_p in (None, 1.0) else req.top_p
    if top_p is not None and not state.causal:
        raise APIError(400, "top_p applies to autoregressive checkpoints only; this one is a "
                       "diffusion model", param="top_p", code="invalid_value")
    for p in prompts:
        check_text(state, p, "prompt")
    return top_p


def refuse_causal_masks(state: ServerState, req: _Generation, ids: list[list[int]]) -> None:
    """A 400 naming the prompt (``messages`` in chat) when a causal checkpoint is given a
    prompt with ``[MASK]``: its decoder's refusal, found before a stream starts (it was a 200
    and an error event), and for structured output before the worker (it named the
    constraint's field, and said "or infill")."""
    mask_id = state.cfg.mask_id
    if state.causal and mask_id is not None and any(mask_id in i for i in ids):
        raise APIError(400, "an autoregressive model cannot fill a [MASK] in the prompt; use a "
                       "masked diffusion model", param="messages" if hasattr(req, "messages")
                       else "prompt", code="invalid_value")


def overflow_param(req: _Generation, fits: int) -> str:
    """``param`` of a ``context_length_exceeded`` 400: ``max_tokens`` while a smaller one
    would fit (``fits``: the largest, ``max_tokens_room``), else the prompt's own field
    (``messages`` in chat, ``prompt``): no ``max_tokens`` could fit it."""
    if fits >= 1:
        return "max_tokens"
    return "messages" if hasattr(req, "messages") else "prompt"


def max_tokens_room(state: Any, prompt_columns: int) -> int:
    """The largest ``max_tokens`` that fits after a prompt of ``prompt_columns`` canvas
    columns in the served context (with ``--draft``, the smaller of the two:
    ``ServerState.context``), whole blocks of a block-diffusion checkpoint as its decoder
    writes them (``unmask.sampling.blocks.room_after_prompt``, as ``unmask demo`` and ``unmask
    chat``); 0 or less: none fits. Callers count the columns with
    ``ModelFacts.prompt_columns`` under the decoder the request runs
    (``unmask.server.routes.completions.served_decoder``), so an empty prompt's start token
    is counted by that one rule."""
    from unmask import api
    from unmask.sampling.blocks import absolute_blocks, room_after_prompt

    room = room_after_prompt(prompt_columns, state.context[0],
                             block_size=api.facts_of(state.loaded).block_size,
                             absolute=absolute_blocks(state.cfg))
    assert room is not None  # ServerState.context is always a number
    return room


def check_names(config: SampleConfig) -> None:
    """The registry names of ``config`` (commit policy and its parameters, cache), checked as
    ``validate`` checks them for a diffusion model; a 400 naming the field."""
    try:
        make_policy(config)
    except UserError as e:
        raise user_error(e, "policy") from None
    try:
        check_cache_name(config.cache)
    except UserError as e:
        raise user_error(e, "cache") from None


SAMPLE_OPTIONS: tuple[str, ...] = (
    "temperature", "seed", "steps", "block_length", "policy", "threshold", "cache",
    "edit_threshold", "max_post_steps", "segment_length", "repetition_penalty",
    "presence_penalty", "frequency_penalty", "no_repeat_ngram_size",
)
"""The ``DiffusionOptions`` fields that are ``SampleConfig`` fields of the same name."""


def sent_options(opts: DiffusionOptions) -> dict[str, Any]:
    """The ``SampleConfig`` options (``SAMPLE_OPTIONS``) the request sent, but as null: what
    the user chose, ``steps: 64`` as much as ``steps: 63`` (the dataclass's default)."""
    sent = {k: getattr(opts, k) for k in SAMPLE_OPTIONS if k in opts.model_fields_set}
    return {k: v for k, v in sent.items() if v is not None}


def sample_config(opts: DiffusionOptions, gen_length: int, default_steps: int, *,
                  segments: bool = False, loaded: Loaded | None = None,
                  prompt_lengths: list[int] | None = None) -> SampleConfig:
    """The request's diffusion options as a ``SampleConfig``; ``segment_length`` is refused
    (400) unless ``segments`` (plain text generation: the template tasks fill canvases); an
    option of another commit policy than the request's (``threshold``) is refused too: it
    would do nothing.

    With ``loaded`` (text generation: completions and chat), every option the request did not
    send (or sent as null) is the checkpoint's recommendation, else the default, exactly as
    ``unmask generate`` without that flag (``api.sample_config``; ``steps`` one per token):
    the server and the command line write the same text for the same options;
    ``prompt_lengths`` fits steps not sent to the blocks of a checkpoint that counts them from
    the first prompt token (``api.fit_block_steps``)."""
    if opts.segment_length is not None and not segments:
        raise APIError(400, "segment_length applies to text generation (completions and chat "
                       "completions without structured output)", param="segment_length",
                       code="invalid_value")
    given = sent_options(opts)
    if loaded is not None:  # (which checks the policy's options too)
        return api.sample_config(loaded, {"gen_length": gen_length, **given},
                                 prompt_lengths=prompt_lengths)
    try:
        api.check_policy_options(opts.policy, given)
    except UserError as e:
        raise user_error(e, sent_option(opts, e)) from None
    return SampleConfig(gen_length=gen_length, steps=opts.steps or default_steps,
                        block_length=opts.block_length, policy=opts.policy,
                        threshold=opts.threshold, cache=opts.cache,
                        temperature=opts.temperature, seed=opts.seed,
                        edit_threshold=opts.edit_threshold, max_post_steps=opts.max_post_steps,
                        segment_length=opts.segment_length,
                        repetition_penalty=opts.repetition_penalty or 1.0,
                        presence_penalty=opts.presence_penalty or 0.0,
                        frequency_penalty=opts.frequency_penalty or 0.0,
                        no_repeat_ngram_size=opts.no_repeat_ngram_size or 0)


def note(request: Request, **fields: float | int | str) -> None:
    """Add ``fields`` (rows, tokens, NFE: ``http.ACCESS_FIELDS``) to the request's access-log
    line."""
    line = request.scope.get("unmask.access")
    if line is not None:
        line.update({k: v for k, v in fields.items() if k in ACCESS_FIELDS})


def usage(prompt_ids: list[list[int]], completion: int) -> dict[str, int]:
    """OpenAI's ``usage``: each prompt counts once, whatever ``n`` (as OpenAI and vLLM count)."""
    prompt = sum(len(i) for i in prompt_ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def account(state: ServerState, request: Request, ids: list[list[int]], n: int,
            completion: int) -> None:
    """Count a finished generation's tokens (metrics and the access log)."""
    prompt = sum(len(i) for i in ids)
    state.metrics.inc("prompt_tokens", prompt)
    state.metrics.inc("completion_tokens", completion)
    note(request, rows=len(ids) * n, prompt_tokens=prompt, completion_tokens=completion)


# -- jobs ------------------------------------------------------------------------------------


def submit(state: ServerState, job: Job) -> None:
    """Queue ``job``; 429 when the queue is full, 503 when the model worker has stopped."""
    try:
        state.engine.submit(job)
    except WorkerDown:
        raise worker_down() from None
    except QueueFull:
        state.metrics.inc("rejected")
        raise APIError(429, f"the server is busy ({state.limits.max_queue} requests queued); "
                       "retry later", type="rate_limit_error", code="queue_full") from None


class TakesSeconds(Exception):  # noqa: N818 (a signal to ``checked``, not an error)
    """Raised by a request's checks run with ``slow=False`` (``checked``) at the work that
    may take seconds: a structured answer's automata not compiled yet
    (``routes.guided.build_form``), a regex search."""


async def checked(state: ServerState, request: Request, fn: Callable[[bool], T], *,
                  on: SlowChecks) -> T:
    """``fn(False)``: a request's checks, on one of asyncio's default threads (off the event
    loop), as every request's; where they reach work that may take seconds (they raise
    ``TakesSeconds``), ``fn(True)`` as a slow check on the threads ``on`` (``slow_check``).
    So a request that compiles nothing (a form compiled before, its automata cached) never
    waits for the slow checks: it waited behind other clients' compiles and regex searches,
    or got their 429."""
    try:
        return await asyncio.to_thread(fn, False)
    except TakesSeconds:
        return await slow_check(state, lambda: fn(True), request, on=on)


async def slow_check(state: ServerState, fn: Callable[[], T], request: Request, *,
                     on: SlowChecks) -> T:
    """``fn()``: a request's checks that may take seconds (a user's regex searched in a child
    process for up to ``REGEX_SECONDS``: ``unmask.infill.edit.regex_spans``, ``on``
    ``state.searches``; a structured answer's automata compiled, on ``state.compiles``) on
    the threads of that kind (``SlowChecks``), not asyncio's default ones: six slow regex
    searches held every default thread, and every other request's checks waited for them.
    Up to ``max_queue`` wait for a thread, holding none; beyond that, 429. Past the request's
    deadline (``deadline``: waiting included), 504; a client gone while it waits, 499 (it is
    dropped, not run: a queue of abandoned requests held the threads for those still
    waiting)."""
    limits = state.limits
    with on.lock:
        if on.pending >= limits.max_slow_checks + limits.max_queue:
            busy = on.pending
        else:
            busy, on.pending = 0, on.pending + 1
    if busy:
        state.metrics.inc("rejected")
        raise APIError(429, f"the server is busy ({busy} requests with slow checks, {on.what}, "
                       "running or queued); retry later", type="rate_limit_error",
                       code="queue_full")

    def done(_: object) -> None:  # when it ends, or is cancelled before it starts
        with on.lock:
            on.pending -= 1

    future = on.pool.submit(contextvars.copy_context().run, fn)
    future.add_done_callback(done)
    fut = asyncio.wrap_future(future)
    try:
        await until_done(state, fut, request)
    finally:
        if not fut.done():  # a check still waiting for a thread is dropped (its slot freed
            state.metrics.inc("cancelled")  # now); a running one ends on its own
            future.cancel()
            fut.cancel()
    return fut.result()


def worker_down() -> APIError:
    """The 503 for a request the stopped model worker cannot run (``GET /healthz`` says
    ``down`` too): at once, not a 504 after ``--timeout``."""
    return APIError(503, "the model worker has stopped; no request can be answered until the "
                    "server is restarted", type="server_error", code="worker_down")


def job_failure(e: BaseException) -> APIError:
    """The answer for a job that failed: its own ``APIError`` (``blaming``), 499 cancelled,
    400 for a ``UserError``, else 500 (logged; the client sees only the exception's type)."""
    if isinstance(e, APIError):  # the work's own refusal, as it is (``blaming``)
        return e
    if isinstance(e, WorkerDown):
        return worker_down()
    if isinstance(e, Cancelled):
        return APIError(499, "request cancelled", code="cancelled")
    if isinstance(e, UserError):
        return user_error(e)
    tb = worker_traceback(e)
    log.error("model execution failed: %r%s", e, f"\n{tb.rstrip()}" if tb else "")
    return APIError(500, f"model execution failed ({type(e).__name__})", type="server_error",
                    code="model_error")


def timed_out(state: ServerState) -> APIError:
    return APIError(504, f"request took longer than {state.limits.request_timeout_s:g} s",
                    type="timeout_error", code="timeout")


def drop(state: ServerState, job: Job) -> None:
    """Give up on a job whose client went away (or whose time ran out)."""
    state.metrics.inc("cancelled")
    state.engine.cancel(job)


def deadline(state: ServerState, request: Request) -> float:
    """The event loop's time when ``request`` runs out of time: ``--timeout`` after its first
    wait (a slow check's, or the model's), one for all its waits (a slow check and then the
    model job each had the whole ``--timeout``: a request could take twice it)."""
    return request.scope.setdefault(  # type: ignore[no-any-return]
        "unmask.deadline", asyncio.get_running_loop().time() + state.limits.request_timeout_s)


async def until_done(state: ServerState, fut: asyncio.Future[Any], request: Request) -> None:
    """Wait for ``fut``: a 504 past the request's ``deadline`` (counted), a 499 when the
    client of ``request`` goes away first (polled every 0.25 s). ``fut`` is left as it is."""
    loop = asyncio.get_running_loop()
    end = deadline(state, request)
    while True:
        remaining = end - loop.time()
        if remaining <= 0:
            state.metrics.inc("timeouts")
            raise timed_out(state)
        done, _ = await asyncio.wait({fut}, timeout=min(0.25, remaining))
        if done:
            return
        if await request.is_disconnected():
            raise job_failure(Cancelled())  # a 499, logged as one line


async def wait(state: ServerState, job: Job, request: Request) -> Any:
    """The job's result; cancels it when the client goes away or the timeout passes."""
    fut = asyncio.wrap_future(job.future)
    try:
        await until_done(state, fut, request)
        try:
            return fut.result()
        except BaseException as e:  # noqa: BLE001
            raise job_failure(e) from None
    finally:
        if not fut.done():
            drop(state, job)
            # the job ends later with ``Cancelled``: retrieve it, so asyncio does not log
            # "exception was never retrieved"
            fut.add_done_callback(_retrieve)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def alone(fn: Callable[[StepCallback], Any]) -> Job:
    """A job that runs ``fn(step_callback)`` alone on the worker. The callback (called after
    every sampler step with the canvas (B, L)) stops the work with ``Cancelled`` once the
    job is cancelled, and hands the canvas rows to ``job.sink`` when it has one."""
    job = Job()

    def on_step(step: int, tokens: torch.Tensor) -> None:  # worker thread
        if job.cancelled:
            raise Cancelled
        if job.sink is not None:
            job.sink(step, tokens.tolist())

    job.fn = lambda: fn(on_step)
    return job


async def run_alone(state: ServerState, request: Request,
                    fn: Callable[[StepCallback], Any]) -> Any:
    """Run ``fn`` alone on the worker (``alone``) and wait for its result."""
    job = alone(fn)
    submit(state, job)
    return await wait(state, job, request)
