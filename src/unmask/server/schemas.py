"""Request bodies of the HTTP API (pydantic v2), in OpenAI's shapes plus diffusion options.

Inside: ``DiffusionOptions`` (``steps``, ``block_length``, ``policy``, ``threshold``,
``cache``, the repetition penalties, ``stream_denoising``), ``CompletionRequest``,
``ChatMessage``, ``ChatRequest``, ``InfillRequest``, ``FormRequest``, ``EditRequest``,
``TokenizeRequest``. Every model forbids
unknown fields, so a misspelled option is a 400, never silently ignored. Limits that depend
on the served model or the server's ``ServerLimits`` (context length, most steps, most
choices) are checked by the routes, not here.
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from unmask.config import MAX_SEED

MAX_STOP = 4
"""Most stop sequences per request (as OpenAI)."""

StopText = Annotated[str, StringConstraints(min_length=1, max_length=64)]

NEUTRAL: dict[str, tuple[Any, ...]] = {
    "logprobs": (False,), "echo": (False,), "best_of": (1,), "logit_bias": ({},),
    "suffix": ("",), "completions.logprobs": (False, 0),
    # chat: tools and the rest of OpenAI's chat fields that would change what is generated
    # or done with it; their neutral values ask for nothing (OpenAI's defaults)
    "tools": ([],), "tool_choice": ("none",), "parallel_tool_calls": (True, False),
    "functions": ([],), "function_call": ("none",), "top_logprobs": (0,),
    "store": (False,), "metadata": ({},), "service_tier": ("auto", "default"),
    "modalities": (["text"],), "audio": (), "prediction": (), "reasoning_effort": (),
    "verbosity": ("medium",), "web_search_options": ()}
"""OpenAI fields unmask does not implement, accepted at their neutral values (and null), as
some clients always send them; any other value is a 400 ``code: "unsupported"``."""

_UNSUPPORTED: dict[str, str] = {
    "tools": "unmask has no tool calls", "tool_choice": "unmask has no tool calls",
    "functions": "unmask has no function calls", "function_call": "unmask has no function calls",
    "parallel_tool_calls": "unmask has no tool calls",
    "suffix": "for text after the gap use POST /v1/infill",
    "top_logprobs": "unmask returns no logprobs", "logprobs": "unmask returns no logprobs",
    "completions.logprobs": "unmask returns no logprobs",
    "store": "unmask stores no completions", "metadata": "unmask stores no completions",
    "service_tier": "unmask has one tier", "modalities": "unmask writes text only",
    "audio": "unmask writes text only", "prediction": "unmask has no predicted outputs",
    "reasoning_effort": "the served model has no reasoning effort setting",
    "verbosity": "the served model has no verbosity setting",
    "web_search_options": "unmask does not search the web"}
"""Why a non-neutral value of a ``NEUTRAL`` field is refused, where there is more to say."""


def _neutral_only(name: str, value: Any) -> Any:
    """``value`` when it is one of ``NEUTRAL[name]`` (exactly: ``0`` is not ``false``);
    ``name`` may be ``endpoint.field`` where an endpoint's field differs (completions'
    ``logprobs`` is a count, chat's a boolean)."""
    if value is None or any(type(value) is type(n) and value == n for n in NEUTRAL[name]):
        return value
    allowed = " or ".join([json.dumps(n) for n in NEUTRAL[name]] + ["null"])
    why = _UNSUPPORTED.get(name)
    raise ValueError(f"unsupported{f': {why}' if why else ''} (unmask accepts only "
                     f"{allowed} here)")


