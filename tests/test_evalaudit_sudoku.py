"""The sudoku generator: its uniqueness test searches for a completion that differs in the
blanked cell (stopping at the first) instead of counting to two, with the same puzzles, and
the generator shows its progress (sudoku9's default size takes minutes)."""

import json
import random

from unmask.tasks import sudoku, write_task
from unmask.tasks.__main__ import main as tasks_main


def _make_puzzle_by_counting(solution, rng):
    """make_puzzle as it was written: a blank kept when the puzzle still counts one
    completion."""
    puzzle = list(solution)
    for i in rng.sample(range(len(puzzle)), len(puzzle)):
        keep, puzzle[i] = puzzle[i], 0
        if sudoku.count_solutions(puzzle, 2) != 1:
            puzzle[i] = keep
    return puzzle


def test_a_search_excluding_the_blanked_digit_agrees_with_counting():
    """Every clue of a random 9x9 puzzle blanked in turn: a completion with another digit
    there exists exactly when the puzzle without the clue has two."""
    rng = random.Random(4)
    solution = sudoku.random_grid(9, rng)
    puzzle = sudoku.make_puzzle(solution, rng, min_clues=30)
    assert sum(1 for v in puzzle if v) == 30
    seen = set()
    for i, v in enumerate(puzzle):
        if not v:
            continue
        fewer = puzzle[:i] + [0] + puzzle[i + 1 :]
        other = sudoku._search(fewer, 1, exclude=(i, v))
        assert bool(other) == (sudoku.count_solutions(fewer, 2) == 2)
        assert all(g[i] != v and sudoku.is_solution(g, fewer) for g in other)
        seen.add(bool(other))
    assert seen == {True, False}  # both answers occur


def test_puzzles_are_the_ones_counting_made():
    """The faster test keeps task files as they were: the same puzzles from the same seed."""
    for n, count in ((4, 30), (9, 4)):
        rng = random.Random(n)
        for _ in range(count):
            solution = sudoku.random_grid(n, rng)
            state = rng.getstate()
            made = sudoku.make_puzzle(solution, rng)
            rng.setstate(state)
            assert made == _make_puzzle_by_counting(solution, rng)


def test_a_partial_grid_is_still_blanked_by_counting():
    """A ``solution`` with blanks is no known completion: cells go only while one is left."""
    rng = random.Random(0)
    grid = sudoku.random_grid(4, rng)
    partial = [0, 0, *grid[2:]]
    puzzle = sudoku.make_puzzle(partial, random.Random(1))
    assert sudoku.count_solutions(puzzle, 2) == 1


def test_the_generator_shows_its_progress(tmp_path, capsys):
    """Plain lines on stderr where it is no terminal (pytest's capture): what it makes, then
    the count; ``--no-progress`` and the library call say nothing; stdout is the record."""
    assert tasks_main(["sudoku4", "--out", str(tmp_path / "a"), "--train", "3", "--eval", "2"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["eval_items"] == 2
    lines = err.strip().splitlines()
    assert lines[0] == "sudoku4: making 5 items (3 to train on, 2 held out)"
    assert lines[-1].startswith("items 5/5 ")
    argv = ["sudoku4", "--out", str(tmp_path / "b"), "--train", "3", "--eval", "2",
            "--no-progress"]  # fmt: skip
    assert tasks_main(argv) == 0
    assert capsys.readouterr().err == ""
    write_task("sudoku4", tmp_path / "c", n_train=3, n_eval=2)
    assert capsys.readouterr().err == ""
    for name in ("train.txt", "eval.jsonl"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text() == (
            tmp_path / "c" / name).read_text()


def test_tasks_without_a_count_show_nothing(tmp_path, capsys):
    assert tasks_main(["countdown3", "--out", str(tmp_path), "--train", "3", "--eval", "2"]) == 0
    assert capsys.readouterr().err == ""
