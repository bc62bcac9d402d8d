"""``unmask chat``: a conversation with a chat model in the terminal.

Each turn re-renders the whole conversation (the ``--system`` message, every earlier turn,
the new message) through the model's chat template (``unmask.api.chat_template``;
``--template`` to use another) and samples the reply with the options of ``unmask generate``
(``unmask.api.chat``). When the conversation outgrows the model's ``max_seq_len`` (with
``--draft``, the smaller context of the two) the oldest turns are dropped, one exchange at a
time, and a note says so. A model without a chat
template is refused with a one-line error naming ``--template`` and SFT: a base model
continues text, and silently chatting with it through an invented format misleads.

In a terminal: ``/reset`` starts over, ``/exit`` (or Ctrl-D) quits, Ctrl-C stops a reply and
returns to the prompt (on stderr where stdout is redirected: a transcript holds replies). A
message spans lines where a line ends with a backslash (the next line continues it, at a
``... `` prompt) or inside a block opened and closed by three double quotes (sent as typed,
never a command; ``gather``). With standard input not a terminal each
line is one user message, by the same rules for many lines (``/reset`` and ``/exit`` work
there too; input that ends inside a message is an error), decoded as UTF-8 on its own, and
each reply is printed as it comes (one JSON object per turn with ``--json``, the options
that ran included); any error (a line that is not UTF-8 text included, naming it) ends the
run with exit code 2. Another line that starts with ``/`` is an unknown command, refused
with the list of commands (a typo is not sent to the model); ``//`` sends a message that
starts with ``/`` (``//etc/hosts`` sends ``/etc/hosts``). A ``--system`` message that leaves
no room for a reply is refused at startup, and so is a ``--gen-length`` that leaves none for
any message. ``--steps`` not given is one per token, fitted to the blocks each turn's prompt
leaves on a checkpoint whose blocks start at the first prompt token (``api.fit_block_steps``).

Inside: ``model_template``, ``ChatSession``, ``converse``, ``register``, ``run``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from unmask.chat import ChatTemplate, TemplateRejected
from unmask.commands import (
    add_json_flag,
    add_model_flag,
    add_no_live_flag,
    add_quantize_flag,
    add_runtime_flags,
    check_model_exists,
    check_template_given,
    given_fields,
    template_name_or_path,
)
from unmask.commands.sample_options import (
    add_draft_flag,
    add_sample_flags,
    add_stop_flag,
    check_draft_flags,
    check_given_blocks,
    check_given_options,
    check_lengths,
    check_sample_flags,
    load_draft,
    make_live,
    with_seed,
)
from unmask.config import SampleConfig, resolve_device
from unmask.errors import UserError
from unmask.files import require_stdout, user_stdin
from unmask.loaded import Loaded
from unmask.messages import plural
from unmask.names import closest
from unmask.terminal import is_tty, json_text, shown_text

COMMANDS = {
    "/reset": "start a new conversation",
    "/exit": "quit (also /quit, Ctrl-D)",
    "/help": "this list",
    "//text": "send a message that starts with / (here /text)",
    "text\\": "a line ending in \\ continues on the next line (the message keeps the newline)",
    '"""': 'a line opening with """ starts a message of many lines, sent as typed (no '
           'commands), up to a line ending with """ (so """C:\\dir\\""" sends C:\\dir\\, '
           'a line ending in \\)',
}

NAMES = ("/reset", "/exit", "/quit", "/help")
"""The commands a line can be (``/quit`` is ``/exit``; ``COMMANDS`` lists them for /help)."""

BLOCK = '"""'
"""Opens a message of many lines and closes it (``gather``)."""

CONTINUE = "\\"
"""Ends a line that the next one continues (``gather``)."""


def model_template(loaded: Any, template: str | None) -> ChatTemplate:
    """``unmask.api.chat_template`` (kept under its old name for callers of this module)."""
    from unmask.api import chat_template

    return chat_template(loaded, template)


