"""``unmask.report``: the held-out bound of a run is the number it logged."""

import json

import torch

from unmask.cli import main
from unmask.config import TrainConfig

WORDS = "the lord said unto moses go down and speak to the people of israel".split()


def test_heldout_bound_of_a_bf16_run_equals_its_logged_validation(tmp_path, capsys):
    """Training validates under the autocast of its ``precision``; ``unmask eval`` assumed
    bf16 on a GPU and none on a CPU, so a run trained with ``--precision bf16`` on a CPU (or
    fp32 / fp16 on a GPU) was measured in another precision than it logged: the bound the
    docs call equal to the last ``val_bpb`` differed from it."""
    from unmask.data import prepare
    from unmask.train import train

    g = torch.Generator().manual_seed(0)
    lines = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (8,), generator=g).tolist())
             for _ in range(300)]
    (tmp_path / "a.txt").write_text(".\n".join(lines) + ".\n")
    prepare([tmp_path / "a.txt"], tmp_path / "data", tokenizer="byte", val_fraction=0.1,
            progress=False)
    cfg = TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "run"), preset="tiny",
                      seq_len=32, batch_size=4, steps=2, warmup=1, eval_every=2,
                      eval_batches=2, log_every=1, save_every=0, seed=3, precision="bf16")
    train(cfg, progress=False)
    rc = main(["eval", str(tmp_path / "run"), "--no-score", "--no-plot", "--json",
               "--device", "cpu"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["heldout"]["bpb"] == out["training"]["last_val_bpb"]
