"""A seed out of torch's range from a ``--config`` file or ``train()`` is refused in one line
before anything is built, as ``--seed`` is (session 34): 2**64 failed at ``torch.manual_seed``
with an ``Overflow when unpacking long long`` traceback, after the run folder was made."""

from __future__ import annotations

import json

import pytest

from unmask.cli import main
from unmask.config import TrainConfig
from unmask.errors import UserError
from unmask.train import train

WORDS = "in the beginning god created the heaven and the earth and it was good".split()


@pytest.mark.parametrize("seed", [2**64, 2**63, -(2**64)])
def test_a_config_seed_out_of_range_is_one_line(word_corpus, tmp_path, capsys, seed):
    data = word_corpus("seed34", WORDS)
    config = tmp_path / "train_config.json"
    config.write_text(json.dumps({"seed": seed}))
    out = tmp_path / "run"
    code = main(["train", "--config", str(config), "--data", str(data), "--out", str(out),
                 "--steps", "1", "--seq-len", "16", "--batch-size", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err == f"unmask train: error: seed={seed} must be from 0 to 2**63 - 1\n"
    assert not out.exists()


def test_train_refuses_a_negative_seed_as_the_cli_does(tmp_path):
    with pytest.raises(UserError, match=r"^seed=-1 must be from 0 to 2\*\*63 - 1$"):
        train(TrainConfig(data=str(tmp_path / "none"), out=str(tmp_path / "run"), seed=-1),
              progress=False)
