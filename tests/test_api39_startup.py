"""Session 39 (api): ``unmask prepare``, ``train`` and ``eval`` refuse a mistake that needs no
model and no data read before torch loads, as generate, chat, infill and serve do (session
38 left them: each line waited for ``import torch``, 4-7 s on the shared 2-core machine).
Each command's ``check_flags`` says the line the run said, exit 2; the library says the
same line where it meets the same mistake (``unmask.flag_checks``: one rule each)."""

from __future__ import annotations

import os

import pytest
from cli_helpers import refusal

NOWHERE = "/nonexistent-unmask-api39"
MISSING_DATA = "tests/no-such-corpus-api39"  # a --data that is not there, relative as users type it


CASES = [
    (["prepare", f"{NOWHERE}/a.txt", "-o", f"{NOWHERE}/out"],
     f"unmask prepare: error: {NOWHERE}/a.txt: no such file or directory"),
    (["prepare", "-", "-o", f"{NOWHERE}/out", "--val-fraction", "1"],
     "unmask prepare: error: --val-fraction=1.0 must be in [0, 1)"),
    (["prepare", "-", "-o", f"{NOWHERE}/out", "--vocab-size", "100"],
     "unmask prepare: error: --vocab-size=100 is too small for byte-level BPE (minimum 260)"),
    (["prepare", "-", "-o", f"{NOWHERE}/out", "--tokenizer", "byte", "--vocab-size", "300"],
     "unmask prepare: error: --vocab-size trains a BPE tokenizer (--tokenizer bpe); "
     "--tokenizer byte brings its own vocabulary"),
    (["train"], "unmask train: error: no dataset given (--data DIR from `unmask prepare`)"),
    (["train", "--data", MISSING_DATA, "--out", f"{NOWHERE}/run"],
     f"unmask train: error: {MISSING_DATA}: no such folder; run `unmask prepare` first"),
    # --objective: its names were read from the registry while the flags were parsed, which
    # imported torch before any check (most documented train commands give it)
    (["train", "--data", MISSING_DATA, "--out", f"{NOWHERE}/run", "--objective", "ar"],
     f"unmask train: error: {MISSING_DATA}: no such folder; run `unmask prepare` first"),
    (["train", "--data", MISSING_DATA, "--out", f"{NOWHERE}/run", "--objective", "Hybrid",
      "--lr", "-1"], "unmask train: error: --lr=-1.0 must be in [0, inf)"),
    (["train", "--data", MISSING_DATA, "--objective", "nope"],
     "unmask train: error: argument --objective: unknown objective 'nope' (choose from ar, "
     "bd3lm, distill, embed-diffusion, hybrid, latent-ae, latent-diffusion, mdlm, sedd, sft) "
     "(see: unmask train --help)"),
    (["train", "--data", MISSING_DATA, "--lr", "-1"],
     "unmask train: error: --lr=-1.0 must be in [0, inf)"),
    (["train", "--data", MISSING_DATA, "--seq-len", "0"],
     "unmask train: error: no run directory given (--out)"),
    (["train", "--data", MISSING_DATA, "--out", f"{NOWHERE}/run", "--seq-len", "0"],
     "unmask train: error: --seq-len=0 must be positive"),
    (["train", "--data", MISSING_DATA, "--init", f"{NOWHERE}/run"],
     f"unmask train: error: {NOWHERE}/run: no such folder"),
    (["train", "--config", f"{NOWHERE}/train_config.json"],
     f"unmask train: error: {NOWHERE}/train_config.json: no such file"),
    (["train", "--resume", "--out", NOWHERE],
     f"unmask train: error: {NOWHERE}: nothing to resume (no train_config.json in it)"),
    (["train", "--data", MISSING_DATA, "--model-set", "d_model=x"],
     "unmask train: error: --model-set 'd_model=x': d_model='x' should be int"),
    (["eval", f"{NOWHERE}/run"], f"unmask eval: error: {NOWHERE}/run: no such folder"),
    (["eval", "demo", "--data", f"{NOWHERE}/data"],
     f"unmask eval: error: {NOWHERE}/data: no such folder; run `unmask prepare` first"),
    (["eval", "demo", "--task-file", f"{NOWHERE}/eval.jsonl"],
     f"unmask eval: error: {NOWHERE}/eval.jsonl: no such task file (an eval.jsonl from "
     "`python -m unmask.tasks`)"),
    (["eval", "demo", "--tasks", "arc_easy", "--limit", "2.5"],
     "unmask eval: error: --limit 2.5: items per task is a whole number (below 1, a fraction "
     "of the task)"),
    (["eval", "demo", "--temperature", "-1"],
     "unmask eval: error: --temperature must be a finite number >= 0, got -1.0"),
    (["eval", "demo", "--plot", "curve.jpg"],
     "unmask eval: error: --plot curve.jpg: the loss curve is a PNG; give a FILE.png"),
]


@pytest.mark.parametrize("argv,said", CASES, ids=[" ".join(a[:2] + a[3:5]) for a, _ in CASES])
def test_a_mistake_that_needs_no_model_is_refused_before_torch_loads(argv, said):
    """The same one line and exit 2 as when the command loaded torch first (checked against
    the old code), and torch not imported at the refusal."""
    assert refusal(argv) == said + "\n"


