"""JSON nested too deep to read, where unmask only asks whether a file is of its kind: a
one-line answer, not a ``RecursionError`` traceback."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from unmask.chat import template_arg
from unmask.errors import UserError
from unmask.objectives.distill import TRAJECTORY_FORMAT, Trajectories

DEEP = "[" * 100_000 + "]" * 100_000


def test_a_folder_whose_chat_template_json_is_too_deep_is_named_as_a_folder(tmp_path):
    (tmp_path / "chat_template.json").write_text(DEEP)
    with pytest.raises(UserError, match="is a folder, not a chat template file"):
        template_arg(str(tmp_path))


def test_a_trajectory_file_whose_settings_are_too_deep_is_refused_in_one_line(tmp_path):
    path = tmp_path / "t.safetensors"
    rows = {k: torch.zeros(1, 4, dtype=torch.long) for k in ("tokens", "commit_step")}
    save_file({**rows, "seed": torch.zeros(1, dtype=torch.long)}, str(path),
              metadata={"format": TRAJECTORY_FORMAT, "settings": DEEP})
    with pytest.raises(UserError, match="its settings are not a JSON object"):
        Trajectories.settings_of(path)


@pytest.mark.parametrize("text", [DEEP, '{"d_model": ' + "7" * 5000 + "}"],
                         ids=["too-deep", "long-integer"])
def test_a_model_folder_whose_config_cannot_be_read_is_one_line(tmp_path, text):
    """``is_publisher_folder`` caught only JSONDecodeError: ``unmask generate --model CKPT``
    with such a config.json was a RecursionError / ValueError traceback (review rm10)."""
    from unmask.convert.load import is_publisher_folder

    (tmp_path / "config.json").write_text(text)
    assert is_publisher_folder(tmp_path) is False  # the native loader then says why


def test_generate_with_an_unreadable_config_says_so_in_one_line(tmp_path, capsys):
    from unmask.cli import main

    (tmp_path / "config.json").write_text(DEEP)
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert main(["generate", "hi", "--model", str(tmp_path), "--no-live"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "nested too deep" in err.strip().splitlines()[-1], err
