"""Session 38 (fasterr): a mistake that needs no model is refused before torch loads. ``unmask
serve --port 99999``, ``generate --block-length 5``, ``fill-form`` of a mistyped template
file, a ``--model`` that names nothing: each took 5-7 s on the shared 2-core machine (torch
imported first) to say one line; each command's ``check_flags`` (run by ``unmask.cli`` before
torch) now says the same line, exit 2, in a fraction of a second (benchmarks/startup.py)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from cli_helpers import refusal

NOWHERE = "/nonexistent-unmask-fasterr38"


FORM = '{"a": "<int>"}'

CASES = [
    (["serve", "--model", "demo", "--port", "99999"],
     "unmask serve: error: --port must be in 1..65535, got 99999"),
    (["serve", "--model", "demo", "--port", "0"],
     "unmask serve: error: --port must be in 1..65535, got 0"),
    (["serve", "--model", "demo", "--host", ""],
     "unmask serve: error: --host is empty (an unset variable?): give an address, 127.0.0.1 for "
     "this machine only or 0.0.0.0 for every interface"),
    (["serve", "--model", "demo", "--max-batch", "0"],
     "unmask serve: error: --max-batch must be a finite number > 0, got 0"),
    (["serve", "--model", "demo", "--draft-steps", "2"],
     "unmask serve: error: --draft-steps applies with --draft (speculative decoding)"),
    # ServerLimits' rules across flags, the API key, --model and --draft (session 39:
    # they waited for torch)
    (["serve", "--model", "demo", "--batch-wait", "400"],
     "unmask serve: error: --batch-wait must be less than --timeout (300 s: a lone request "
     "would wait it out), got 400"),
    (["serve", "--model", "demo", "--max-slow-checks", "2000"],
     "unmask serve: error: --max-slow-checks must be at most 1024 (threads of each kind), got "
     "2000"),
    (["serve", "--model", "demo", "--api-key", ""],
     "unmask serve: error: the API key is blank: give a key (--api-key or UNMASK_API_KEY), or "
     "none for no authentication"),
    (["serve", "--model", f"{NOWHERE}/run", "--port", "8123"],
     f"unmask serve: error: {NOWHERE}/run: no such folder"),
    (["serve", "--model", "demo", "--draft", f"{NOWHERE}/drafter"],
     f"unmask serve: error: {NOWHERE}/drafter: no such folder"),
    (["generate", "--model", "demo", "--gen-length", "64", "--block-length", "5", "hi"],
     "unmask generate: error: --gen-length (64) must be a multiple of --block-length (5); try "
     "--block-length 4 or 8 or --gen-length 60 or 65"),
    (["chat", "--model", "demo", "--gen-length", "64", "--block-length", "5"],
     "unmask chat: error: --gen-length (64) must be a multiple of --block-length (5); try "
     "--block-length 4 or 8 or --gen-length 60 or 65"),
    (["generate", "--model", "demo", "--prompt-file", f"{NOWHERE}/prompts.txt"],
     f"unmask generate: error: {NOWHERE}/prompts.txt: no such prompt file"),
    (["fill-form", "--model", "demo", f"{NOWHERE}/form.json"],
     f"unmask fill-form: error: {NOWHERE}/form.json: no such file (give a template file, '-' "
     "for stdin, or the JSON itself)"),
    (["fill-form", "--model", "demo", "--schema", f"{NOWHERE}/schema.json"],
     f"unmask fill-form: error: {NOWHERE}/schema.json: no such file (give a schema file, '-' "
     "for stdin, or the JSON itself)"),
    (["fill-form", "--model", "demo"],
     "unmask fill-form: error: give a TEMPLATE or --schema SCHEMA (exactly one)"),
    (["fill-form", "--model", "demo", "--gen-length", "5", FORM],
     "unmask fill-form: error: --gen-length does not apply: the holes' types set the lengths "
     "(<text:2-8>, <digits:4>)"),
    (["fill-form", "--model", "demo", "--temperature", "-1", FORM],
     "unmask fill-form: error: --temperature must be a finite number >= 0, got -1.0"),
    (["infill", "--model", "demo", "a [MASK]", "--gen-length", "4"],
     "unmask infill: error: --gen-length does not apply: the template sets each gap's length "
     "([MASK:n], [MASK:min-max])"),
    (["edit", "--model", "demo", "--text", "abc", "--span", "1:2", "--gen-length", "3"],
     "unmask edit: error: --gen-length does not apply: a span is refilled with as many tokens "
     "as it held"),
    (["generate", "--model", f"{NOWHERE}/run", "hi"],
     f"unmask generate: error: {NOWHERE}/run: no such folder"),
    (["chat", "--model", "runs/no-such-run-fasterr38"],
     "unmask chat: error: runs/no-such-run-fasterr38: no such folder"),
    (["edit", "--model", "demp", "--text", "abc", "--span", "1:2"],
     "unmask edit: error: demp: no such folder (did you mean demo, the shipped model?)"),
    (["edit", "--model", f"{NOWHERE}/run", "--text", "abc", "--span", "1:2"],
     f"unmask edit: error: {NOWHERE}/run: no such folder"),
    (["fill-form", "--model", "someorg/somemodel-fasterr38", FORM],
     "unmask fill-form: error: someorg/somemodel-fasterr38: no such folder; unmask never "
     "downloads: fetch it first (e.g. `hf download someorg/somemodel-fasterr38 --local-dir "
     "DIR`) and pass DIR"),
]


@pytest.mark.parametrize("argv,said", CASES, ids=[" ".join(a[:1] + a[3:5]) for a, _ in CASES])
def test_a_mistake_that_needs_no_model_is_refused_before_torch_loads(argv, said):
    """The same one line and exit 2 as when the command loaded torch first, and torch not
    imported at the refusal."""
    assert refusal(argv) == said + "\n"


def test_a_missing_model_is_the_same_line_from_the_library(tmp_path):
    """``unmask.load`` (``checkpoint_dir``) says what the command line says first: one
    implementation, ``unmask.folders.missing_model``."""
    from unmask.checkpoint import checkpoint_dir
    from unmask.errors import UserError
    from unmask.folders import missing_model

    for path in (str(tmp_path / "run"), "demp", "someorg/somemodel", "runs/nope"):
        with pytest.raises(UserError) as e:
            checkpoint_dir(path)
        assert str(e.value) == missing_model(path)
    assert missing_model(str(tmp_path)) is None and missing_model("demo") is None


def test_validate_says_the_block_rule_of_the_command_line():
    """``unmask.sampling.validate`` refuses blocks that do not divide the length in the line
    ``unmask.config.check_block_length`` says before torch loads."""
    from unmask.config import SampleConfig, check_block_length
    from unmask.errors import UserError
    from unmask.sampling import validate

    with pytest.raises(UserError) as early:
        check_block_length(64, 5)
    with pytest.raises(UserError) as late:
        validate(SampleConfig(gen_length=64, block_length=5, steps=64))
    assert str(early.value) == str(late.value) == (
        "gen_length (64) must be a multiple of block_length (5); try block_length 4 or 8 or "
        "gen_length 60 or 65")


def test_a_prompt_file_that_is_there_is_read_once(tmp_path, monkeypatch):
    """The early check reads no file that is there (a pipe, ``<(...)``, is read once, in
    ``run``): only a missing one, or a folder, is refused before torch."""
    from unmask.commands import generate

    reads = []
    monkeypatch.setattr("unmask.files.read_user_text", lambda *a, **k: reads.append(a))
    there = tmp_path / "prompts.txt"
    there.write_text("hi\n")
    generate.check_flags(_generate_args(str(there)))
    assert reads == []


def _generate_args(prompt_file: str) -> Any:
    from unmask.cli import build_parser

    return build_parser(["generate"]).parse_args(
        ["generate", "--model", "demo", "--prompt-file", prompt_file])


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux's /proc/self/fd")
def test_fill_form_reads_a_template_from_a_pipe_by_name():
    """``unmask fill-form /dev/stdin`` or ``<(...)`` (a pipe, not a regular file) was "no such
    file", by the early check and by the reader alike."""
    import argparse

    from unmask.commands.fill_form import _read, check_flags

    r, w = os.pipe()
    os.write(w, b'{"name": "<text:2-8>"}\n')
    os.close(w)
    try:
        name = f"/proc/self/fd/{r}"
        check_flags(argparse.Namespace(template=name, schema=None, gen_length=None,
                                       model="demo"))
        assert _read(name, "template")[0] == '{"name": "<text:2-8>"}\n'
    finally:
        os.close(r)
