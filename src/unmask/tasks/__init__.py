"""Planning and reversal tasks where diffusion is known to beat autoregression, as data.

Each task writes what ``unmask prepare`` / ``unmask train`` read and what ``unmask eval
--task-file`` scores (docs/evaluation.md, "Planning and reversal"):

- ``train.txt``: one example per line (prompt followed by its answer); prepare it with
  ``--line-docs`` so every example is one document, ended by EOS;
- ``sft.jsonl``: the same examples as prompt/response pairs, for a model trained on the
  answer given the prompt (``unmask train --objective sft --chat-template`` ``SFT_TEMPLATE``:
  the prompt never masked, Ye et al. 2024's setting for the planning tasks);
- ``eval.jsonl``: held-out items ``{"task", "prompt", "answer", ...}``, each checked by its
  task's ``check``: no sudoku puzzle or countdown instance (its numbers in any order, its
  target) occurs in ``train.txt``; of reversal's, the forward ones are facts it states
  (memory), the reverse ones never (the reversal);
- ``task.json``: the task, its options (``seed``, ``n_train``, ``n_eval``: ``python -m
  unmask.tasks TASK --seed S --train N --eval M`` writes the same files again) and the
  counts of lines and items written.

Tasks (``TASKS``): ``sudoku4`` and ``sudoku9`` (unique solutions, proved by the solver in
``unmask.tasks.sudoku``), ``countdown3`` / ``countdown4`` (``unmask.tasks.countdown``),
``reversal`` (``unmask.tasks.reversal``). The scorer that decodes the items through
``unmask.api`` is ``unmask.tasks.score``. No torch here: generating data needs none.

Inside: ``Item``, ``Task``, ``TASKS``, ``SFT_TEMPLATE``, ``task``, ``check_item``,
``answers``, ``write_task``, ``read_items``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unmask.errors import UserError
from unmask.tasks import countdown, reversal, sudoku


@dataclass(frozen=True)
class Item:
    """One example: the model sees ``prompt`` and must produce ``answer``."""

    task: str
    """The ``TASKS`` name whose ``check`` scores it."""
    prompt: str
    answer: str
    """A reference answer (the only one for sudoku and reversal; one of many for countdown);
    ``prompt + answer`` is the training line (reversal's answer starts with its space)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """What ``check`` needs besides the prompt (the puzzle, the numbers, the split)."""

    @property
    def text(self) -> str:
        """The training line: prompt then answer."""
        return self.prompt + self.answer


@dataclass(frozen=True)
class Task:
    """A generator and its checker."""

    name: str
    summary: str
    make: Callable[[random.Random, int, int], tuple[list[Item], list[Item]]]
    """``(rng, n_train, n_eval) -> (train items, eval items)``, eval prompts disjoint."""
    check: Callable[[Item, str], bool]
    """Whether an output (the text generated after the prompt) solves the item."""
    answers: Callable[[Item], Sequence[str]] = field(default=lambda item: [item.answer])
    """The answers ``check`` accepts, written in the task's format (the training lines'):
    the scorer decodes room for the longest of them in the model's tokens, so that no
    answer the checker would count is cut (``unmask.tasks.answers``). By default the
    reference alone (a task with one answer, or answers of one length)."""
    counts_items: bool = False
    """Whether ``make`` takes ``done=``: a callable told the number of items made so far
    after each (the sudoku generators, whose default sizes take minutes: ``write_task``
    shows their progress)."""


def _first_line(output: str) -> str:
    return output.strip().split("\n")[0].strip()


# -- sudoku ------------------------------------------------------------------------------


def _sudoku_item(name: str, solution: list[int], puzzle: list[int]) -> Item:
    return Item(
        name,
        sudoku.to_text(puzzle) + "=",
        sudoku.to_text(solution),
        {"puzzle": sudoku.to_text(puzzle)},
    )


def _make_sudoku(n: int, name: str) -> Callable[..., tuple[list[Item], list[Item]]]:
    def make(
        rng: random.Random, n_train: int, n_eval: int,
        done: Callable[[int], None] | None = None,
    ) -> tuple[list[Item], list[Item]]:
        seen: set[str] = set()
        items: list[Item] = []
        tries = 0
        while len(items) < n_train + n_eval:
            tries += 1
            if tries > 50 * (n_train + n_eval) + 1000:
                raise UserError(
                    f"{name}: could not make {n_train + n_eval} distinct puzzles "
                    f"(made {len(items)})"
                )
            solution = sudoku.random_grid(n, rng)
            puzzle = sudoku.make_puzzle(solution, rng)
            key = sudoku.to_text(puzzle)
            if key in seen:
                continue
            seen.add(key)
            items.append(_sudoku_item(name, solution, puzzle))
            if done is not None:
                done(len(items))
        return items[:n_train], items[n_train:]

    return make


def _sudoku_answers(item: Item) -> list[str]:
    """The reference: every solution of a puzzle is its ``n * n`` digits, the reference's
    length (generated puzzles have one solution; a hand-written one may have more, all of
    that length in characters)."""
    return [item.answer]


def _check_sudoku(item: Item, output: str) -> bool:
    """The first line, spaces aside, is exactly the grid's digits: a solution followed by
    more digits (the model did not stop) or with other characters in it is not one."""
    puzzle = sudoku.from_text(item.meta["puzzle"])
    line = "".join(_first_line(output).split())
    if len(line) != len(puzzle) or not (line.isascii() and line.isdigit()):
        return False
    return sudoku.is_solution(sudoku.from_text(line), puzzle)


# -- countdown ---------------------------------------------------------------------------


def _make_countdown(k: int, name: str) -> Callable[..., tuple[list[Item], list[Item]]]:
    def make(rng: random.Random, n_train: int, n_eval: int) -> tuple[list[Item], list[Item]]:
        seen: set[tuple[tuple[int, ...], int]] = set()
        items: list[Item] = []
        while len(items) < n_train + n_eval:
            numbers, target, steps = countdown.make_instance(k, rng)
            prompt = f"{','.join(map(str, numbers))}>{target}:"
            key = (tuple(sorted(numbers)), target)  # the numbers in another order: the same
            if key in seen:  # instance, and the same solutions, as a training line's
                continue
            seen.add(key)
            items.append(
                Item(name, prompt, ",".join(steps), {"numbers": numbers, "target": target})
            )
        return items[:n_train], items[n_train:]

    return make


def _countdown_answers(item: Item) -> list[str]:
    """Every solution (``countdown.solutions``) and the reference: an instance has many, some
    longer than the reference (``4,96,83>175:``: ``83-4=79,96+79=175`` and
    ``96+83=179,179-4=175``).
    Past ``countdown.MAX_SEARCH`` numbers (only a hand-written item has more), the reference
    alone."""
    numbers, target = item.meta["numbers"], item.meta["target"]
    if len(numbers) > countdown.MAX_SEARCH:
        return [item.answer]
    return [item.answer, *countdown.solutions(numbers, target)]


def _check_countdown(item: Item, output: str) -> bool:
    return countdown.check_steps(_first_line(output), item.meta["numbers"], item.meta["target"])


# -- reversal ----------------------------------------------------------------------------


def _make_reversal(rng: random.Random, n_train: int, n_eval: int) -> tuple[list[Item], list[Item]]:
    """``n_train`` pairs seen both ways and ``n_eval`` pairs seen forward only, the training
    lines shuffled; the eval items ask each forward-only pair both ways (2 * ``n_eval``
    items)."""
    names = reversal.make_names(2 * (n_train + n_eval), rng)
    pairs = list(zip(names[0::2], names[1::2], strict=True))
    train: list[Item] = []
    evals: list[Item] = []
    for i, (parent, child) in enumerate(pairs):
        forward = Item("reversal", *reversal.child_line(parent, child), {"direction": "forward"})
        backward = Item("reversal", *reversal.parent_line(parent, child), {"direction": "reverse"})
        if i < n_train:
            train += [forward, backward]
        else:
            train.append(forward)  # the fact, stated one way only
            evals += [forward, backward]
    # in the order made, a pair's two lines stood side by side (a window of the token stream
    # trained the reverse line by copying the name from the line before, not from memory)
    # and the forward-only facts formed the file's tail (one validation block could take
    # them all out of training)
    rng.shuffle(train)
    return train, evals


def _reversal_answers(item: Item) -> list[str]:
    """The reference: the name (with its space) is the answer; what follows it in an output
    is not read, so a cut after the name is no wrong answer."""
    return [item.answer]


def _check_reversal(item: Item, output: str) -> bool:
    """The first words of the output are the name (the answer holds its leading space), as
    many as it has (a hand-written item's full name, ``Mary Lee Pfeiffer``: until 2026-12-07
    only the first word was compared, so no output solved such an item and ``read_items``
    refused its reference), then the line ends or a space or ``.`` follows; spaces between
    the words are any."""
    line, name = " ".join(_first_line(output).split()), " ".join(item.answer.split())
    after = line[len(name) : len(name) + 1]  # "" at the line's end
    return bool(name) and line.startswith(name) and after in ("", " ", ".")


SFT_TEMPLATE = "{{ eos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
"""The chat template that lays an ``sft.jsonl`` pair out as ``train.txt`` does (EOS, prompt,
answer; the answer then ends with EOS): the prompt is what ``unmask.tasks.score`` decodes
after."""

TASKS: dict[str, Task] = {
    "sudoku4": Task(
        "sudoku4",
        "4x4 sudoku, minimal puzzles with a unique solution",
        _make_sudoku(4, "sudoku4"),
        _check_sudoku,
        _sudoku_answers,
        counts_items=True,
    ),
    "sudoku9": Task(
        "sudoku9",
        "9x9 sudoku, minimal puzzles with a unique solution",
        _make_sudoku(9, "sudoku9"),
        _check_sudoku,
        _sudoku_answers,
        counts_items=True,
    ),
    "countdown3": Task(
        "countdown3",
        "reach the target from 3 numbers with + - * /",
        _make_countdown(3, "countdown3"),
        _check_countdown,
        _countdown_answers,
    ),
    "countdown4": Task(
        "countdown4",
        "reach the target from 4 numbers with + - * /",
        _make_countdown(4, "countdown4"),
        _check_countdown,
        _countdown_answers,
    ),
    "reversal": Task(
        "reversal",
        "made-up parent/child facts, trained forward, asked both ways",
        _make_reversal,
        _check_reversal,
        _reversal_answers,
    ),
}
"""The registered tasks by name."""


def task(name: str) -> Task:
    """The task registered as ``name``; a one-line ``UserError`` naming the choices otherwise."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def check_item(item: Item, output: str) -> bool:
    """Whether ``output`` (the text generated after ``item.prompt``) solves ``item``."""
    return task(item.task).check(item, output)


def answers(item: Item) -> list[str]:
    """The answers ``item``'s checker accepts in its task's format (``Task.answers``), the
    reference among them, each once: the room ``unmask.tasks.score`` decodes is the longest
    of them in tokens."""
    return list(dict.fromkeys(task(item.task).answers(item)))


def write_task(
    name: str, out: str | Path, *, n_train: int, n_eval: int, seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``train.txt``, ``sft.jsonl``, ``eval.jsonl`` and ``task.json`` of task ``name``
    into ``out`` (created; the files written all or none: ``_write_all``) and return the
    ``task.json`` record. ``progress``: a bar (plain lines where stderr is no terminal,
    ``unmask.progress``) while a task that counts its items (``Task.counts_items``: sudoku)
    makes them; ``sudoku9``'s default 10,200 puzzles take about 5 minutes of one core,
    ``sudoku4``'s about 10 seconds."""
    if n_train < 0 or n_eval < 1:
        raise UserError(f"need n_train >= 0 and n_eval >= 1, got {n_train} and {n_eval}")
    if seed < 0:  # random.Random(-s) is random.Random(s): the files of the opposite seed
        raise UserError(f"need seed >= 0, got {seed}")
    spec = task(name)
    _check_folder(Path(out))  # before the items are made (sudoku9's take minutes)
    if progress and spec.counts_items:
        train, evals = _make_showing_progress(spec, seed, n_train, n_eval)
    else:
        train, evals = spec.make(random.Random(seed), n_train, n_eval)
    overlap = {i.prompt for i in evals if i.meta.get("direction") != "forward"} & {
        i.prompt for i in train
    }
    assert not overlap, f"eval prompts leaked into training: {sorted(overlap)[:3]}"
    record = {
        "task": name,
        "summary": spec.summary,
        "seed": seed,
        "n_train": n_train,
        "n_eval": n_eval,
        "train_lines": len(train),
        "sft_template": SFT_TEMPLATE,
        "eval_items": len(evals),
    }
    texts = {
        "train.txt": "".join(i.text + "\n" for i in train),
        "sft.jsonl": "".join(
            json.dumps({"prompt": i.prompt, "response": i.answer}, ensure_ascii=False) + "\n"
            for i in train
        ),
        "eval.jsonl": "".join(json.dumps(asdict(i), ensure_ascii=False) + "\n" for i in evals),
        "task.json": json.dumps(record, indent=2) + "\n",
    }
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    _write_all(folder, texts)
    return record


def _check_folder(folder: Path) -> None:
    """A one-line ``UserError`` where ``folder`` or the nearest folder above it that is there
    is not a folder (a file, a link to nowhere: ``files.not_a_folder``): the folder cannot be
    made: checked before the items are made (``sudoku9``'s default size takes minutes)."""
    from unmask.files import not_a_folder

    above = not_a_folder(folder)
    if above is not None:
        where = "" if above == folder else f" ({above} is not a folder)"
        raise UserError(f"{folder}: not a folder the task's files can be written in{where}")


def _write_all(folder: Path, texts: dict[str, str]) -> None:
    """Write each ``texts`` file into ``folder``, all or none. Each is written in full (UTF-8,
    fsynced) in a staging folder beside them; then the old files of those names are moved
    aside into it (``task.json`` first) and the new ones renamed into place (``task.json``
    last). A failure or a Ctrl-C in the renames deletes the new files moved in so far and
    puts the old ones back. Never, even while the renames run, does the folder hold new
    files beside old ones: a process killed midway (SIGKILL) leaves part of one set and no
    ``task.json``, and the next write that succeeds removes its staging folder
    (``clear_stale_staging``, after the renames: a write that fails keeps the old set a
    killed one left there).
    Written one after another (``atomic_write_text`` each), a failure (a full disk) after
    ``train.txt`` left the new training lines beside the old folder's ``eval.jsonl``, whose
    held-out items they may hold. A failure is an ``OSError`` naming the file of ``folder``
    it was writing, not the staging folder."""
    import errno
    import os
    import shutil

    from unmask.files import clear_stale_staging, staging_dir, staging_prefix

    for name in texts:  # moved aside below, a folder of that name would go with the staging
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
    out = folder / "task-files"  # staging folders named .task-files.tmp-HOST-NS-PID-*
    staging = staging_dir(folder, staging_prefix(out))
    keep = False  # True while old files wait in the staging folder to be put back
    try:
        for name, text in texts.items():
            try:
                with open(staging / name, "w", encoding="utf-8", newline="\n") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise _naming(e, folder / name) from None
        old = staging / "old"
        old.mkdir()
        aside: list[str] = []
        placed: list[str] = []
        try:
            for name in reversed(texts):  # task.json first: a folder without it is not whole
                if (folder / name).exists() or (folder / name).is_symlink():
                    _rename(folder / name, old / name, folder / name)
                    aside.append(name)
            for name in texts:
                _rename(staging / name, folder / name, folder / name)
                placed.append(name)
        except BaseException:
            keep = True
            for name in placed:  # every new file out before an old one is back: never a mix
                (folder / name).unlink(missing_ok=True)
            for name in reversed(aside):  # task.json last again
                os.replace(old / name, folder / name)
            keep = False
            raise
    finally:
        if not keep:  # else interrupted putting the old files back: they stay, not deleted
            shutil.rmtree(staging, ignore_errors=True)
    clear_stale_staging(out)


def _rename(source: Path, target: Path, user: Path) -> None:
    """``os.replace(source, target)``, an ``OSError`` naming ``user`` (``_naming``)."""
    import os

    try:
        os.replace(source, target)
    except OSError as e:
        raise _naming(e, user) from None


def _naming(error: OSError, user: Path) -> OSError:
    """``error`` naming ``user``, the task folder's file, in place of the staging path it
    names (an ``open`` or a rename there: a path the user never gave, gone by the time the
    error is read) or of no file (a write or an fsync on a full disk: ``unmask.files.named``)."""
    from unmask.files import named

    return named(OSError(error.errno, error.strerror or str(error)), user)


def _make_showing_progress(
    spec: Task, seed: int, n_train: int, n_eval: int
) -> tuple[list[Item], list[Item]]:
    """``spec.make`` with a progress bar over its items (``Task.counts_items``)."""
    from unmask.progress import progress_bar

    total = n_train + n_eval
    bar, plain = progress_bar(spec.name, total, unit="item", label="items")
    if plain is not None:  # stderr is not a terminal: plain lines instead of the bar
        plain.start(f"making {total:,} items ({n_train:,} to train on, {n_eval:,} held out)")

    def done(k: int) -> None:
        if bar is not None:
            bar.update(k - bar.n)
        if plain is not None and plain.due(k):
            plain.line(k)

    try:
        return spec.make(random.Random(seed), n_train, n_eval, done=done)
    finally:
        if bar is not None:
            bar.close()


def _meta_problem(item: Item) -> str | None:
    """What is wrong with ``item.meta`` for its task's checker (None: nothing): a puzzle
    without its grid was a crash, or, with no cells, counted as solved."""
    meta = item.meta
    if item.task.startswith("sudoku"):
        size = int(item.task.removeprefix("sudoku"))
        puzzle = meta.get("puzzle")
        if not isinstance(puzzle, str) or len(sudoku.from_text(puzzle)) != size * size:
            return f"needs 'puzzle': the {size}x{size} grid as text ({size * size} cells)"
        if sudoku.count_solutions(sudoku.from_text(puzzle), 1) == 0:  # no output could count
            return f"'puzzle' {puzzle} has no solution (a clue above {size}, or clashing clues)"
    if item.task.startswith("countdown"):
        numbers, target = meta.get("numbers"), meta.get("target")
        if (not isinstance(numbers, list) or not numbers
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in numbers)
                or not isinstance(target, int) or isinstance(target, bool)):
            return "needs 'numbers' (a list of integers) and 'target' (an integer)"
    return None


