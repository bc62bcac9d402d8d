"""Chat templates: the one renderer behind SFT data, the server's chat endpoint and ``unmask chat``.

A chat template is a Hugging Face style Jinja string (``ModelConfig.chat_template``; read
from a publisher's ``tokenizer_config.json`` / ``chat_template.jinja`` by the importers).
It is rendered as ``transformers`` renders it (``apply_chat_template``): in an
``ImmutableSandboxedEnvironment`` with ``trim_blocks``, ``lstrip_blocks``, loop controls and
the ``{% generation %}`` tag (its body rendered as is; SFT trains the text it marks,
``ChatTemplate.example``), seeing ``messages``,
``add_generation_prompt``, ``bos_token``, ``eos_token``, ``tools`` and ``documents`` (None),
``raise_exception(msg)``, ``strftime_now(fmt)``, a ``tojson`` filter that keeps non-ASCII
text and a ``namespace()`` that refuses attribute names starting with ``_``. Nothing else of
the caller's reaches a template (no other special-token name, no message key but ``role``,
``content`` and ``name``). An undefined name is Jinja's default ``Undefined``, as in
``transformers``: false in a test, nothing when printed or looped over, an error when
computed with or when its attribute is read. Every failure is a one-line ``UserError``.

Special tokens: the rendered text is encoded as ``transformers`` encodes it with
``apply_chat_template(..., sanitize_control_tokens=True)`` (``ChatTemplate.prompt``,
``ChatTemplate.example``): the special tokens the template writes itself (``<|eot_id|>``,
``<|im_start|>``, ``bos_token`` ...) are their ids, and a control token in a message's
content or name (any special token, or an added token the template writes, such as
``<think>``) is those characters, never the token, as a literal ``[MASK]`` in a prompt or
corpus is plain text (``Tokenizer.encode``). A reply ends at EOS or at the first special
token the template writes (the end-of-turn marker, ``ChatTemplate.reply``); with a built-in
template, whose markers are plain text, also where it starts another turn (``TURN_STARTS``),
and with another, at the end of turn it writes as markup right after a reply where that is
no token of the tokenizer (``ChatTemplate.turn_starts``: ChatML's ``<|im_end|>`` through a
tokenizer without it; never a header of the next turn).

Messages are ``{"role", "content"}`` objects (read as the server reads OpenAI's: a
``developer`` message is a ``system`` one, content may be a list of text parts), with an
optional ``name`` (a string) that the template sees as ``message.name``; a template that
does not render it (the text is the same whatever the name says) refuses a message that has
one, rather than silently dropping it, and a prompt (``ChatTemplate.prompt``) whose template
renders the same without its system message refuses that message.

Inside: ``ROLES``, ``DEFAULT_CHAT_TEMPLATE``, ``PLAIN_CHAT_TEMPLATE``, ``BUILTIN_TEMPLATES``,
``TURN_STARTS``, ``check_messages``, ``select_template``, ``ChatTemplate``, ``TemplateRejected``,
``render_chat``, ``template_arg``, ``template_bos_id``; ``stop_at``, ``text_end``,
``cut_text``: where a generated text ends at its stop sequences (and a chat reply at its turn
marker), for ``api`` and the server alike.
"""

from __future__ import annotations

import errno
import functools
import json
import re
import stat
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from unmask.errors import UserError

ROLES = ("system", "user", "assistant")
"""Message roles a conversation may hold."""

DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}"
    "{% if not (loop.last and m.role == 'assistant' and not add_generation_prompt) %}"
    "{{ '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""unmask's SFT format: a ``<|role|>`` line, the content and a newline per turn; a final
