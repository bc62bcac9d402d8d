"""A folder is a checkpoint only where ``config.json`` and ``model.safetensors`` lie together
(what ``unmask.checkpoint.checkpoint_dir`` loads): a ``config.json`` alone made a text corpus
"a checkpoint folder" to ``unmask prepare`` and a prepared dataset one to ``unmask train
--data`` (which the library trained on). The refusal of a checkpoint as data suggests
``--resume --out RUN`` only for a run (its ``train_config.json``), the run that holds the
checkpoint given; a bare checkpoint folder gets ``--init`` alone (``--resume`` of it failed:
"nothing to resume")."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import model_preset
from unmask.folders import is_checkpoint
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TEXT = "the cat sat on the mat and the dog ran to the park with a ball\n" * 200


def _rc(argv) -> int:
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code or 0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("front3_corpus") / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text(TEXT)
    (folder / "config.json").write_text(json.dumps({"note": "not a model"}))
    return folder


def test_a_corpus_with_a_config_json_prepares_and_its_dataset_trains(corpus, tmp_path, capsys):
    data = tmp_path / "ds"
    assert not is_checkpoint(corpus)
    assert _rc(["prepare", str(corpus), "--out", str(data), "--tokenizer", "byte",
                "--no-progress"]) == 0, capsys.readouterr().err
    shutil.copy(corpus / "config.json", data / "config.json")  # a dataset with a config.json
    out = tmp_path / "run"
    assert _rc(["train", "--data", str(data), "--out", str(out), "--preset", "tiny",
                "--seq-len", "16", "--batch-size", "2", "--steps", "1", "--eval-every", "0",
                "--device", "cpu", "--no-progress"]) == 0, capsys.readouterr().err
    assert (out / "checkpoint" / "model.safetensors").is_file()


def _checkpoint(folder):
    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32, **tok.special_ids())
    save_checkpoint(folder, model=Transformer(cfg), tokenizer=tok)


def _refusal(data, capsys) -> str:
    assert _rc(["train", "--data", str(data), "--out", "unused-out"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_a_bare_checkpoint_as_data_suggests_init_only(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _checkpoint(tmp_path / "mine")
    bare = tmp_path / "mine" / "checkpoint"
    err = _refusal(bare, capsys)
    assert "--resume" not in err
    assert err.endswith(f"`unmask train --init {bare}` starts a new run from its weights\n")
    # a run (its train_config.json) is suggested for --resume, also for its checkpoints
    (tmp_path / "mine" / "train_config.json").write_text("{}")
    for given in (tmp_path / "mine", bare):
        err = _refusal(given, capsys)
        assert (f"`unmask train --resume --out {tmp_path / 'mine'}` continues its training, "
                f"`--init {given}` starts a new run from its weights\n") in err
    assert not (tmp_path / "unused-out").exists()


def test_following_the_suggestion_for_a_run_resumes_it(tmp_path, capsys):
    data = tmp_path / "ds"
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.txt").write_text(TEXT)
    assert _rc(["prepare", str(tmp_path / "c"), "--out", str(data), "--tokenizer", "byte",
                "--no-progress"]) == 0
    run = tmp_path / "run"
    flags = ["--preset", "tiny", "--seq-len", "16", "--batch-size", "2", "--eval-every", "0",
             "--device", "cpu", "--no-progress"]
    assert _rc(["train", "--data", str(data), "--out", str(run), "--steps", "1", *flags]) == 0
    capsys.readouterr()
    err = _refusal(run / "checkpoint", capsys)
    assert f"--resume --out {run}`" in err
    assert _rc(["train", "--resume", "--out", str(run), "--steps", "2", "--no-progress"]) == 0, \
        capsys.readouterr().err


def test_eval_data_is_refused_in_the_shared_words(tmp_path, monkeypatch, capsys):
    """``eval --data`` had its own check ("no prepared dataset here"); it now says what
    ``unmask.data.read_index`` (and ``train --data``) says, before the model loads."""
    monkeypatch.chdir(tmp_path)
    _checkpoint(tmp_path / "mine")
    (tmp_path / "empty").mkdir()
    said = {}
    for data in ("nowhere", "empty", "mine"):
        assert _rc(["eval", "demo", "--data", data]) == 2
        said[data] = capsys.readouterr().err
        assert said[data].count("\n") == 1, said[data]
    assert said["nowhere"] == ("unmask eval: error: nowhere: no such folder; run `unmask "
                               "prepare` first\n")
    assert said["empty"] == ("unmask eval: error: empty is not a prepared dataset; run "
                             "`unmask prepare` first\n")
    assert said["mine"].startswith("unmask eval: error: --data mine is a checkpoint (a model), "
                                   "not a dataset from `unmask prepare`")