class _BadItem(Exception):
    """A task-file line whose fields have the wrong types."""


_ITEM = "{task, prompt, answer, meta}"
"""What a line of a task file holds, in ``read_items``'s errors."""


def read_items(path: str | Path) -> list[Item]:
    """The items of an ``eval.jsonl`` (or of the ``eval.jsonl`` in folder ``path``); a line
    that does not parse, names an unknown task, or whose reference answer its task's checker
    refuses (the answer's length sets the room decoded) is a ``UserError`` naming it; a file
    that is not UTF-8 text is one too (``unmask.files.read_user_text``)."""
    p = Path(path)
    if p.is_dir():
        p = p / "eval.jsonl"
        if not p.is_file():  # it read "no such task file", of a folder that is there
            raise UserError(f"{path}: a folder without eval.jsonl (the held-out items "
                            "`python -m unmask.tasks` writes); give the task file itself")
    if not p.is_file():
        raise UserError(f"{path}: no such task file (an eval.jsonl from `python -m unmask.tasks`)")
    from unmask.files import parse_json, read_user_text, text_lines

    text = read_user_text(p, "task file")  # UTF-16, binary: one line; a BOM dropped
    items: list[Item] = []
    # (not str.splitlines: U+2028 is left raw inside a prompt or answer write_task stores)
    for n, line in enumerate(text_lines(text), 1):
        if not line.strip():
            continue
        d = parse_json(line, p, line=n, what=f"a JSON object {_ITEM}")
        try:
            fields = [d["task"], d["prompt"], d["answer"]]
            meta = d.get("meta") or {}
            if not all(isinstance(f, str) for f in fields) or not isinstance(meta, dict):
                # str(None) was a prompt "None"; a meta "ab" "not a JSON object"
                raise _BadItem("task, prompt and answer must be strings, meta an object")
            item = Item(*fields, meta=dict(meta))
        except (KeyError, TypeError, _BadItem) as e:
            what = (f"missing field {e}" if isinstance(e, KeyError)
                    else str(e) if isinstance(e, _BadItem) else "not a JSON object")
            raise UserError(f"{p}:{n}: {what} (an item is {_ITEM})") from None
        if item.task not in TASKS:
            raise UserError(f"{p}:{n}: unknown task {item.task!r}; one of {', '.join(TASKS)}")
        problem = _meta_problem(item)
        if problem:
            raise UserError(f"{p}:{n}: {item.task} item's meta {problem}")
        if not check_item(item, item.answer):  # the room decoded is the answer's length:
            raise UserError(  # an empty or wrong one cut every output, or scored nothing
                f"{p}:{n}: its answer {item.answer!r} is not one the {item.task} checker "
                "accepts (the reference answer must solve the item)"
            )
        items.append(item)
    if not items:
        raise UserError(f"{p}: no items")
    return items


__all__ = [
    "SFT_TEMPLATE",
    "TASKS",
    "Item",
    "Task",
    "answers",
    "check_item",
    "read_items",
    "task",
    "write_task",
]
