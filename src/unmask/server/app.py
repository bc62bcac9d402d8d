"""The FastAPI app: OpenAI-compatible completions and chat, infill, edit, metrics.

Inside: ``ServerLimits``, ``create_app`` and the model runner (errors, middlewares, SSE
and chat rendering live in ``unmask.server.http``).

Endpoints (docs/serving.md): ``POST /v1/completions``, ``POST /v1/chat/completions``
(``stream: true`` = server-sent events in OpenAI's chunk format; ``stream_denoising``
adds one ``denoising.step`` event per sampler step), ``POST /v1/infill`` (``stream: true``:
``denoising.step`` events, then the response body), ``POST /v1/edit``, ``POST
/v1/tokenize``, ``GET /v1/models``, ``GET /healthz``, ``GET /metrics`` and the playground
at ``/``. Every error is a JSON body ``{"error": {"message", "type", "param", "code"}}``.
The model runs on one worker thread (``unmask.server.batching.Engine``) with continuous
batching (requests join and leave a running batch at step boundaries); handlers only
tokenize, validate and wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hmac
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from unmask.chat import PLAIN_CHAT_TEMPLATE, ChatTemplate
from unmask.checkpoint import Loaded
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.sampling import cut_at_eos, make_generator, validate
from unmask.sampling.loop import StepCallback
from unmask.server.batching import (
    Cancelled,
    DiffusionStepper,
    Engine,
    GenOutput,
    Job,
    OnStep,
    QueueFull,
)
from unmask.server.http import (
    _STATUS_TYPES,
    _TYPE_TAGS,
    APIError,
    BodyLimit,
    RecordMetrics,
    render_chat,
    sse,
)
from unmask.server.metrics import Metrics
from unmask.server.schemas import (
    MAX_STOP,
    ChatRequest,
    CompletionRequest,
    DiffusionOptions,
    EditRequest,
    InfillRequest,
    TokenizeRequest,
    _Generation,
)

log = logging.getLogger("unmask.server")


@dataclass(kw_only=True)
class ServerLimits:
    """What one request may ask for, and how the queue behaves."""

    max_batch: int = 8
    """Most rows (prompts × n) in the running batch (a single larger request runs alone)."""
    max_queue: int = 64
    """Most requests waiting for the worker; beyond that, 429."""
    batch_wait_s: float = 0.0
    """How long the idle worker waits for company before starting a batch. 0 (greedy): a
    lone request starts at once; requests arriving later join it at the next step."""
    request_timeout_s: float = 300.0
    """Wall-time limit per request (queueing included); then 504 and the work is cancelled."""
    max_n: int = 8
    """Most choices per prompt."""
    max_prompts: int = 16
    """Most prompts in one completions request."""
    max_steps: int = 1024
    """Most denoising steps per request."""
    max_prompt_chars: int = 65536
    """Longest prompt, template or text, in characters (tokens are bounded by the context)."""
    max_body_bytes: int = 1 << 20
    """Largest request body; beyond that, 413."""
    allow_regex: bool = True
    """Accept ``regex`` in ``/v1/edit`` (a Python regex runs on the worker: a pathological
    pattern can occupy it; turn off for untrusted clients)."""


# -- the model runner ---------------------------------------------------------------------------------


def _runner(loaded: Loaded) -> Callable[[list[list[int]], SampleConfig, OnStep], tuple[Any, ...]]:
    """``run_generate`` for the engine's whole-batch runs: diffusion sampling with a KV cache,
    or token-by-token for causal checkpoints (the rest is continuously batched, ``_stepper``)."""
    from unmask.sampling import generate, generate_ar

    model, cfg = loaded.model, loaded.config
    causal = getattr(cfg, "attention", None) == "causal"

    def run(rows: list[list[int]], config: SampleConfig, on_step: OnStep) -> tuple[Any, ...]:
        if causal:
            P = max(len(r) or 1 for r in rows)  # an empty prompt starts from one start token
            gen = config.gen_length

            def step_ar(step: int, tokens: torch.Tensor) -> None:
                rest = torch.full((tokens.shape[0], gen - step), cfg.mask_id, dtype=tokens.dtype, device=tokens.device)
                on_step(step, torch.cat([tokens, rest], dim=1), (P, P + gen))  # (B, P + gen)

            device = next(iter(model.parameters()), torch.empty(0)).device
            r = generate_ar(model, rows, max_new_tokens=gen, temperature=config.temperature, top_p=config.top_p,
                            eos_id=cfg.eos_id, pad_id=cfg.pad_id, generator=make_generator(config.seed, device),
                            step_callback=step_ar)
        else:
            P = max(len(r) for r in rows)
            region = (P, P + config.gen_length)
            r = generate(model, rows, config, mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=cfg.eos_id,
                         step_callback=lambda step, tokens: on_step(step, tokens, region))
        return r.tokens, r.region, r.nfe, r.steps

    return run


def _stepper(loaded: Loaded) -> DiffusionStepper | None:
    """Continuous batching for masked diffusion checkpoints (None for causal ones)."""
    cfg = loaded.config
    if getattr(cfg, "attention", None) == "causal":
        return None
    return DiffusionStepper(loaded.model, mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=cfg.eos_id)


# -- the app -------------------------------------------------------------------------------------------


def _model_name(loaded: Loaded) -> str:
    path = Path(loaded.path)
    name = path.parent.name if path.name in ("checkpoint", ".checkpoint.old") else path.name
    return name or "unmask"


def create_app(
    loaded_or_path: Loaded | str | os.PathLike[str],
    *,
    api_key: str | None = None,
    limits: ServerLimits | None = None,
    model_name: str | None = None,
    device: str = "cpu",
) -> FastAPI:
    """The HTTP app around one model: a ``Loaded`` (any mask predictor with its tokenizer
    and config) or a checkpoint path (loaded on ``device``).

    ``api_key``: when set, every ``/v1/*`` and ``/metrics`` request needs
    ``Authorization: Bearer <api_key>``. The engine's worker thread starts with the first
    request and stops when the app shuts down (``app.state.engine.close()``).
    """
    if not isinstance(loaded_or_path, Loaded):
        from unmask.checkpoint import load

        loaded_or_path = load(loaded_or_path, device=device)
    loaded = loaded_or_path
    limits = limits or ServerLimits()
    tok, cfg, model = loaded.tokenizer, loaded.config, loaded.model
    name = model_name or _model_name(loaded)
    causal = getattr(cfg, "attention", None) == "causal"
    max_seq_len: int = int(getattr(cfg, "max_seq_len", 0) or 1 << 30)
    chat_template: str | None = getattr(cfg, "chat_template", None)
    # Chat prompts are encoded with the template's own special tokens as their ids (as
    # transformers does), not as their characters.
    chat_tokens = ChatTemplate.with_tokens(chat_template or PLAIN_CHAT_TEMPLATE, tok, bos_id=cfg.bos_id,
                                           eos_id=cfg.eos_id)
    metrics = Metrics()
    engine = Engine(_runner(loaded), stepper=_stepper(loaded), max_batch=limits.max_batch,
                    max_queue=limits.max_queue, batch_wait_s=limits.batch_wait_s, metrics=metrics)
    metrics.add_gauge("queue_depth", "Requests waiting for the model worker.", lambda: engine.queue_depth)
    metrics.add_gauge("in_flight", "Requests the model worker is running now.", lambda: engine.in_flight)
    metrics.add_gauge("active_rows", "Rows (prompts x n) of the requests the worker is running now.",
                      lambda: engine.active_rows)
    key = api_key.encode() if api_key else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()

    app = FastAPI(title="unmask", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")
    app.state.engine, app.state.metrics, app.state.limits, app.state.loaded = engine, metrics, limits, loaded
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    app.add_middleware(RecordMetrics, metrics=metrics)  # outermost: sees 413s too

    # -- errors ------------------------------------------------------------------------------------

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"type": "invalid", "loc": (), "msg": "invalid request"}
        codes = {"json_invalid": "invalid_json", "extra_forbidden": "unknown_field", "missing": "missing_field"}
        code = codes.get(first.get("type", ""), "invalid_value")
        # drop "body" and pydantic's union-member tags (``str``, ``list[constrained-str]``, ...)
        loc = [str(p) for p in first.get("loc", ())
               if p != "body" and (isinstance(p, int) or (str(p).isidentifier() and p not in _TYPE_TAGS))]
        param = None if code == "invalid_json" else ".".join(loc) or None
        msg = first.get("msg", "invalid request")
        if code == "invalid_json":
            msg = f"request body is not valid JSON ({first.get('ctx', {}).get('error', msg)})"
        elif code == "unknown_field":
            msg = f"unknown field {param!r}"
        elif param:
            msg = f"{param}: {msg}"
        return APIError(400, msg, param=param, code=code).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return APIError(exc.status_code, str(exc.detail), type=_STATUS_TYPES.get(exc.status_code, "invalid_request_error"),
                        code=None).response()

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return APIError(500, "internal server error", type="server_error", code="internal_error").response()

    async def auth(request: Request) -> None:
        if key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key):
            raise APIError(401, "invalid or missing API key (Authorization: Bearer ...)",
                           type="authentication_error", code="invalid_api_key")

    secured = [Depends(auth)]

    # -- helpers -----------------------------------------------------------------------------------

    def check_model(requested: str | None) -> None:
        if requested is not None and requested != name:
            raise APIError(404, f"model {requested!r} is not served here (this server serves {name!r})",
                           type="not_found_error", param="model", code="model_not_found")

    def check_text(text: str, param: str) -> None:
        if len(text) > limits.max_prompt_chars:
            raise APIError(400, f"{param} is longer than {limits.max_prompt_chars} characters",
                           param=param, code="too_long")

    def check_steps(opts: DiffusionOptions) -> None:
        if opts.steps is not None and opts.steps > limits.max_steps:
            raise APIError(400, f"steps must be <= {limits.max_steps}", param="steps", code="invalid_value")

    def sample_config(opts: DiffusionOptions, gen_length: int, default_steps: int) -> SampleConfig:
        return SampleConfig(gen_length=gen_length, steps=opts.steps or default_steps, block_length=opts.block_length,
                            policy=opts.policy, threshold=opts.threshold, cache=opts.cache,
                            temperature=opts.temperature, seed=opts.seed)

    def user_error(e: UserError, param: str | None = None) -> APIError:
        return APIError(400, str(e), param=param, code="invalid_value")

    def submit(job: Job) -> None:
        try:
            engine.submit(job)
        except QueueFull:
            metrics.inc("rejected")
            raise APIError(429, f"the server is busy ({limits.max_queue} requests queued); retry later",
                           type="rate_limit_error", code="queue_full") from None

    def job_error(e: BaseException) -> APIError:
        if isinstance(e, UserError):
            return user_error(e)
        log.error("model execution failed: %r", e)
        return APIError(500, f"model execution failed ({type(e).__name__})", type="server_error", code="model_error")

    def job_failure(e: BaseException) -> APIError:
        return APIError(499, "request cancelled", code="cancelled") if isinstance(e, Cancelled) else job_error(e)

    def timed_out() -> APIError:
        return APIError(504, f"request took longer than {limits.request_timeout_s:g} s", type="timeout_error",
                        code="timeout")

    async def wait(job: Job, request: Request) -> Any:
        """The job's result; cancels it when the client goes away or the timeout passes."""
        fut = asyncio.wrap_future(job.future)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.request_timeout_s
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    metrics.inc("timeouts")
                    raise timed_out()
                done, _ = await asyncio.wait({fut}, timeout=min(0.25, remaining))
                if done:
                    break
                if await request.is_disconnected():
                    raise Cancelled
            try:
                return fut.result()
            except BaseException as e:  # noqa: BLE001
                raise job_failure(e) from None
        finally:
            if not fut.done():
                metrics.inc("cancelled")
                engine.cancel(job)

    decode_one = functools.lru_cache(maxsize=65536)(lambda i: tok.decode([i]))

    # -- streams -----------------------------------------------------------------------------------

    def open_stream(job: Job) -> Callable[[Request | None], Awaitable[tuple[str, Any]]]:
        """Submit ``job`` with a sink that queues its steps (429 before anything is sent);
        returns ``next_event(request=None)``: the next ``("step", (step, rows))``, then
        ``("done", None)`` once the job's future resolves, or ``("timeout", None)`` past the
        request timeout. With ``request`` it also answers ``("gone", None)`` when the client
        has gone away (poll it only before a response starts: a ``StreamingResponse`` watches
        for the disconnect itself and cancels its body)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def sink(step: int, rows: list[list[int]]) -> None:  # worker thread
            loop.call_soon_threadsafe(events.put_nowait, ("step", (step, rows)))

        job.sink = sink
        submit(job)
        job.future.add_done_callback(lambda _: loop.call_soon_threadsafe(events.put_nowait, ("done", None)))
        deadline = loop.time() + limits.request_timeout_s

        async def next_event(request: Request | None = None) -> tuple[str, Any]:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    metrics.inc("timeouts")
                    return "timeout", None
                try:
                    return await asyncio.wait_for(events.get(), timeout=min(0.25, remaining) if request else remaining)
                except asyncio.TimeoutError:
                    if request is not None and await request.is_disconnected():
                        return "gone", None

        return next_event

    def sse_error(err: APIError) -> str:
        return sse({"error": {"message": err.message, "type": err.type, "param": None, "code": err.code}})

    def drop(job: Job) -> None:
        """Give up on a streamed job whose client went away (or timed out)."""
        metrics.inc("cancelled")
        engine.cancel(job)

    def event_stream(body: AsyncIterator[str]) -> StreamingResponse:
        return StreamingResponse(body, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- generation ------------------------------------------------------------------------------------

    def finish(ids: list[int], stops: list[str]) -> tuple[str, str, int]:
        """(text, finish_reason, completion tokens) of one generated row."""
        cut = cut_at_eos(ids, cfg.eos_id)
        text = tok.decode(cut)
        reason = "stop" if len(cut) < len(ids) and ids[len(cut)] == cfg.eos_id else "length"
        n_tokens = len(cut)
        hits = [text.find(s) for s in stops if s in text]
        if hits:
            text, reason = text[: min(hits)], "stop"
            n_tokens = len(tok.encode(text))
        return text, reason, n_tokens

    def prepare(req: _Generation, prompts: list[str], *, chat: bool = False) -> tuple[Job, list[list[int]]]:
        check_model(req.model)
        check_steps(req)
        if req.n > limits.max_n:
            raise APIError(400, f"n must be <= {limits.max_n}", param="n", code="invalid_value")
        if len(prompts) > limits.max_prompts:
            raise APIError(400, f"at most {limits.max_prompts} prompts per request", param="prompt", code="invalid_value")
        if len(req.stops()) > MAX_STOP:
            raise APIError(400, f"at most {MAX_STOP} stop sequences", param="stop", code="invalid_value")
        if req.stream_denoising and not req.stream:
            raise APIError(400, "stream_denoising needs stream: true", param="stream_denoising", code="invalid_value")
        top_p = None if req.top_p in (None, 1.0) else req.top_p
        if top_p is not None and not causal:
            raise APIError(400, "top_p applies to autoregressive checkpoints only; this one is a diffusion model",
                           param="top_p", code="invalid_value")
        for p in prompts:
            check_text(p, "prompt")
        ids = [chat_tokens.encode(tok, p) if chat else tok.encode(p) for p in prompts]
        longest = max((len(i) or (1 if causal else 0)) for i in ids)
        if longest + req.max_tokens > max_seq_len:
            raise APIError(400, f"prompt ({longest} tokens) + max_tokens ({req.max_tokens}) exceeds the model's "
                           f"context of {max_seq_len} tokens; use max_tokens <= {max(max_seq_len - longest, 0)}",
                           param="max_tokens", code="context_length_exceeded")
        config = dataclasses.replace(sample_config(req, req.max_tokens, req.max_tokens), top_p=top_p)
        if not causal:
            try:
                validate(config, prompt_length=longest, max_seq_len=max_seq_len)
            except UserError as e:
                raise user_error(e) from None
        rows = [i for i in ids for _ in range(req.n)]
        seeded_sampling = req.seed is not None and req.temperature > 0
        return Job(rows=rows, config=config, batchable=not seeded_sampling), ids

    def usage(prompt_ids: list[list[int]], n: int, completion: int) -> dict[str, int]:
        prompt = sum(len(i) for i in prompt_ids) * n
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def run_generation(request: Request, req: _Generation, prompts: list[str], *, chat: bool) -> Response:
        job, ids = prepare(req, prompts, chat=chat)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        stops = req.stops()
        if req.stream:
            return stream_generation(request, req, job, ids, rid=rid, created=created, chat=chat)
        submit(job)
        out: GenOutput = await wait(job, request)
        choices, completion = [], 0
        for i, row in enumerate(out.gen_ids):
            text, reason, n_tok = finish(row, stops)
            completion += n_tok
            if chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": text},
                                "finish_reason": reason, "logprobs": None})
            else:
                choices.append({"index": i, "text": text, "finish_reason": reason, "logprobs": None})
        account(ids, req.n, completion)
        body = {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                "model": name, "choices": choices, "usage": usage(ids, req.n, completion),
                "nfe": out.nfe, "steps": out.steps, "batch_rows": out.batch_rows}
        return JSONResponse(body)

    def account(ids: list[list[int]], n: int, completion: int) -> None:
        metrics.inc("prompt_tokens", sum(len(i) for i in ids) * n)
        metrics.inc("completion_tokens", completion)

    def stream_generation(request: Request, req: _Generation, job: Job, ids: list[list[int]], *,
                          rid: str, created: int, chat: bool) -> StreamingResponse:
        stops = req.stops()
        hold = max((len(s) for s in stops), default=1) - 1  # a stop may start in the last chars
        obj = "chat.completion.chunk" if chat else "text_completion"
        next_event = open_stream(job)  # 429 before the stream starts

        def chunk(i: int, text: str | None, reason: str | None, *, role: bool = False) -> str:
            if chat:
                delta: dict[str, Any] = {"role": "assistant"} if role else {}
                if text is not None:
                    delta["content"] = text
                choice: dict[str, Any] = {"index": i, "delta": delta, "finish_reason": reason, "logprobs": None}
            else:
                choice = {"index": i, "text": text or "", "finish_reason": reason, "logprobs": None}
            return sse({"id": rid, "object": obj, "created": created, "model": name, "choices": [choice]})

        async def body() -> AsyncIterator[str]:
            n_rows = len(job.rows)
            sent = [""] * n_rows
            closed = [False] * n_rows
            last: list[list[int]] | None = None
            finished = False
            try:
                if chat:
                    for i in range(n_rows):
                        yield chunk(i, "", None, role=True)
                while True:
                    kind, payload = await next_event()
                    if kind == "timeout":
                        yield sse_error(timed_out())
                        return
                    if kind == "step":
                        step, rows = payload
                        if req.stream_denoising:
                            yield denoising_event(rid, step, rows, last)
                        last = rows
                        for i, row in enumerate(rows):
                            if closed[i]:
                                continue
                            text, done = prefix_text(row, stops)
                            if done:
                                closed[i] = True
                                if text[len(sent[i]):]:
                                    yield chunk(i, text[len(sent[i]):], None)
                                sent[i] = text
                                continue
                            ready = text[: len(text) - hold] if hold else text
                            if len(ready) > len(sent[i]) and ready.startswith(sent[i]):
                                yield chunk(i, ready[len(sent[i]):], None)
                                sent[i] = ready
                        continue
                    finished = True
                    try:
                        out: GenOutput = job.future.result()
                    except BaseException as e:  # noqa: BLE001
                        yield sse_error(job_failure(e))
                        return
                    completion = 0
                    for i, row in enumerate(out.gen_ids):
                        text, reason, n_tok = finish(row, stops)
                        completion += n_tok
                        rest = text[len(sent[i]):] if text.startswith(sent[i]) else ""
                        yield chunk(i, rest or None if chat else rest, reason)
                    account(ids, req.n, completion)
                    if (req.stream_options or {}).get("include_usage"):
                        yield sse({"id": rid, "object": obj, "created": created, "model": name, "choices": [],
                                   "usage": usage(ids, req.n, completion)})
                    yield "data: [DONE]\n\n"
                    return
            finally:
                if not finished or not job.future.done():
                    drop(job)

        return event_stream(body())

    def prefix_text(row: list[int], stops: list[str]) -> tuple[str, bool]:
        """Text of the committed prefix of a generation row; True when the row cannot grow."""
        k = row.index(cfg.mask_id) if cfg.mask_id in row else len(row)
        prefix = row[:k]
        done = k == len(row) or (cfg.eos_id is not None and cfg.eos_id in prefix)
        text = tok.decode(cut_at_eos(prefix, cfg.eos_id))
        if not done:
            text = text.rstrip("\ufffd")  # an incomplete multi-byte character
        hits = [text.find(s) for s in stops if s in text]
        if hits:
            return text[: min(hits)], True
        return text, done

    def denoising_event(rid: str, step: int, rows: list[list[int]], last: list[list[int]] | None) -> str:
        """One ``denoising.step`` event (completions and infill): per row, each position's token
        text (None = masked), the positions committed since ``last`` (the rows one event
        earlier; None or another shape = unknown, so every unmasked position) and the masks left."""
        choices = []
        for i, row in enumerate(rows):
            prev = last[i] if last is not None and i < len(last) and len(last[i]) == len(row) else None
            tokens = [None if t == cfg.mask_id else decode_one(t) for t in row]
            new = [p for p, t in enumerate(row) if t != cfg.mask_id and (prev is None or prev[p] != t)]
            choices.append({"index": i, "tokens": tokens, "committed": new,
                            "masked": sum(t == cfg.mask_id for t in row)})
        return sse({"id": rid, "object": "denoising.step", "step": step, "choices": choices},
                   event="denoising.step")

    # -- routes ------------------------------------------------------------------------------------------

    @app.post("/v1/completions", dependencies=secured)
    async def completions(req: CompletionRequest, request: Request) -> Response:
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        return await run_generation(request, req, prompts, chat=False)

    @app.post("/v1/chat/completions", dependencies=secured)
    async def chat_completions(req: ChatRequest, request: Request) -> Response:
        special = {"bos_token": tok.decode([cfg.bos_id], skip_special=False) if cfg.bos_id is not None else "",
                   "eos_token": tok.decode([cfg.eos_id], skip_special=False) if cfg.eos_id is not None else ""}
        try:
            prompt = render_chat(req.messages, chat_template, special=special)
        except UserError as e:  # unmask.chat turns every template failure into one line
            raise APIError(400, str(e), param="messages", code="invalid_value") from None
        return await run_generation(request, req, [prompt], chat=True)

    def diffusion_only(what: str) -> None:
        if causal:
            raise APIError(400, f"{what} needs a masked diffusion checkpoint; this one is autoregressive (causal)",
                           code="unsupported")

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

    async def run_alone(request: Request, fn: Callable[[StepCallback], Any]) -> Any:
        job = alone(fn)
        submit(job)
        return await wait(job, request)

    def infill_body(res: Any) -> dict[str, Any]:
        return {"object": "infill", "model": name, "text": res.text,
                "gaps": [{"name": g.name, "text": g.text, "start": g.start, "end": g.end} for g in res.gaps],
                "nfe": res.nfe, "repaired": res.repaired}

    @app.post("/v1/infill", dependencies=secured)
    async def infill_(req: InfillRequest, request: Request) -> Response:
        from unmask.infill import infill

        check_model(req.model)
        check_steps(req)
        check_text(req.template, "template")
        diffusion_only("infill")
        config = sample_config(req, 1, max_seq_len)  # infill caps steps at the masks

        def run(on_step: StepCallback) -> Any:
            return infill(model, tok, req.template, config, step_callback=on_step)

        if req.stream:
            return await stream_infill(request, alone(run))
        res = await run_alone(request, run)
        metrics.inc("nfe", res.nfe)
        return JSONResponse(infill_body(res))

    async def stream_infill(request: Request, job: Job) -> Response:
        """``denoising.step`` events of every sampling run (the whole canvas: template text
        and gaps), then the infill body, then ``[DONE]``. The response starts with the first
        step, so a template the worker rejects is still a plain 400."""
        rid = "infill-" + uuid.uuid4().hex[:24]
        next_event = open_stream(job)
        try:
            first = await next_event(request)
        except BaseException:
            drop(job)
            raise
        if first[0] != "step":
            if first[0] == "gone":
                drop(job)
                raise APIError(499, "request cancelled", code="cancelled")
            if first[0] == "timeout":
                drop(job)
                raise timed_out()
            try:
                job.future.result()
            except BaseException as e:  # noqa: BLE001
                raise job_failure(e) from None

        async def body() -> AsyncIterator[str]:
            kind, payload = first
            last: list[list[int]] | None = None
            last_step = 0
            finished = False
            try:
                while kind == "step":
                    step, rows = payload
                    if step <= last_step:  # a new sampling run (another length, a repair)
                        last = last if last is not None and len(last) == len(rows) else None
                    yield denoising_event(rid, step, rows, last)
                    last, last_step = rows, step
                    kind, payload = await next_event()
                if kind == "timeout":
                    yield sse_error(timed_out())
                    return
                finished = True
                try:
                    res = job.future.result()
                except BaseException as e:  # noqa: BLE001
                    yield sse_error(job_failure(e))
                    return
                metrics.inc("nfe", res.nfe)
                yield sse(infill_body(res))
                yield "data: [DONE]\n\n"
            finally:
                if not finished or not job.future.done():
                    drop(job)

        return event_stream(body())

    @app.post("/v1/edit", dependencies=secured)
    async def edit_(req: EditRequest, request: Request) -> Response:
        from unmask.infill import edit

        check_model(req.model)
        check_steps(req)
        check_text(req.text, "text")
        diffusion_only("edit")
        if req.regex is not None and not limits.allow_regex:
            raise APIError(400, "regex edits are turned off on this server", param="regex", code="unsupported")
        n_tokens = len(tok.encode(req.text))
        if n_tokens > max_seq_len:
            raise APIError(400, f"text has {n_tokens} tokens; the model's context is {max_seq_len}",
                           param="text", code="context_length_exceeded")
        config = sample_config(req, 1, max_seq_len)
        spans = [tuple(s) for s in req.spans or ()]
        res = await run_alone(request, lambda on_step: edit(model, tok, req.text, spans=spans, regex=req.regex,
                                                            lowest=req.lowest, config=config,
                                                            confidence_mode=req.confidence_mode,
                                                            step_callback=on_step))
        metrics.inc("nfe", res.nfe)
        return JSONResponse({"object": "edit", "model": name, "text": res.text,
                             "changes": [{"start": c.start, "end": c.end, "old": c.old, "new": c.new} for c in res.changes],
                             "spans": [list(s) for s in res.spans], "nfe": res.nfe})

    @app.post("/v1/tokenize", dependencies=secured)
    async def tokenize(req: TokenizeRequest) -> dict[str, Any]:
        check_model(req.model)
        check_text(req.text, "text")
        ids = tok.encode(req.text)
        return {"object": "tokens", "model": name, "tokens": ids, "count": len(ids),
                "pieces": [decode_one(i) for i in ids]}

    @app.get("/v1/models", dependencies=secured)
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{
            "id": name, "object": "model", "created": 0, "owned_by": "unmask",
            "max_seq_len": max_seq_len, "attention": getattr(cfg, "attention", None),
        }]}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": name, "queue_depth": engine.queue_depth, "in_flight": engine.in_flight}

    @app.get("/metrics", dependencies=secured)
    async def metrics_() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def playground() -> HTMLResponse:
        page = resources.files("unmask.server").joinpath("static/playground.html")
        return HTMLResponse(page.read_text(encoding="utf-8") if page.is_file() else "<p>unmask server</p>")

    return app


__all__ = ["APIError", "ServerLimits", "create_app", "render_chat", "sse"]
