"""The room a task run decodes holds every answer the checker accepts, not only the
reference: a countdown instance has many solutions, some longer than the one written."""

import itertools
import json

import pytest
import torch

from unmask.cli import main
from unmask.tasks import Item, answers, check_item, countdown, read_items, write_task
from unmask.tasks.score import answer_tokens

# 83-4=79,96+79=175 (17 characters) is the reference; 96+83=179,179-4=175 (19) solves it too
LONG = {"task": "countdown3", "prompt": "4,96,83>175:", "answer": "83-4=79,96+79=175",
        "meta": {"numbers": [4, 96, 83], "target": 175}}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    root = tmp_path_factory.mktemp("roomrun")
    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48)
    save_checkpoint(root, model=Transformer(cfg), tokenizer=tok)
    return root


def _all_texts(numbers, top):
    """Every two-step text over ``numbers`` (3 of them) whose operands are given numbers or
    values up to ``top``, the result written as the arithmetic gives it (negative, floored):
    an enumeration that does not follow the Countdown rules, for the checker to sort."""
    values = sorted(set(numbers) | set(range(1, top + 1)))
    for a, b in itertools.product(sorted(set(numbers)), repeat=2):
        for op in countdown.OPS:
            first = f"{a}{op}{b}={_calc(a, op, b)}"
            for c, d in itertools.product(values, repeat=2):
                for op2 in countdown.OPS:
                    yield f"{first},{c}{op2}{d}={_calc(c, op2, d)}"


def _calc(a, op, b):
    return {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]


@pytest.mark.parametrize("numbers", [[2, 3, 4], [3, 3, 6], [1, 2, 2]])
def test_countdown_solutions_are_what_check_steps_accepts(numbers):
    """For every target, the solutions listed are exactly the two-step texts check_steps
    accepts among all of them (operands up to the largest first result, so none is left out)."""
    top = max(numbers) ** 2
    accepted: dict[int, set[str]] = {}
    for text in _all_texts(numbers, top):
        target = int(text.rsplit("=", 1)[1])
        if countdown.check_steps(text, numbers, target):
            accepted.setdefault(target, set()).add(text)
    assert len(accepted) > 5
    for target, texts in accepted.items():
        assert countdown.solutions(numbers, target) == sorted(texts), target
    assert countdown.solutions(numbers, 10**6) == []


def test_countdown_solutions_cover_generated_instances_and_are_bounded():
    """The written solution is always among them (3 and 4 numbers); past MAX_SEARCH numbers
    the search is refused, and an item of that many falls back to its reference."""
    import random

    rng = random.Random(3)
    for k in (3, 4):
        for _ in range(20):
            numbers, target, steps = countdown.make_instance(k, rng)
            found = countdown.solutions(numbers, target)
            assert ",".join(steps) in found
            assert all(countdown.check_steps(s, numbers, target) for s in found)
    with pytest.raises(ValueError, match="up to 5 numbers"):
        countdown.solutions([1] * 6, 6)
    six = Item("countdown4", "1,1,1,1,1,1>6:", "1+1=2,2+1=3,3+1=4,4+1=5,5+1=6",
               {"numbers": [1] * 6, "target": 6})  # fmt: skip
    assert check_item(six, six.answer) and answers(six) == [six.answer]


def test_answers_of_sudoku_and_reversal_are_the_reference(tmp_path):
    """A sudoku solution has the grid's length and reversal reads only the name: the
    reference is the longest answer either counts."""
    for name in ("sudoku4", "reversal"):
        write_task(name, tmp_path / name, n_train=1, n_eval=2, seed=0)
        for item in read_items(tmp_path / name):
            assert answers(item) == [item.answer]


def test_countdown_answers_hold_the_longer_solutions():
    item = Item(**LONG)
    found = answers(item)
    assert found[0] == item.answer and len(found) == len(set(found))
    assert "96+83=179,179-4=175" in found
    assert max(map(len, found)) == 19 > len(item.answer)