@dataclass
class Prepared:
    """The prompt of the next turn."""

    text: str
    """The rendered conversation, generation prompt included."""
    ids: list[int]
    """Its token ids."""
    turns: list[dict[str, str]]
    """The turns it holds (oldest ones dropped to fit), the new user message last."""
    dropped: int
    """Exchanges (user + assistant turn) dropped to fit ``max_seq_len``."""
    limited_by: str = "model"
    """Whose ``max_seq_len`` the context is: "model", or "drafter" when its is shorter."""
    config: SampleConfig | None = None
    """The options this turn runs with (``ChatSession.turn_config``); None: the session's."""


@dataclass
class Turn:
    """One answered message."""

    reply: str
    prompt: Prepared
    nfe: int
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)
    """Acceptance rate, tokens per forward, forwards (``speculative``, ``hybrid``)."""
    config: SampleConfig | None = None
    """The options the reply ran with, its decoder named (``unmask.api.Reply.config``)."""
    steps: int = 0
    """The decoder's steps (``unmask.api.Reply.steps``; ``generate --json`` reports them too)."""


_PROBE = "x"
"""The user message ``--system`` is checked with at startup (``ChatSession.check_system``)."""


@dataclass
class ChatSession:
    """A conversation with one model: system message, turns so far, template and sampler options."""

    loaded: Any
    template: ChatTemplate
    config: SampleConfig
    system: str | None = None
    device: str = "cpu"
    turns: list[dict[str, str]] = field(default_factory=list)
    """Alternating user and assistant messages."""
    draft: Any = None
    """A loaded diffusion checkpoint that drafts for this causal one (``--draft``), or None."""
    given: dict[str, Any] | None = None
    """The options the user gave (the ``--flags``, the drawn seed included), from which each
    turn's options are made for its prompt (``turn_config``); None: ``config`` every turn."""
    stop: tuple[str, ...] = ()
    """Texts a reply ends before (``--stop``; ``api.chat``'s ``stop``): the conversation keeps
    the reply as cut."""

    def messages(self, turns: list[dict[str, str]] | None = None) -> list[dict[str, str]]:
        """The system message (if any) and ``turns`` (default: the conversation so far)."""
        head = [{"role": "system", "content": self.system}] if self.system is not None else []
        return head + (self.turns if turns is None else turns)

    @functools.cached_property
    def decoder(self) -> str:
        """The decoder the replies are sampled with (``unmask.api.choose``; raises
        ``UserError`` for options the checkpoint cannot do); chosen once a session."""
        from unmask import api

        return api.choose(self.loaded, self.config, draft=self.draft)

    def reset(self) -> None:
        """Forget every turn (the system message stays)."""
        self.turns = []

    def prepare(self, user: str) -> Prepared:
        """The prompt for ``user`` after the conversation so far, dropping the oldest exchanges
        while prompt + ``gen_length`` exceeds the context (the model's ``max_seq_len``; with a
        drafter, the smaller of the two: ``api.context_limit``; with ``segment_length``:
        prompt + the first segment, so the whole prompt is its window; a single message longer
        than that is kept, and each segment sees its latest window, as ``generate --chat`` and
        the server do)."""
        from unmask import api

        tok = self.loaded.tokenizer
        limit, who = api.context_limit(self.loaded, self.draft)
        first = self.config.gen_length  # what the prompt must leave room for
        if self.config.segment_length is not None:
            from unmask.sampling.segments import segment_lengths

            first = segment_lengths(first, self.config.segment_length)[0]
        turns = [*self.turns, {"role": "user", "content": user}]
        dropped = 0
        while True:
            text, ids = self.template.prompt(tok, self.messages(turns))
            # with segment_length a single message too long is kept: each segment sees the
            # latest window
            if self._fits(len(ids), first, limit) or (
                    len(turns) == 1 and self.config.segment_length is not None):
                return Prepared(text=text, ids=ids, turns=turns, dropped=dropped,
                                limited_by=who, config=self.turn_config(len(ids)))
            if len(turns) == 1:
                with_system = " (with the --system message)" if self.system is not None else ""
                raise UserError(
                    f"this message{with_system} makes a prompt of {plural(len(ids), 'token')}; "
                    f"with gen_length={self.config.gen_length} that exceeds the {who}'s "
                    f"max_seq_len ({limit}): send a shorter message, lower --gen-length or give "
                    "--segment-length (each segment then sees the latest text)"
                )
            turns, dropped = turns[2:], dropped + 1

    def turn_config(self, prompt_len: int) -> SampleConfig:
        """The options of a turn whose prompt is ``prompt_len`` tokens: ``api.sample_config`` of
        the options the user gave (``given``) for that prompt, so that ``steps`` not given (one
        per token) fit the blocks it leaves on a checkpoint whose blocks start at the first
        prompt token (``api.fit_block_steps``), each turn, as ``unmask generate`` and the
        server fit them per request; ``config`` itself where ``given`` is None."""
        from unmask import api

        if self.given is None:
            return self.config
        return api.sample_config(self.loaded, self.given, prompt_lengths=[prompt_len],
                                 drafter=self.draft is not None)

    def _fits(self, prompt_len: int, new: int, limit: int | None) -> bool:
        """Whether ``new`` tokens fit after a prompt of ``prompt_len`` in a context of
        ``limit`` (``room_after_prompt`` after ``ModelFacts.prompt_columns``: an empty
        prompt's start token counted, a bd3lm model's canvas the prompt padded to whole
        blocks, then whole blocks, as the server's and the demo's)."""
        room = self._room(prompt_len, limit)
        return room is None or new <= room

    def _room(self, prompt_len: int, limit: int | None) -> int | None:
        """The most new tokens after a prompt of ``prompt_len`` in a context of ``limit``
        (``room_after_prompt``, as ``_fits`` counts them); None: no limit known."""
        from unmask import api
        from unmask.sampling.blocks import absolute_blocks, room_after_prompt

        facts = api.facts_of(self.loaded)
        return room_after_prompt(facts.prompt_columns(prompt_len, self.decoder), limit,
                                 block_size=facts.block_size,
                                 absolute=absolute_blocks(self.loaded))

    def check_system(self) -> None:
        """Startup checks of the template and ``--system``, on a prompt with a one-character
        user message (an empty one failed on a template that rejects empty messages, blaming
        nothing the user typed): a broken template, or one that rejects that message, fails
        now, not at the first turn; a one-line ``UserError`` naming ``--system`` when the
        template rejects the system message, or when it leaves no room for a reply in the
        context (``prepare``'s: with a drafter, the smaller of the two; at the first turn
        "this message" was blamed; when it fills the context on its own, whatever the
        ``gen_length``, it is named even where ``gen_length`` does not fit either: it was
        blamed on ``gen_length``), and naming ``gen_length`` (with the most that fits) when no
        message could fit, with or without the system message (each message was refused in
        turn, "send a shorter message", or ``--system`` was blamed)."""
        from unmask import api

        probe = [{"role": "user", "content": _PROBE}]
        try:
            _, ids = self.template.prompt(self.loaded.tokenizer, self.messages(probe))
        except TemplateRejected as e:
            if self.system is None:
                raise
            self.template.render(probe, add_generation_prompt=True)  # rejects the probe
            raise UserError(f"--system: {e}") from None  # rejects the system message
        limit, who = api.context_limit(self.loaded, self.draft)
        if self.config.segment_length is not None or self._fits(len(ids), self.config.gen_length,
                                                                limit):
            return
        bare = ids if self.system is None else self.template.prompt(self.loaded.tokenizer,
                                                                    probe)[1]
        if self.system is not None and (self._room(len(ids), limit) or 0) <= 0:
            # the system message alone fills the context: no gen_length fits with it
            room = self._room(len(bare), limit) or 0
            also = (f"; gen_length ({self.config.gen_length}) does not fit even without it: "
                    f"use gen_length <= {room}"
                    if 0 < room < self.config.gen_length else "")
            raise UserError(
                f"--system: the system message makes a prompt of {plural(len(ids), 'token')} "
                f"with a one-character message, which leaves no room for a reply in the {who}'s "
                f"max_seq_len ({limit}): shorten it or give --segment-length (each segment "
                f"then sees the latest text){also}"
            )
        if self.system is None or not self._fits(len(bare), self.config.gen_length, limit):
            # not the messages' fault: no message fits (it blamed each one, or --system);
            # the room is the one this session has, its system message included
            room = self._room(len(ids), limit) or 0
            fits = f"use gen_length <= {room} or " if room > 0 else ""
            with_system = " (with the --system message)" if self.system is not None else ""
            raise UserError(
                f"gen_length ({self.config.gen_length}) leaves no room for a message in the "
                f"{who}'s max_seq_len ({limit}): a one-character message{with_system} makes a "
                f"prompt of {plural(len(ids), 'token')}; {fits}give --segment-length (each "
                "segment then sees the latest text)"
            )
        raise UserError(
            f"--system: the system message makes a prompt of {plural(len(ids), 'token')} "
            f"with a one-character message; with gen_length={self.config.gen_length} that exceeds "
            f"the {who}'s max_seq_len ({limit}): shorten it, lower --gen-length or give "
            "--segment-length"
        )

    def complete(self, prepared: Prepared, *, live: Any = None) -> Turn:
        """Sample the reply to ``prepared`` and add the exchange to the conversation; if
        sampling fails or is interrupted the conversation is left as it was."""
        from unmask import api

        config = prepared.config or self.config
        out = api.chat(self.loaded, self.messages(prepared.turns), config=config,
                       template=self.template, step_callback=live, draft=self.draft,
                       stop=self.stop or None)
        self.turns = [*prepared.turns, {"role": "assistant", "content": out.text}]
        stats = getattr(out.result, "acceptance_stats", dict)()
        return Turn(reply=out.text, prompt=prepared, nfe=out.nfe, seconds=out.seconds, stats=stats,
                    config=out.config, steps=out.steps)


