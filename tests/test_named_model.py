"""A model is named in messages as its caller named it (``Loaded.name``): ``load("demo")``
reads the package's ``assets/demo`` folder and ``load("runs/mine")`` its ``checkpoint/``
folder, and the chat refusal, the template's origin and the chat banner said that folder."""

from pathlib import Path

import pytest

import unmask
from unmask import api
from unmask.chat import PLAIN_CHAT_TEMPLATE
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.commands.chat import banner
from unmask.config import model_preset
from unmask.errors import UserError
from unmask.files import asset_path
from unmask.model import Transformer
from unmask.server.routes.chat import chat_template as server_template
from unmask.tokenizer import byte_tokenizer

DEMO = str(asset_path("demo"))
MINE = "runs/mine"


def save_run(root: Path, chat_template: str | None = None) -> None:
    """A tiny byte-level run at ``root/runs/mine`` (its weights in ``checkpoint/``)."""
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32, **tok.special_ids())
    if chat_template is not None:
        cfg.chat_template = chat_template
    save_checkpoint(root / MINE, model=Transformer(cfg).eval(), tokenizer=tok)


@pytest.fixture
def run_here(tmp_path, monkeypatch):
    """The current folder holds ``runs/mine`` (no ``./demo``: ``demo`` is the shipped model)."""
    monkeypatch.chdir(tmp_path)
    save_run(tmp_path)
    return tmp_path


def test_load_keeps_the_name_it_was_given(run_here):
    demo = unmask.load("demo")
    assert demo.name == demo.shown == "demo" and demo.path == Path(DEMO)
    mine = unmask.load(MINE)
    assert mine.name == mine.shown == MINE
    assert mine.path.name == "checkpoint" and mine.path.parent == Path(MINE)
    assert unmask.load(Path(MINE)).name == MINE
    full = str(run_here / MINE)
    assert unmask.load(full).shown == full  # typed in full: said in full
    by_hand = unmask.load(MINE)
    by_hand.name = ""  # a Loaded built without a name is shown by its folder
    assert by_hand.shown == str(by_hand.path)


@pytest.mark.parametrize("model", ["demo", MINE])
def test_the_python_api_refusal_names_the_model_as_typed(model, run_here):
    loaded = unmask.load(model)
    with pytest.raises(UserError) as e:
        api.chat(loaded, [{"role": "user", "content": "hi"}])
    assert str(e.value).startswith(f"{model} has no chat template"), str(e.value)
    assert str(loaded.path) not in str(e.value)
    with pytest.raises(UserError, match=f"^{model} has no chat template"):
        api.chat_template(loaded)


@pytest.mark.parametrize(("model", "argv"), [
    (MINE, ["chat", "--model", MINE, "--no-live"]),
    (MINE, ["generate", f"--model={MINE}", "--chat", "hi", "--no-live"]),
    ("demo", ["generate", "--model", "demo", "--chat", "hi", "--no-live"]),
])
def test_the_cli_refusal_names_the_model_as_typed(model, argv, run_here, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"unmask {argv[0]}: error: {model} has no chat template"), err
    assert "checkpoint" not in err and DEMO not in err


def test_its_own_template_is_named_by_the_model_as_typed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_run(tmp_path, chat_template=PLAIN_CHAT_TEMPLATE)
    loaded = unmask.load(MINE)
    own = api.chat_template(loaded)
    assert own.origin == f"chat template of {MINE}"
    assert server_template(loaded).origin == f"chat template of {MINE}"
    assert banner(loaded, own) == f"{MINE} (its chat template)"
    plain = api.chat_template(unmask.load("demo"), "plain")
    assert banner(unmask.load("demo"), plain) == "demo (built-in chat template 'plain')"
    with pytest.raises(UserError) as e:  # a message it cannot render names the template so
        own.render([{"role": "user", "content": "hi", "name": "ann"}])
    assert str(e.value).startswith(f"chat template of {MINE} does not render message names")


def test_a_publisher_folder_keeps_the_name_it_was_given(tmp_path, monkeypatch):
    from test_convert import make_llada

    monkeypatch.chdir(tmp_path)
    make_llada(tmp_path / "models" / "tiny-llada", n_shards=1)
    loaded = unmask.load("models/tiny-llada")
    assert (loaded.family, loaded.name) == ("llada", "models/tiny-llada")
    assert unmask.load(tmp_path / "models" / "tiny-llada").name == str(
        tmp_path / "models" / "tiny-llada")