class _Strict(BaseModel):
    """Unknown fields are refused, types are not coerced (``"max_tokens": "4"`` or ``true``
    is a 400, as at OpenAI), and a field sent as null takes its default."""

    model_config = ConfigDict(extra="forbid", strict=True, str_max_length=1_000_000,
                              allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = _field_names(cls)
        return {k: v for k, v in data.items() if v is not None or k not in names}


@functools.cache
def _field_names(cls: type[BaseModel]) -> frozenset[str]:
    """A request model's field names and aliases (once per model, not per request)."""
    fields = cls.model_fields
    return frozenset(fields) | {f.alias for f in fields.values() if f.alias is not None}


class DiffusionOptions(_Strict):
    """Sampler options shared by every generating endpoint (mapped onto ``SampleConfig``). In
    completions and chat completions without structured output an option not sent (or null)
    is the checkpoint's recommendation where it has one, as on the command line
    (``plumbing.sample_config``); the defaults below are the rest."""

    model: str | None = None
    """Model id (``GET /v1/models``); None = the served model."""
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    """Gumbel-max temperature; 0 (the default, unlike OpenAI's 1) = argmax decoding."""
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    """Seed for temperature / random remasking: same seed, same output. Each request has its
    own generator (each row, seeded ``seed + k`` for choice k, when it has several:
    ``unmask.api.row_seeds``, as ``unmask generate`` and ``api.generate`` seed them), so
    sharing forward passes does not change its noise (in whole-batch runs, KV-cache modes, a
    seeded sampled request runs alone; on a causal checkpoint in float32 it shares a run with
    queued seeded requests of the same settings, each row its own generator: ``ar``,
    ``hybrid``, ``speculative``). A request that samples without a seed in the continuous
    batch, or on such a causal checkpoint, gets one drawn; the response's ``seed`` reports
    it. The logits of a differently shaped batch round differently, which can flip a
    near-tie: rarely in float32, more often in bf16 (``--dtype auto`` on a CPU with AMX).
    docs/serving.md; ``--dtype fp32 --max-batch 1`` for bitwise reproducibility."""
    steps: int | None = Field(None, ge=1)
    """Denoising steps; None = one per generated token."""
    block_length: int | None = Field(None, ge=1)
    """Semi-autoregressive block length; must divide the generation length."""
    policy: str = Field("llada", max_length=32)
    """Commit policy: llada, threshold, factor, entropy (docs/sampling.md)."""
    threshold: float = Field(0.9, gt=0.0, le=1.0)
    """Policy ``threshold``: commit every proposal at least this confident."""
    cache: str = Field("none", max_length=32)
    """KV cache: none, prefix, dual (approximate for bidirectional models)."""
    edit_threshold: float | None = Field(None, ge=0.0, lt=1.0)
    """Block decoding (LLaDA 2.1): replace a committed token whose argmax differs with
    probability above this; None = no editing (docs/large-models.md)."""
    max_post_steps: int = Field(16, ge=0, le=64)
    """With ``edit_threshold``: edit-only steps at most once a block has no mask."""
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    """Lower the logit of every token the generated text holds by this (OpenAI); 0 or None =
    off."""
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    """Lower a token's logit by this times its count in the generated text (OpenAI); 0 or None
    = off."""
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)
    """Extension (vLLM's): divide the positive logits (multiply the negative ones) of tokens
    already in the text, prompt included, by this; 1 = off; None (not sent) = the checkpoint's
    recommendation in text generation (completions, chat; as every option here), else off
    (docs/sampling.md)."""
    no_repeat_ngram_size: int | None = Field(None, ge=0, le=64)
    """Extension (Hugging Face's ``no_repeat_ngram_size``): never write an n-gram of this many
    tokens that the text already holds; 0 = off; None (not sent) = the checkpoint's
    recommendation in text generation, else off."""
    segment_length: int | None = Field(None, ge=1)
    """Extension: write ``max_tokens`` in segments of this many tokens, each seeing the latest
    ``context - segment_length`` tokens, so ``max_tokens`` may exceed the model's context
    (docs/sampling.md, "Longer than the context"); None = one canvas."""


class Guided(_Strict):
    """Structured output, as OpenAI (``response_format``) and vLLM (``guided_*``) spell it;
    at most one is given (``unmask.infill.schema.constraint_form``)."""

    response_format: dict[str, Any] | None = None
    """``{"type": "text"}``, ``{"type": "json_object"}`` or ``{"type": "json_schema",
    "json_schema": {"name": ..., "schema": {...}, "strict": true}}``."""
    guided_json: dict[str, Any] | str | None = None
    """vLLM: a JSON Schema the output validates against."""
    guided_regex: str | None = Field(None, min_length=1, max_length=1024)
    """vLLM: a regex the output matches in full (outlines-core's syntax)."""
    guided_choice: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] | None = (
        Field(None, min_length=1, max_length=256))
    """vLLM: the output is one of these strings."""


class StreamOptions(_Strict):
    """``stream_options`` (OpenAI's): an unknown key is a 400 ``unknown field
    'stream_options.<key>'``."""

    include_usage: bool = False
    """A last chunk with ``usage``, and ``"usage": null`` in every chunk before it."""
    include_obfuscation: bool | None = None
    """OpenAI's random padding of streamed chunks (against length side channels): accepted;
    unmask adds no padding (clients ignore the field)."""