@dataclass
class Gathered:
    """One message read from one or more input lines (``gather``)."""

    text: str
    """The message, lines joined by newlines (continuation marks and quotes removed)."""
    literal: bool
    """Whether it was a ``BLOCK`` (three double quotes): sent as typed, never a command."""


class Unfinished(Exception):
    """The input ended inside a message of many lines (``gather``); the message says how."""


class Dropped(KeyboardInterrupt):
    """Ctrl-C inside a message of many lines (at the ``... `` prompt, ``gather``): the lines
    typed so far are dropped, and the chat says so (it said only "/exit or Ctrl-D quits")."""


def gather(first: str, more: Callable[[], str]) -> Gathered:
    """The message that the input line ``first`` opens, reading further lines with
    ``more()`` where it goes on: a line that ends with ``\\`` continues on the next (the
    backslash is dropped, the newline kept), and a line opening with ``BLOCK`` (three double
    quotes) starts a block that ends with the first line ending with them (the same line
    too: three quotes, ``one``, three quotes), its lines sent as typed (an empty first or
    last line dropped: the quotes on lines of their own). ``Unfinished`` when ``more``
    raises ``EOFError`` (the input ended inside), ``Dropped`` when it raises
    ``KeyboardInterrupt`` (Ctrl-C there)."""

    def next_line(inside: str) -> str:
        try:
            return more().rstrip("\r\n")
        except EOFError:
            raise Unfinished(inside) from None
        except KeyboardInterrupt:
            raise Dropped from None

    line = first.rstrip("\r\n")
    if line.lstrip().startswith(BLOCK):
        rest = line.lstrip()[len(BLOCK):]
        lines: list[str] = []
        while not rest.rstrip().endswith(BLOCK):
            lines.append(rest)
            rest = next_line(f"a {BLOCK} block not closed")
        lines.append(rest.rstrip()[: -len(BLOCK)])
        if len(lines) > 1 and not lines[0].strip():
            lines = lines[1:]
        if len(lines) > 1 and not lines[-1].strip():
            lines = lines[:-1]
        return Gathered("\n".join(lines), literal=True)
    lines = [line]
    while lines[-1].endswith(CONTINUE):
        lines[-1] = lines[-1][: -len(CONTINUE)]
        lines.append(next_line(f"a line ending with {CONTINUE} continues it"))
    return Gathered("\n".join(lines), literal=False)