assistant turn has no trailing newline (the EOS ends it), unless a generation prompt follows
it (a conversation whose last message is the assistant's gets a new assistant turn, as an
assistant turn before a user's ends). The markers are plain text, so any tokenizer can
encode them."""

# The default template as stored by checkpoints fine-tuned before rendering followed
# transformers' whitespace rules: its newline right after a block tag would now be trimmed,
# so it is read as DEFAULT_CHAT_TEMPLATE, which renders what those models were trained on.
_DEFAULT_BEFORE_TRIM_BLOCKS = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}"
    "{% if not (loop.last and m.role == 'assistant') %}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# ... and as stored by checkpoints fine-tuned before a conversation that ends with an
# assistant message got a new assistant turn (it ran the two turns together: "...God<|assistant|>";
# every other conversation renders the same).
_DEFAULT_BEFORE_LAST_ASSISTANT = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}"
    "{% if not (loop.last and m.role == 'assistant') %}{{ '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{{ {'system': 'System', 'user': 'User', 'assistant': 'Assistant'}[m.role] }}: "
    "{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
"""A transcript, one ``System: ...`` / ``User: ...`` / ``Assistant: ...`` line per message, then
``Assistant:``: ``--template plain`` (and ``unmask serve --chat-template plain``, for a model
without a template of its own; without one the server refuses chat)."""

BUILTIN_TEMPLATES = {"default": DEFAULT_CHAT_TEMPLATE, "plain": PLAIN_CHAT_TEMPLATE}
"""Templates ``--template`` accepts by name."""

EMPTY_TEMPLATE = (f"give a built-in chat template ({', '.join(BUILTIN_TEMPLATES)}), a Jinja or "
                  "JSON file or Jinja text, or leave it out for the model's own")
"""What to give for an empty chat template (``""``, a variable left unset: ``Path("")`` is the
working folder): said by ``template_arg`` (the API's ``template=``, the server's, ``train``'s
``chat_template``) and by the command line's template flags, one wording."""

TURN_STARTS = {
    PLAIN_CHAT_TEMPLATE: ("\nUser:", "\nAssistant:"),
    DEFAULT_CHAT_TEMPLATE: ("\n<|user|>", "\n<|assistant|>", "\n<|system|>"),
}
"""The text that starts a turn in a built-in template, whose markers are plain text (no
special token ends a turn): a reply ends where it starts another turn (a base model chatting
through ``plain`` writes ``\nUser: ...`` next), so it cannot run into the next user turn or
put words in the user's mouth (``ChatTemplate.reply``). Only the turns a conversation goes
on with: ``plain``'s ``\nSystem:`` is ordinary text too (a manual's ``System: Boot order``
line), and a system message comes first, not after a reply. Every front end (``unmask
chat``, ``api.chat``, the server) cuts by this table; another template by the text it writes
(``ChatTemplate.turn_starts``)."""


class _Raised(Exception):
    """``raise_exception(message)`` called by a template."""


_PROBE_SYSTEM = ("unmask probe: a system message", "unmask probe: another system message")
"""Text that ``ChatTemplate._renders_system`` gives a system message in place of its own (the
second where the message says the first): a template that renders the message renders a
prompt that differs."""


_PROBE_STEM = "unmaskprobe"
"""The start of the names ``ChatTemplate._names_dropped`` gives named messages (``_probe_stem``):
lower-case letters (a template may sanitize or upper-case a name), then the message's index and
``name``, so that no probe holds another's."""


def _probe_stem(text: str) -> str:
    """``_PROBE_STEM`` and as many ``x`` as make a stem that ``text`` (lower-cased: a rendering)
    does not hold, found in one pass: a message whose text holds a probe (``unmaskprobe1name``)
    cannot pass for that message's name, nor a name equal to its probe for a dropped one."""
    runs = re.findall(rf"{_PROBE_STEM}(x*)", text.lower())
    return _PROBE_STEM + "x" * (max(map(len, runs)) + 1 if runs else 0)


class TemplateRejected(UserError):
    """A template's own ``raise_exception``: it refused these messages (not a broken
    template)."""


# The free-text fields of a message (``check_messages`` keeps these and ``role``, which is one
# of ``ROLES``): their special-token strings are plain text in a prompt or an SFT example.
_TEXT_FIELDS = ("content", "name")


def present_keys(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` without the keys, other than role and content, whose value is null, ``[]``,
    ``{}`` or ``""``: absent (datasets exported from Hugging Face carry ``"tool_calls": null``
    on every message). ``check_messages`` and the server's ``ChatMessage`` read messages so."""
    return {k: v for k, v in message.items()
            if k in ("role", "content") or not (v is None or v in ("", [], {}))}


def check_messages(messages: Any, *, where: str = "messages") -> list[dict[str, str]]:
    """``messages`` as a new list of ``{"role", "content"}`` dicts (plus ``name`` where a
    message has one), or a one-line ``UserError`` naming ``where`` unless it is a non-empty
    list of objects whose role is one of ``ROLES`` (or ``developer``, a system message),
    whose content (a string, or OpenAI text parts: ``_openai_message``) and name are valid
    text (an unpaired surrogate, ``\\ud800`` in JSON, failed in the tokenizer with a
    ``TypeError``) and that hold no other key (``tool_calls``, ``reasoning_content``, a
    typo: ``transformers`` would hand it to the template; dropped, it silently vanished).
    A key other than role and content whose value is null, ``[]``, ``{}`` or ``""`` counts as
    absent (datasets exported from Hugging Face carry ``"tool_calls": null`` on every
    message)."""
    if not isinstance(messages, list) or not messages:
        raise UserError(
            f"{where}: 'messages' must be a non-empty list of {{role, content}} objects"
        )
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise UserError(f"{where}: messages[{i}] needs 'role' and 'content'")
        m = _openai_message(m, f"{where}: messages[{i}]")
        if m["role"] not in ROLES:
            why = "; unmask has no tool calls" if m["role"] in ("tool", "function") else ""
            raise UserError(f"{where}: messages[{i}] has role {m['role']!r}; a role is one of "
                            f"{', '.join(ROLES)} (developer is read as system){why}")
        m = present_keys(m)  # an empty column of an export: absent
        extra = [k for k in m if k not in ("role", *_TEXT_FIELDS)]
        if extra:  # transformers hands it to the template; dropped, it would silently vanish
            why = {"weight": "; 'weight' (OpenAI fine-tuning's) belongs to SFT data (unmask sft)",
                   "tool_calls": "; unmask has no tool calls",
                   "function_call": "; unmask has no tool calls"}.get(extra[0], "")
            raise UserError(f"{where}: messages[{i}] has key {extra[0]!r}; a message has role, "
                            "content and an optional name (no other key reaches the chat "
                            f"template){why}")
        for key in _TEXT_FIELDS:
            if key in m and not isinstance(m[key], str):
                # content in a list of parts was read by _openai_message: one part given bare
                # (an object) is an easy slip, so the list form is named
                parts = f" or a list of text parts [{_TEXT_PART}]" if key == "content" else ""
                raise UserError(f"{where}: messages[{i}].{key} must be a string{parts}, not "
                                f"{_json_type(m[key])}")
            if key in m and not _encodable(m[key]):  # \ud800 in JSON: no tokenizer takes it
                raise UserError(f"{where}: messages[{i}].{key} holds an unpaired surrogate "
                                "(not valid UTF-8)")
        out.append({k: m[k] for k in ("role", "content", "name") if k in m})
    return out


_TEXT_PART = '{"type": "text", "text": "..."}'
"""An OpenAI text part, as the messages' refusals show it."""


def _openai_message(m: dict[str, Any], where: str) -> dict[str, Any]:
    """``m`` read as an OpenAI message, here for ``api.chat``, ``unmask chat``, SFT data and
    the server's ``/v1/chat/completions`` alike (``unmask.server.http.chat_messages`` calls
    ``check_messages``): a ``developer`` message is a ``system`` one (the name OpenAI's newer
    models give it), and content given as a list of text parts (``[{"type": "text", "text":
    "..."}]``, as OpenAI's clients send it) is their texts joined; another kind of part (an
    image) or a part with no ``type`` is a one-line ``UserError`` naming ``where``."""
    if m["role"] == "developer":
        m = {**m, "role": "system"}
    parts = m["content"]
    if not isinstance(parts, list):
        return m
    for k, part in enumerate(parts):
        at, form = f"{where}.content[{k}]", _TEXT_PART
        if not isinstance(part, dict):
            raise UserError(f"{at} is {_json_type(part)}; a content list holds text parts, "
                            f"{form}")
        if part.get("type") is None:  # missing, or null in an export
            raise UserError(f"{at} has no 'type'; a text part is {form}")
        if part["type"] != "text":
            raise UserError(f"{at} is a part of type {part['type']!r}; unmask takes text "
                            f"only: a string, or text parts {form}")
        if not isinstance(part.get("text"), str):
            raise UserError(f"{at}.text must be a string, not {_json_type(part.get('text'))}")
        extra = [key for key in part if key not in ("type", "text")]
        if extra:
            raise UserError(f"{at} has key {extra[0]!r}; a text part is {form}")
    return {**m, "content": "".join(p["text"] for p in parts)}


def _encodable(text: str) -> bool:
    """Whether ``text`` is valid UTF-8 text (no unpaired surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_type(value: Any) -> str:
    """How a JSON reader names the type of ``value`` (null, a list, an object, ...)."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", list: "a list",
             dict: "an object", str: "a string"}
    return names.get(type(value), type(value).__name__)


def select_template(value: Any, *, source: str) -> str | None:
    """The template in a ``chat_template`` value as publishers store it: a string, or a list
    of ``{"name", "template"}`` objects (named templates) from which ``default`` is taken (the
    first one when none is called so). None or a blank string: no template."""
    if isinstance(value, str):
        return value if value.strip() else None
    if value is None:
        return None
    if (
        isinstance(value, list)
        and value
        and all(isinstance(t, dict) and isinstance(t.get("template"), str) for t in value)
    ):
        named = {t.get("name"): t["template"] for t in value}
        return select_template(named.get("default", value[0]["template"]), source=source)
    raise UserError(
        f"{source}: chat_template must be a string or a list of {{name, template}} objects"
    )


_MARKS_FLAG = "unmask_generation_marks"
"""The render variable that makes ``{% generation %}`` write its marks (``example``)."""

_GENERATION_TAG = re.compile(r"\{%[-+]?\s*generation\s*[-+]?%\}")
"""A ``{% generation %}`` tag in a template's source (``ChatTemplate._generation_span``),
with any of Jinja's whitespace controls (``{%- generation -%}``, ``{%+ generation +%}``)."""

_SPAN_OPEN, _SPAN_CLOSE = "\U00100000", "\U00100001"
"""Where a ``{% generation %}`` span opens and closes in a marked rendering (Supplementary
Private Use Area-B: ``_shield``'s stand-ins come from Area-A)."""


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    try:
        import jinja2
        import jinja2.ext
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:  # pragma: no cover - jinja2 ships with torch
        raise UserError("chat templates need the jinja2 package (pip install jinja2)") from None

    class Namespace(jinja2.utils.Namespace):
        # transformers' namespace(): no attribute whose name starts with "_" (defence in depth)
        def __init__(*args: Any, **kwargs: Any) -> None:  # Jinja's signature trick
            self, rest = args[0], args[1:]
            attrs = dict(*rest, **kwargs)
            for name in attrs:
                _check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            _check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"a namespace cannot store an attribute whose name starts with '_' ({name!r})")

    def raise_exception(message: str) -> None:
        raise _Raised(message)

    def strftime_now(fmt: str) -> str:
        from datetime import datetime

        return datetime.now().strftime(fmt)

    class Generation(jinja2.ext.Extension):
        # transformers' {% generation %} ... {% endgeneration %}: it marks the assistant's
        # text (return_assistant_tokens_mask) and renders its body unchanged; rendered with
        # ``_MARKS_FLAG`` true, between ``_SPAN_OPEN`` and ``_SPAN_CLOSE`` (``example``)
        tags = {"generation"}

        def parse(self, parser: Any) -> list[Any]:
            from jinja2 import nodes

            next(parser.stream)
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)

            def mark(text: str) -> Any:
                shown = [nodes.Output([nodes.TemplateData(text)])]
                return nodes.If(nodes.Name(_MARKS_FLAG, "load"), shown, [], [])

            return [mark(_SPAN_OPEN), *body, mark(_SPAN_CLOSE)]

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: tuple[str, str] | None = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[loopcontrols, Generation],
    )  # jinja2.Undefined, as in transformers: an undefined name prints as nothing
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now,
                       namespace=Namespace)
    return env


@functools.lru_cache(maxsize=32)
def _compile(source: str) -> Any:
    return _environment().from_string(source)


def _token_text(tokenizer: Any, token_id: int | None) -> str:
    if token_id is None:
        return ""
    return tokenizer.id_to_token(int(token_id)) or ""


def template_bos_id(config: Any) -> int | None:
    """The id a model's chat template renders ``{{ bos_token }}`` as (``config``: its
    ``ModelConfig``): ``prompt_bos_id``, the BOS a raw prompt begins with, where the model
    has one, else ``bos_id``. The one rule of ``unmask chat``, the server, SFT and an export's
    ``tokenizer_config.json`` (``unmask.convert.hf_export.tokenizer_config``), so that a
    template renders the same in ``transformers``: Dream's folder names ``<|beginoftext|>``
    there while its ``config.json``'s ``bos_token_id`` is its EOS."""
    bos = getattr(config, "prompt_bos_id", None)
    return getattr(config, "bos_id", None) if bos is None else bos


@dataclass
class _Scan:
    """What ``ChatTemplate._scan`` finds for one tokenizer and template."""

    specials: dict[str, int]
    """``ChatTemplate.specials``."""
    controls: dict[str, int]
    """The strings a message may not forge (text -> id), as ``transformers``'
    ``sanitize_control_tokens`` picks them: every special token of the tokenizer, the
    template's own (``specials``), and the added tokens that are not special (Qwen's
    ``<think>``, ``<tool_call>``) which the template writes, whitespace tokens apart."""
    token_ends: frozenset[str] = frozenset()
    """``ChatTemplate.token_ends``."""

    @functools.cached_property
    def lengths(self) -> dict[str, tuple[int, ...]]:
        """First character of a control token -> the lengths of those starting with it, the
        longest first (a table, not one regex of every token: that took 0.2 to 0.45 s to
        compile for 2,000 reserved tokens)."""
        out: dict[str, set[int]] = {}
        for c in self.controls:
            out.setdefault(c[0], set()).add(len(c))
        return {k: tuple(sorted(v, reverse=True)) for k, v in out.items()}

    @functools.cached_property
    def starts(self) -> re.Pattern[str] | None:
        """Any first character of a control token (None: there are none)."""
        chars = "".join(re.escape(c) for c in sorted(self.lengths))
        return re.compile(f"[{chars}]") if chars else None

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where ``text`` holds control tokens, left to right: at each position the longest
        one starting there, and the next one looked for after it (every span inside
        ``text``)."""
        out: list[tuple[int, int]] = []
        end = 0
        for hit in self.starts.finditer(text) if self.starts is not None else ():
            i = hit.start()
            if i < end:
                continue
            left = len(text) - i  # a longer token cannot start here
            n = next((n for n in self.lengths[text[i]]
                      if n <= left and text[i : i + n] in self.controls), 0)
            if n:
                out.append((i, i + n))
                end = i + n
        return out


_SCANS: weakref.WeakKeyDictionary[Any, dict[tuple[str, str, str], _Scan]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template with the special-token strings it may use."""

    source: str
    """The Jinja text."""
    bos_token: str = ""
    """What ``{{ bos_token }}`` renders as."""
    eos_token: str = ""
    """What ``{{ eos_token }}`` renders as."""
    origin: str = "chat template"
    """How error messages name the template (e.g. its file)."""
    token_ends: frozenset[str] = frozenset()
    """The ends of turn the template writes as text (``_written_turn_ends``) that are one
    token of the tokenizer (``with_tokens``, ``reply``), such as Mistral's ``</s>``: that
    token's id ends a reply (``ends``), and the same characters written as text (HTML's
    ``<s>old</s>``) do not (``turn_starts``)."""

    def __post_init__(self) -> None:
        if self.source in (_DEFAULT_BEFORE_TRIM_BLOCKS, _DEFAULT_BEFORE_LAST_ASSISTANT):
            object.__setattr__(self, "source", DEFAULT_CHAT_TEMPLATE)

    @classmethod
    def with_tokens(
        cls,
        source: str,
        tokenizer: Any,
        *,
        bos_id: int | None,
        eos_id: int | None,
        origin: str = "chat template",
    ) -> ChatTemplate:
        """``source`` with ``bos_token`` / ``eos_token`` the text of ``bos_id`` / ``eos_id`` in
        ``tokenizer`` (a model's ``template_bos_id(config)`` / ``config.eos_id``), knowing which
        of its ends of turn are tokens of ``tokenizer`` (``token_ends``)."""
        return cls(
            source,
            bos_token=_token_text(tokenizer, bos_id),
            eos_token=_token_text(tokenizer, eos_id),
            origin=origin,
        )._knowing(tokenizer)

    def _knowing(self, tokenizer: Any) -> ChatTemplate:
        """This template with ``token_ends`` for ``tokenizer``: the ends of turn it writes
        that are one of its added tokens (special or not), or its BOS/EOS token."""
        ends = self._scan(tokenizer).token_ends
        return self if ends == self.token_ends else replace(self, token_ends=ends)

    def render(
        self,
        messages: Sequence[dict[str, str]],
        *,
        add_generation_prompt: bool = True,
        marks: bool = False,
        check_names: bool = True,
    ) -> str:
        """The text of ``messages`` (checked by ``check_messages``); ``add_generation_prompt``
        appends the header of an assistant turn; ``marks``: every ``{% generation %}`` span
        between ``_SPAN_OPEN`` and ``_SPAN_CLOSE``; ``check_names``: a message ``name`` the
        template drops is refused (``_names_dropped``: one more rendering), not for a
        rendering whose length alone is wanted (the server's length check). Any failure is a
        one-line ``UserError``."""
        msgs = check_messages(list(messages))
        text = self._render(msgs, add_generation_prompt, marks)
        if check_names:
            self._check_names(msgs, add_generation_prompt, marks, text)
        return text

    def _check_names(self, msgs: list[dict[str, str]], add_generation_prompt: bool,
                     marks: bool, text: str) -> None:
        """A ``UserError`` naming the first message of ``msgs`` (checked) whose ``name``
        ``text``, their rendering, leaves out (``_names_dropped``)."""
        dropped = self._names_dropped(msgs, add_generation_prompt, marks, text)
        if dropped:
            raise UserError(f"{self.origin} does not render message names: "
                            f"messages[{dropped[0]}] has 'name' (drop it, or use a template "
                            "that writes message.name)")

    def _names_dropped(self, msgs: list[dict[str, str]], add_generation_prompt: bool,
                       marks: bool, text: str) -> list[int]:
        """Indices of the named messages of ``msgs`` whose name ``text``, their rendering,
        leaves out, found in one more rendering, every name at once replaced by its own probe
        (``_probe_stem``, then the index): a message whose probe the new rendering holds (in
        any case: ``| upper``) is rendered with its name, and none is when it renders the same.
        The others (all when the rendering tells nothing: it differs but holds no probe, the
        template writes names otherwise, ``| length``; or it refuses the probes, it judges
        names) are probed again, each role's alone (at most ``len(ROLES)`` renderings more,
        only then): one role's names truncated or judged no longer lets another's dropped names
        through, and one role's written otherwise is not refused for another's printed.
        Finding ``name`` in the source let every template through that calls ``namespace()``
        or prints a tool call's ``name`` (Qwen2.5's, Llama 3's), and dropped the name
        silently; a rendering per named message made a conversation's cost quadratic."""
        named = [i for i, m in enumerate(msgs) if "name" in m]
        if not named:
            return []
        # neither the rendering nor a name holds it: a name equal to its own probe
        # (``unmaskprobe0name`` written as its length) is not taken for written
        stem = _probe_stem("\n".join([text, *(str(msgs[i]["name"]) for i in named)]))
        dropped = self._probed(msgs, named, stem, add_generation_prompt, marks, text)
        if dropped == named:  # it renders the same: every name is left out
            return named
        suspects = named if dropped is None else dropped
        by_role = ([i for i in suspects if msgs[i]["role"] == role] for role in ROLES)
        return sorted(i for which in by_role if which
                      for i in self._probed(msgs, which, stem, add_generation_prompt, marks,
                                            text) or ())

    def _probed(self, msgs: list[dict[str, str]], which: list[int], stem: str,
                add_generation_prompt: bool, marks: bool, text: str) -> list[int] | None:
        """The messages ``which`` (named) of ``msgs`` whose names ``text`` leaves out, from
        one rendering with their names replaced by probes (``stem``, the index, ``name``): all
        when it renders ``text``; those whose probe it lacks (one regular-expression pass)
        when it holds one; ``None`` when it tells nothing (it holds none, or it raises)."""
        probed = set(which)
        changed = [{**m, "name": f"{stem}{i}name"} if i in probed else m
                   for i, m in enumerate(msgs)]
        try:
            seen = self._render(changed, add_generation_prompt, marks)
        except UserError:  # it judges the names: it reads them
            return None
        if seen == text:
            return which
        found = {int(n) for n in re.findall(rf"{stem}(\d+)name", seen.lower())}
        return [i for i in which if i not in found] if found & probed else None

    def _render(self, msgs: list[dict[str, str]], add_generation_prompt: bool,
                marks: bool) -> str:
        """``render`` of checked messages, names unchecked."""
        _environment()  # a missing jinja2 is a UserError
        import jinja2

        try:
            return _compile(self.source).render(
                messages=msgs,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                tools=None,
                documents=None,
                **{_MARKS_FLAG: marks},
            )
        except _Raised as e:
            raise TemplateRejected(
                f"{self.origin} failed to render: the template rejected these messages: "
                f"{' '.join(str(e).split())}"
            ) from None
        except jinja2.TemplateSyntaxError as e:
            detail = f"syntax error at line {e.lineno}: {e.message}"
        except jinja2.UndefinedError as e:
            detail = str(e.message)
        except jinja2.exceptions.SecurityError as e:
            detail = f"the sandbox blocked an unsafe operation ({e})"
        except (
            Exception
        ) as e:  # a template may raise anything (TypeError on bad filters, ZeroDivisionError ...)
            detail = f"{type(e).__name__}: {e}"
        raise UserError(f"{self.origin} failed to render: {' '.join(detail.split())}")

    def specials(self, tokenizer: Any) -> dict[str, int]:
        """Special tokens the template writes itself (those of ``tokenizer`` whose text occurs
        in the source, plus ``bos_token`` / ``eos_token`` when it uses them): text -> id. The
        ids that end a reply (``ends``)."""
        return dict(self._scan(tokenizer).specials)

    def _scan(self, tokenizer: Any) -> _Scan:
        """``specials``, the control tokens and ``token_ends`` for ``tokenizer`` (``_Scan``),
        found once per tokenizer and template: looking through every added token on each
        prompt and SFT example cost more than rendering it (2.4 ms an example with 2,000
        reserved tokens, 0.44 ms with Llama 3's 256, against 0.25 ms with none)."""
        key = (self.source, self.bos_token, self.eos_token)
        try:
            return _SCANS[tokenizer][key]
        except (KeyError, TypeError):
            pass
        specials = {text: tid for text, tid, special in _added_tokens(tokenizer)
                    if special and text in self.source}
        for name, text in (("bos_token", self.bos_token), ("eos_token", self.eos_token)):
            tid = tokenizer.token_to_id(text) if text and name in self.source else None
            if tid is not None:
                specials[text] = int(tid)
        controls = dict(specials)
        tokens: set[str] = set()
        for text, tid, special in _added_tokens(tokenizer):
            tokens.add(text)
            if special or (text in self.source and not text.isspace()):
                controls.setdefault(text, tid)
        tokens.update(t for t in (self.bos_token, self.eos_token)
                      if t and tokenizer.token_to_id(t) is not None)
        written = () if self.source in TURN_STARTS else \
            _written_turn_ends(self.source, self.bos_token, self.eos_token)
        scan = _Scan(specials=specials, controls=controls,
                     token_ends=frozenset(m for m in written if m in tokens))
        try:
            known = _SCANS.setdefault(tokenizer, {})
        except TypeError:  # not weakly referable: found again next time
            return scan
        if len(known) >= 32:  # a caller trying template after template
            known.clear()
        known[key] = scan
        return scan

    def _encode(
        self, tokenizer: Any, text: str, plain: dict[str, str], *, start: bool = True
    ) -> list[int]:
        """Ids of a text ``_shield`` rendered, as ``transformers`` encodes a chat whose control
        tokens it sanitized: a control token typed in a message (a stand-in of ``plain``) as
        plain text, without matching any added token; the text around them, the template's
        own markup, in one ``tokenizer.encode`` with special tokens read (a message's are
        stand-ins by then). A piece after the first is encoded after a newline that is then
        dropped, as ``transformers`` does, so a SentencePiece tokenizer does not give it the
        word-start mark of a text's start; the first piece is the text before the first
        stand-in, so a stand-in that opens ``text`` is not first (``encode_marked_chat``);
        ``start=False``: ``text`` continues a text (an SFT response after its prompt), so its
        first piece is one of those too."""
        if not plain and start:
            return list(tokenizer.encode(text, allow_special=True))
        ids: list[int] = []
        pos = 0
        marks = re.finditer("|".join(map(re.escape, plain)), text) if plain else ()
        for m in marks:
            if m.start() > pos:
                ids += _piece(tokenizer, text[pos : m.start()], first=start and pos == 0)
            # never first: transformers encodes the text before the first stand-in as the
            # first piece, even when it is empty (a message that opens the rendered text)
            ids += _piece(tokenizer, plain[m.group()], first=False, as_text=True)
            pos = m.end()
        if pos < len(text):
            ids += _piece(tokenizer, text[pos:], first=start and pos == 0)
        return ids

    def _shield(
        self, scan: _Scan, messages: Sequence[dict[str, str]]
    ) -> tuple[list[dict[str, str]], dict[str, str]]:
        """``messages`` (checked) with every control-token string (``_Scan.controls``) in a
        message's text (its content and name, the strings a template prints) replaced by a
        private-use character found nowhere in the conversation or the template, and the map
        from those characters back to the strings: only the template's own markup then
        matches a special token. Where two control tokens overlap, the one starting first
        is replaced (the longest of those starting there)."""
        msgs = check_messages(list(messages))
        texts = [m[k] for m in msgs for k in _TEXT_FIELDS if k in m]
        where = {t: scan.spans(t) for t in texts}
        found = {t[a:b] for t, spans in where.items() for a, b in spans}
        if not found:
            return msgs, {}
        taken = set(self.source).union(*texts)
        stand_in: dict[str, str] = {}
        code = 0xF0000  # Supplementary Private Use Area-A
        for s in sorted(found, key=lambda c: (-len(c), c)):
            while chr(code) in taken:
                code += 1
            stand_in[s] = chr(code)
            code += 1

        def shield(text: str) -> str:
            pieces, at = [], 0
            for a, b in where[text]:
                pieces += [text[at:a], stand_in[text[a:b]]]
                at = b
            return "".join([*pieces, text[at:]])

        shielded = [{**m, **{k: shield(m[k]) for k in _TEXT_FIELDS if k in m}} for m in msgs]
        return shielded, {v: k for k, v in stand_in.items()}

    def prompt(self, tokenizer: Any, messages: Sequence[dict[str, str]]) -> tuple[str, list[int]]:
        """Text and ids of the prompt a chat model continues: ``messages`` and the generation
        prompt (a message's special-token strings are plain text, in its content and name); a
        ``TemplateRejected`` where the template drops a system message (``_renders_system``)."""
        shielded, plain = self._shield(self._scan(tokenizer), messages)
        text = self.render(shielded, add_generation_prompt=True)
        self._renders_system(shielded, text)
        return _unshield(text, plain), self._encode(tokenizer, text, plain)

    def _renders_system(self, messages: Sequence[dict[str, str]], text: str) -> None:
        """A ``TemplateRejected`` naming a system message with text that ``text``, the prompt
        of ``messages`` (generation prompt included), leaves out: the template renders the
        same prompt whatever that message says, so the instruction (``--system``, a request's
        system message) silently never reached the model, as a ``name`` would (``render``
        refuses that). Every system message is checked, by rendering ``messages`` again with
        its text replaced (``_PROBE_SYSTEM``): sound whatever the template does to the text
        (trims it, escapes it, writes it only where a conversation ends with a user turn, as
        Mistral v0.3's does, or has it as its default system message, as Qwen's does), where
        finding the text in the prompt let "Hi" through in a prompt holding "Hi there", and
        only the first system message was checked. A conversation without a user or
        assistant message is left alone, and so is one the template rejects with the text
        replaced; ``transformers``' published templates that take no system message raise
        (Gemma's "System role not supported")."""
        if all(m["role"] == "system" for m in messages):
            return
        for i, m in enumerate(messages):
            if m["role"] != "system" or not m["content"].strip():
                continue
            probe = _PROBE_SYSTEM[m["content"] == _PROBE_SYSTEM[0]]
            changed = [*messages[:i], {**m, "content": probe}, *messages[i + 1 :]]
            try:
                if self.render(changed, add_generation_prompt=True, check_names=False) != text:
                    continue
            except UserError:  # it judges the text: it reads it
                continue
            raise TemplateRejected(
                f"{self.origin} leaves messages[{i}] (system) out of the prompt of these "
                "messages (the prompt is the same whatever it says), so the model would never "
                "see it; put its text in a user message, or use a template that writes it"
            )

    def example(
        self, tokenizer: Any, messages: Sequence[dict[str, str]]
    ) -> tuple[list[int], list[int]]:
        """Prompt ids and response ids (no EOS) of an SFT example whose last message is the
        response: ``render(messages[:-1], add_generation_prompt=True)`` is the prompt and the
        rest of ``render(messages)`` the response (a message's special-token strings are plain
        text, in its content and name). A one-line ``UserError`` when the template does not
        render the prompt as a prefix of the conversation, or drops the response's text or a
        system message (``_renders_system``: the model would learn replies to an instruction
        it never saw). A template that ignores ``add_generation_prompt`` and appends its
        assistant header after every conversation has that header cut off the response
        (``_without_header``)."""
        shielded, plain = self._shield(self._scan(tokenizer), messages)
        prompt = self.render(shielded[:-1], add_generation_prompt=True, check_names=False)
        self._renders_system(shielded[:-1], prompt)  # else trained as if never given
        full = self.render(shielded, add_generation_prompt=False)  # every name checked
        if not full.startswith(prompt):
            raise UserError(
                f"{self.origin} renders the conversation without its generation prompt as a "
                "prefix; the prompt/response split needs it"
            )
        response = full[len(prompt) :]
        text = shielded[-1]["content"].strip()
        marked = self._generation_span(shielded, len(prompt))
        if marked is not None:
            response = full[marked[0] : marked[1]]
        if text and text not in response:  # the model would learn to answer nothing
            raise UserError(
                f"{self.origin} renders the conversation without the response's text"
                f"{' in its {% generation %} span' if marked else ''}; it must render every "
                "message's content"
            )
        try:  # a template may refuse a generation prompt after an assistant turn
            ignores_flag = marked is None and \
                self.render(shielded, add_generation_prompt=True, check_names=False) == full
        except UserError:
            ignores_flag = False
        if ignores_flag:
            response = self._without_header(tokenizer, prompt, response, text)
        return (
            self._encode(tokenizer, prompt, plain),
            self._encode(tokenizer, response, plain, start=False),
        )

    def _generation_span(
        self, messages: Sequence[dict[str, str]], start: int
    ) -> tuple[int, int] | None:
        """Where, in the rendering of ``messages`` (no generation prompt), the text that
        ``{% generation %}`` marks after ``start`` (the prompt's end) begins and ends: the
        span ``transformers`` marks as the assistant's (``return_assistant_tokens_mask``,
        TRL's ``assistant_only_loss``); text between the prompt and the span (a header the
        generation prompt lacks) and after it (a newline after the end of turn) is not
        trained. Where the turn holds two or more spans, this runs from the first to the end
        of the last, the text between them included, which ``transformers`` leaves out: a
        response is one run of text. None where the template has no such span there (or a
        message holds a mark's character)."""
        if not _GENERATION_TAG.search(self.source) or any(
            c in m.get(k, "") for m in messages for k in _TEXT_FIELDS
            for c in (_SPAN_OPEN, _SPAN_CLOSE)
        ):  # fmt: skip
            return None
        spans, at, opened = [], 0, None
        for piece in re.split(f"([{_SPAN_OPEN}{_SPAN_CLOSE}])",
                              self.render(messages, add_generation_prompt=False, marks=True,
                                          check_names=False)):
            if piece == _SPAN_OPEN:
                opened = at
            elif piece == _SPAN_CLOSE and opened is not None:
                spans.append((opened, at))
                opened = None
            else:
                at += len(piece)
        spans = [(max(a, start), b) for a, b in spans if b > start]
        return (spans[0][0], spans[-1][1]) if spans else None

    def _without_header(self, tokenizer: Any, prompt: str, response: str, text: str) -> str:
        """``response`` (the text after ``prompt``, holding the reply ``text``) without the
        generation prompt that a template which ignores ``add_generation_prompt`` appends
        after every conversation (LLaDA-8B-Instruct's: ``<|start_header_id|>assistant
        <|end_header_id|>``): the model would learn to open a new assistant turn after its
        end of turn. The turn keeps what ``reply`` reads: the text up to and including the
        first special token the template writes after the reply (its end-of-turn marker),
        when the rest is text the prompt ends with too (the appended header); without such
        a token, the longest text after the reply that the prompt also ends with is dropped
        (the EOS that follows every response then ends the turn)."""
        after = response.find(text) + len(text) if text else 0
        tail = response[after:]
        specials = sorted(self.specials(tokenizer), key=len, reverse=True)
        stop = re.search("|".join(map(re.escape, specials)), tail) if specials else None
        if stop is not None:
            cut = after + stop.end()
            return response[:cut] if prompt.endswith(response[cut:]) else response
        n = len(tail)
        while n and not prompt.endswith(tail[len(tail) - n :]):
            n -= 1
        return response[: len(response) - n]

    def ends(self, tokenizer: Any, eos_id: int | None) -> frozenset[int]:
        """The ids that end a generated turn: EOS, every special token the template writes
        (its end-of-turn marker) and the end of turn it writes as text where that is one
        token of ``tokenizer`` (``token_ends``)."""
        scan = self._scan(tokenizer)
        written = (tokenizer.token_to_id(t) for t in scan.token_ends)
        return frozenset(scan.specials.values()) | (
            {int(eos_id)} if eos_id is not None else frozenset()
        ) | {int(i) for i in written if i is not None}

    def reply(self, tokenizer: Any, gen_ids: Sequence[int], eos_id: int | None,
              stops: Sequence[str] = ()) -> str:
        """The text of a generated turn: ``gen_ids`` up to the first id that ends it
        (``ends``: EOS, the template's end-of-turn token), decoded, cut where its text ends
        a turn (``turn_starts``: ``\nUser:`` for ``plain``, ChatML's ``<|im_end|>`` through a
        tokenizer without that token) or before the earliest of the stop sequences
        ``stops``, whichever starts first, and stripped (``cut_text``, the rule of the
        server's chat)."""
        stop = self.ends(tokenizer, eos_id)
        ids = [int(i) for i in gen_ids]
        end = next((k for k, i in enumerate(ids) if i in stop), len(ids))
        return cut_text(tokenizer.decode(ids[:end]), stops, self._knowing(tokenizer))

    @property
    def turn_starts(self) -> tuple[str, ...]:
        """The text that ends a reply of this template besides EOS and its special tokens: for
        a built-in one, where it starts another turn (``TURN_STARTS``); for another, the end of
        turn it writes as markup right after an assistant message (``_written_turn_ends``:
        ChatML's ``<|im_end|>``, which SFT trained each response to end with; through a
        tokenizer without that token it is text, and the reply ran on past it, marker and
        all), unless it is a token of the tokenizer (``token_ends``: its id ends the reply);
        ``()``: none (a header of the next turn or plain words are text a reply may hold)."""
        if self.source in TURN_STARTS:
            return TURN_STARTS[self.source]
        written = _written_turn_ends(self.source, self.bos_token, self.eos_token)
        return tuple(m for m in written if m not in self.token_ends)

    def turn_start(self, text: str) -> tuple[int, int] | None:
        """Where ``text``, a reply as decoded (before it is stripped), starts another turn: the
        span of the earliest of ``turn_starts`` in it (a reply is cut at its start), or None.
        The one rule of ``reply``, ``unmask chat``, ``api.chat`` and the server's chat."""
        found = [(k, k + len(s)) for s in self.turn_starts if (k := text.find(s)) >= 0]
        return min(found) if found else None


_PROBE_TURNS = ("unmask-probe-question", "unmask-probe-answer", "unmask-probe-next")
"""The user, assistant and next user message ``_written_turn_ends`` renders."""


_TOKEN_LIKE = re.compile(r"<([^<>\s]+)>|\[([^\[\]\s]+)\]")
"""Text that reads as a special token written out (``_token_like``): ``<|im_end|>``,
``<end_of_turn>``, ``</s>``, ``[/END]``, DeepSeek's ``<｜end▁of▁sentence｜>``, EXAONE's
``[|endofturn|]``: a run without spaces in angle or square brackets."""

_ORDINARY_TAGS = frozenset(
    "a abbr b big blockquote body br center cite code dd del details div dl dt em figure font "
    "footer h1 h2 h3 h4 h5 h6 head header hr html i img ins kbd li mark nav ol p pre q quote "
    "samp section small span strong sub summary sup table tbody td th thead title tr tt u ul "
    "url var article aside main color size list".split())
"""HTML (and BBCode) tag names: ``</p>``, ``[/quote]`` close text an ordinary reply writes,
not a turn. ``s`` is not one of them: ``</s>`` is Llama's and Mistral's end of sequence."""


def _token_like(end: str) -> bool:
    """Whether ``end``, the text a template writes after an assistant message, holds a special
    token written out (``_TOKEN_LIKE``) other than an HTML or BBCode tag (``_ORDINARY_TAGS``):
    not ``"}`` (a JSON-lines template; every reply that writes JSON holds it), ``</p>``,
    ``---`` or ``USER:``."""
    return any((m[1] or m[2]).strip("/").lower() not in _ORDINARY_TAGS
               for m in _TOKEN_LIKE.finditer(end))


@functools.lru_cache(maxsize=32)
def _written_turn_ends(source: str, bos_token: str, eos_token: str) -> tuple[str, ...]:
    """``ChatTemplate.turn_starts`` of a template that is not a built-in one: the text it
    writes right after an assistant message's content, leading and trailing whitespace
    dropped, when it writes the same where the conversation ends and where a user turn
    follows (an end of turn: ChatML's ``<|im_end|>``, Phi-3's ``<|end|>``, Mistral's
    ``</s>``) and that text holds a token written out (``_token_like``). ``()`` otherwise: a header
    of the next turn, plain words or a rule are text a reply may hold (``\nuser:`` of a
    ``{{ m.role }}: {{ m.content }}`` template cut a reply at a YAML line ``user: admin``,
    Vicuna's ``USER:`` mid-line), and so is the text of a template that writes nothing
    there but whitespace, appends its assistant header after every conversation (LLaDA's,
    whose ``<|eot_id|>`` is a special token) or renders the probe otherwise."""
    question, answer, following = _PROBE_TURNS
    template = ChatTemplate(source, bos_token=bos_token, eos_token=eos_token)
    talk = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    try:
        ended = template.render(talk, add_generation_prompt=False)
        going = template.render([*talk, {"role": "user", "content": following}],
                                add_generation_prompt=False)
    except UserError:  # a template that refuses the probe: no text of it is known
        return ()
    if question not in ended or question not in going:
        return ()
    at, on = ended.find(answer, ended.find(question)), going.find(answer, going.find(question))
    nxt = going.find(following, on) if on >= 0 else -1
    if at < 0 or nxt < 0:
        return ()
    end = ended[at + len(answer):].strip()
    start = going[on + len(answer): nxt].lstrip()
    return (end,) if end and start.startswith(end) and _token_like(end) else ()


def stop_at(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest-starting of the stop sequences ``stops`` in ``text`` begins (None:
    none): the text is cut there (``text_end``)."""
    return min((text.find(s) for s in stops if s in text), default=None)


def reply_lead(text: str) -> int:
    """Length of the whitespace a chat reply starts with: a reply is stripped, so a stop
    sequence such as ``" "`` or ``"\n"`` is looked for in the text the reader gets, not in
    the space a template leaves after ``Assistant:``."""
    return len(text) - len(text.lstrip())


def text_end(text: str, stops: Sequence[str], template: ChatTemplate | None = None
             ) -> tuple[int, int] | None:
    """The span of ``text`` that ends it, or None. ``text``: a row as decoded up to its end
    token (EOS; a chat's end of turn), not stripped. The span is the earliest-starting of the
    stop sequences ``stops`` (the shortest of those starting there); for a chat reply
    (``template`` given) looked for after its leading whitespace (``reply_lead``), and the
    template's turn marker (``ChatTemplate.turn_start``) if that starts before it.

    The one rule of where a text ends: ``api.generate``'s and ``api.chat``'s ``stop``
    (``cut_text``) and the server's completions and chat (``finish``, ``prefix_text``)."""
    lead = reply_lead(text) if template is not None else 0
    at = stop_at(text[lead:], stops)
    span = None
    if at is not None:
        at += lead
        span = (at, at + min(len(s) for s in stops if text.startswith(s, at)))
    turn = template.turn_start(text) if template is not None else None
    if turn is not None and (span is None or turn[0] < span[0]):
        span = turn
    return span


def cut_text(text: str, stops: Sequence[str], template: ChatTemplate | None = None) -> str:
    """``text`` (as ``text_end`` takes it) before the span that ends it; a chat reply
    (``template`` given) stripped last."""
    span = text_end(text, stops, template)
    if span is not None:
        text = text[: span[0]]
    return text.strip() if template is not None else text


_ADDED: weakref.WeakKeyDictionary[Any, tuple[tuple[str, int, bool], ...]] = (
    weakref.WeakKeyDictionary()
)


def _added_tokens(tokenizer: Any) -> tuple[tuple[str, int, bool], ...]:
    """``(text, id, special)`` of each added token of ``tokenizer`` (none without ``hf``),
    read once per tokenizer: ``tokenizers`` builds the table anew on every call (6 ms for
    2,000 reserved tokens, per SFT example)."""
    try:
        return _ADDED[tokenizer]
    except (KeyError, TypeError):
        pass
    hf = getattr(tokenizer, "hf", None)
    table = tuple(
        (t.content, int(i), bool(t.special))
        for i, t in (hf.get_added_tokens_decoder().items() if hf is not None else ())
        if t.content
    )
    try:
        _ADDED[tokenizer] = table
    except TypeError:  # not weakly referable: read again next time
        pass
    return table


def _piece(tokenizer: Any, text: str, *, first: bool, as_text: bool = False) -> list[int]:
    """Ids of one piece of a chat (``ChatTemplate._encode``): ``tokenizer.encode`` with special
    tokens read, or with ``as_text`` (a control token typed in a message) as plain text: a
    special one by ``tokenizer.encode``, which never builds a special id from text, another
    added token (``<think>``) by the tokenizer's pipeline without its added tokens. A piece
    that is not ``first`` is encoded after a newline whose ids are then dropped, as
    ``transformers`` encodes the pieces of a chat."""
    tid = tokenizer.token_to_id(text) if as_text else None
    added = tid is not None and not tokenizer.is_special(tid)

    def encode(t: str) -> list[int]:
        if not added:
            return list(tokenizer.encode(t, allow_special=not as_text))
        hf = tokenizer.hf  # no added-token matching
        if hf.normalizer is not None:
            t = hf.normalizer.normalize_str(t)
        splits = [p for p, _ in hf.pre_tokenizer.pre_tokenize_str(t)] if hf.pre_tokenizer \
            else [t]
        return [tok.id for p in splits for tok in hf.model.tokenize(p)]

    if first:
        return encode(text)
    newline = list(tokenizer.encode("\n"))
    ids = encode("\n" + text)
    return ids[len(newline) :] if newline and ids[: len(newline)] == newline else encode(text)


def _unshield(text: str, plain: dict[str, str]) -> str:
    """``text`` with the stand-ins of ``ChatTemplate._shield`` back as their strings."""
    for stand_in, original in plain.items():
        text = text.replace(stand_in, original)
    return text


def render_chat(
    template: str,
    messages: Sequence[dict[str, str]],
    *,
    add_generation_prompt: bool,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """Render ``messages`` with the Jinja ``template`` (``ChatTemplate.render``)."""
    return ChatTemplate(template, bos_token=bos_token, eos_token=eos_token).render(
        messages, add_generation_prompt=add_generation_prompt
    )


def _uses_messages(template: ChatTemplate) -> ChatTemplate:
    """``template``, refused in one line when it fails to render one user message (a syntax
    error, an undefined name: ``UserError`` naming its origin), or renders it without its text
    (an empty file, a fixed string): the conversation would never reach the model. A template
    whose own ``raise_exception`` rejects the probe (it wants a system message, say) is left
    to judge the real messages."""
    probe = "unmask-probe-message"
    try:
        text = template.render([{"role": "user", "content": probe}], add_generation_prompt=True)
    except TemplateRejected:
        return template
    if probe not in text:
        raise UserError(f"{template.origin} failed to render: it renders a user message without "
                        "its text (an undefined name prints as nothing); the conversation would "
                        "never reach the model")
    return template


_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json",
                   "config.json")
"""Files of a model folder that ``--template`` reads a template from, in the order a folder
given in their place names them (``template_arg``)."""


def _holds_template(path: Path) -> bool:
    """Whether ``path`` is a file ``template_arg`` reads a template from: a Jinja file, or JSON
    with a ``chat_template`` (a Hugging Face ``config.json`` has none)."""
    if not path.is_file():
        return False
    if path.suffix != ".json":
        return True
    from unmask.files import read_json

    try:
        data = read_json(path)
    except (OSError, UserError):  # not UTF-8, not a JSON object: holds no template
        return False
    return bool(data.get("chat_template"))


def _json_with_template(text: str) -> bool:
    """Whether ``text``, a template file's, is to be read as a ``tokenizer_config.json`` (one
    read through a pipe, ``<(curl ...)``, or under another name): a JSON object with a
    ``chat_template`` key, never a Jinja template meant as one (that would print the JSON as
    the prompt), or a JSON object with no Jinja tag at all (a base model's config: as Jinja it
    renders no message, so "no chat_template in this file" says what is wrong, where "renders
    a user message without its text" misled). A JSON object whose strings hold ``{{``/``{%``
    stays Jinja: ``{"q": "{{ messages[0].content }}"}`` renders the messages, as it did."""
    if not text.lstrip().startswith("{"):
        return False
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # Jinja: "{% for ..." / "{{ bos_token }}"
        return False
    return isinstance(data, dict) and (
        "chat_template" in data or ("{{" not in text and "{%" not in text))


def template_arg(value: str) -> ChatTemplate:
    """A ``--template`` value: a built-in name (``BUILTIN_TEMPLATES``), a Jinja file, a JSON
    file with a ``chat_template`` key (``tokenizer_config.json``, ``chat_template.json``), or
    a Jinja string. A file may be a pipe (``<(...)``), read once. BOS/EOS strings are left
    empty (``ChatTemplate.with_tokens`` adds them)."""
    if value in BUILTIN_TEMPLATES:
        return ChatTemplate(BUILTIN_TEMPLATES[value], origin=f"built-in chat template {value!r}")
    if not value.strip():  # Path("") is the working folder: "'' is a folder" misled
        raise UserError(f"chat template {value!r} is empty: {EMPTY_TEMPLATE}")
    path = Path(value)
    try:  # a file is anything there but a folder: a pipe (``--template <(jq -r ...)``, a
        # FIFO, /dev/stdin) was "no such file"
        is_dir = stat.S_ISDIR(path.stat().st_mode)
        is_file = not is_dir
    except OSError as e:
        from unmask.files import NOTHING_THERE

        # Jinja text with a line past the file-name limit raised "File name too long"
        if e.errno not in (errno.ENAMETOOLONG, *NOTHING_THERE):  # a file there that cannot
            raise UserError(f"{value}: cannot be read ({e.strerror or e})") from None  # be read
        is_file = is_dir = False  # no file or folder has that name: the text is all there is
    except ValueError:  # a NUL in the text: no path holds one
        is_file = is_dir = False
    if is_file:
        from unmask.files import parse_json, read_user_text

        text = read_user_text(path, "chat template")
        if path.suffix == ".json" or _json_with_template(text):  # a pipe has no suffix
            data = parse_json(text, path)
            source = select_template(
                data.get("chat_template") if isinstance(data, dict) else None, source=str(path)
            )
            if source is None:
                raise UserError(f"{path}: no chat_template in this file")
            text = source
        return _uses_messages(ChatTemplate(text, origin=f"chat template {path}"))
    if "{{" in value or "{%" in value:
        return _uses_messages(ChatTemplate(value, origin="chat template (--template)"))
    if is_dir:  # a model folder: "no such file" misled
        from unmask.folders import CHECKPOINT_FOLDERS

        # a run folder (what --model takes) keeps its model in checkpoint/
        inside = next((path / sub / n for sub in ("", *CHECKPOINT_FOLDERS)
                       for n in _TEMPLATE_FILES if _holds_template(path / sub / n)), None)
        hint = (f"give {inside}, or" if inside else
                f"it holds none of {', '.join(_TEMPLATE_FILES)} (nor does a checkpoint in it);")
        raise UserError(f"--template {value!r} is a folder, not a chat template file; {hint} "
                        "leave out --template to use the model's own chat template")
    raise UserError(
        f"--template {value!r}: no such file, not a built-in template "
        f"({', '.join(BUILTIN_TEMPLATES)}) "
        "and not a Jinja string"
    )


__all__ = [
    "BUILTIN_TEMPLATES",
    "DEFAULT_CHAT_TEMPLATE",
    "EMPTY_TEMPLATE",
    "PLAIN_CHAT_TEMPLATE",
    "ROLES",
    "ChatTemplate",
    "TURN_STARTS",
    "TemplateRejected",
    "check_messages",
    "render_chat",
    "select_template",
    "template_arg",
    "template_bos_id",
]
