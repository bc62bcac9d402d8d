import json
import re
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
    assert len(re.findall(r"NFE \d", out)) == len(PROMPTS) + len(BLANKS)
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


def test_demo_train_on_a_finished_run_says_how_to_show_it(small_demo, tmp_path, capsys):
    """``unmask demo --train`` a second time: the run is there; the refusal says how to show
    it rather than leaving a first-time user to find ``--model``."""
    small_demo(time_limit=2)
    run = tmp_path / "run"
    assert main(["demo", "--train", "--out", str(run), "--no-live", "--gen-length", "4"]) == 0
    capsys.readouterr()
    assert main(["demo", "--train", "--out", str(run), "--no-live"]) == 2
    err = capsys.readouterr().err
    assert err == (f"unmask demo: error: {run} already exists (a run: show it with unmask demo "
                   f"--model {run}, or train it on with unmask train --resume --out {run}); "
                   "choose another --out or remove it\n")
    assert main(["demo", "--model", str(run), "--no-live", "--gen-length", "4"]) == 0
    assert len(re.findall(r"NFE \d", capsys.readouterr().out)) == len(PROMPTS) + len(BLANKS)


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


WORDS = "the cat sat on a mat and ran far away under big red tree".split()


@pytest.fixture(scope="module")
def family_runs(tmp_path_factory):
    """One-step runs of every family ``unmask train`` writes, on a byte corpus (a chat
    checkpoint: ``sft`` on the masked one, with room for a chat prompt and its reply)."""
    from unmask.config import TrainConfig
    from unmask.data import prepare
    from unmask.train import train

    root = tmp_path_factory.mktemp("families")
    g = torch.Generator().manual_seed(0)
    lines = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (8,), generator=g).tolist())
             for _ in range(200)]  # fmt: skip
    (root / "a.txt").write_text("\n".join(lines) + "\n")
    data = root / "data"
    prepare([root / "a.txt"], data, tokenizer="byte", val_fraction=0, progress=False)
    pairs = root / "pairs.jsonl"
    pairs.write_text("\n".join([json.dumps({"prompt": "the cat", "response": "sat"})] * 8))
    base = TrainConfig(data=str(data), preset="tiny", seq_len=64, batch_size=2, steps=1,
                       warmup=1, eval_every=0, eval_batches=1, save_every=0, device="cpu")
    runs = {}
    for name, kw in [
        ("mdlm", {"seq_len": 96}),
        ("bd3lm", {"objective": "bd3lm", "block_size": 4}),
        ("ar", {"objective": "ar"}),
        ("ar-fim", {"objective": "ar", "fim_rate": 0.5}),
        ("hybrid", {"objective": "hybrid", "draft_block": 4}),
        ("hybrid-fim", {"objective": "hybrid", "draft_block": 4, "init": str(root / "ar-fim")}),
        ("sedd", {"objective": "sedd"}),
        ("sedd-uniform", {"objective": "sedd", "sedd_graph": "uniform"}),
        ("sedd-time", {"objective": "sedd", "model_overrides": {"time_conditioning": True}}),
        ("embed-diffusion", {"objective": "embed-diffusion"}),
        ("latent-ae", {"objective": "latent-ae", "latent_len": 4, "seq_len": 16}),
        ("latent-diffusion", {"objective": "latent-diffusion", "latent_len": 4, "seq_len": 16,
                              "init": str(root / "latent-ae")}),
        ("sft", {"objective": "sft", "data": str(pairs), "init": str(root / "mdlm"),
                 "seq_len": 96}),
    ]:
        runs[name] = train(replace(base, out=str(root / name), **kw), progress=False)
    return runs


FILLED = "chosen among 3 candidate lengths"
FIXED = "as long as the verse's own word (this model fills fixed-length gaps only)"
FIM = "a length the model chose by ending the middle (fill-in-the-middle)"
NO_FIM = ("fill in the blank: skipped; this autoregressive model writes left to right and was "
          "not trained for fill-in-the-middle; train one with unmask train --objective ar "
          "--fim-rate 0.5 to fill blanks, or use a masked diffusion model (unmask demo)\n")
HYBRID_NO_FIM = ("fill in the blank: skipped; this hybrid model writes left to right and was not "
                 "trained for fill-in-the-middle; --init a hybrid from an ar run trained with "
                 "--fim-rate 0.5 to fill blanks, or use a masked diffusion model (unmask demo)\n")


