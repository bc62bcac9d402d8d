"""Checkers of the task suites on hand-checked cases (session 37)."""

import json

import pytest

from unmask.tasks import Item, check_item, read_items


def _reversal(answer: str) -> Item:
    return Item("reversal", "Tom Cruise's mother is", answer, {"direction": "reverse"})


@pytest.mark.parametrize(
    "output, solved",
    [
        (" Mary Lee Pfeiffer", True),
        (" Mary Lee Pfeiffer.", True),
        ("Mary  Lee\tPfeiffer was", True),
        (" Mary Lee Pfeiffer\nsomething else", True),
        (" Mary Lee", False),  # a name cut short
        (" Mary", False),
        (" Mary Lee Pfeifferx", False),
        (" Mary Lee Pfeiffer's son", False),
        (" Mary Ann Pfeiffer", False),
        ("", False),
    ],
)
def test_a_name_of_several_words_is_checked_whole(output, solved):
    """A hand-written reversal item whose name has several words (the celebrities of
    Berglund et al.): the checker compared the output's first word with the whole name, so
    no output solved it and ``read_items`` refused the file's reference answer."""
    assert check_item(_reversal(" Mary Lee Pfeiffer"), output) is solved


@pytest.mark.parametrize(
    "output, solved",
    [(" Mira", True), ("Mira", True), (" Mira.", True), (" Mira. Kato's", True),
     (" Mira is", True), (" Mira's", False), (" Miras", False), (" Mir", False), ("", False),
     (" .Mira", False), (" Kato", False)],
)
def test_a_one_word_name_is_checked_as_before(output, solved):
    item = Item("reversal", "Kato's child is", " Mira", {"direction": "forward"})
    assert check_item(item, output) is solved


def test_a_task_file_of_full_names_is_read(tmp_path):
    line = {"task": "reversal", "prompt": "Tom Cruise's mother is",
            "answer": " Mary Lee Pfeiffer", "meta": {"direction": "reverse"}}
    (tmp_path / "eval.jsonl").write_text(json.dumps(line) + "\n")
    (item,) = read_items(tmp_path)
    assert item.answer == " Mary Lee Pfeiffer"


def test_a_sampled_task_run_names_its_seed(tmp_path):
    """At a temperature above 0 the outputs, and so the solve rates, are the seed's draws:
    ``unmask eval --task-file --temperature 1 --seed 3`` recorded the seed nowhere (the
    sampling line and the JSON named the decoder and temperature only). A greedy run's
    outputs do not depend on it, and it is not named."""
    import torch

    from unmask.checkpoint import load, save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tasks import write_task
    from unmask.tasks.score import score_items
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48)
    save_checkpoint(tmp_path / "ckpt", model=Transformer(cfg), tokenizer=tok)
    loaded = load(tmp_path / "ckpt")
    write_task("reversal", tmp_path / "task", n_train=1, n_eval=1, seed=0)
    items = read_items(tmp_path / "task")
    sampled = score_items(loaded, items, given={"temperature": 1.0, "seed": 3})
    assert sampled.sampling["seed"] == 3 and sampled.sampling["temperature"] == 1.0
    greedy = score_items(loaded, items, given={"seed": 3})
    assert "seed" not in greedy.sampling


def test_the_generator_on_a_closed_pipe_exits_quietly(tmp_path, monkeypatch, capsys):
    """``python -m unmask.tasks ... | head -c 0``: printing task.json raised BrokenPipeError,
    a traceback after the files were written; now exit 141 (128 + SIGPIPE) as ``unmask``
    does, with the files in place."""
    import sys

    from unmask.tasks.__main__ import main as tasks_main

    sink = open(tmp_path / "sink", "w")  # noqa: SIM115 - its descriptor is redirected

    class Closed:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            return sink.fileno()

    monkeypatch.setattr(sys, "stdout", Closed())
    try:
        code = tasks_main(["reversal", "--out", str(tmp_path / "t"), "--train", "1",
                           "--eval", "1"])
    finally:
        sink.close()
    assert code == 141
    assert capsys.readouterr().err == ""
    assert (tmp_path / "t" / "task.json").is_file()
