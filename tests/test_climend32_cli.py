"""Follow-ups to the command line's front door (session 32 review): the ``--model`` hint
looks at positional words only and decides by ``--model``'s own rule, ``unmask help``
refuses what it cannot show, shlex loads on the error path only, and stdout closed
(``>&-``) is no traceback on the Ctrl-C path that ends at once."""

import subprocess
import sys

import pytest

from unmask import cli
from unmask.cli import main
from unmask.files import asset_path

REQUIRED = "the following arguments are required: --model"


def _refusal(argv, capsys):
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert REQUIRED in err
    return err


def test_model_hint_skips_flag_values(tmp_path, monkeypatch, capsys):
    """``generate --draft DIR hi`` and ``generate --prompt demo`` suggested ``--model DIR``
    and ``--model demo``: the words were the drafter and the prompt, typed with their
    flags. A model typed as a positional word (also after ``--``) is still named."""
    demo = asset_path("demo")
    if not (demo / "config.json").is_file():
        pytest.skip("demo checkpoint not bundled")
    monkeypatch.chdir(tmp_path)  # no ./demo here
    for argv in (["generate", "--draft", str(demo), "hi"], ["generate", "--prompt", "demo"],
                 ["generate", "--prompt=x", "--steps", "4", "--stop", "demo"]):
        assert "a model is given" not in _refusal(argv, capsys), argv
    for argv, word in ((["generate", "--steps", "4", "demo"], "demo"),
                       (["generate", "--prompt", "x", "--", str(demo)], str(demo))):
        assert f"(a model is given as --model {word})" in _refusal(argv, capsys)


def test_model_hint_follows_the_rule_of_model(tmp_path, monkeypatch, capsys):
    """Where ``./demo`` exists, ``--model Demo`` is refused as ambiguous
    (``commands.model_choice``), yet the hint suggested ``--model Demo``; a dataset folder
    is no model either."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    assert "a model is given" not in _refusal(["generate", "Demo", "hi"], capsys)
    with pytest.raises(SystemExit):
        main(["generate", "--model", "Demo", "hi"])
    assert "ambiguous" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["help", "generate", "extra"], ["help", "--version"]])
def test_help_refuses_more_than_one_command(argv, capsys):
    """``unmask help generate extra`` said "unknown command 'help'" and ``unmask help
    --version`` printed the version."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "unmask help: error: help takes one command" in captured.err


def test_help_help_is_the_commands_list(capsys):
    """``unmask help help`` said "unknown command 'help'"."""
    with pytest.raises(SystemExit) as done:
        main(["help", "help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("usage: unmask [-h]")


def test_shlex_is_loaded_on_the_error_path_only():
    """``from shlex import quote`` at the top of unmask.cli loaded shlex on every start; only
    the ``--model`` hint uses it."""
    code = "import sys, unmask.cli; print('shlex' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_ctrl_c_in_bpe_training_with_stdout_closed(monkeypatch, capsys):
    """Ctrl-C with a tokenizer trainer left in native code ends the process at once
    (``os._exit``) after flushing; with stdout closed (``>&-``, ``sys.stdout`` None) that
    flush raised AttributeError and the exit was never reached."""
    import unmask.tokenizer

    def interrupted():
        raise KeyboardInterrupt

    def exit_now(code):
        raise SystemExit(code)

    monkeypatch.setattr(unmask.tokenizer, "ABANDONED", True)
    monkeypatch.setattr(cli, "_import_torch_whole", interrupted)
    monkeypatch.setattr(cli.os, "_exit", exit_now)
    monkeypatch.setattr(sys, "stdout", None)
    with pytest.raises(SystemExit) as ended:
        main(["generate", "--model", "demo", "hi"])
    monkeypatch.undo()
    assert ended.value.code == 130
    assert "unmask generate: interrupted" in capsys.readouterr().err
