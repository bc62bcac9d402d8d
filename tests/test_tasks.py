"""Planning and reversal tasks (``unmask.tasks``): generators, checkers, files, scoring."""

import functools
import itertools
import json
import random

import pytest
import torch

from unmask.cli import main
from unmask.errors import UserError
from unmask.tasks import (
    SFT_TEMPLATE,
    TASKS,
    Item,
    check_item,
    countdown,
    read_items,
    sudoku,
    write_task,
)
from unmask.tasks.__main__ import main as tasks_main


def test_solver_counts_solutions():
    grid = sudoku.random_grid(4, random.Random(0))
    assert sudoku.is_solution(grid, [0] * 16)
    assert sudoku.count_solutions(grid) == 1
    assert sudoku.count_solutions([0] * 16, limit=1000) == 288  # all 4x4 sudoku grids
    broken = list(grid)
    broken[1] = broken[0]  # two equal digits in a row
    assert sudoku.count_solutions(broken) == 0


@pytest.mark.parametrize("n", [4, 9])
def test_puzzles_have_unique_minimal_solutions(n):
    rng = random.Random(n)
    for _ in range(3 if n == 9 else 20):
        solution = sudoku.random_grid(n, rng)
        puzzle = sudoku.make_puzzle(solution, rng)
        assert sudoku.count_solutions(puzzle, limit=2) == 1
        assert sudoku.solve(puzzle) == solution
        for i, v in enumerate(puzzle):  # minimal: every clue is needed
            if v:
                fewer = puzzle[:i] + [0] + puzzle[i + 1 :]
                assert sudoku.count_solutions(fewer, limit=2) == 2


def test_sudoku_check_accepts_the_solution_only():
    _, evals = TASKS["sudoku4"].make(random.Random(1), 0, 5)
    for item in evals:
        assert check_item(item, item.answer)
        assert check_item(item, item.answer + "\n3412")  # only the first line counts
        wrong = item.answer[1] + item.answer[0] + item.answer[2:]
        assert not check_item(item, wrong)
        assert not check_item(item, item.answer[:-1])
        assert check_item(item, f" {item.answer[:8]} {item.answer[8:]} ")  # spaces aside
        assert not check_item(item, item.answer + item.answer[-1])  # did not stop
        assert not check_item(item, item.answer + "1234")
        assert not check_item(item, ",".join(item.answer))  # not the grid's format
        assert not check_item(item, "")
        assert not check_item(item, "\u00b2" * 16)  # digits to str.isdigit, not to int
        assert sudoku.from_text("1\u00b22") == [1, 2]


def test_countdown_instances_are_solvable_and_checked():
    rng = random.Random(2)
    for _ in range(50):
        numbers, target, steps = countdown.make_instance(4, rng)
        assert countdown.check_steps(",".join(steps), numbers, target)
    assert countdown.check_steps("3*4=12,12+5=17", [3, 4, 5], 17)
    assert countdown.check_steps("5+3=8,8*4=32", [3, 4, 5], 32)  # any order of steps
    assert not countdown.check_steps("3*4=12", [3, 4, 5], 12)  # 5 unused
    assert not countdown.check_steps("3*4=13,13+4=17", [3, 4, 5], 17)  # wrong arithmetic
    assert not countdown.check_steps("3*3=9,9+5=14", [3, 4, 5], 14)  # 3 used twice
    assert not countdown.check_steps("5/3=1,1+4=5", [3, 4, 5], 5)  # not a whole division
    assert not countdown.check_steps("three", [3, 4, 5], 17)
    # other scripts' digits are not the numbers given (int() reads them; the sudoku
    # checker refuses them too)
    assert not countdown.check_steps("3*4=12,12+5=\u0661\u0667", [3, 4, 5], 17)
    assert not countdown.check_steps("\u0663*4=12,12+5=17", [3, 4, 5], 17)


def test_reversal_split():
    train, evals = TASKS["reversal"].make(random.Random(3), 4, 3)
    lines = {i.text for i in train}
    assert len(train) == 2 * 4 + 3 and len(evals) == 2 * 3
    for item in evals:
        assert (item.text in lines) == (item.meta["direction"] == "forward")
        assert check_item(item, item.answer + ".") and not check_item(item, "Xyz.")


