"""The text formats shown in the tasks' docs are lines their checkers accept."""

import re
from pathlib import Path

from unmask.tasks import Item, check_item, countdown

DOCS = Path(__file__).resolve().parents[1] / "docs" / "evaluation.md"


def test_the_countdown_docstring_example_solves_its_prompt():
    """The module's example read ``12,7,3>33:`` for steps that end at 22."""
    doc = countdown.__doc__
    prompt, answer = re.search(r'prompt ``"([^"]+)"``, answer ``"([^"]+)"``', doc).groups()
    numbers, target = prompt.rstrip(":").split(">")
    assert countdown.check_steps(answer, [int(x) for x in numbers.split(",")], int(target))


def test_the_evaluation_docs_training_lines_are_solved_lines():
    """The table of docs/evaluation.md shows a sudoku and a countdown line: each its prompt
    and an answer the task's checker accepts."""
    text = DOCS.read_text()
    sudoku = re.search(r"\| `sudoku4`, `sudoku9` \| `(\d+)=(\d+)`", text).groups()
    item = Item("sudoku4", sudoku[0] + "=", sudoku[1], {"puzzle": sudoku[0]})
    assert check_item(item, item.answer)
    line = re.search(r"\| `countdown3`, `countdown4` \| `([\d,]+)>(\d+):([^`]+)`", text).groups()
    numbers = [int(x) for x in line[0].split(",")]
    item = Item("countdown3", f"{line[0]}>{line[1]}:", line[2],
                {"numbers": numbers, "target": int(line[1])})  # fmt: skip
    assert check_item(item, item.answer)


def test_held_out_4x4_puzzles_have_solutions_seen_in_training(tmp_path):
    """What the docs say: held-out puzzles are new, their solutions are not (288 grids)."""
    from unmask.tasks import read_items, write_task

    write_task("sudoku4", tmp_path, n_train=2000, n_eval=20, seed=0)
    lines = (tmp_path / "train.txt").read_text().splitlines()
    seen = {line.split("=")[1] for line in lines}
    puzzles = {line.split("=")[0] for line in lines}
    items = read_items(tmp_path)
    assert len(seen) > 280
    assert all(i.answer in seen and i.prompt[:-1] not in puzzles for i in items)
    assert "Held out are puzzles, not solutions" in DOCS.read_text()


def test_countdown_reads_the_first_line_as_the_docs_say():
    item = Item("countdown3", "6,39,2>35:", "39+2=41,41-6=35", {"numbers": [6, 39, 2],
                                                                "target": 35})
    assert "`countdown.check_steps` on the first line" in DOCS.read_text()
    assert check_item(item, " 39+2=41,41-6=35\nanything")
    assert not check_item(item, "39+2=41,41-6=35 anything")
