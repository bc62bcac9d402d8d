"""Session 35 (apimend): the review of the api branch. ``generate``'s tokens/step counts each
run's and segment's own rows and steps (rows that ended in an early segment, prompts decoded
in groups); a batch too long for the context is refused with a ``gen_length`` every prompt
fits, naming a prompt file's line; ``prepare -`` reads standard input through the one helper
(``files.user_stdin``); ``eval`` and ``demo`` refuse a closed standard output."""

from __future__ import annotations

import re
import sys
from types import SimpleNamespace

import pytest

from unmask.cli import main


def _checkpoint(folder, seed: int, **options):
    import torch

    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48, **tok.special_ids(),
                       **options)
    torch.manual_seed(seed)
    return save_checkpoint(folder, model=Transformer(cfg), tokenizer=tok)


@pytest.fixture(scope="module")
def mdlm(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("apimend35") / "mdlm", 0)


def _per_step(err: str) -> str:
    return re.search(r"([\d.]+) tokens/step", err)[1]


# ---- tokens/step ------------------------------------------------------------------------


def _run(rows: int, width: int, steps: int) -> SimpleNamespace:
    return SimpleNamespace(tokens=[[0] * 60] * rows, region=(2, 2 + width), steps=steps,
                           segments=None, runs=None)


def test_decoded_work_counts_each_segment_and_run_as_it_ran():
    """Hand counts: four rows in segments of 20, one of which ended in the first: 4 × 20
    positions in 4 × 20 row-steps, then 3 × 20 in 3 × 20 twice: 200 / 200. Two runs joined
    (one ended after 3 positions in 3 steps, the other wrote 16 + 16 + 8 in 14 + 14 + 7):
    43 / 38, not the joined canvas's 2 rows × 40 columns over its 35 steps."""
    from unmask.commands.generate import decoded_work, positions_per_step

    segmented = SimpleNamespace(segments=[_run(4, 20, 20), _run(3, 20, 20), _run(3, 20, 20)],
                                runs=None)
    assert decoded_work(segmented) == (200, 200)
    assert positions_per_step(segmented) == 1.0
    short = SimpleNamespace(segments=[_run(1, 3, 3)], runs=None)
    long = SimpleNamespace(segments=[_run(1, 16, 14), _run(1, 16, 14), _run(1, 8, 7)],
                           runs=None)
    joined = SimpleNamespace(runs=[short, long], segments=None)
    assert decoded_work(joined) == (43, 38)
    assert decoded_work(_run(2, 8, 4)) == (16, 8)  # one run: its columns per step


def test_tokens_per_step_of_rows_that_end_in_different_segments(mdlm, capsys):
    """LLaDA's loop with steps = gen_length commits one token a step in every running row;
    with a row that ended in the first of three segments the summary said 0.83 tokens/step
    (all positions over all rows and all steps; the session-35 review's repro)."""
    from unmask import api

    options = {"gen_length": 60, "segment_length": 20, "steps": 60, "temperature": 1.0,
               "seed": 1}
    out = api.generate(api.load_for_decoding(str(mdlm)), ["ab", "hello there"], config=options,
                       n=2)
    rows = [len(part.tokens) for part in out.result.segments]
    assert rows == [4, 3, 3], "a row should end in the first segment, the others go on"
    argv = ["generate", "--model", str(mdlm), "ab", "hello there", "--n", "2", "--gen-length",
            "60", "--segment-length", "20", "--steps", "60", "--temperature", "1", "--seed",
            "1", "--no-live"]
    assert main(argv) == 0
    assert _per_step(capsys.readouterr().err) == "1.00"  # 200 positions / 200 row-steps