class _PlusIsTen:
    """A tokenizer stand-in: a ``+`` takes 10 tokens, any other character one."""

    def encode_batch(self, texts):
        return [[0] * (len(t) + 9 * t.count("+")) for t in texts]


def test_the_room_is_counted_in_the_models_tokens():
    """The longest answer in tokens, not in characters, sets the room: of 2,3,4>10, the
    shortest solution (12 characters, a +) takes the most tokens."""
    item = Item("countdown3", "2,3,4>10:", "3*4=12,12-2=10", {"numbers": [2, 3, 4], "target": 10})
    assert "2*3=6,6+4=10" in answers(item) and max(map(len, answers(item))) == 14
    assert answer_tokens(_PlusIsTen(), [item]) == 12 + 9


def test_a_task_run_has_room_for_a_solution_longer_than_the_reference(tiny_run, tmp_path,
                                                                      capsys):
    """The item's reference takes 17 bytes, another solution 19: the run decodes 20 tokens
    (19 and the EOS), where it decoded 18 and cut that solution, which the checker accepts.
    A --gen-length that cuts the reference is refused; one that holds it is taken."""
    (tmp_path / "eval.jsonl").write_text(json.dumps(LONG) + "\n")
    assert check_item(Item(**LONG), "96+83=179,179-4=175")
    argv = ["eval", str(tiny_run), "--task-file", str(tmp_path), "--no-score", "--no-plot",
            "--json", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    sampling = json.loads(capsys.readouterr().out)["tasks"]["sampling"]
    assert sampling["gen_length"] == sampling["steps"] == 20
    assert main([*argv, "--gen-length", "17"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the longest takes 18 tokens with its EOS" in err[0]
    assert main([*argv, "--gen-length", "18"]) == 0
    assert json.loads(capsys.readouterr().out)["tasks"]["sampling"]["gen_length"] == 18


def test_past_the_context_the_error_names_the_length_that_fits(tmp_path, capsys):
    """A model of 32 positions: the 13-token prompt (with its EOS) and the 20 of room do not
    fit, the reference's 18 do: the one-line error says so, and that length runs."""
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32)
    save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    (tmp_path / "eval.jsonl").write_text(json.dumps(LONG) + "\n")
    argv = ["eval", str(tmp_path / "run"), "--task-file", str(tmp_path), "--no-score",
            "--no-plot", "--json", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(13 tokens with the EOS before it) and 20 tokens" in err[0]
    assert err[0].endswith("; --gen-length 18 fits, and cuts only the solutions longer than "
                           "every reference answer")
    assert main([*argv, "--gen-length", "18"]) == 0


def test_one_number_has_no_solution_and_no_items_are_one_error(tiny_run):
    """solutions lists only what check_steps accepts: with one number, nothing (it listed
    the empty answer); score_items of no items is a UserError, not max()'s ValueError."""
    from unmask.checkpoint import load
    from unmask.errors import UserError
    from unmask.tasks.score import score_items

    assert countdown.solutions([5], 5) == [] and not countdown.check_steps("", [5], 5)
    with pytest.raises(UserError, match="no task items to score"):
        score_items(load(tiny_run), [])


def test_the_room_is_the_files_longest_item(tiny_run):
    """As the docs say: the room is one for all items, so an item decodes with the room of
    the longest item beside it (a subset of the file may get a shorter one)."""
    from unmask.checkpoint import load
    from unmask.tasks.score import task_config

    loaded = load(tiny_run)
    short = Item("countdown3", "2,3,4>24:", "2*3=6,6*4=24", {"numbers": [2, 3, 4], "target": 24})
    alone = task_config(loaded, [short], {}).gen_length
    assert alone == 1 + max(map(len, answers(short))) == 15
    assert task_config(loaded, [short, Item(**LONG)], {}).gen_length == 20


def test_a_task_made_without_the_hook_sizes_by_its_reference():
    """``Task(name, summary, make, check)`` still makes a task: its answers are the
    reference."""
    from unmask.tasks import Task

    plain = Task("t", "one answer", lambda rng, a, b: ([], []), lambda item, out: True)
    assert plain.answers(Item("t", "p", "abc")) == ["abc"]
