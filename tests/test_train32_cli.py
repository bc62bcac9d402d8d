"""``unmask train`` refusals and advice name what the user types (session 32)."""

from __future__ import annotations

from pathlib import Path

import pytest

import unmask.train as train_module
from unmask.cli import main

WORDS = "in the beginning god created the heaven and the earth and it was good".split()


@pytest.fixture(scope="module")
def data(word_corpus) -> Path:
    return word_corpus("cli32", WORDS)


def test_the_memory_advice_names_flags_not_typed(data, tmp_path, monkeypatch, capsys):
    """The refusal's advice said ``raise grad_accum`` (a field) to a user who had typed no
    ``--grad-accum``: every setting it advises is named as the flag to type."""
    # 10 MB: the tiny model's weights and optimizer state fit, its batch does not
    monkeypatch.setattr(train_module, "available_memory", lambda device: 10 * 2**20)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--preset", "tiny",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.rstrip().endswith("lower --seq-len or --batch-size, or raise --grad-accum"), err
    assert not out.exists()


def test_the_python_api_advises_fields(data, tmp_path, monkeypatch):
    from unmask.config import TrainConfig
    from unmask.errors import UserError

    # 10 MB: the tiny model's weights and optimizer state fit, its batch does not
    monkeypatch.setattr(train_module, "available_memory", lambda device: 10 * 2**20)
    config = TrainConfig(data=str(data), out=str(tmp_path / "run"), preset="tiny")
    with pytest.raises(UserError, match="lower seq_len or batch_size, or raise grad_accum$"):
        train_module.train(config, progress=False)


@pytest.mark.parametrize("command", ["train", "distill"])
def test_the_help_lists_the_status_of_a_closed_terminal(command, capsys):
    """SIGHUP (the terminal or ssh session closing) stops a run with its checkpoint saved and
    exit status 129; the help listed 130 and 143 only."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "130 / 143 / 129 Ctrl-C / SIGTERM / SIGHUP" in text
