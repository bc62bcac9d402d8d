"""Countdown's checker reads a number only as it is given: ``039`` is not the 39 of the
prompt (it was, and such an answer was longer than any the room decoded holds)."""

import json
import random
import re

import pytest

from unmask.errors import UserError
from unmask.tasks import Item, answers, check_item, countdown, read_items

ITEM = {"task": "countdown3", "prompt": "6,39,2>35:", "answer": "39+2=41,41-6=35",
        "meta": {"numbers": [6, 39, 2], "target": 35}}  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["039+2=41,41-6=35", "39+02=41,41-6=35", "39+2=041,41-6=35", "39+2=41,041-6=35",
     "39+2=41,41-06=35", "39+2=41,41-6=035", "39 + 002 = 41, 41 - 6 = 35"],
)  # fmt: skip
def test_a_number_with_a_leading_zero_is_not_the_number_given(text):
    item = Item(**ITEM)
    assert check_item(item, item.answer) and check_item(item, "39 + 2 = 41, 41 - 6 = 35")
    assert not check_item(item, text)
    assert countdown.parse_steps(text) is None


def test_zero_itself_is_written_as_given():
    """A hand-written instance may give 0: ``0`` is a number, ``00`` is not."""
    assert countdown.check_steps("5+0=5", [5, 0], 5)
    assert "5+0=5" in countdown.solutions([5, 0], 5)
    assert not countdown.check_steps("5+00=5", [5, 0], 5)
    assert not countdown.check_steps("5*0=00,00+5=5", [5, 0, 5], 5)


def test_what_the_checker_accepts_is_a_solution_the_room_holds():
    """Each number of each listed solution written with a leading zero: refused, so every
    accepted text (spaces aside) is one of ``solutions``, whose longest sizes the room."""
    rng = random.Random(7)
    for _ in range(10):
        numbers, target, _steps = countdown.make_instance(3, rng)
        found = countdown.solutions(numbers, target)
        for text in found[:20]:
            assert countdown.check_steps(text, numbers, target)
            spans = [m.span() for m in re.finditer(r"[0-9]+", text)]
            for lo, _hi in spans:
                padded = text[:lo] + "0" + text[lo:]
                assert not countdown.check_steps(padded, numbers, target), padded


def test_a_task_file_answer_with_a_leading_zero_is_refused(tmp_path):
    """The reference sizes the room: one padded with zeros is not an answer the task takes."""
    bad = tmp_path / "eval.jsonl"
    bad.write_text(json.dumps({**ITEM, "answer": "039+2=41,41-6=35"}) + "\n")
    with pytest.raises(UserError, match="is not one the countdown3 checker accepts"):
        read_items(bad)
    bad.write_text(json.dumps(ITEM) + "\n")
    (item,) = read_items(bad)
    assert max(map(len, answers(item))) == len("39+2=41,41-6=35")
