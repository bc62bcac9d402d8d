"""An install without the demo's assets (a wheel or a distribution package built without
unmask's package data): each refusal says what is missing and a way on that works. "run
`unmask demo --train` to train it" left ``--model demo`` missing after the training, and
``--train`` without the corpus said only ``...web-bible.txt.gz: no such file or directory``."""

from __future__ import annotations

import unmask.checkpoint as checkpoint_mod
import unmask.commands.demo as demo_mod
from unmask.cli import main


def test_a_missing_demo_model_says_reinstall_or_the_run_to_give(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(checkpoint_mod, "asset_path", lambda name: tmp_path / name)
    assert main(["generate", "--model", "demo", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reinstall unmask" in err, err
    assert str(tmp_path / "demo" / "model.safetensors") in err
    assert "unmask demo --train, then --model runs/demo-train" in err


def test_demo_train_without_the_corpus_says_it_is_not_in_this_install(monkeypatch, tmp_path,
                                                                     capsys):
    gone = tmp_path / "web-bible.txt.gz"
    monkeypatch.setattr(demo_mod, "asset_path", lambda name: tmp_path / name)
    monkeypatch.setattr(checkpoint_mod, "asset_path", lambda name: tmp_path / name)
    assert main(["demo", "--train", "--out", str(tmp_path / "run")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (f"unmask demo: error: the demo corpus is not in this install "
                                 f"(no {gone}): reinstall unmask\n")
    assert not (tmp_path / "run-data").exists() and not (tmp_path / "run").exists()
