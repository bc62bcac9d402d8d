import json
import shutil
from dataclasses import replace

import pytest
import torch

from unmask.checkpoint import checkpoint_dir, load, save_checkpoint, shipped_model
from unmask.cli import main
from unmask.commands.demo import BLANKS, PROMPTS, DemoTrainPlan, asset_path, train_demo
from unmask.config import model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tiny_bible_checkpoint(tmp_path_factory):
    """A random tiny model with the shipped demo tokenizer (so BPE text paths are exercised)."""
    shipped = asset_path("demo") / "tokenizer.json"
    if not shipped.is_file():
        pytest.skip("demo checkpoint not bundled")
    tok = load_tokenizer(shipped)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=96, **tok.special_ids())
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ck")
    save_checkpoint(out, model=Transformer(cfg), tokenizer=tok)
    return out


def test_demo_with_given_model_shows_every_example(tiny_bible_checkpoint, capsys):
    assert (
        main(["demo", "--model", str(tiny_bible_checkpoint), "--gen-length", "16", "--no-live"])
        == 0
    )
    out = capsys.readouterr().out
    for prompt in PROMPTS:
        assert prompt in out
    for template in BLANKS:
        before, _, rest = template.partition("[MASK")
        after = rest.split("]", 1)[1]
        assert f"{before.rstrip(' ')} ____{after}" in out  # the blank as shown, one space
        assert before in out and after in out
    assert out.count("NFE") == len(PROMPTS) + len(BLANKS)
    assert "unmask prepare" in out  # how to train on your own text


def test_demo_takes_the_models_recommendation_for_options_not_given(
    tiny_bible_checkpoint, tmp_path, monkeypatch, capsys
):
    from unmask import api

    shutil.copytree(tiny_bible_checkpoint, tmp_path / "m")
    cfg_file = checkpoint_dir(tmp_path / "m") / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["sample_defaults"] = {"temperature": 0.0, "block_length": 4, "repetition_penalty": 1.3,
                              "no_repeat_ngram_size": 3}
    cfg_file.write_text(json.dumps(cfg))
    seen = []
    real = api.generate
    monkeypatch.setattr(api, "generate", lambda *a, config, **kw: (
        seen.append(config), real(*a, config=config, **kw))[1])  # fmt: skip
    argv = ["demo", "--model", str(tmp_path / "m"), "--gen-length", "16", "--no-live"]
    assert main(argv) == 0
    def used() -> set[tuple]:
        return {(c.temperature, c.block_length, c.repetition_penalty, c.no_repeat_ngram_size)
                for c in seen}  # fmt: skip

    assert used() == {(0.0, 4, 1.3, 3)}
    seen.clear()
    assert main([*argv, "--temperature", "0.5", "--repetition-penalty", "1",
                 "--no-repeat-ngram-size", "0"]) == 0  # fmt: skip
    assert used() == {(0.5, 4, 1.0, 0)}
    capsys.readouterr()


def test_shipped_demo_model_loads_and_generates(capsys):
    if not (asset_path("demo") / "model.safetensors").is_file():
        pytest.skip("demo checkpoint not bundled")
    m = load(asset_path("demo"))
    assert m.model.embed.weight.dtype == torch.float32  # shipped in fp16, cast on load
    assert main(["demo", "--gen-length", "16", "--no-live"]) == 0
    out = capsys.readouterr().out
    assert "trained on the World English Bible" in out


