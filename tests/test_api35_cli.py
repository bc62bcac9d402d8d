"""Session 35 (api): the command line as a demanding user meets it: standard input closed
(``<&-``) is one line, and no flag is offered that refuses every value."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from unmask.cli import build_parser, main


def test_prompt_file_stdin_closed_is_one_line(monkeypatch, capsys):
    """``unmask generate --prompt-file - <&-``: Python sets ``sys.stdin`` to None, and reading
    it was an ``AttributeError`` traceback with exit status 1."""
    monkeypatch.setattr(sys, "stdin", None)
    assert main(["generate", "--model", "demo", "--prompt-file", "-"]) == 2
    err = capsys.readouterr().err
    assert err == ("unmask generate: error: standard input is closed: give the text another "
                   "way, or pipe it in\n")


def test_infill_template_from_closed_stdin_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", None)
    assert main(["infill", "--model", "demo", "-"]) == 2
    assert capsys.readouterr().err.startswith("unmask infill: error: standard input is closed")


def _long_flags(command: str) -> set[str]:
    parser = build_parser([command])
    sub = next(a for a in parser._actions if a.dest == "command").choices[
        command.replace("_", "-")]
    return {s for a in sub._actions for s in a.option_strings if s.startswith("--")}


@pytest.mark.parametrize("command", ["generate", "chat", "infill", "edit", "fill_form"])
def test_no_flag_for_a_sequence_field(command):
    """``--exempt-ids TEXT`` was listed (its own help said "no command-line flag") and refused
    every value it could be given (``--exempt-ids 5``: "must be a list of token ids")."""
    flags = _long_flags(command)
    assert "--exempt-ids" not in flags and "--repetition-penalty" in flags


def test_dataclass_flags_skip_tuples_and_lists():
    import argparse

    from unmask.commands import add_dataclass_flags

    @dataclasses.dataclass
    class Options:
        count: int = 1
        ids: tuple[int, ...] = ()
        names: list[str] = dataclasses.field(default_factory=list)

    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, Options)
    flags = {s for a in parser._actions for s in a.option_strings}
    assert "--count" in flags and "--ids" not in flags and "--names" not in flags


def test_tokens_per_step_counts_no_padding_of_later_segments(tmp_path, capsys):
    """A BD3-LM run in segments whose row ended at EOS in its first segment: the later
    segments' columns hold padding no step wrote, and were counted as committed (``--gen-length
    100 --segment-length 20`` that ended in the first block of 4 reported 25 tokens/step; a
    block decoder commits at most a block a step)."""
    import re

    import torch

    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48, **tok.special_ids(),
                       attention="block-causal", block_size=4, objective="bd3lm")
    torch.manual_seed(1)
    path = save_checkpoint(tmp_path / "bd3lm", model=Transformer(cfg), tokenizer=tok)
    argv = ["generate", "--model", str(path), "ab", "--gen-length", "100",
            "--segment-length", "20", "--no-live"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    per_step = float(re.search(r"([\d.]+) tokens/step", err)[1])
    tokens = int(re.search(r"(\d+) tokens?,", err)[1])
    assert tokens < 20, "the row should end in its first segment for this test to bite"
    assert 0 < per_step <= 4, err


class _Typed:
    """Standard input a person types into: a terminal holding ``text``."""

    def __init__(self, text: str) -> None:
        self._text = text

    def isatty(self) -> bool:
        return True

    def read(self, *_: int) -> str:
        text, self._text = self._text, ""
        return text


def test_prompts_read_from_a_terminal_say_how_to_end_them(monkeypatch, capsys):
    """``unmask generate --prompt-file -`` in a terminal waited without a word (``unmask
    prepare -`` says it reads the terminal and how to end it)."""
    monkeypatch.setattr(sys, "stdin", _Typed("In the beginning\n"))
    argv = ["generate", "--model", "demo", "--prompt-file", "-", "--gen-length", "4",
            "--no-live", "--json"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err.startswith("unmask generate: reading the prompts, one a line, from the "
                          "terminal; end it with Ctrl-D")
    assert '"prompt": "In the beginning"' in out


def test_prompts_piped_in_are_read_without_a_word(monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("In the beginning\n"))
    argv = ["generate", "--model", "demo", "--prompt-file", "-", "--gen-length", "4", "--json"]
    assert main(argv) == 0
    assert "Ctrl-D" not in capsys.readouterr().err


def test_no_progress_bar_where_stderr_is_closed(monkeypatch):
    """tqdm wrote to ``sys.stderr`` None: an ``AttributeError`` (distill's trajectories, the
    task sets' items, run with ``2>&-``)."""
    from unmask.progress import progress_bar

    monkeypatch.setattr(sys, "stderr", None)
    assert progress_bar("trajectories", 3) == (None, None)


def test_progress_with_stderr_closed_is_dropped(monkeypatch):
    """``unmask train ... 2>&-``: Python's ``sys.stderr`` is None, and the first progress
    line was an ``AttributeError`` (``None.write``) that ended the run before it started."""
    from unmask.progress import progress_bar, stderr_may_close

    monkeypatch.setattr(sys, "stderr", None)
    with stderr_may_close():
        print("a note", file=sys.stderr, flush=True)
        bar, plain = progress_bar("train", 3)
        if plain is not None:
            plain.start("3 steps")
            plain.line(1)
        if bar is not None:
            bar.update(1)
            bar.close()
    assert sys.stderr is None


def test_train_with_stderr_closed_saves_its_run(monkeypatch, tmp_path, word_corpus, capsys):
    data = word_corpus("api35", ["alpha", "beta", "gamma", "delta"])
    monkeypatch.setattr(sys, "stderr", None)
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny",
            "--steps", "2", "--seq-len", "16", "--batch-size", "2", "--threads", "1"]
    assert main(argv) == 0
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").is_file()


