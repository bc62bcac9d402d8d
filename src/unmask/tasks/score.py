"""Score a model on task items (``unmask.tasks``): decode each prompt through ``unmask.api``
and check the output with the item's task (solve rate / exact match).

A diffusion model decodes the answer as one block, one token per step, most confident
first, greedily (``task_config``): the order a planning task needs (Ye et al. 2024 decode
Sudoku with the same adaptive order); a causal model decodes left to right; no repetition
penalty (``without_penalties``). Every sampling option given by the user overrides these
defaults.

Inside: ``TaskScore``, ``task_config``, ``without_penalties``, ``answer_tokens``,
``score_items``, ``decode_each``, ``repeat_seeds``, ``wilson_interval``, ``mcnemar_p``,
``item_groups``.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from unmask.tasks import Item, answers, check_item

if TYPE_CHECKING:
    from unmask.sampling.stops import TextEnd


@dataclass
class TaskScore:
    """Solve rates of a set of items."""

    solved: int
    total: int
    by_group: dict[str, list[int]] = field(default_factory=dict)
    """``task`` (and ``task/direction`` for reversal) -> [solved, total]."""
    sampling: dict[str, Any] = field(default_factory=dict)
    """The decoding options used."""
    examples: list[dict[str, Any]] = field(default_factory=list)
    """The first few items with their outputs, for reading."""
    intervals: dict[str, list[float]] = field(default_factory=dict)
    """``by_group``'s keys -> [low, high]: the 95% Wilson score interval of the group's solve
    rate (``wilson_interval``): on 200 items a rate of 43% is 36% to 50%, so two models
    a few points apart on one task file are not told apart."""
    outcomes: list[bool] = field(default_factory=list)
    """Whether each item was solved, in the items' order: two models scored on one file are
    compared item by item (``mcnemar_p``), a test that sees differences the two intervals,
    which ignore that the items are shared, do not."""

    @property
    def rate(self) -> float:
        return self.solved / self.total if self.total else 0.0


def task_config(loaded: Any, items: Sequence[Item], given: Mapping[str, Any]) -> Any:
    """The ``SampleConfig`` of a task run: room for the longest answer plus its EOS (whole
    blocks of a block-causal ``bd3lm`` model, which decodes nothing shorter, and of a given
    ``block_length`` without a given ``gen_length``: the room must divide into them), one
    block, one token per step, greedy, then ``given`` on top. The longest answer is the one of most
    tokens among those the checkers accept (``unmask.tasks.answers``: every countdown
    solution, not only the reference). A given ``gen_length`` shorter than the longest
    reference answer would cut the answers the task is trained on (one from there up to
    the room cuts only solutions longer than every reference: the user's choice), a prompt
    and room past the model's context would not fit, and no items leave nothing to size:
    each a ``UserError``."""
    from unmask.api import facts_of, sample_config
    from unmask.errors import UserError

    if not items:  # was max()'s "arg is an empty sequence"
        raise UserError("no task items to score")
    tok = loaded.tokenizer
    longest = 1 + answer_tokens(tok, items)
    reference = 1 + max(len(ids) for ids in tok.encode_batch([i.answer for i in items]))
    block = facts_of(loaded).block_size  # None but for block-causal models
    asked = given.get("block_length")  # semi-autoregressive blocks: the room in whole ones
    if not block and "gen_length" not in given and isinstance(asked, int) and asked > 0:
        block = asked  # (it was the answer's length, refused unless a multiple of them)

    def whole_blocks(n: int) -> int:
        return -(-n // block) * block if block else n

    length = int(given.get("gen_length", whole_blocks(longest)))
    if length < reference:
        raise UserError(
            f"--gen-length {length} would cut the task's answers (the longest takes "
            f"{reference} tokens with its EOS); give {reference} or more, or leave it out for "
            "the task file"
        )
    facts = facts_of(loaded)
    context = facts.max_seq_len
    prompt = 1 + max(len(tok.encode(i.prompt)) for i in items)  # start token, prompt
    start = facts.start_name  # what facts.start_id is
    segments = given.get("segment_length") is not None  # asked for: a sliding window
    if context is not None and prompt + length > context and not segments:
        fits = whole_blocks(reference)
        hint = (
            f"; --gen-length {fits} fits, and cuts only the solutions longer than every "
            "reference answer"
            if "gen_length" not in given and prompt + fits <= context and fits < length
            else ""
        )
        raise UserError(  # was a line suggesting segment_length, after the rest of the eval
            f"the task's longest prompt ({prompt} tokens with the {start} before it) and "
            f"{length} tokens of answer exceed the model's context (max_seq_len {context}): "
            f"train a model with a longer max_seq_len for this task{hint}"
        )
    base: dict[str, Any] = {
        "gen_length": length,
        "steps": length,
        "block_length": None,
        "temperature": 0.0,
        "seed": 0,
    }
    return without_penalties(sample_config(loaded, {**base, **given}), given)


def without_penalties(config: Any, given: Mapping[str, Any]) -> Any:
    """``config`` with the repetition penalties (``PENALTY_FIELDS``) not in ``given`` at their
    neutral defaults: a checkpoint recommends them for prose (``sample_defaults``), and a task
    answer repeats what its prompt holds. The 4-gram ban that ``ar``, ``hybrid`` and
    ``mdlm`` checkpoints recommend (the shipped demo: a 3-gram ban) left 32 of 200
    ``sudoku4`` items (byte tokenizer) with no answer a perfect model could write (a run of
    clues the solution repeats) and barred the reference answer of 10 of 200 ``countdown3``
    items (a few-shot format line of an lm-eval task the same); the published task
    measurements were decoded without them."""
    import dataclasses

    from unmask.config import SampleConfig
    from unmask.sampling.penalties import PENALTY_FIELDS

    neutral = {f: getattr(SampleConfig, f) for f in PENALTY_FIELDS if f not in given}
    return dataclasses.replace(config, **neutral)


def answer_tokens(tokenizer: Any, items: Sequence[Item]) -> int:
    """The most tokens (``tokenizer.encode``) an answer of ``items`` that its checker accepts
    takes (``unmask.tasks.answers``): the reference answers' length until 2026-12-06, which
    cut a countdown solution longer than its item's reference (3 of 200 ``countdown3`` items
    under the byte tokenizer)."""
    return max(len(ids) for i in items for ids in tokenizer.encode_batch(answers(i)))


def score_items(
    loaded: Any,
    items: Sequence[Item],
    *,
    given: Mapping[str, Any] | None = None,
    batch_size: int = 32,
    keep_examples: int = 5,
    config: Any = None,
) -> TaskScore:
    """Decode every item's prompt (after ``ModelFacts.start_id``: a published model's BOS,
    else the EOS that separates training examples, so the prompt starts a document as in
    training) and count the outputs its task accepts.
    ``config``: ``task_config(loaded, items, given)`` when the caller has it already.
    Each item's output is the one it gets decoded alone (``decode_each``), whatever the
    ``batch_size`` and the items beside it. ``TaskScore.sampling`` names the ``seed`` of a
    run that draws random numbers (``unmask.api.draws_noise``), whose outputs it decides."""
    from unmask.api import choose, draws_noise, facts_of
    from unmask.report import decoding_options

    if config is None:
        config = task_config(loaded, items, given or {})
    head = [facts_of(loaded).start_id]
    tok = loaded.tokenizer
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    examples: list[dict[str, Any]] = []
    outcomes: list[bool] = []
    decoder = choose(loaded, config)
    fit_steps = "steps" not in (given or {})  # one a token, fitted to the blocks a prompt spans
    seeds = repeat_seeds(config.seed or 0, [i.prompt for i in items])  # over the whole file
    for lo in range(0, len(items), batch_size):
        chunk = items[lo : lo + batch_size]
        prompts = [head + tok.encode(i.prompt) for i in chunk]
        rows = decode_each(loaded, prompts, config, decoder, seeds[lo : lo + batch_size],
                           fit_steps=fit_steps)
        results = {id(r): r for r, _ in rows}  # each result decoded once, not once a row
        decoded = {key: r.texts(tok) for key, r in results.items()}
        texts = [decoded[id(r)][i] for r, i in rows]
        for item, text in zip(chunk, texts, strict=True):
            ok = check_item(item, text)
            outcomes.append(ok)
            for key in item_groups(item):
                groups[key][0] += ok
                groups[key][1] += 1
            if len(examples) < keep_examples:
                examples.append(
                    {"prompt": item.prompt, "output": text, "answer": item.answer, "solved": ok}
                )
    sampling = {"gen_length": config.gen_length, **decoding_options(loaded, config)}
    if config.seed is not None and draws_noise(decoder, config):  # the outputs are its draws:
        sampling["seed"] = config.seed  # a sampled run's rates were reported without it
    intervals = {k: list(wilson_interval(*v)) for k, v in groups.items()}
    solved = sum(outcomes)
    return TaskScore(solved, len(items), dict(groups), sampling, examples, intervals, outcomes)


def wilson_interval(solved: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (Wilson 1927) of a rate of ``solved`` out of ``total`` (95%
    at ``z`` 1.96): unlike the normal approximation it stays inside [0, 1] and is not empty
    at 0 or ``total`` solved (0 of 10: 0 to 27.8%). ``ValueError`` for counts that are no
    rate (not whole numbers, a bool among them; ``total`` < 1, ``solved`` outside
    0..``total``): ``benchmarks/report.py`` asks it whether a result file's counts are one."""
    whole = all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                for v in (solved, total))
    if not whole or total < 1 or not 0 <= solved <= total:
        raise ValueError(f"a rate needs whole numbers 0 <= solved <= total, total >= 1, got "
                         f"{solved!r}/{total!r}")
    p, z2 = solved / total, z * z
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / (1 + z2 / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """The exact two-sided McNemar p-value (McNemar 1947; the binomial test of the discordant
    pairs) that two models solve the same items equally often, from the items only the first
    solves (``only_a``) and only the second (``only_b``): twice the chance of a split at
    least as uneven as the one seen of ``only_a + only_b`` fair coin flips, at most 1 (no
    discordant item: 1). 10 against 2: 2 * (1 + 12 + 66) / 4096 = 0.0386. ``ValueError`` for
    a negative count. NumPy integers count as Python ones (``2**n`` of an ``int64`` wrapped
    around: 1.0 for 30 against 40)."""
    only_a, only_b = operator.index(only_a), operator.index(only_b)
    if only_a < 0 or only_b < 0:
        raise ValueError(f"counts of items must be 0 or more, got {only_a} and {only_b}")
    n, k = only_a + only_b, min(only_a, only_b)
    tail, term = 0, 1  # exact integers: no underflow; term is C(n, i), kept running (each
    for i in range(k + 1):  # math.comb(n, i) from scratch took 17 s at 5,000 against 5,000)
        tail += term
        term = term * (n - i) // (i + 1)
    return min(1.0, 2 * tail / 2**n)


def repeat_seeds(seed: int, keys: Sequence[Any]) -> list[int]:
    """One seed per row: ``seed`` for the first row of each key, ``seed + j`` for its j-th
    repeat (as ``unmask.api.row_seeds`` seeds the ``n`` choices of a prompt), wrapping past
    ``MAX_SEED``: identical requests (lm-eval's ``repeats``, for majority votes and pass@k)
    are draws of their own, and a row's seed does not depend on the other keys."""
    from unmask.config import MAX_SEED

    seen: dict[Any, int] = defaultdict(int)
    out = []
    for key in keys:
        out.append((seed + seen[key]) % (MAX_SEED + 1))
        seen[key] += 1
    return out


def decode_each(
    loaded: Any, prompts: list[list[int]], config: Any, decoder: str,
    seeds: Sequence[int] | None = None, *, fit_steps: bool = False,
    stop: TextEnd | None = None,
) -> list[tuple[Any, int]]:
    """Decode ``prompts`` (token ids) under ``config`` (run by ``decoder``: ``api.choose``),
    each prompt as it decodes alone under its seed (``seeds``, default ``repeat_seeds`` of
    ``config.seed`` over the prompts): per prompt, the ``GenerateResult`` that holds its row
    and the row's index there (its ``gen_ids`` and ``texts`` cut at EOS). A run that draws
    random numbers (``unmask.api.draws_noise``: SEDD, the continuous decoders at any
    temperature, any decoder above temperature 0) decodes by ``unmask.api.run_rows``, as
    ``generate`` does: one run with a generator per row where the decoder has them (every
    built-in decoder in float32: ``unmask.api.seeds_in_one_run``), a row the decoder keeps
    apart (a prompt of [MASK]s, a [MASK] under a KV cache) alone beside them, else a run
    per row, stepped together where the runs share forward passes (``llada`` without a KV
    cache), else one after another; a greedy run is one batch, but for the rows the decoder
    keeps apart, which run alone (``unmask.api.run_rows``, ``row_runs``: ``generate``'s
    rule, so ``unmask eval`` writes its text). One generator for a batch
    made a row's output depend on the rows beside it and on the batch size (all 16 items of
    a SEDD model's test set changed between batches of 32 and of 1).
    On a checkpoint whose blocks start at the first prompt token (``absolute_blocks``) the
    prompts are decoded in groups of equal length modulo the block size, which its decoder
    needs of a batch; ``fit_steps`` (``steps`` chosen by the caller, not the user): each
    group's ``steps`` fitted to the blocks its prompts span (``api.fit_block_steps``), as
    ``generate`` fits them; else the caller's ``steps`` are checked against every group's
    blocks before any group decodes (``api.block_groups``: ``generate``'s groups). The task
    scorer and ``unmask.lm_eval``'s ``generate_until`` decode by it. ``stop``: a
    ``unmask.sampling.stops.TextEnd`` for every row (None: none), which ends a row's decoding
    once its text is sure to be cut at one of its stop sequences (``unmask.api.start``'s
    ``stop``: the same text, fewer forwards)."""
    from unmask.api import block_groups, draws_noise, run_rows

    noisy = config.seed is not None and draws_noise(decoder, config)
    if noisy and seeds is None:
        seeds = repeat_seeds(config.seed, [tuple(p) for p in prompts])
    out: list[tuple[Any, int]] = [(None, 0)] * len(prompts)
    for idx, cfg in block_groups(loaded, prompts, config, decoder, fit_steps=fit_steps):
        rows = [prompts[i] for i in idx]
        result = run_rows(loaded, rows, cfg,
                          None if seeds is None or not noisy else [seeds[i] for i in idx],
                          stop=None if stop is None else [stop] * len(idx))[0]
        for k, i in enumerate(idx):
            out[i] = (result, k)
    return out


def item_groups(item: Item) -> list[str]:
    """The ``TaskScore.by_group`` keys ``item`` counts in: its task, and ``task/direction``
    where it has one (reversal's ``forward`` and ``reverse``)."""
    direction = item.meta.get("direction")
    return [item.task] + ([f"{item.task}/{direction}"] if direction else [])


__all__ = ["TaskScore", "answer_tokens", "decode_each", "item_groups", "mcnemar_p", "repeat_seeds",
           "score_items", "task_config", "wilson_interval", "without_penalties"]