class _Generation(DiffusionOptions, Guided):
    max_tokens: int = Field(16, ge=1)
    """Tokens to generate (the canvas length; text stops earlier at EOS or a stop sequence)."""
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    """Nucleus sampling; autoregressive checkpoints only (1 or absent for diffusion models)."""
    n: int = Field(1, ge=1)
    """Choices per prompt."""
    stop: StopText | list[StopText] | None = None
    """Up to 4 strings; the text is cut before the first one found."""
    stream: bool = False
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``."""
    stream_denoising: bool = False
    """Extension (with ``stream``): also send one ``denoising.step`` event per sampler step."""
    stream_options: StreamOptions | None = None
    """``{"include_usage": true}``: a last chunk with ``usage`` (as OpenAI)."""
    user: str | None = Field(None, max_length=256)
    """Accepted for compatibility; ignored."""
    safety_identifier: str | None = Field(None, max_length=256)
    """OpenAI's (a hashed end-user id, ``user``'s successor): accepted; ignored."""
    prompt_cache_key: str | None = Field(None, max_length=256)
    """OpenAI's cache-routing hint: accepted; ignored (it changes no output)."""
    logprobs: bool | None = None
    """OpenAI's; only its neutral value (false) is accepted (``NEUTRAL``)."""
    logit_bias: dict[str, Any] | None = None
    """OpenAI's; only its neutral value (``{}``) is accepted."""

    @field_validator("logprobs", "logit_bias", mode="before")
    @classmethod
    def _neutral(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name or ""
        return _neutral_only(cls._NEUTRAL_AS.get(name, name), value)

    _NEUTRAL_AS: ClassVar[dict[str, str]] = {}
    """Fields whose neutral values are this endpoint's own (a ``NEUTRAL`` key)."""

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_lengths(cls, stop: Any) -> Any:
        """An empty or over-long stop sequence, said plainly (the union of a string and a list
        reported "Input should be a valid string" for ``[""]``)."""
        for s in [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []:
            if isinstance(s, str) and not 1 <= len(s) <= 64:
                raise ValueError(f"a stop sequence is 1 to 64 characters, got {len(s)}")
        return stop

    def stops(self) -> list[str]:
        """``stop`` as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(_Generation):
    """``POST /v1/completions``."""

    prompt: (str | Annotated[list[str], Field(min_length=1)]
             | Annotated[list[StrictInt], Field(min_length=1)]
             | Annotated[list[list[StrictInt]], Field(min_length=1)]) = ""
    """One prompt or a list (each gets ``n`` choices); as at OpenAI, a prompt may be token
    ids (of the served tokenizer: ``/v1/tokenize``), one list or a list of them."""

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shape(cls, prompt: Any) -> Any:
        """A prompt of none of the four shapes, said plainly (the union reported the first
        shape's complaint: "Input should be a valid string" for ``[1.5]``)."""
        def ids(x: Any) -> bool:
            return isinstance(x, list) and all(type(i) is int for i in x)

        if isinstance(prompt, str) or isinstance(prompt, list) and (
                all(isinstance(x, str) for x in prompt) or ids(prompt)
                or all(ids(x) for x in prompt)):
            return prompt
        raise ValueError("a prompt is a string, a list of strings, a list of token ids "
                         "(integers) or a list of such lists")

    def token_prompts(self) -> list[list[int]] | None:
        """The prompts as token ids when they were sent so, else None (text)."""
        p = self.prompt
        if isinstance(p, str) or isinstance(p[0], str):
            return None
        return [list(x) for x in p] if isinstance(p[0], list) else [list(p)]  # type: ignore
    logprobs: bool | int | None = None  # type: ignore[assignment]
    """OpenAI's: in completions a count (0 to 5: the most likely tokens to list at each
    position; chat's is a boolean); only its neutral values (0, false) are accepted."""
    _NEUTRAL_AS: ClassVar[dict[str, str]] = {"logprobs": "completions.logprobs"}
    echo: bool = False
    """OpenAI's; only its neutral value (false) is accepted (``NEUTRAL``)."""
    best_of: int | None = None
    """OpenAI's; only its neutral value (1) is accepted."""
    suffix: str | None = None
    """OpenAI's text after the completion; only ``""`` (and null) is accepted: a text between
    a prefix and a suffix is ``POST /v1/infill``'s (``"a [MASK:8] b"``)."""

    @field_validator("echo", "best_of", "suffix", mode="before")
    @classmethod
    def _neutral_completion(cls, value: Any, info: ValidationInfo) -> Any:
        return _neutral_only(info.field_name or "", value)


class TextPart(_Strict):
    """A text part of a chat message's content."""

    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    """One chat message."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = Field(None, max_length=64)
    """The author's name, for a chat template that renders ``message.name`` (one that does
    not render it refuses it: ``unmask.chat``)."""

    @model_validator(mode="before")
    @classmethod
    def _null_content(cls, data: Any) -> Any:
        """``"content": null``, said plainly (null is otherwise a field's default, and the
        content has none: it read "Field required"); another key that is null, ``[]``, ``{}``
        or ``""`` is absent (``unmask.chat.present_keys``: ``"tool_calls": null``, as
        ``unmask chat`` and SFT read it)."""
        if isinstance(data, dict) and "content" in data and data["content"] is None:
            raise ValueError("content is null; unmask takes text content (a string or text "
                             "parts): null content is OpenAI's for an assistant message with "
                             "tool_calls, and unmask has no tool calls")
        if isinstance(data, dict):
            from unmask.chat import present_keys

            return present_keys(data)
        return data


class ChatRequest(_Generation):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: int | None = Field(None, ge=1)  # type: ignore[assignment]
    """Tokens of the reply at most; not sent: as ``unmask chat`` (the checkpoint's
    recommended ``gen_length``, else 64), as many as fit after the messages (OpenAI's chat has
    no 16 of completions: a client that sends none wants a whole reply)."""
    max_completion_tokens: int | None = Field(None, ge=1)
    """OpenAI's newer name for ``max_tokens`` in chat: either may be given (equal if both)."""
    tools: Any = None
    """OpenAI's; only its neutral values are accepted (``[]``: no tools; ``NEUTRAL``), a tool
    is a 400 ``unsupported``: unmask has no tool calls. So for every field below."""
    tool_choice: Any = None
    """``"none"`` (no tool calls)."""
    parallel_tool_calls: Any = None
    """``true`` or ``false`` (without tools either does nothing)."""
    functions: Any = None
    """``[]`` (OpenAI's deprecated ``tools``)."""
    function_call: Any = None
    """``"none"`` (OpenAI's deprecated ``tool_choice``)."""
    top_logprobs: Any = None
    """``0``."""
    store: Any = None
    """``false`` (unmask stores no completions)."""
    metadata: Any = None
    """``{}`` (it tags stored completions)."""
    service_tier: Any = None
    """``"auto"`` or ``"default"``."""
    modalities: Any = None
    """``["text"]``."""
    audio: Any = None
    """Null only."""
    prediction: Any = None
    """Null only."""
    reasoning_effort: Any = None
    """Null only."""
    verbosity: Any = None
    """``"medium"`` (OpenAI's default)."""
    web_search_options: Any = None
    """Null only."""
    prompt_cache_retention: str | None = Field(None, max_length=32)
    """OpenAI's cache hint: accepted; ignored (it changes no output)."""

    @field_validator("tools", "tool_choice", "parallel_tool_calls", "functions",
                     "function_call", "top_logprobs", "store", "metadata", "service_tier",
                     "modalities", "audio", "prediction", "reasoning_effort", "verbosity",
                     "web_search_options", mode="before")
    @classmethod
    def _neutral_chat(cls, value: Any, info: ValidationInfo) -> Any:
        return _neutral_only(info.field_name or "", value)

    @field_validator("max_completion_tokens")
    @classmethod
    def _same_max_tokens(cls, given: int | None, info: ValidationInfo) -> int | None:
        """Both sent and different: a 400 naming ``max_completion_tokens`` (it named no
        field); ``max_tokens``, sent or null, is validated before it."""
        sent = info.data.get("max_tokens")
        if given is not None and sent is not None and sent != given:
            raise ValueError(f"max_tokens ({sent}) and max_completion_tokens ({given}) "
                             "differ; give one")
        return given

    @model_validator(mode="after")
    def _max_completion_tokens(self) -> ChatRequest:
        if self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self


GapKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
"""A gap's number (1-based, in template order) or its name (``[MASK:city]``)."""

Choice = Annotated[str, StringConstraints(max_length=256)]
"""One text of an infill gap's ``choices``."""

MAX_GAP_OPTIONS = 64
"""Most entries in each gap constraint option (``choices``, ``regex``, ``charset``, ``ban``)."""


class InfillRequest(DiffusionOptions, Guided):
    """``POST /v1/infill``: a template such as ``"The [MASK:6] sat on the [MASK:city]."``
    (docs/infill.md) and the gap constraints of ``unmask infill`` (``unmask.infill.options``)."""

    template: str = Field(min_length=1)
    """With ``response_format`` / ``guided_*``: a template of one ``[MASK:n]`` gap (n tokens at
    most) whose text takes that constraint."""
    choices: dict[GapKey, Annotated[list[Choice], Field(min_length=1, max_length=256)]] | None = (
        Field(None, max_length=MAX_GAP_OPTIONS))
    """Per gap: the texts it may hold (``{"city": ["Paris", "Rome"]}``), each at most 256
    characters as a ``guided_choice`` (a longer one became a pattern the error message quoted
    for 2,000 characters before its reason was cut off)."""
    regex: dict[GapKey, Annotated[str, StringConstraints(min_length=1, max_length=256)]] | None = (
        Field(None, max_length=MAX_GAP_OPTIONS))
    """Per gap: a pattern its text matches in full (the regex subset of docs/infill.md)."""
    charset: dict[GapKey, Annotated[str, StringConstraints(max_length=32)]] | None = Field(
        None, max_length=MAX_GAP_OPTIONS)
    """Per gap: a character class every character is in (``digits``, ``alpha``, ...)."""
    ban: list[Annotated[str, StringConstraints(max_length=64)]] | None = Field(
        None, max_length=MAX_GAP_OPTIONS)
    """Words no gap may hold a token of."""
    length_mode: Literal["auto", "elbo", "empty"] | None = None
    """How gaps of a length range get their length (``InfillOptions.length_mode``)."""
    length_score: Literal["total", "per_token", "context"] | None = None
    """What the ELBO length search compares (``InfillOptions.length_score``)."""
    max_candidates: int | None = Field(None, ge=1, le=16)
    """Lengths tried per variable gap (``InfillOptions.max_candidates``)."""
    elbo_samples: int | None = Field(None, ge=1, le=64)
    """Noisy copies per candidate in the ELBO estimate (``InfillOptions.elbo_samples``)."""
    stream: bool = False
    """Server-sent events: one ``denoising.step`` event per sampler step, then the response
    body."""


class FormRequest(DiffusionOptions):
    """``POST /v1/forms``: a JSON form whose values are typed holes (``"<int:1-3>"``,
    ``"<choice:a|b>"``, ``"<text:2-8>"``, ...), as ``unmask fill-form`` takes (docs/infill.md):
    the JSON itself, or its text."""

    form: dict[str, Any] | list[Any] | str | None = None
    """The form: a JSON object or array, or JSON text."""
    schema_: dict[str, Any] | str | None = Field(None, alias="schema")
    """Instead of ``form``: a JSON Schema the output validates against."""
    stream: bool = False
    """Server-sent events: one ``denoising.step`` event per sampler step, then the response
    body."""


MAX_EDIT_ROUNDS = 64
"""Most ``rounds`` of one ``/v1/edit`` request (each round is a whole refill)."""


class EditRequest(DiffusionOptions):
    """``POST /v1/edit``: re-mask character spans, regex matches or the least confident tokens."""

    text: str = Field(min_length=1)
    spans: list[Annotated[tuple[StrictInt, StrictInt], Strict(False)]] | None = Field(
        None, max_length=64)
    """Character spans ``[start, end)`` to rewrite, in Unicode code points (Python ``str``
    indices, not JavaScript's UTF-16 units), as every offset of the API."""
    regex: str | None = Field(None, min_length=1, max_length=256)
    """Python regex; every match is rewritten."""
    lowest: int | None = Field(None, ge=1)
    """Rewrite the k least confident tokens instead."""
    rounds: int = Field(1, ge=1, le=MAX_EDIT_ROUNDS)
    """With ``lowest``: repeat re-mask -> refill this many times (``unmask edit --rounds``,
    ``api.edit(rounds=...)``); a round that changes nothing ends early."""
    confidence_mode: Literal["masked", "visible"] = "masked"
    """How ``lowest`` scores tokens (docs/infill.md)."""


class TokenizeRequest(_Strict):
    """``POST /v1/tokenize``: the served tokenizer's ids for a text (as a completions prompt
    is encoded)."""

    model: str | None = None
    """Model id (``GET /v1/models``); None = the served model."""
    text: str