COMMIT_STEPS = "fewer --steps commit more per step"
STEP_WORDS = {  # what the legend says a step is, by family (its decoder)
    "mdlm": COMMIT_STEPS, "bd3lm": COMMIT_STEPS, "sft": COMMIT_STEPS,
    "ar": "the steps (one forward pass per token: a causal model writes left to right)",
    "ar-fim": "the steps (one forward pass per token: a causal model writes left to right)",
    "hybrid": "drafts the next ones: one token or more per step",
    "hybrid-fim": "drafts the next ones: one token or more per step",
    "sedd": "one step back along the model's reverse process",
    "sedd-uniform": "one step back along the model's reverse process",
    "sedd-time": "one step back along the model's reverse process",
    "embed-diffusion": "noise off the written tokens' embeddings",
    "latent-diffusion": "noise off the whole window's latents",
}


@pytest.mark.parametrize("family, family_line, fills", [
    ("mdlm", "masked diffusion LM", FILLED),
    ("bd3lm", "block diffusion LM (BD3-LM, blocks of 4)", FIXED),
    ("ar", "autoregressive (causal) LM (", NO_FIM),
    ("ar-fim", "autoregressive (causal) LM trained for fill-in-the-middle", FIM),
    ("hybrid", "hybrid autoregressive/diffusion LM (TiDAR, drafts of 4)", HYBRID_NO_FIM),
    ("hybrid-fim", "(TiDAR, drafts of 4) trained for fill-in-the-middle", FIM),
    ("sedd", "score-entropy discrete diffusion LM (SEDD, absorbing graph)", FILLED),
    ("sedd-uniform", "(SEDD, uniform graph)", "skipped; a uniform-graph SEDD model never saw"),
    ("sedd-time", "(SEDD, absorbing graph)", FIXED),
    ("embed-diffusion", "continuous (embedding) diffusion LM", FIXED),
    ("latent-diffusion", "latent diffusion LM", "skipped; a latent diffusion model samples"),
    ("sft", "masked diffusion LM fine-tuned for chat", FILLED),
])  # fmt: skip
def test_demo_shows_what_each_family_can_do(family_runs, family, family_line, fills, capsys):
    """``unmask demo --model RUN`` on a run of every family: it says what the model is,
    generates (a chat model replies, a latent model samples from noise), and fills the
    blanks the way the family can, or says in one line why not and what does (it exited 2
    half-way on ar, hybrid, bd3lm, uniform SEDD and the continuous families)."""
    run = family_runs[family]
    length = [] if family == "latent-diffusion" else ["--gen-length", "4"]  # its window: 16
    assert main(["demo", "--model", str(run), *length, "--no-live"]) == 0
    out, err = capsys.readouterr()
    first = out.splitlines()[0]
    assert first.startswith("unmask demo: a ") and family_line in first, first
    # the legend says what a step of this family's decoder is: "fewer --steps commit more per
    # step" was said of a causal model too, which refuses --steps
    legend = " ".join(out.split("[1/")[0].split("\n", 1)[1].split())
    assert STEP_WORDS[family] in legend, legend
    if family not in ("mdlm", "bd3lm", "sft"):
        assert "commit" not in legend, legend
    if family.startswith(("ar", "hybrid")):
        assert "--steps" not in legend and "denoising" not in legend, legend
    assert first.endswith(f"from {run}")  # not "trained on the World English Bible"
    continued = out.count("tokens/s")
    assert continued == len(PROMPTS), out
    if fills in (FILLED, FIXED, FIM):
        assert out.count(fills) == len(BLANKS), out
        assert "[MASK" not in out and "skipped" not in out
    else:
        assert out.count("fill in the blank") == 1 and fills in out, out  # one line, once
    if family == "sft":
        assert out.count("  Assistant: ") == len(PROMPTS) and "chat: 'Who" in out
        assert f"\nTry it: unmask chat --model {run}\n" in out
    elif family == "latent-diffusion":
        assert out.count("sample from noise") == len(PROMPTS)
        assert "16 tokens" in out or "tokens, 16 steps" in out  # the window, not 48
    else:
        assert all(f"continue: {p!r}" in out for p in PROMPTS)
        assert f'\nTry it: unmask generate --model {run} "Once upon a time"\n' in out
    assert "error" not in err