def test_reversal_names_grow_with_the_set_and_the_default_size_works(tmp_path, capsys):
    """Up to 2450 names (half of the 70^2 two-syllable ones) keep 2 syllables; more get 3, so
    the generator's own default --train works; a fixed syllable count past its limit is a
    one-line error naming the true limit."""
    from unmask.tasks.reversal import make_names

    assert {len(n) for n in make_names(2450, random.Random(0))} == {4}
    assert {len(n) for n in make_names(2451, random.Random(0))} == {6}
    with pytest.raises(UserError, match=r"asked for 2451 names of 2 syllables; at most 2450"):
        make_names(2451, random.Random(0), syllables=2)
    assert tasks_main(["reversal", "--out", str(tmp_path)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["train_lines"], record["eval_items"]) == (2 * 10000 + 200, 400)


def test_write_task_files_round_trip(tmp_path):
    record = write_task("countdown3", tmp_path, n_train=30, n_eval=10, seed=4)
    assert record["train_lines"] == 30 and record["eval_items"] == 10
    items = read_items(tmp_path)
    train = set((tmp_path / "train.txt").read_text().splitlines())
    assert len(items) == 10 and not {i.text for i in items} & train
    assert all(check_item(i, i.answer) for i in items)
    assert json.loads((tmp_path / "task.json").read_text())["task"] == "countdown3"
    assert write_task("countdown3", tmp_path / "b", n_train=30, n_eval=10, seed=4) == record
    assert (tmp_path / "b" / "eval.jsonl").read_bytes() == (tmp_path / "eval.jsonl").read_bytes()


def test_sft_pairs_lay_out_as_the_training_lines(tmp_path):
    """``sft.jsonl`` through ``SFT_TEMPLATE``: EOS, prompt, answer, EOS: the ``train.txt`` line
    as a document, the prompt part exactly what ``score_items`` decodes after."""
    from unmask.sft import SFTData, read_sft_jsonl
    from unmask.tokenizer import byte_tokenizer

    write_task("sudoku4", tmp_path, n_train=5, n_eval=2, seed=1)
    tok = byte_tokenizer()
    data = SFTData(
        read_sft_jsonl(tmp_path / "sft.jsonl"), tok, eos_id=tok.eos_id, chat_template=SFT_TEMPLATE
    )
    lines = (tmp_path / "train.txt").read_text().splitlines()
    assert len(data) == len(lines) == 5
    for (prompt, response), line in zip(data.rows, lines, strict=True):
        assert prompt + response == [tok.eos_id, *tok.encode(line), tok.eos_id]
        assert prompt == [tok.eos_id, *tok.encode(line.split("=")[0] + "=")]


def test_bad_task_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"task": "sudoku4", "prompt": "1="}\n')
    with pytest.raises(UserError, match=r"eval.jsonl:1: missing field 'answer'"):
        read_items(bad)
    bad.write_text("{not json\n")
    with pytest.raises(UserError, match=r"eval.jsonl:1: not a JSON object"):
        read_items(bad)
    bad.write_text('{"task": "chess", "prompt": "", "answer": ""}\n')
    with pytest.raises(UserError, match=r"unknown task 'chess'"):
        read_items(bad)


@pytest.mark.parametrize(
    "line",
    [
        '{"task": "reversal", "prompt": null, "answer": null}',  # was the prompt "None"
        '{"task": "reversal", "prompt": "A is ", "answer": 7}',
        '{"task": "reversal", "prompt": "A is ", "answer": "B", "meta": "ab"}',
        '{"task": "reversal", "prompt": "A is ", "answer": "B", "meta": [1]}',
    ],
)
def test_task_file_fields_of_the_wrong_type_are_one_line_errors(tmp_path, line):
    bad = tmp_path / "eval.jsonl"
    bad.write_text(line + "\n")
    with pytest.raises(UserError, match=r"eval.jsonl:1: task, prompt and answer must be str"):
        read_items(bad)


@pytest.mark.parametrize(
    "puzzle", ["1100000000000000", "5000000000000000"]  # clashing clues; a clue past 4
)
def test_unsolvable_sudoku_items_are_refused(tmp_path, puzzle):
    """Such an item was read and counted unsolved whatever the model wrote."""
    bad = tmp_path / "eval.jsonl"
    item = {"task": "sudoku4", "prompt": puzzle + "=", "answer": "", "meta": {"puzzle": puzzle}}
    bad.write_text(json.dumps(item) + "\n")
    with pytest.raises(UserError, match=rf"eval.jsonl:1: .*'puzzle' {puzzle} has no solution"):
        read_items(bad)


