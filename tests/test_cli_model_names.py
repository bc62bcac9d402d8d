"""The CLI names the model as the user typed it: ``--model demo`` loads the package's
``assets/demo`` folder, and a refusal or banner said that folder's full path instead."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from unmask.chat import ChatTemplate
from unmask.cli import main, shipped_as_typed
from unmask.commands.chat import banner
from unmask.files import asset_path

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


def test_shipped_as_typed_renames_only_the_shipped_folder_typed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    said = f"{DEMO} has no chat template; {DEMO}/config.json; {DEMO}x"
    assert shipped_as_typed(said, ["chat", "--model", "demo"]) == (
        f"demo has no chat template; {DEMO}/config.json; {DEMO}x")
    assert shipped_as_typed(said, ["generate", "--draft=demo"]).startswith("demo has")
    assert shipped_as_typed(said, ["chat", "--model", DEMO]) == said  # typed in full
    assert shipped_as_typed(said, ["chat", "--system", "demo"]) == said  # not a model
    assert shipped_as_typed(said, ["chat"]) == shipped_as_typed(said, []) == said
    assert shipped_as_typed(said, ["chat", "--model"]) == said  # no value (argparse refuses)
    (tmp_path / "demo").mkdir()  # a local ./demo loads instead: its path is not the package's
    assert shipped_as_typed(said, ["chat", "--model", "demo"]) == said


def test_chat_banner_names_the_model_as_typed():
    loaded = SimpleNamespace(path=Path(DEMO))
    own = ChatTemplate("{{ messages }}", origin=f"chat template of {DEMO}")
    assert banner("demo", loaded, own) == "demo (its chat template)"
    plain = ChatTemplate("{{ messages }}", origin="built-in chat template 'plain'")
    assert banner("demo", loaded, plain) == "demo (built-in chat template 'plain')"