def test_the_library_says_the_same_lines(tmp_path):
    """``unmask.data.prepare`` and ``read_index`` refuse the same mistakes in the lines the
    command line says before torch (one implementation: ``unmask.flag_checks``)."""
    from unmask.data import prepare, read_index
    from unmask.errors import UserError
    from unmask.flag_checks import missing_dataset, missing_input

    (tmp_path / "a.txt").write_text("hello\n")
    for name in ("nope.txt", "a*.txt", "no*.txt", "[x] notes.txt"):
        with pytest.raises(UserError) as e:
            prepare([str(tmp_path / name)], tmp_path / "out", progress=False)
        assert str(e.value) == missing_input(str(tmp_path / name))
    with pytest.raises(UserError, match=r"^vocab_size=100 is too small"):
        prepare([tmp_path / "a.txt"], tmp_path / "out", vocab_size=100, progress=False)
    with pytest.raises(UserError) as e:
        read_index(tmp_path / "nope")
    assert str(e.value) == missing_dataset(tmp_path / "nope")
    assert missing_input(tmp_path / "a.txt") is None and missing_dataset(tmp_path) is None


def _args(*argv: str):
    from unmask.cli import build_parser

    return build_parser([argv[0]]).parse_args(list(argv))


def test_valid_train_flags_pass_the_early_check(tmp_path):
    """Guard: what the early check does not know is left to the run: a ``--data`` file of an
    objective that reads one (sft, distill; a trajectory file), a ``--config`` that may name
    the data, a resume's saved plan; a ``--config`` pipe is not read (it can be read once)."""
    from unmask.commands.train import check_flags

    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"prompt": "a", "response": "b"}\n')
    for argv in (["--data", str(jsonl), "--objective", "sft", "--init", "demo"],
                 ["--data", str(tmp_path / "rows.safetensors"), "--objective", "hybrid"],
                 ["--data", str(tmp_path / "gone.jsonl"), "--objective", "sft"],
                 ["--config", str(jsonl)]):
        check_flags(_args("train", *argv, "--out", str(tmp_path / "run")))
    if os.path.isdir("/proc/self/fd"):
        r, w = os.pipe()
        os.write(w, b'{"data": "x"}')
        os.close(w)
        try:
            check_flags(_args("train", "--config", f"/proc/self/fd/{r}"))
            assert os.read(r, 100) == b'{"data": "x"}'  # still all there for the run
        finally:
            os.close(r)


def test_eval_flags_checked_twice_refuse_nothing_more():
    """Guard: ``eval``'s checks run before torch and again in ``run`` (a caller of run()
    itself); they fill in no defaults, so ``--no-score`` is not refused the second time as
    if ``--samples`` had been typed."""
    from unmask.commands.eval import check_flags

    args = _args("eval", "demo", "--no-score")
    check_flags(args)
    check_flags(args)
    assert args.samples is None and args.prompt_tokens is None


@pytest.mark.parametrize("argv,said", [
    (["eval", "--model", "runs/my run", "--no-score"],
     "unmask eval: error: unrecognized arguments: --model; the run or checkpoint is eval's "
     "first word: unmask eval 'runs/my run' (see: unmask eval --help)"),
    (["eval", "--model=demo"],
     "unmask eval: error: unrecognized arguments: --model; the run or checkpoint is eval's "
     "first word: unmask eval demo (see: unmask eval --help)"),
    (["distill", "--model", "runs/t", "--out", "o"],
     "unmask distill: error: unrecognized arguments: --model; the model to distill is "
     "--teacher runs/t (see: unmask distill --help)"),
    (["convert", "--model"],
     "unmask convert: error: unrecognized arguments: --model; the folder to convert is "
     "convert's first word: unmask convert PATH DST (see: unmask convert --help)"),
    (["prepare", "--model", "x", "-o", "d"],  # no model to take: no hint
     "unmask prepare: error: unrecognized arguments: --model (see: unmask prepare --help)"),
])
def test_model_flag_of_a_command_that_takes_its_model_otherwise_says_how(argv, said, capsys):
    """Every other command that runs a model takes ``--model PATH``; ``unmask eval --model
    RUN`` (the habit) said "unrecognized arguments: --model" and no more. The line now says
    how this command takes it, with the path typed."""
    from unmask.cli import main

    assert main(argv) == 2
    assert capsys.readouterr().err == said + "\n"


def test_train_model_flag_is_model_set_and_says_init(tmp_path, capsys):
    """``unmask train --model demo`` is argparse's ``--model-set demo`` (an abbreviation), so it
    said "--model-set 'demo': expected FIELD=VALUE", not where a model to start from goes. A
    value that names a model (a folder, a shipped name) now adds ``--init``; other values
    keep the plain line."""
    from unmask.cli import main

    run = str(tmp_path / "run")
    assert main(["train", "--data", str(tmp_path), "--out", run, "--model", "demo"]) == 2
    assert capsys.readouterr().err == (
        "unmask train: error: --model-set 'demo': expected FIELD=VALUE; a model to start from "
        "is --init demo\n")
    assert main(["train", "--data", str(tmp_path), "--out", run, "--model-set", "d_model"]) == 2
    assert capsys.readouterr().err == (
        "unmask train: error: --model-set 'd_model': expected FIELD=VALUE\n")


def test_an_empty_input_name_is_one_line_on_the_command_line_and_in_the_library(tmp_path):
    """``unmask prepare "$UNSET" -o d``: the empty name was refused as ``.: no such file or
    directory`` (the current folder is there) while ``prepare([""])`` read the whole current
    folder; both say the name is empty."""
    from unmask.data import prepare
    from unmask.errors import UserError

    err = refusal(["prepare", "", "-o", str(tmp_path / "d")])
    assert "an empty input name" in err
    with pytest.raises(UserError, match="^an empty input name"):
        prepare([""], tmp_path / "e")