def converse(
    session: ChatSession,
    read: Callable[[], str],
    *,
    interactive: bool,
    json_lines: bool = False,
    show_prompt: bool = False,
    live: bool = False,
    more: Callable[[], str] | None = None,
) -> int:
    """The chat loop: ``read()`` gives the next line and raises ``EOFError`` at the end;
    ``more()`` (default ``read``) the next line of a message of many lines (``gather``: in a
    terminal it prompts ``... ``).

    ``interactive``: errors and Ctrl-C during a reply are reported and the loop goes on;
    otherwise they end it (``UserError`` -> exit code 2; so does input that ends inside a
    message of many lines). Replies go to stdout (one JSON object per turn with
    ``json_lines``; ``unmask.terminal.json_text``), notes to stderr; on a terminal a reply's
    control characters are shown escaped (``unmask.terminal.shown_text``: ``\\x1b``, not an
    escape sequence that clears the screen), piped they are written as generated; returns
    the exit code.
    """
    tok = session.loaded.tokenizer
    more = read if more is None else more
    while True:
        try:
            gathered = gather(read(), more)
        except EOFError:
            if interactive:  # off the prompt's line
                print(file=_prompt_stream())
            return 0
        except KeyboardInterrupt as e:  # Ctrl-C at the prompt: a fresh one, as Python's REPL
            if not interactive:  # piped input: nobody at a prompt, so Ctrl-C ends the run
                raise
            dropped = "the unfinished message was dropped; " if isinstance(e, Dropped) else ""
            print(f"\n({dropped}/exit or Ctrl-D quits)", file=sys.stderr)
            continue
        except UserError as e:  # a line that is not text
            if not interactive:
                raise
            print(f"error: {e}", file=sys.stderr)
            continue
        except Unfinished as e:  # the input ended inside a message of many lines
            if not interactive:
                raise UserError(f"the input ended inside a message of many lines ({e}); "
                                "it was not sent") from None
            print(f"\n(the input ended inside a message of many lines ({e}); it was not "
                  "sent)", file=sys.stderr)
            return 0
        message = gathered.text
        command = "" if gathered.literal else message.strip()
        if not message.strip():
            continue
        if command in ("/exit", "/quit"):
            return 0
        if command == "/reset":
            session.reset()
            print("(new conversation)", file=sys.stderr)
            continue
        if command == "/help":
            print("\n".join(f"{k:8} {v}" for k, v in COMMANDS.items()), file=sys.stderr)
            continue
        view = None
        kept = session.turns  # a Ctrl-C after the reply was added (clearing the view) drops it
        try:
            if not gathered.literal:
                message = _message(message, command)
            prepared = session.prepare(message)
            if prepared.dropped:
                print(f"(dropped the {plural(prepared.dropped, 'oldest exchange')} to fit "
                      f"the {prepared.limited_by}'s context)", file=sys.stderr)
            if show_prompt:  # earlier replies are in it
                print(shown_text(prepared.text, sys.stderr), file=sys.stderr)
            config = prepared.config or session.config  # steps fitted to this turn's blocks
            view = make_live(tok, config, session.decoder) if live else None
            try:
                turn = session.complete(prepared, live=view)
            finally:
                if view is not None:
                    view.close(clear=True)
        except KeyboardInterrupt:
            if not interactive:
                raise
            session.turns = kept
            print("(interrupted; the message was not added)", file=sys.stderr)
            continue
        except UserError as e:
            if not interactive:
                raise
            print(f"error: {e}", file=sys.stderr)
            continue
        if json_lines:
            record = {"user": message, "reply": turn.reply, "prompt": prepared.text,
                      "prompt_tokens": len(prepared.ids), "dropped": prepared.dropped,
                      "nfe": turn.nfe, "steps": turn.steps, "seconds": round(turn.seconds, 4)}
            record.update(turn.stats)  # speculative, hybrid: acceptance and forwards
            record["config"] = dataclasses.asdict(  # the options that ran, as generate --json
                turn.config or dataclasses.replace(session.config, decoder=session.decoder))
            if session.stop:  # as generate --json
                record["stop"] = list(session.stop)
            print(json_text(record), flush=True)
        else:  # a model's ESC, CR or CSI would rewrite the user's screen: escaped on a tty
            print(shown_text(turn.reply), flush=True)
            if interactive and not turn.reply:  # a blank line alone looked like a hang or bug
                print("(an empty reply: the model ended its turn at once)", file=sys.stderr)
        if interactive:
            print(f"({plural(len(prepared.ids), 'prompt token')}, {turn.nfe} NFE, "
                  f"{turn.seconds:.1f} s)", file=sys.stderr)


