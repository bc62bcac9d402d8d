"""Supervised fine-tuning (SFT) data: prompt/response pairs and chat messages → token batches.

LLaDA's SFT recipe (Nie et al. 2025, arXiv:2502.09992, §2.4 and App. B.1): the prompt is
never masked, only the response is; responses are padded with EOS to the batch length and
the EOS padding is part of the response (the model learns to end, and so to choose its
length); each sample's loss is divided by its answer length. The loss is
``unmask.objectives.sft``; this module reads, validates, renders and batches the data.

Input: a JSONL file, one example per line, either

    {"prompt": "...", "response": "..."}
    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}

A message has ``role``, ``content`` and an optional ``name``; another key (``tool_calls``,
``reasoning_content``, a typo) is refused, naming the line, as no other key reaches the
template, unless its value is null, ``[]``, ``{}`` or ``""`` (absent). An assistant message may
carry OpenAI fine-tuning's ``"weight"``: 0 leaves that turn untrained (it stays in the
prompt of later turns), 1 (or none) trains it. Roles may come in any order (two user turns
in a row, a system message later on): as in ``transformers`` and TRL, the order is the
template's to accept or reject (its ``raise_exception`` then names the line). Other fields
of a line (an ``id``, a ``source``) are ignored, as TRL drops a dataset's unused columns, and
a field that is null counts as absent (one table of both layouts, exported, has nulls); but
tool definitions (objects in a ``tools`` or ``functions`` list, as OpenAI's fine-tuning
format and TRL give them, or in a JSON string of one, as TRL stores the column) are refused:
no tool reaches the template (``_refuse_tools``; ``"[]"`` or a list of names is none). A
system prompt in a field of its own (``system``, ``system_prompt``: LLaMA-Factory's and
OpenOrca's columns) is the conversation's first message, a system message, as ``unmask chat
--system`` puts it (``_system_field``, ``_with_system``; blank text is none, and a copy of
the system message that ``messages`` opens with counts once). Messages are read as the
server reads OpenAI's: a ``developer`` message is a system one, and content may be a list of
text parts (``unmask.chat.check_messages``).
A ``messages`` list must end with an ``assistant`` turn: that last turn is the response,
everything before it (system prompt, earlier turns; at least one message) the prompt. Every
earlier assistant turn with text and a message before it is trained too, as its own pair
(the turns before it the prompt), and a batch draws one turn of each example drawn: LLaDA
App. B.1 treats an n-turn dialogue as n single-turn pairs "and randomly sample[s] one". A
line with both ``messages`` and ``prompt``/``response`` is refused (which one is meant?).
Special-token strings in a message (``[EOS]``, ``<|im_end|>``) are plain text: only the
template's own markup becomes special tokens (``ChatTemplate.example``). Text is laid out by a chat
template (a Jinja string, ``ModelConfig.chat_template``, stored with the checkpoint; rendered
and encoded by ``unmask.chat``, as ``unmask chat`` and the server do):
``render(messages[:-1], add_generation_prompt=True)`` is the prompt text and the rest of
``render(messages)`` the response text, so sampling can build the same prompt (a template
that appends its assistant header after every conversation, LLaDA-8B-Instruct's, has it cut
off the response: ``ChatTemplate.example``).

Inside: ``chat_prompt``, ``SFTExample``, ``read_sft_jsonl``, ``SFTData``; ``DEFAULT_CHAT_TEMPLATE``,
``ROLES`` and ``render_chat`` come from ``unmask.chat``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from unmask.chat import (
    DEFAULT_CHAT_TEMPLATE,
    ROLES,
    ChatTemplate,
    _encodable,
    _json_type,
    check_messages,
    render_chat,
)
from unmask.errors import UserError
from unmask.files import parse_json


def chat_prompt(template: str | None, messages: list[dict[str, str]]) -> str:
    """The prompt text a chat model continues: ``messages`` rendered with the generation prompt,
    ``bos_token`` and ``eos_token`` empty. The prompt a checkpoint is trained and sampled with
    (its BOS/EOS text included, and its ids) is ``api.chat_template(m).prompt(m.tokenizer,
    messages)``."""
    return render_chat(template or DEFAULT_CHAT_TEMPLATE, messages, add_generation_prompt=True)


@dataclass
class SFTExample:
    """One conversation whose last turn (an assistant turn) is the response."""

    messages: list[dict[str, str]]
    """Turns as ``{"role", "content"}``; the last one is the response."""
    source: str
    """``file:line`` it came from (for error messages)."""
    untrained: frozenset[int] = frozenset()
    """Indices of the assistant turns given ``"weight": 0`` (OpenAI fine-tuning's key): part
    of the prompt of later turns, never a response."""


def _weights(messages: Any, where: str) -> tuple[Any, frozenset[int]]:
    """``messages`` without OpenAI fine-tuning's ``weight`` key (0 or 1, on assistant
    messages; null counts as absent) and the indices of the turns weighted 0."""
    if not isinstance(messages, list):
        return messages, frozenset()
    out, untrained = [], set()
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("weight") is None:
            out.append(m)
            continue
        w = m["weight"]
        if m.get("role") != "assistant":
            raise UserError(f"{where}: messages[{i}] has a weight; only an assistant message "
                            "has one (0: that turn is not trained, 1: it is)")
        if isinstance(w, bool) or w not in (0, 1):
            raise UserError(f"{where}: messages[{i}].weight must be 0 or 1, not {w!r}")
        if w == 0:
            untrained.add(i)
        out.append({k: v for k, v in m.items() if k != "weight"})
    return out, frozenset(untrained)


def _check_messages(messages: Any, where: str, system: tuple[str, str] | None = None
                    ) -> tuple[list[dict[str, str]], frozenset[int]]:
    """The checked messages of a line and the turns weighted 0 (``_weights``), opening with the
    line's ``system`` field (``_system_field``; ``_with_system``). The messages are checked as
    the line gives them, so an error names their own indices."""
    messages, untrained = _weights(messages, where)
    out, untrained = _with_system(check_messages(messages, where=where), untrained, system, where)
    if out[-1]["role"] != "assistant":
        raise UserError(
            f"{where}: the last message must be the assistant's response, not {out[-1]['role']!r}"
        )
    if len(out) < 2:
        raise UserError(f"{where}: a conversation needs a message before the assistant's "
                        "response (the prompt)")
    if not out[-1]["content"].strip() and len(out) - 1 not in untrained:  # weight 0: not one
        raise UserError(f"{where}: empty response")
    if not _trained_turns(out, untrained):  # every turn of weight 1 is empty, or none is
        weighted = [i for i, m in enumerate(out) if i > 0 and m["role"] == "assistant"
                    and i not in untrained]
        raise UserError(f"{where}: empty response" if weighted else
                        f"{where}: every assistant turn has weight 0; nothing to train")
    return out, untrained


def read_sft_jsonl(path: str | os.PathLike[str]) -> list[SFTExample]:
    """Examples of a JSONL file (see the module docstring); ``UserError`` with ``file:line`` for
    invalid JSON, missing fields, a bad ``messages`` list or an empty response. Blank lines are
    skipped."""
    from unmask.data import read_jsonl

    examples: list[SFTExample] = []
    for where, given in read_jsonl(path):
        # null is absent: a dataset of both layouts exported as one table (``datasets``'
        # to_json) writes "messages": null on prompt/response rows and the other way round
        obj = {k: v for k, v in given.items() if v is not None}
        _refuse_tools(obj, where)
        both = [k for k in ("prompt", "response") if k in obj]
        if "messages" in obj and both:
            raise UserError(f"{where}: give 'messages' or 'prompt'/'response', not both (this "
                            f"line has 'messages' and {' and '.join(repr(k) for k in both)})")
        untrained: frozenset[int] = frozenset()
        # the system field after the layout's own checks: a line of another layout (Alpaca's,
        # with LLaMA-Factory's 'system') is told how to convert it, not about its system prompt
        if "messages" in obj:
            messages, untrained = _check_messages(obj["messages"], where,
                                                  _system_field(obj, where))
        elif "prompt" in obj and "response" in obj:
            if not isinstance(obj["prompt"], str) or not isinstance(obj["response"], str):
                raise UserError(f"{where}: 'prompt' and 'response' must be strings")
            for key in ("prompt", "response"):
                _check_text(obj[key], key, where)
            messages = _check_messages(
                [
                    {"role": "user", "content": obj["prompt"]},
                    {"role": "assistant", "content": obj["response"]},
                ],
                where,
                _system_field(obj, where),
            )[0]
        else:
            nulls = [k for k in ("prompt", "response") if k in given and k not in obj]
            if nulls:  # {"prompt": null, ...}: it is there, "missing" misled
                raise UserError(f"{where}: {' and '.join(repr(k) for k in nulls)} "
                                f"{'is' if len(nulls) == 1 else 'are'} null; give a string")
            missing = [k for k in ("prompt", "response") if k not in obj]
            raise UserError(f"{where}: missing field(s) {', '.join(missing)} (or give "
                            f"'messages'){_other_format(obj)}")
        examples.append(SFTExample(messages=messages, source=where, untrained=untrained))
    if not examples:
        raise UserError(f"{path}: no examples")
    return examples


class SFTData:
    """Tokenized SFT examples and their batches.

    ``sample`` returns ``(x0, prompt_mask)``: x0 (B, L) = prompt ids then response ids then EOS,
    padded with EOS to the longest row of the batch (at most ``seq_len``; longer responses are
    cut, a prompt that leaves no room for one response token is an error); prompt_mask (B, L)
    bool marks the prompt columns, which are never masked.
    """

    def __init__(
        self,
        examples: list[SFTExample],
        tokenizer: Any,
        *,
        eos_id: int,
        chat_template: str | None,
        origin: str = "chat template",
        bos_id: int | None = None,
    ) -> None:
        """``origin`` names the template in error messages (its file: ``template_arg``);
        ``bos_id`` is the token ``{{ bos_token }}`` renders as, the model's
        ``unmask.chat.template_bos_id`` (as ``unmask chat`` renders it), ``tokenizer.bos_id``
        when not given."""
        self.template = chat_template or DEFAULT_CHAT_TEMPLATE
        self.eos_id = eos_id
        self.rows: list[tuple[list[int], list[int]]] = []
        """(prompt ids, response ids + EOS) of every trained turn, conversation by
        conversation, each conversation's turns in order (its last turn last)."""
        self.sources: list[str] = []
        """``file:line`` of each row (``... (assistant turn k of n)`` for an earlier turn)."""
        self.turns: list[list[int]] = []
        """Per example, the indices of its rows in ``rows``."""
        template = ChatTemplate.with_tokens(
            self.template, tokenizer, bos_id=tokenizer.bos_id if bos_id is None else bos_id,
            eos_id=eos_id, origin=origin,
        )
        for ex in examples:
            ends = _trained_turns(ex.messages, ex.untrained)
            self.turns.append(list(range(len(self.rows), len(self.rows) + len(ends))))
            for k, end in enumerate(ends, start=1):
                where = ex.source if k == len(ends) else \
                    f"{ex.source} (assistant turn {k} of {len(ends)})"
                try:
                    prompt, response = template.example(tokenizer, ex.messages[: end + 1])
                except UserError as e:  # names the template; the line too
                    raise UserError(f"{where}: {e}") from None
                self.rows.append((prompt, response + [eos_id]))
                self.sources.append(where)

    def __len__(self) -> int:
        """The number of examples (conversations; an example may train several turns)."""
        return len(self.turns)

    def check_fits(self, seq_len: int, indices: list[int] | None = None) -> None:
        """``UserError`` naming the first example (of ``indices``, default all) whose prompt
        leaves no room in ``seq_len`` for a response token, and how many trained turns are so
        (the user filters them all at once, not a line a run); training checks every example
        before its first step, so a bad line is found before anything is written."""
        rows = range(len(self.rows)) if indices is None else indices
        over = [i for i in rows if len(self.rows[i][0]) >= seq_len]
        if not over:
            return
        i = over[0]
        turns = any(len(t) > 1 for t in self.turns)  # a later turn's prompt: the turns before
        others = (f"; {len(over) - 1:,} more of the {len(rows):,} trained turns are too"
                  f"{' (the prompt of a turn holds every turn before it)' if turns else ''}"
                  if len(over) > 1 else "")
        raise UserError(
            f"{self.sources[i]}: the prompt has {len(self.rows[i][0])} tokens; "
            f"seq_len={seq_len} leaves no room for the response{others}; raise seq_len or "
            "drop or shorten those lines"
        )

    def cut_rows(self, seq_len: int) -> list[int]:
        """The lengths (prompt, response and EOS) of the trained turns' rows longer than
        ``seq_len``: a batch cuts their end, EOS included (``batch``), so they do not teach
        the model to stop (``unmask.train.sft_cut_note`` says so)."""
        return [n for n in (len(p) + len(r) for p, r in self.rows) if n > seq_len]

    def batch(self, indices: list[int], seq_len: int) -> tuple[Tensor, Tensor]:
        """x0 (B, L) and prompt_mask (B, L) of the examples ``indices`` (see the class
        docstring)."""
        self.check_fits(seq_len, indices)
        L = min(seq_len, max(len(p) + len(r) for p, r in (self.rows[i] for i in indices)))
        x0 = torch.full((len(indices), L), self.eos_id, dtype=torch.long)  # (B, L) EOS padding
        prompt_mask = torch.zeros(len(indices), L, dtype=torch.bool)
        for b, i in enumerate(indices):
            ids = (self.rows[i][0] + self.rows[i][1])[:L]
            x0[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            prompt_mask[b, : len(self.rows[i][0])] = True
        return x0, prompt_mask

    def sample(
        self, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """A batch of ``batch_size`` examples drawn uniformly (with replacement) by
        ``generator``, and of each one of its trained turns, uniformly (LLaDA App. B.1:
        "randomly sample one"; a conversation counts once however many turns it has)."""
        conv = torch.randint(0, len(self.turns), (batch_size,), generator=generator).tolist()
        if all(len(t) == 1 for t in self.turns):  # one turn each: no second draw
            return self.batch([self.turns[c][0] for c in conv], seq_len)
        u = torch.rand(batch_size, generator=generator).tolist()  # which turn of each
        idx = [self.turns[c][int(x * len(self.turns[c]))] for c, x in zip(conv, u, strict=True)]
        return self.batch(idx, seq_len)


TOOL_KEYS = ("tools", "functions")
"""Keys of a line that may hold tool definitions (OpenAI's chat fine-tuning format, TRL's
``tools`` column): refused when they do (``_refuse_tools``)."""


def _tool_definitions(value: Any, where: str) -> int:
    """How many tool definitions ``value``, a line's ``tools`` or ``functions``, holds: the
    objects of a list, or 1 for an object (an empty one: 0). A string is read as JSON (TRL
    stores the column as a JSON string, ``"[]"`` where a row has no tools); ``null``,
    ``false``, ``"[]"``, a list of names or text that is not JSON define none. A string nested
    past the parser's stack is ``parse_json``'s one-line refusal naming ``where`` (the file and
    line), not a ``RecursionError`` traceback."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except RecursionError:  # "[[[[..." a hundred thousand deep
            parse_json(value, where, what="a readable JSON string of tools")  # raises
        except ValueError:
            return 0
    if isinstance(value, dict):
        return 1 if value else 0
    return sum(isinstance(v, dict) for v in value) if isinstance(value, list) else 0


def _refuse_tools(obj: dict[str, Any], where: str) -> None:
    """A one-line ``UserError`` naming ``where`` when the line ``obj`` defines tools (its
    ``tools`` or ``functions`` holds a definition, ``_tool_definitions``): no tool reaches
    unmask's chat templates, so the example would be trained without the definitions its
    answers were written against (TRL and OpenAI's fine-tuning hand them to the model);
    ignored as another field, they vanished silently. An empty column (``[]``, ``"[]"``,
    ``null``) or one that holds other data (a list of function names) is left alone."""
    for key in TOOL_KEYS:
        n = _tool_definitions(obj.get(key), where)
        if n:
            what = "a JSON string of " if isinstance(obj[key], str) else ""
            raise UserError(f"{where}: the line defines {key!r} ({what}{n} tool "
                            f"definition{'s' if n > 1 else ''}); unmask has no tool calls (no "
                            "tool reaches the chat template), so the example would be trained "
                            "without them: drop the key, or the line")


SYSTEM_KEYS = ("system", "system_prompt")
"""Keys of a line that hold its system prompt (LLaMA-Factory's ``system`` column, OpenOrca's
``system_prompt``): the first message of its conversation (``_system_field``)."""


def _check_text(value: str, key: str, where: str) -> None:
    """A one-line ``UserError`` naming ``where`` and the line's field ``key`` when its text
    ``value`` holds an unpaired surrogate (``\\ud800`` in JSON: no tokenizer takes it)."""
    if not _encodable(value):
        raise UserError(f"{where}: {key!r} holds an unpaired surrogate (not valid UTF-8)")


def _system_field(obj: dict[str, Any], where: str) -> tuple[str, str] | None:
    """``(key, text)`` of the system prompt the line ``obj`` gives in a field of its own
    (``SYSTEM_KEYS``), or None. Blank text is none (an exported column's empty cell; null was
    dropped as absent); a value that is not text, or ``system`` and ``system_prompt`` that
    differ, is a one-line ``UserError`` naming ``where``: ignored, the response was trained as
    the answer to a conversation without that instruction."""
    found: list[tuple[str, str]] = []
    for key in SYSTEM_KEYS:
        if key not in obj:
            continue
        value = obj[key]
        if not isinstance(value, str):
            raise UserError(f"{where}: {key!r} (the system prompt) must be a string, not "
                            f"{_json_type(value)} (drop or rename the key if it is no system "
                            "prompt)")
        _check_text(value, key, where)
        if value.strip():
            found.append((key, value))
    if len({text.strip() for _, text in found}) > 1:
        raise UserError(f"{where}: 'system' and 'system_prompt' are two system prompts that "
                        "differ: keep one")
    return found[0] if found else None


def _with_system(messages: list[dict[str, str]], untrained: frozenset[int],
                 system: tuple[str, str] | None, where: str
                 ) -> tuple[list[dict[str, str]], frozenset[int]]:
    """The checked ``messages`` of a line opening with its ``system`` field (``_system_field``)
    as a system message, and the indices ``untrained`` of its turns weighted 0 in that list.
    A copy of the system message ``messages`` opens with (equal but for surrounding
    whitespace) counts once; a line whose ``messages`` hold another system message is a
    one-line ``UserError`` naming ``where`` (which one is meant?)."""
    if system is None:
        return messages, untrained
    key, text = system
    held = [i for i, m in enumerate(messages) if m["role"] == "system"]
    if held and messages[held[0]]["content"].strip() != text.strip():
        raise UserError(f"{where}: {key!r} and messages[{held[0]}], a system message, are two "
                        "system prompts that differ: keep one")
    if held[:1] == [0]:
        return messages, untrained  # a copy of the first message: once
    if held:
        raise UserError(f"{where}: {key!r} repeats messages[{held[0]}], a system message "
                        "that is not the first: drop the key, or move the message first")
    return ([{"role": "system", "content": text}, *messages],
            frozenset(i + 1 for i in untrained))


def _other_format(obj: dict[str, Any]) -> str:
    """What to do with a record of another common SFT layout (TRL's prompt/completion, Alpaca's
    instruction/input/output, ShareGPT's conversations), or ``""``."""
    if "completion" in obj:
        return " (TRL's 'completion' is 'response' here)"
    if "instruction" in obj and "output" in obj:
        return (" (an Alpaca-style record: give its instruction, and its input when there is "
                "one, as 'prompt' and its output as 'response')")
    if "conversations" in obj:
        return (" (a ShareGPT-style record: give its 'conversations' as 'messages', each turn "
                "as role/content, 'human' -> 'user', 'gpt' -> 'assistant')")
    return ""


def _trained_turns(messages: list[dict[str, str]],
                   untrained: frozenset[int] = frozenset()) -> list[int]:
    """Indices of the assistant turns of a conversation that are trained: every one with a
    message before it and text of its own (LLaDA App. B.1: an n-turn dialogue is n
    single-turn pairs, turn i's prompt being everything before it), but those in
    ``untrained`` (``"weight": 0``). ``read_sft_jsonl`` refuses a line with none."""
    return [
        i for i, m in enumerate(messages)
        if i > 0 and m["role"] == "assistant" and m["content"].strip() and i not in untrained
    ]  # fmt: skip


__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "ROLES",
    "SFTData",
    "SFTExample",
    "chat_prompt",
    "read_sft_jsonl",
    "render_chat",
]
