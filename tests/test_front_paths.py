"""A dataset folder (``unmask prepare``'s output) given as ``--model`` is refused naming the
command that trains a model on it; it said "not a checkpoint (no config.json +
model.safetensors, nor a checkpoint/ folder)", which leaves a first-time user guessing."""

from __future__ import annotations

import pytest

from unmask.cli import main


def _dataset(folder):
    folder.mkdir()
    (folder / "index.json").write_text("{}")
    (folder / "train-00000.bin").write_bytes(b"\0\0")
    return folder


@pytest.mark.parametrize("command", ["generate", "chat", "serve", "demo", "infill"])
def test_a_dataset_given_as_model_names_train(command, tmp_path, capsys):
    data = _dataset(tmp_path / "data")
    with pytest.raises(SystemExit) as stop:
        main([command, "--model", str(data), "x"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (f"argument --model: {data} is a dataset (unmask prepare wrote it), not a "
            f"checkpoint: train a model on it with `unmask train --data {data} --out "
            "runs/NAME`") in err


def test_a_checkpoint_with_an_index_json_is_still_a_checkpoint(tmp_path, monkeypatch):
    import unmask.commands.generate as generate_cmd

    folder = _dataset(tmp_path / "ck")
    (folder / "config.json").write_text("{}")  # a checkpoint: config.json + weights
    (folder / "model.safetensors").write_bytes(b"")  # (config.json alone: a dataset's file)
    seen = {}
    monkeypatch.setattr(generate_cmd, "run", lambda args: seen.update(model=args.model) or 0)
    assert main(["generate", "--model", str(folder), "x"]) == 0
    assert seen == {"model": str(folder)}