def _message(line: str, command: str) -> str:
    """The user message of an input ``line`` (``command``: it stripped) that is not a known
    command: ``//text`` sends ``/text``; any other ``/word`` is a ``UserError`` listing the
    commands (a typo such as ``/rest`` was sent to the model and kept in the history); a
    command given an argument (``/reset now``) is refused as such."""
    if command.startswith("//"):
        return line.replace("/", "", 1)
    word = command.split()[0]
    if word in NAMES:  # "/reset now" read "unknown command"
        raise UserError(f"{word} takes no argument (a message that starts with / is sent with "
                        f"//: //{command[1:]})")
    if command.startswith("/"):
        near = closest(word, NAMES, prefix="/", cutoff=0.6)
        meant = f" (did you mean {near}?)" if near else ""
        raise UserError(f"unknown command {word}{meant}: the commands are {', '.join(NAMES)}; "
                        "start a message with // to send one that begins with /")
    return line


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="chat with a model in the terminal",
        description=(
            "A conversation with a chat model (an SFT checkpoint or an imported instruct "
            "model): each turn renders the whole conversation through the model's chat "
            "template and samples the reply with the options of `unmask generate`. In a "
            "terminal: /reset, /exit (or Ctrl-D), /help; Ctrl-C stops a reply; another /word "
            "is refused, //text sends /text. A line ending in \\ continues on the next; a line "
            "opening with \"\"\" starts a message of many lines, sent as typed up to a line "
            "ending with \"\"\". With standard input not a terminal, each line is one user "
            "message (by the same rules for many lines) and each reply is printed."
            " Sampling flags not given take the checkpoint's recommended options "
            "(sample_defaults in its config.json, measured: argmax in blocks of 4 with "
            "repetition penalty 1.3 and no repeated 4-gram for mdlm models (3-gram for the "
            "demo), "
            "greedy with 1.15 and no repeated 4-gram for ar and hybrid ones), else the "
            "defaults shown below; --json prints the options that ran."
        ),
    )
    add_model_flag(p)
    p.add_argument("--system", metavar="TEXT",
                   help="system message at the start of the conversation")
    p.add_argument("--template", "--chat-template", dest="template", metavar="FILE|NAME",
                   type=template_name_or_path,
                   help="chat template instead of the model's: a Jinja file, a JSON file with "
                        "chat_template (tokenizer_config.json), a Jinja string, or a built-in: "
                        "default (unmask's SFT format), plain (User:/Assistant: transcript)")
    add_stop_flag(p, what="each reply")
    add_draft_flag(p)
    add_sample_flags(p)
    p.add_argument("--show-prompt", action="store_true",
                   help="print each rendered prompt to stderr before sampling")
    add_json_flag(p, what="one per turn: user, reply, prompt, prompt_tokens, dropped, nfe, "
                          "steps, seconds, config, and stop where given")
    add_no_live_flag(p)
    add_runtime_flags(p, decodes=True)
    add_quantize_flag(p)
    p.set_defaults(func=run, check_flags=check_flags)  # before torch loads