def test_model_name_demo_is_the_shipped_model_unless_a_demo_folder_exists(
    tiny_bible_checkpoint, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert checkpoint_dir("demo") == checkpoint_dir(asset_path("demo"))
    args = ["generate", "--model", "demo", "In the beginning", "--gen-length", "4", "--steps", "2"]
    assert main([*args, "--no-live", "--json"]) == 0
    assert '"In the beginning' in capsys.readouterr().out
    # a folder of that name in the working directory wins
    shutil.copytree(tiny_bible_checkpoint, tmp_path / "demo")
    assert checkpoint_dir("demo").resolve() == checkpoint_dir(tmp_path / "demo")
    # only shipped names resolve; anything else is still a missing folder
    with pytest.raises(UserError, match="no such folder"):
        checkpoint_dir("demo2")
    with pytest.raises(UserError, match="no shipped model"):
        shipped_model("tiny")


def test_demo_bad_input(capsys, tmp_path):
    assert main(["demo", "--gen-length", "0"]) == 2
    assert "gen-length" in capsys.readouterr().err
    assert main(["demo", "--model", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    # refused before anything is shown (the banner and a first example came out before)
    for argv, words in ((["--temperature", "-1"], "temperature"),
                        (["--block-length", "7"], "--block-length"),
                        (["--out", str(tmp_path / "x")], "give --train too")):
        assert main(["demo", "--no-live", *argv]) == 2
        out, err = capsys.readouterr()
        assert out == "" and words in err, (argv, out, err)


@pytest.fixture
def small_demo(tmp_path, monkeypatch):
    """``unmask demo --train`` on the packaged corpus, cut to its first 1500 lines (preparing
    all 5 MB of it, BPE training and encoding, cost ~12 s; the path is the same); call it to
    make the default plan a tiny one, with ``kw`` changed."""
    import gzip

    import unmask.commands.demo as demo_mod

    head = tmp_path / "web-bible.txt.gz"
    with gzip.open(asset_path("web-bible.txt.gz"), "rt", encoding="utf-8") as f:
        text = "".join(line for _, line in zip(range(1500), f, strict=False))
    head.write_bytes(gzip.compress(text.encode("utf-8")))
    monkeypatch.setattr(
        demo_mod, "asset_path", lambda name: head if name == head.name else asset_path(name)
    )

    def plan(**kw):
        small = dict(preset="tiny", steps=3, batch_size=4, seq_len=32, warmup=1, vocab_size=300)
        monkeypatch.setattr(demo_mod, "DemoTrainPlan", lambda: DemoTrainPlan(**{**small, **kw}))

    return plan


def test_demo_train_small_plan(small_demo, tmp_path):
    plan = DemoTrainPlan(
        preset="tiny", steps=3, batch_size=4, seq_len=32, warmup=1, vocab_size=300, time_limit=2
    )
    run = train_demo(str(tmp_path / "run"), plan=plan, progress=False)
    m = load(run)
    assert m.config.vocab_size == m.tokenizer.vocab_size == 300
    assert (tmp_path / "run-data" / "index.json").is_file()
    with pytest.raises(Exception, match="already exists"):
        train_demo(str(tmp_path / "run"), plan=plan, progress=False)


def test_demo_train_says_where_its_run_is_when_stopped_or_cut_short(
    small_demo, tmp_path, monkeypatch, capsys
):
    """Ctrl-C: unmask train's message (checkpoint saved where) and how to resume and show it;
    the time limit stopping it short: the step reached, and how to finish it."""
    import signal

    import unmask.train as train_mod
    from unmask.train_guards import TrainingStopped

    real_train = train_mod.train

    def stopped(cfg, **kw):
        run = real_train(replace(cfg, steps=1), **kw)  # a checkpoint at step 1 of 3
        plan = json.loads((run / "train_config.json").read_text())
        (run / "train_config.json").write_text(json.dumps({**plan, "steps": 3}))
        raise TrainingStopped(signal.SIGINT, 1, run)

    run = tmp_path / "stopped"
    small_demo()
    monkeypatch.setattr(train_mod, "train", stopped)
    assert main(["demo", "--train", "--out", str(run), "--no-live"]) == 130
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == (f"unmask demo: stopped by SIGINT at step 1; checkpoint saved in "
                   f"{run / 'checkpoint'}; resume with: unmask train --resume --out {run}, "
                   f"then: unmask demo --model {run}")
    monkeypatch.setattr(train_mod, "train", real_train)
    small_demo(time_limit=1e-9)  # stops before its first step
    run = tmp_path / "capped"
    assert main(["demo", "--train", "--out", str(run), "--no-live", "--gen-length", "4"]) == 0
    out, err = capsys.readouterr()
    assert (f"unmask demo: the 1e-09-min limit stopped training at step 0 of 3, so the model "
            f"below is less trained; finish it with: unmask train --resume --out {run} "
            f"--time-limit 0, then: unmask demo --model {run}\n") in err
    assert out.startswith("unmask demo: a ")


def test_demo_takes_term_dumb_as_no_terminal(monkeypatch):
    """No live frame and no colour under TERM=dumb (916 escape sequences were written), as
    ``unmask generate``'s live view decides."""
    import io

    from unmask.commands import demo

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(demo.sys, "stdout", Tty())
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert demo._terminal() and demo._color()
    monkeypatch.setenv("TERM", "dumb")
    assert not demo._terminal() and not demo._color()