def test_generate_with_stderr_closed_writes_only_the_text(monkeypatch, capsys):
    """``unmask generate ... 2>&- > out.txt``: ``print(file=sys.stderr)`` with stderr None
    writes to stdout, so the summary line ("4 tokens, 4 steps, ...") ended up in the text."""
    monkeypatch.setattr(sys, "stderr", None)
    assert main(["generate", "--model", "demo", "In the", "--gen-length", "4", "--no-live"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("In the") and out.count("\n") <= 2 and "NFE" not in out, out
    assert sys.stderr is None
    assert main(["generate", "--model", "demo", "hi", "--gen-length", "0"]) == 2
    assert capsys.readouterr().out == ""  # the error line too: not into the text


def test_generate_refuses_a_closed_stdout_before_it_runs(monkeypatch, capsys):
    """``unmask generate ... >&-``: Python's ``sys.stdout`` is None, ``print`` dropped the
    text, and the run exited 0 with nothing to show for it."""
    monkeypatch.setattr(sys, "stdout", None)
    assert main(["generate", "--model", "demo", "hi", "--gen-length", "4", "--no-live"]) == 2
    assert capsys.readouterr().err.startswith(
        "unmask generate: error: standard output is closed: the generated text would be lost")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    import torch

    from unmask.checkpoint import load, save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48, **tok.special_ids())
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path_factory.mktemp("api35") / "m", model=Transformer(cfg),
                           tokenizer=tok)
    return load(path)


def test_a_prompt_too_long_among_several_is_named(small):
    """A prompt file of many lines, one too long: the refusal said "prompt (86 tokens) + ..."
    without saying which prompt to shorten."""
    from unmask import api
    from unmask.errors import UserError

    prompts = ["a", "b" * 86, "c"]
    with pytest.raises(UserError, match=r"^prompt 2 of 3 \(86 tokens\) \+ gen_length \(8\) "
                                        r"exceeds the model's max_seq_len \(48\); use a shorter"):
        api.generate(small, prompts, config={"gen_length": 8}, n=2)
    with pytest.raises(UserError, match=r"^prompt \(86 tokens\) \+ gen_length \(8\)"):
        api.generate(small, prompts[1], config={"gen_length": 8})  # one: as it was
    out = api.generate(small, ["a", "b" * 20], config={"gen_length": 8})  # all fit: runs
    assert len(out.texts) == 2


def test_the_command_line_names_the_prompt_too(small, tmp_path, capsys):
    lines = tmp_path / "prompts.txt"
    lines.write_text("a\n" + "b" * 86 + "\nc\n")
    argv = ["generate", "--model", str(small.path), "--prompt-file", str(lines),
            "--gen-length", "8"]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(  # the file's line (test_apimend35_cli)
        f"unmask generate: error: prompt on line 2 of {lines} (86 tokens) + --gen-length (8) "
        "exceeds")