def test_generator_cli_out_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert tasks_main(["reversal", "--out", str(tmp_path / "f"), "--eval", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'f'}: not a folder" in err[0]


def test_generator_cli(tmp_path, capsys):
    assert tasks_main(["reversal", "--out", str(tmp_path), "--train", "3", "--eval", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["eval_items"] == 4
    assert tasks_main(["nosuch", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown task 'nosuch'" in err[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    root = tmp_path_factory.mktemp("taskrun")
    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48)
    save_checkpoint(root, model=Transformer(cfg), tokenizer=tok)
    return root


def test_unmask_eval_task_file_counts_what_the_checker_accepts(tiny_run, tmp_path, capsys):
    """The report's solve counts are the checker's verdicts on the outputs it shows, and
    each item is decoded as the API decodes its prompt (after the EOS separator)."""
    from unmask import api
    from unmask.checkpoint import load
    from unmask.tasks.score import score_items, task_config

    write_task("reversal", tmp_path, n_train=2, n_eval=3, seed=5)
    rc = main(
        [
            "eval",
            str(tiny_run),
            "--task-file",
            str(tmp_path),
            "--json",
            "--no-score",
            "--no-plot",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    tasks = json.loads(capsys.readouterr().out)["tasks"]
    assert tasks["total"] == 6 and tasks["by_group"]["reversal/reverse"][1] == 3
    # what ran: the decoder chosen (not "auto"), one block of the whole answer
    sampling = tasks["sampling"]
    assert sampling["decoder"] == "llada" and sampling["temperature"] == 0.0
    assert sampling["block_length"] == sampling["gen_length"] == sampling["steps"]
    loaded = load(tiny_run)
    items = read_items(tmp_path)
    score = score_items(loaded, items, keep_examples=6)
    assert score.solved == tasks["solved"]
    config = task_config(loaded, items, {})
    for item, ex in zip(items, score.examples, strict=True):
        ids = [2, *loaded.tokenizer.encode(item.prompt)]
        result, _ = api.run_to_end(api.start(loaded, [ids], config))
        assert ex["output"] == result.texts(loaded.tokenizer)[0]
        assert ex["solved"] == check_item(item, ex["output"])
    # a model that writes the answers solves everything: the checker, not the decoder, decides
    assert all(check_item(i, i.answer) for i in items)
    assert not check_item(Item("reversal", "Abc's parent is ", "Defg"), "Defh.")


def test_unmask_eval_bad_task_file_exits_2(tiny_run, tmp_path, capsys):
    (tmp_path / "eval.jsonl").write_text("[1, 2]\n")
    rc = main(["eval", str(tiny_run), "--task-file", str(tmp_path), "--no-score", "--no-plot"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "eval.jsonl:1" in err[0]


def test_task_file_gen_length_never_cuts_answers(tiny_run, tmp_path, capsys):
    """A --gen-length shorter than the longest answer (sudoku4: 16 digits + EOS) would cut
    every answer: refused in one line; a longer one keeps one token per step."""
    write_task("sudoku4", tmp_path, n_train=1, n_eval=2, seed=0)
    argv = ["eval", str(tiny_run), "--task-file", str(tmp_path), "--no-score", "--no-plot",
            "--json", "--device", "cpu"]  # fmt: skip
    rc = main([*argv, "--gen-length", "16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "--gen-length 16 would cut the task's answers (the longest takes 17 tokens" in err[0]
    assert main([*argv, "--gen-length", "20"]) == 0
    sampling = json.loads(capsys.readouterr().out)["tasks"]["sampling"]
    assert sampling["gen_length"] == sampling["steps"] == 20


@pytest.mark.parametrize("name", ["reversal", "sudoku4", "countdown3"])
def test_task_files_do_not_depend_on_the_hash_seed(name, tmp_path):
    """The same seed writes the same files in every process: reversal's names were ordered
    through a set, whose order follows the per-process string-hash salt."""
    import os
    import subprocess
    import sys

    code = ("import random, sys; from unmask.tasks import TASKS; "
            f"tr, ev = TASKS[{name!r}].make(random.Random(0), 6, 3); "
            "print([i.text for i in tr + ev])")
    outs = set()
    for hash_seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        outs.add(run.stdout)
    assert len(outs) == 1


def test_block_diffusion_task_run_decodes_whole_blocks(tmp_path):
    """A bd3lm model decodes whole blocks: without --gen-length the task's room (sudoku4: 16
    digits + EOS) rounds up to them (24 for blocks of 8) instead of failing."""
    from unmask.checkpoint import load, save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tasks.score import score_items, task_config
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64,
                       attention="block-causal", block_size=8, objective="bd3lm")
    save_checkpoint(tmp_path / "ckpt", model=Transformer(cfg), tokenizer=tok)
    loaded = load(tmp_path / "ckpt")
    write_task("sudoku4", tmp_path / "task", n_train=1, n_eval=2, seed=0)
    items = read_items(tmp_path / "task")
    config = task_config(loaded, items, {})
    assert config.gen_length == config.steps == 24
    score = score_items(loaded, items, config=config)
    assert score.total == 2 and score.sampling["gen_length"] == 24


def test_solve_counts_match_a_hand_count(tiny_run, tmp_path):
    """Items whose answers are set to what the model writes (the first word, for reversal's
    checker) count as solved, the others not: 2 of 3 forward, 1 of 3 reverse, 3 of 6, in
    any batching (one decoding config throughout, so the answers do not change it)."""
    import dataclasses

    from unmask.checkpoint import load
    from unmask.tasks.score import score_items, task_config

    write_task("reversal", tmp_path, n_train=2, n_eval=3, seed=5)
    loaded = load(tiny_run)
    items = read_items(tmp_path)
    config = task_config(loaded, items, {})
    first = score_items(loaded, items, config=config, keep_examples=6)
    words = [(ex["output"].strip().split("\n")[0].split(".")[0].split() or [""])[0]
             for ex in first.examples]  # fmt: skip
    wanted = {0, 2, 5}  # forward, forward, reverse (items alternate forward / reverse)
    if not all(words[i] for i in wanted):
        pytest.skip("the random model wrote no word where the test needs one")
    fixed = [dataclasses.replace(it, answer=words[i] if i in wanted else words[i] + "x")
             for i, it in enumerate(items)]  # fmt: skip
    for batch in (1, 4, 32):
        score = score_items(loaded, fixed, config=config, batch_size=batch)
        assert (score.solved, score.total) == (3, 6), batch
        assert score.by_group == {"reversal": [3, 6], "reversal/forward": [2, 3],
                                  "reversal/reverse": [1, 3]}, batch  # fmt: skip
        assert score.rate == 0.5


@functools.cache
def _all_grids_by_brute_force(n: int) -> tuple[tuple[int, ...], ...]:
    """Every valid n x n grid: rows drawn from all permutations, each kept when no column
    or box repeats a digit (nothing shared with ``unmask.tasks.sudoku``)."""
    b = int(n**0.5)
    perms = list(itertools.permutations(range(1, n + 1)))
    grids: list[tuple[int, ...]] = []

    def extend(rows: list[tuple[int, ...]]) -> None:
        if len(rows) == n:
            grids.append(tuple(v for row in rows for v in row))
            return
        r = len(rows)
        band = rows[r - r % b :]
        for p in perms:
            if any(p[c] == row[c] for row in rows for c in range(n)):
                continue
            if any(p[c] in {row[k] for row in band for k in range(c - c % b, c - c % b + b)}
                   for c in range(n)):  # fmt: skip
                continue
            extend([*rows, p])

    extend([])
    return tuple(grids)


def _exact_cover_solutions(puzzle: list[int], limit: int) -> list[list[int]]:
    """Completions of a 9x9 puzzle by Knuth's Algorithm X on the exact-cover constraints
    (cell, row-digit, column-digit, box-digit), up to ``limit``: an independent solver."""
    n, b = 9, 3
    choices = {
        (r, c, d): [("cell", r, c), ("row", r, d), ("col", c, d), ("box", r // b * b + c // b, d)]
        for r in range(n) for c in range(n) for d in range(1, n + 1)
    }
    cols: dict[tuple, set] = {}
    for k, cons in choices.items():
        for con in cons:
            cols.setdefault(con, set()).add(k)

    def select(k):
        removed = []
        for con in choices[k]:
            for other in cols[con]:
                for c2 in choices[other]:
                    if c2 != con:
                        cols[c2].discard(other)
            removed.append(cols.pop(con))
        return removed

    def deselect(k, removed):
        for con in reversed(choices[k]):
            cols[con] = removed.pop()
            for other in cols[con]:
                for c2 in choices[other]:
                    if c2 != con:
                        cols[c2].add(other)

    chosen = []
    for i, v in enumerate(puzzle):
        if v:
            k = (i // n, i % n, v)
            if any(con not in cols for con in choices[k]):
                return []
            chosen.append(k)
            select(k)
    found: list[list[int]] = []

    def search():
        if not cols:
            grid = [0] * 81
            for r, c, d in chosen:
                grid[r * n + c] = d
            found.append(grid)
            return
        con = min(cols, key=lambda x: len(cols[x]))
        for k in list(cols[con]):
            chosen.append(k)
            removed = select(k)
            search()
            deselect(k, removed)
            chosen.pop()
            if len(found) >= limit:
                return

    search()
    return found


def test_generated_4x4_puzzles_are_unique_and_minimal_by_brute_force():
    """Checked against all 288 grids enumerated independently: each eval item's puzzle has
    exactly one completion, the item's answer, and loses uniqueness without any clue."""
    grids = _all_grids_by_brute_force(4)
    assert len(grids) == 288

    def completions(puzzle):
        return [g for g in grids if all(p in (0, v) for p, v in zip(puzzle, g, strict=True))]

    train, evals = TASKS["sudoku4"].make(random.Random(7), 10, 20)
    for item in train + evals:
        puzzle = sudoku.from_text(item.meta["puzzle"])
        assert item.prompt == item.meta["puzzle"] + "="
        assert [sudoku.to_text(g) for g in completions(puzzle)] == [item.answer]
        for i, v in enumerate(puzzle):
            if v:
                assert len(completions(puzzle[:i] + [0] + puzzle[i + 1 :])) > 1


def test_generated_9x9_puzzles_are_unique_by_an_independent_solver():
    train, evals = TASKS["sudoku9"].make(random.Random(8), 1, 2)
    for item in train + evals:
        puzzle = sudoku.from_text(item.meta["puzzle"])
        found = _exact_cover_solutions(puzzle, 2)
        assert [sudoku.to_text(g) for g in found] == [item.answer]
        assert check_item(item, item.answer)
    # the independent solver does find two completions where there are two
    assert len(_exact_cover_solutions([0] * 81, 2)) == 2


def test_random_grids_reach_every_4x4_grid_and_no_single_9x9_family():
    """The shuffled pattern grid reached 96 of the 288 4x4 grids, and at 9x9 only grids
    whose three rows in a band split into the same three digit sets box by box."""
    rng = random.Random(0)
    assert {tuple(sudoku.random_grid(4, rng)) for _ in range(5000)} == set(
        _all_grids_by_brute_force(4)
    )

    def pattern_like(g):
        for band in range(3):
            rows = [g[(3 * band + r) * 9 : (3 * band + r + 1) * 9] for r in range(3)]
            sets = [{frozenset(row[3 * k : 3 * k + 3]) for k in range(3)} for row in rows]
            if not sets[0] == sets[1] == sets[2]:
                return False
        return True

    grids = [sudoku.random_grid(9, rng) for _ in range(20)]
    assert all(sudoku.is_solution(g, [0] * 81) for g in grids)
    assert sum(pattern_like(g) for g in grids) < 5


def test_countdown_eval_instances_are_not_training_ones_in_another_order():
    """Prompts were kept distinct, so "3,4,5>17:" could be held out with "4,3,5>17:" in
    training (seed 0: one of 200 held-out countdown3 instances)."""
    train, evals = TASKS["countdown3"].make(random.Random(0), 10000, 200)

    def key(i):
        return tuple(sorted(i.meta["numbers"])), i.meta["target"]

    seen = {key(i) for i in train}
    assert len(seen) == len(train) and not [i.prompt for i in evals if key(i) in seen]


def test_countdown_check_refuses_numbers_past_int_digit_limit():
    """A model that never stops can write more digits than int() reads: a wrong answer,
    not a ValueError in the middle of scoring."""
    assert not countdown.check_steps("1" * 5000 + "+1=2", [1, 1], 2)
    assert countdown.parse_steps("3+4=" + "7" * 4400) is None


@pytest.mark.parametrize(
    ("answer", "meta"),
    [
        ("", {"puzzle": "1200340000000000"}),  # was read: gen_length 1, every output cut
        ("1234123412341234", {"puzzle": "1200340000000000"}),  # not a solution
        ("", {"numbers": [3, 4, 5], "target": 17}),
        ("3*4=12,12+5=18", {"numbers": [3, 4, 5], "target": 17}),
        ("  ", {"direction": "reverse"}),  # no name: no output is it
    ],
)
def test_items_whose_answer_their_checker_refuses_are_one_line_errors(tmp_path, answer, meta):
    """The reference answer sets the room decoded: an empty one left one token for every
    output, and a wrong one scored a set that no model could solve."""
    task = ("sudoku4" if "puzzle" in meta else "countdown3" if "numbers" in meta
            else "reversal")  # fmt: skip
    bad = tmp_path / "eval.jsonl"
    bad.write_text(json.dumps({"task": task, "prompt": "x", "answer": answer, "meta": meta}) + "\n")
    with pytest.raises(UserError, match=rf"eval.jsonl:1: its answer .* not one the {task} chec"):
        read_items(bad)


def test_task_files_not_utf8_are_one_line_errors(tmp_path):
    line = '{"task": "reversal", "prompt": "Kato\'s child is ", "answer": "Mira"}\n'
    bad = tmp_path / "eval.jsonl"
    bad.write_bytes(line.encode("utf-16"))
    with pytest.raises(UserError, match=r"eval.jsonl: UTF-16 text: convert it to UTF-8"):
        read_items(bad)
    bad.write_bytes(line.encode("latin-1").replace(b"Mira", b"M\xefra"))
    with pytest.raises(UserError, match=r"eval.jsonl: not UTF-8 text \(byte 0xef"):
        read_items(bad)
    bad.write_bytes(b"\xef\xbb\xbf" + line.encode())  # a UTF-8 byte-order mark (Notepad)
    assert read_items(bad)[0].answer == "Mira"


def test_task_past_the_context_is_refused_by_task_config(tiny_run, tmp_path, capsys):
    """sudoku9 (an 82-token prompt with its EOS, 82 tokens of answer) on a model of 48: one
    line naming the task's sizes, not a suggestion to write the answer in segments."""
    write_task("sudoku9", tmp_path, n_train=1, n_eval=1, seed=0)
    rc = main(["eval", str(tiny_run), "--task-file", str(tmp_path), "--no-score", "--no-plot",
               "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert ("the task's longest prompt (83 tokens with the EOS before it) and 82 tokens of "
            "answer exceed the model's context (max_seq_len 48)") in err[0]


def test_reversal_prompts_end_on_a_token_boundary_of_a_word_tokenizer():
    """A BPE splits "Kato's child is Mira" as ... " is", " Mi" ...: the prompt asked ended in
    a space token (" is", " ") that no training line holds. Now prompt and answer tokens
    make the line's tokens, and the answer's space is no part of the name checked."""
    from unmask.tokenizer import train_bpe

    train, evals = TASKS["reversal"].make(random.Random(0), 40, 10)
    bpe = train_bpe([i.text for i in train] * 5, vocab_size=400)
    for item in train + evals:
        assert bpe.encode(item.prompt) + bpe.encode(item.answer) == bpe.encode(item.text)
        assert check_item(item, item.answer) and check_item(item, item.answer.strip() + ".")
        assert not check_item(item, item.answer + "x")
    # a task file written before (the space in the prompt) is still checked by the name
    assert check_item(Item("reversal", "Kato's child is ", "Mira"), "Mira.")


def test_reversal_training_lines_are_shuffled():
    """A pair's two lines were adjacent (a training window read the reverse line's name off
    the line before) and the forward-only facts were the file's last lines."""
    train, evals = TASKS["reversal"].make(random.Random(0), 200, 50)
    lines = [i.text for i in train]
    adjacent = sum(
        a.split("'")[0] == b.rsplit(" ", 1)[1] for a, b in zip(lines, lines[1:], strict=False)
    )
    assert adjacent < 20  # 200 in the order made
    forward_only = {i.text for i in evals if i.meta["direction"] == "forward"}
    assert forward_only <= set(lines) and not forward_only >= set(lines[-50:])
    assert sum(line in forward_only for line in lines[:125]) > 5