def test_demo_refuses_a_checkpoint_it_cannot_decode_and_options_a_family_ignores(
    family_runs, capsys
):
    """Before any output: one line, exit 2."""
    cases = [
        ("latent-ae", [], "stage 1 of latent diffusion"),
        ("ar", ["--block-length", "4"], "--block-length does not apply to decoder 'ar'"),
        ("ar", ["--steps", "4"], "--steps does not apply to decoder 'ar'"),
        ("sedd", ["--temperature", "0.5"], "temperature does not apply to decoder 'sedd'"),
        ("embed-diffusion", ["--repetition-penalty", "1.2"], "not to decoder 'embed-diffusion'"),
        ("latent-diffusion", ["--gen-length", "8"], "windows of 16 tokens"),
    ]
    for family, extra, words in cases:
        argv = ["demo", "--model", str(family_runs[family]), "--no-live", *extra]
        assert main(argv) == 2, (family, extra)
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1 and words in err, (family, extra, err)


def test_demo_default_length_fits_a_model_trained_on_short_rows(family_runs, monkeypatch,
                                                               tmp_path, capsys):
    """48 tokens after the longest prompt (28 bytes) exceed a --seq-len 64 model: the demo
    writes as many as fit, whole blocks of a block-diffusion model (it exited 2, naming an
    option the user never gave); --gen-length given is kept."""
    from unmask import api

    seen, real = [], api.generate
    monkeypatch.setattr(api, "generate", lambda *a, config, **kw: (
        seen.append(config.gen_length), real(*a, config=config, **kw))[1])  # fmt: skip
    for family, length in (("ar", 36), ("bd3lm", 36), ("mdlm", 48)):  # mdlm: --seq-len 96
        assert main(["demo", "--model", str(family_runs[family]), "--no-live"]) == 0
        assert seen == [length] * len(PROMPTS), family
        seen.clear()
    for family, room in (("ar", 36), ("mdlm", 68)):  # the demo has no --segment-length to offer
        argv = ["demo", "--model", str(family_runs[family]), "--no-live", "--gen-length", "100"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.endswith(f"the demo's longest prompt takes 28; use --gen-length <= {room}\n")
        assert "segment" not in err and err.count("\n") == 1, err
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    short = save_checkpoint(tmp_path / "short", model=Transformer(model_preset(
        "tiny", vocab_size=tok.vocab_size, max_seq_len=24, **tok.special_ids())), tokenizer=tok)
    assert main(["demo", "--model", str(short), "--no-live"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (
        "unmask demo: error: this model's rows hold 24 tokens, and the demo's longest prompt "
        f"takes 28: no room to write after it; try unmask generate --model {short} with a "
        "shorter prompt\n")


def test_demo_train_refuses_options_before_training(monkeypatch, tmp_path, capsys):
    """A bad option, or --model with --train, is refused before minutes of training."""
    import unmask.commands.demo as demo_mod

    def never(*a, **k):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(demo_mod, "train_demo", never)
    out = str(tmp_path / "run")
    if (asset_path("demo") / "model.safetensors").is_file():
        for extra, words in ((["--block-length", "7"], "block"),
                             (["--temperature", "-1"], "temperature")):
            assert main(["demo", "--train", "--out", out, "--no-live", *extra]) == 2
            assert words in capsys.readouterr().err
    assert main(["demo", "--train", "--model", "demo", "--no-live"]) == 2
    assert "give one" in capsys.readouterr().err


def test_demo_ctrl_c_mid_showcase_exits_130_in_one_line(tiny_bible_checkpoint, monkeypatch,
                                                         capsys):
    from unmask import api

    real, calls = api.generate, []

    def interrupted(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(api, "generate", interrupted)
    argv = ["demo", "--model", str(tiny_bible_checkpoint), "--gen-length", "4", "--no-live"]
    assert main(argv) == 130
    out, err = capsys.readouterr()
    assert out.count("tokens/s") == 1 and err == "unmask demo: interrupted\n"


def test_the_showcase_says_what_its_marks_and_numbers_mean(tiny_bible_checkpoint, capsys):
    """A first run showed "48 tokens, 48 steps, NFE 48" and the model's text [in brackets]
    with no word on either: a legend under the banner names both, once."""
    assert main(["demo", "--model", str(tiny_bible_checkpoint), "--gen-length", "8",
                 "--no-live"]) == 0
    out = capsys.readouterr().out
    head = out.split("[1/")[0]
    assert "The model's text is [in brackets]" in head
    assert "NFE (forward passes of the model)" in head and "denoising steps" in head
    assert out.count("The model's text is") == 1
