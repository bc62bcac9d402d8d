"""The CLI names the model as the user typed it: ``--model demo`` loads the package's
``assets/demo`` folder, and a refusal or banner said that folder's full path instead
(``Loaded.name``; more in test_named_model.py)."""

from pathlib import Path

import pytest

from unmask.chat import ChatTemplate
from unmask.cli import main
from unmask.commands.chat import banner
from unmask.files import asset_path
from unmask.loaded import Loaded

DEMO = str(asset_path("demo"))


@pytest.mark.parametrize("argv", [
    ["chat", "--model", "demo", "--no-live"],
    ["generate", "--model=demo", "--chat", "hi", "--no-live"],
])
def test_no_chat_template_names_the_shipped_model_as_typed(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no ./demo folder here: demo is the shipped model
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"unmask {argv[0]}: error: demo has no chat template"), err
    assert DEMO not in err


def test_chat_banner_names_the_model_as_typed():
    loaded = Loaded(model=None, tokenizer=None, config=None, path=Path(DEMO), name="demo")
    own = ChatTemplate("{{ messages }}", origin="chat template of demo")
    assert banner(loaded, own) == "demo (its chat template)"
    plain = ChatTemplate("{{ messages }}", origin="built-in chat template 'plain'")
    assert banner(loaded, plain) == "demo (built-in chat template 'plain')"
