"""A folder of the wrong kind is named by what it is, with one check (``unmask.folders``):
``unmask train --data RUN`` (a checkpoint) said "not a prepared dataset; run unmask prepare
first", ``--data nowhere`` too; ``unmask prepare RUN`` read a model's files as text;
``unmask eval DATA`` and ``unmask.load(DATA)`` said "not a checkpoint" of a dataset; a
misspelt shipped model (``--model dmeo``) said only "no such folder". The nearest-name
lookup (``unmask.names.closest``) and the terminal check (``unmask.terminal.is_terminal``)
are each one function, without torch, shared by the command line, chat and the live view."""

from __future__ import annotations

import pytest
import torch

from unmask import load
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32, **tok.special_ids())
    run = tmp_path_factory.mktemp("front2_folders") / "mine"
    save_checkpoint(run, model=Transformer(cfg), tokenizer=tok)  # writes run/checkpoint
    return run


def _dataset(folder):
    folder.mkdir()
    (folder / "index.json").write_text("{}")
    (folder / "train-00000.bin").write_bytes(b"\0\0")
    return folder


def _one_line(argv, capsys) -> str:
    try:
        rc = main(argv)
    except SystemExit as stop:
        rc = stop.code
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_train_data_that_is_a_checkpoint_says_so(run_dir, tmp_path, capsys):
    err = _one_line(["train", "--data", str(run_dir), "--out", str(tmp_path / "o")], capsys)
    assert (f"--data {run_dir} is a checkpoint (a model), not a dataset from `unmask "
            f"prepare`: `unmask train --init {run_dir}` starts a new run from its weights") in err
    # no --resume: run_dir has no train_config.json (tests/test_front3_folders.py)
    assert not (tmp_path / "o").exists()


def test_train_data_that_does_not_exist_says_no_such_folder(tmp_path, capsys):
    err = _one_line(["train", "--data", str(tmp_path / "nowhere"), "--out",
                     str(tmp_path / "o")], capsys)
    assert err == (f"unmask train: error: {tmp_path / 'nowhere'}: no such folder; run "
                   "`unmask prepare` first\n")


def test_prepare_given_a_checkpoint_says_so(run_dir, tmp_path, capsys):
    err = _one_line(["prepare", str(run_dir), "--out", str(tmp_path / "y")], capsys)
    assert f"{run_dir}: a checkpoint folder (a model), not text" in err
    assert not (tmp_path / "y").exists()


def test_eval_of_a_dataset_says_it_is_one(tmp_path, capsys):
    data = _dataset(tmp_path / "data")
    err = _one_line(["eval", str(data)], capsys)
    assert f"{data} is a dataset (unmask prepare wrote it), not a checkpoint" in err


def test_load_of_a_dataset_says_it_is_one(tmp_path):
    data = _dataset(tmp_path / "data")
    with pytest.raises(UserError, match="is a dataset \\(unmask prepare wrote it\\), not a "
                                        "checkpoint: train a model on it"):
        load(data)


def test_a_misspelt_shipped_model_names_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = _one_line(["generate", "--model", "dmeo", "hi"], capsys)
    assert err == ("unmask generate: error: dmeo: no such folder (did you mean demo, the "
                   "shipped model?)\n")


def test_one_nearest_name_lookup_and_one_terminal_check():
    from unmask.names import closest
    from unmask.sampling import live
    from unmask.terminal import is_terminal

    assert closest("--port", ["--prompt", "--steps"], prefix="--") is None
    assert closest("--Steps", ["--prompt", "--steps"], prefix="--") == "--steps"
    assert closest("/rest", ["/reset", "/exit"], prefix="/", cutoff=0.6) == "/reset"
    assert live.is_terminal is is_terminal


def test_the_library_names_a_checkpoint_or_a_missing_folder_given_as_data(run_dir, tmp_path):
    from unmask.data import read_index

    with pytest.raises(UserError, match=f"^{run_dir} is a checkpoint \\(a model\\), not a "
                                        "dataset"):
        read_index(run_dir)
    with pytest.raises(UserError, match="nowhere: no such folder; run `unmask prepare` first"):
        read_index(tmp_path / "nowhere")
