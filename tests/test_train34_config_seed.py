"""A seed out of torch's range from a ``--config`` file or ``train()`` is refused in one line
before anything is built, as ``--seed`` is (session 34): 2**64 failed at ``torch.manual_seed``
with an ``Overflow when unpacking long long`` traceback, after the run folder was made."""

from __future__ import annotations

import json

import pytest

from unmask.cli import main
from unmask.config import TrainConfig
from unmask.train import train

WORDS = "in the beginning god created the heaven and the earth and it was good".split()


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1, -(2**64)])
def test_a_config_seed_out_of_range_is_one_line(word_corpus, tmp_path, capsys, seed):
    data = word_corpus("seed34", WORDS)
    config = tmp_path / "train_config.json"
    config.write_text(json.dumps({"seed": seed}))
    out = tmp_path / "run"
    code = main(["train", "--config", str(config), "--data", str(data), "--out", str(out),
                 "--steps", "1", "--seq-len", "16", "--batch-size", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err == f"unmask train: error: seed={seed} must be from -2**63 to 2**64 - 1\n"
    assert not out.exists()


def test_a_negative_seed_from_train_still_trains(tmp_path, word_corpus):
    # train() and --config always took one (torch.manual_seed does), so a run saved with one
    # resumes; only what torch refuses is refused
    data = word_corpus("seed34neg", WORDS)
    out = tmp_path / "run"
    train(TrainConfig(data=str(data), out=str(out), seed=-1, steps=1, seq_len=16,
                      batch_size=2), progress=False)
    assert json.loads((out / "train_config.json").read_text())["seed"] == -1
    assert (out / "checkpoint").is_dir()