def test_tokens_per_step_of_prompts_decoded_in_groups(tmp_path, capsys):
    """A LLaDA 2.x-style checkpoint (blocks from the first prompt token) decodes prompts of
    unequal lengths modulo its block in groups, one run each, joined (``api._joined``): the
    joined result padded the run that ended early to the widest, and that padding was counted
    (1.14 tokens/step). Hand count: prompt "a" ran 1 segment of 3 columns in 3 steps; "ab" 3
    segments of 16 + 16 + 8 columns in 14 + 14 + 7 steps: 43 / 38 = 1.13."""
    from unmask import api

    path = _checkpoint(tmp_path / "abs", 1, attention="block-causal", block_size=4,
                       objective="bd3lm", block_align="absolute")
    argv = ["generate", "--model", str(path), "a", "ab", "--gen-length", "40",
            "--segment-length", "16", "--steps", "40", "--temperature", "1", "--seed", "2",
            "--policy", "threshold", "--threshold", "0.5", "--no-live"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert _per_step(err) == "1.13", err
    options = {"gen_length": 40, "segment_length": 16, "steps": 40, "temperature": 1.0,
               "seed": 2, "policy": "threshold", "threshold": 0.5}
    out = api.generate(api.load_for_decoding(str(path)), ["a", "ab"], config=options)
    work = [[(p.region[1] - p.region[0], p.steps) for p in run.segments]
            for run in out.result.runs]
    assert work == [[(3, 3)], [(16, 14), (16, 14), (8, 7)]]  # the hand count's


# ---- a batch too long for the context ---------------------------------------------------


def test_the_length_offered_fits_every_prompt(mdlm):
    """Prompts of 1, 42 and 46 tokens with gen_length 8 on a context of 48: the refusal named
    prompt 2 and offered its own room (gen_length <= 6), which prompt 3 then refused (<= 2):
    two rounds. It names the first prompt too long, counts the others, and offers the room of
    the longest."""
    from unmask import api
    from unmask.errors import UserError

    loaded = api.load_for_decoding(str(mdlm))
    prompts = ["a", "b" * 42, "c" * 46]
    with pytest.raises(UserError) as e:
        api.generate(loaded, prompts, config={"gen_length": 8}, n=3)
    assert str(e.value) == (
        "prompt 2 of 3 (42 tokens) + gen_length (8) exceeds the model's max_seq_len (48), as "
        "does 1 other prompt (the longest: prompt 3 of 3, 46 tokens); use gen_length <= 2, "
        "shorter prompts, or segment_length (e.g. 24) to write it in segments that each see "
        "the latest text")
    out = api.generate(loaded, prompts, config={"gen_length": 2})  # the advice, followed
    assert len(out.texts) == 3
    with pytest.raises(UserError, match=r"^prompt 1 of 3 \(46 tokens\) .*, as do 2 other "
                                        r"prompts; use gen_length <= 2, shorter prompts"):
        api.generate(loaded, ["c" * 46, "b" * 42, "d" * 44], config={"gen_length": 8})


def test_a_prompt_file_line_is_named(mdlm, tmp_path, capsys):
    """Blank lines are skipped and the positional prompts come first, so "prompt 2 of 2" was
    line 3 of the file, and "prompt 4 of 4" with two prompts before it."""
    lines = tmp_path / "prompts.txt"
    lines.write_text("a\n\n" + "0" * 46 + "\n")
    base = ["generate", "--model", str(mdlm), "--gen-length", "8"]
    assert main([*base, "--prompt-file", str(lines)]) == 2
    assert capsys.readouterr().err.startswith(
        f"unmask generate: error: prompt on line 3 of {lines} (46 tokens) + --gen-length (8) "
        "exceeds the model's max_seq_len (48); use --gen-length <= 2, a shorter prompt")
    assert main([*base, "x", "y" * 45, "--prompt-file", str(lines), "--n", "2"]) == 2
    assert capsys.readouterr().err.startswith(
        "unmask generate: error: prompt 2 of 4 (45 tokens) + --gen-length (8) exceeds the "
        f"model's max_seq_len (48), as does 1 other prompt (the longest: prompt on line 3 of "
        f"{lines}, 46 tokens); use --gen-length <= 2, shorter prompts")


def test_prompts_from_standard_input_are_named_by_line(mdlm, monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("\n\n" + "0" * 46 + "\nb\n"))
    assert main(["generate", "--model", str(mdlm), "--prompt-file", "-", "--gen-length",
                 "8"]) == 2
    assert capsys.readouterr().err.startswith(
        "unmask generate: error: prompt on line 3 of standard input (46 tokens)")


# ---- standard streams -------------------------------------------------------------------


def test_prepare_from_closed_stdin_is_said_as_generate_says_it(tmp_path, monkeypatch, capsys):
    """``unmask prepare - <&-`` said "-: there is no standard input to read", generate's
    ``--prompt-file -`` "standard input is closed: ...": one helper, one wording."""
    monkeypatch.setattr(sys, "stdin", None)
    argv = ["prepare", "-", "-o", str(tmp_path / "out"), "--tokenizer", "byte", "--no-progress"]
    assert main(argv) == 2
    assert capsys.readouterr().err == ("unmask prepare: error: standard input is closed: give "
                                       "the text another way, or pipe it in\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [["eval", "demo"], ["demo"]])
def test_a_closed_stdout_is_refused_before_the_run(argv, monkeypatch, capsys):
    """``unmask eval ... >&-`` and ``unmask demo >&-``: ``print`` dropped the whole report
    (or showcase) and the command exited 0 after its run."""
    monkeypatch.setattr(sys, "stdout", None)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(rf"unmask {argv[0]}: error: standard output is closed: the \S+ \w+ "
                        r"would be lost; send it to a file \(> out.txt\) or a pipe\n", err), err
