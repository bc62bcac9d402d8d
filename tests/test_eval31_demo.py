"""``unmask eval demo``: the shipped demo model is measured on its own held-out text."""

import json

from unmask.cli import main
from unmask.config import TrainConfig


def test_eval_demo_measures_the_bound_on_its_own_heldout_text(capsys):
    """Without ``--data`` the shipped demo (a checkpoint with no run) had no bound ("give
    --data DIR"), and ``--batches`` was refused; its held-out text ships with it: the
    packaged corpus split as the demo's training data was. On that text the model reads
    ~1.31 bits/byte (TRAINING.md); split by lines (EOS after every verse, text it never saw)
    it would read ~1.64."""
    rc = main(["eval", "demo", "--no-score", "--batches", "1", "--json", "--device", "cpu"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    h = out["heldout"]
    batch = min(TrainConfig().batch_size, 32)  # one batch of the default windows (128)
    assert h is not None and h["n_tokens"] == batch * 128 and h["seq_len"] == 128
    assert 1.1 < h["bpb"] < 1.45
    assert any("demo's own held-out text" in n for n in out["notes"])
    assert not any("not measured" in n for n in out["notes"])


def test_eval_demo_without_its_corpus_installed_still_reports(capsys, monkeypatch):
    """An install without the packaged corpus has no held-out text to prepare: the bound is
    a note (give --data), as before, not the whole command's error."""
    import unmask.files
    from unmask.report import DEMO_CORPUS

    real = unmask.files.asset_path
    monkeypatch.setattr(unmask.files, "asset_path",
                        lambda name: real(name) / "gone" if name == DEMO_CORPUS else real(name))
    rc = main(["eval", "demo", "--no-score", "--json", "--device", "cpu"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["heldout"] is None
    assert any("held-out bound: not measured" in n and "--data" in n for n in out["notes"])
