"""``api.edit``'s refusals name its Python arguments (``lowest``, ``confidence_mode``), not
the CLI's flags; ``unmask edit`` still names its flags."""

from __future__ import annotations

import pytest
import torch

import unmask
from unmask import api
from unmask.errors import UserError


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    torch.manual_seed(0)
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids())
    return save_checkpoint(tmp_path_factory.mktemp("edit") / "run", model=Transformer(cfg),
                           tokenizer=tok)  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lowest": -1}, "lowest must be at least 1, got -1"),
        ({"lowest": 0, "rounds": 2}, "lowest must be at least 1, got 0"),
        ({"lowest": 1, "confidence_mode": "seen"},
         "unknown confidence_mode 'seen'; choose one of masked, visible"),
        ({"spans": [(0, 1)], "confidence_mode": "seen"},
         "unknown confidence_mode 'seen'; choose one of masked, visible"),
    ],
)
def test_api_edit_names_the_python_argument(model_dir, kwargs, message):
    loaded = unmask.load(model_dir)
    with pytest.raises(UserError) as e:
        api.edit(loaded, "a b c", **kwargs)
    assert str(e.value) == message


def test_cli_edit_names_the_flag(model_dir, capsys):
    from unmask.cli import main

    assert main(["edit", "--model", str(model_dir), "--text", "a b c", "--lowest", "-1"]) == 2
    assert capsys.readouterr().err.strip().endswith("--lowest must be at least 1, got -1")
