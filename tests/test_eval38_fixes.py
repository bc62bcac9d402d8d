"""``unmask eval`` and the evaluation library (session 38 of the eval audit)."""

import json

import pytest
import torch

from unmask.cli import main
from unmask.config import TrainConfig

WORDS = "the lord said unto moses go down and speak to the people of israel".split()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4-step ``tiny`` mdlm run on a byte-level corpus of random word lines."""
    from unmask.data import prepare
    from unmask.train import train

    root = tmp_path_factory.mktemp("eval38")
    g = torch.Generator().manual_seed(0)
    lines = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (8,), generator=g).tolist())
             for _ in range(300)]
    (root / "a.txt").write_text(".\n".join(lines) + ".\n")
    prepare([root / "a.txt"], root / "data", tokenizer="byte", val_fraction=0.1, progress=False)
    cfg = TrainConfig(data=str(root / "data"), out=str(root / "run"), preset="tiny", seq_len=32,
                      batch_size=4, steps=4, warmup=1, eval_every=2, eval_batches=2,
                      log_every=1, save_every=0, seed=3)
    return train(cfg, progress=False)


@pytest.fixture
def uniform_scorer(monkeypatch):
    """The reference scorer replaced by one that predicts every token uniformly."""
    from unmask.scoring import ReferenceScorer

    scorer = ReferenceScorer(lambda ids, mask: torch.zeros(*ids.shape, 50),
                             lambda text: [ord(c) % 50 for c in text], start_id=0, name="u")
    monkeypatch.setattr(ReferenceScorer, "from_smollm2", classmethod(lambda cls, device: scorer))


def _texts(capsys, *argv) -> list[str]:
    rc = main(["eval", *map(str, argv), "--json", "--no-plot", "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)["sample_quality"]["texts"]


def test_a_sampled_gen_ppl_sample_does_not_depend_on_how_many_are_drawn(
        run, capsys, uniform_scorer):
    """At a temperature above 0 each sample is its prompt's, decoded alone under the seed: one
    generator served the batch, so the first sample changed with --samples."""
    args = (run, "--gen-length", "8", "--steps", "8", "--temperature", "1", "--seed", "5")
    two, three = _texts(capsys, *args, "--samples", "2"), _texts(capsys, *args, "--samples", "3")
    assert three[:2] == two
    assert _texts(capsys, *args, "--samples", "2", "--seed", "6") != two  # the seed decides