def check_flags(args: argparse.Namespace) -> None:
    """Refuse, without importing torch (the command line runs it before torch loads), the
    sampling flags that are wrong whatever the model (``check_sample_flags``), blocks that do
    not divide the length (``check_given_blocks``), a ``--model`` or ``--draft`` that names
    nothing (``check_model_exists``) and a ``--template`` that cannot be read or rendered
    (``check_template_given``): it took seconds."""
    check_sample_flags(args)
    check_given_blocks(args)
    check_model_exists(args)
    check_template_given(args)


def banner(loaded: Loaded, template: ChatTemplate) -> str:
    """The model and template an interactive chat runs, as its first line says them: the
    model as typed (``Loaded.shown``: ``demo``, not the package folder it loads), its own
    template as such, another by its origin (a built-in, a file)."""
    own = template.origin == f"chat template of {loaded.shown}"
    return f"{loaded.shown} ({'its chat template' if own else template.origin})"


class _StdinLines:
    """Lines of a piped standard input, each decoded as UTF-8 on its own: a line that is not
    UTF-8 text is a ``UserError`` naming it, after the lines before it were answered (the
    text stream decoded a whole chunk at once, so the error came before the first reply and
    named no line). A UTF-8 byte-order mark opening the input is dropped."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        stream = getattr(sys.stdin, "buffer", None)
        raw = stream.readline() if stream is not None else sys.stdin.readline()
        if not raw:
            raise EOFError
        self.count += 1
        if isinstance(raw, str):
            return raw
        try:
            return raw.decode("utf-8-sig" if self.count == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"standard input line {self.count} is not UTF-8 text ({e.reason} "
                            f"at byte {e.start + 1})") from None


def _prompt_stream() -> Any:
    """Where the ``> `` prompt goes: standard output where it is a terminal, else standard
    error (``unmask chat > replies.txt``: ``input`` wrote every prompt into the file, before
    each reply, and none where the person typing could see it)."""
    return sys.stdout if is_tty(sys.stdout) else sys.stderr


def _input_line(prompt: str = "> ") -> str:
    """A line typed at the ``> `` prompt (``... `` where a message goes on: ``gather``), the
    prompt on ``_prompt_stream``; one the terminal sends as bytes that are not UTF-8 is a
    ``UserError`` (the chat goes on), not the end of the session."""
    try:
        with contextlib.redirect_stdout(_prompt_stream()):  # input writes it on sys.stdout
            return input(prompt)
    except UnicodeDecodeError as e:
        raise UserError(f"that line is not UTF-8 text ({e.reason}); check the terminal's "
                        "encoding") from None


def run(args: argparse.Namespace) -> int:
    from unmask import api

    check_given_options(args)
    check_draft_flags(args)
    # closed (`<&-`, `>&-`): isatty() raised a traceback; print() dropped every reply, exit 0
    user_stdin()
    require_stdout("the replies")
    device = str(resolve_device(args.device))
    loaded = api.load_for_decoding(args.model, device=device, dtype=args.dtype,
                                    quantize=args.quantize)
    # flags not given take the checkpoint's recommended sampling options (sample_defaults)
    given = given_fields(SampleConfig, args)
    config = api.sample_config(loaded, given, drafter=args.draft is not None)
    check_lengths(config)  # under the policy the run takes: now, not at every turn
    draft = load_draft(args.draft, device, args.dtype)
    template = model_template(loaded, args.template)
    session = ChatSession(loaded, template, config, system=args.system, device=device,
                          draft=draft, stop=tuple(args.stop or ()))
    # a broken template, or a --system message it rejects or too long for any reply, fails
    # now, not at the first turn
    session.check_system()
    session.decoder  # noqa: B018 -- options the checkpoint cannot do fail now, not at the first turn
    # a sampled conversation reports (--json) the seed that repeats it
    session.config = with_seed(session.config, session.decoder)
    # each turn's options are made for its prompt: steps not given fit its blocks
    session.given = {**given, "seed": session.config.seed}
    interactive = sys.stdin.isatty()
    if not interactive:
        return converse(session, _StdinLines(), interactive=False, json_lines=args.json,
                        show_prompt=args.show_prompt)
    try:
        import readline  # noqa: F401 (line editing and history for input())
    except ImportError:  # pragma: no cover - not on every platform
        pass
    print(f"unmask chat: {banner(loaded, template)}; /help lists commands and multi-line "
          "input, Ctrl-D quits", file=sys.stderr)
    return converse(session, _input_line, interactive=True, json_lines=args.json,
                    show_prompt=args.show_prompt, live=not args.no_live and not args.json,
                    more=functools.partial(_input_line, "... "))
