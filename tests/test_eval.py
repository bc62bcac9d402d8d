"""``unmask eval RUN`` and ``unmask.report`` on a tiny run trained here."""

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from corpus_helpers import word_corpus

from unmask.cli import main
from unmask.config import TrainConfig, model_preset

WORDS = "the lord said unto moses go down and speak to the people of israel".split()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from unmask.train import train

    root = tmp_path_factory.mktemp("evalrun")
    cfg = TrainConfig(
        data=str(word_corpus(root, WORDS, 600, 0)),
        out=str(root / "run"),
        preset="tiny",
        seq_len=32,
        batch_size=4,
        steps=4,
        warmup=1,
        eval_every=2,
        eval_batches=2,
        log_every=1,
        save_every=0,
        seed=3,
    )
    return train(cfg, progress=False)


def _eval(capsys, *argv):
    rc = main(["eval", *map(str, argv), "--device", "cpu"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_heldout_equals_logged_validation(run, capsys):
    """The bound is computed as training computes val_bpb: same weights, same number."""
    rc, out, _ = _eval(capsys, run, "--json", "--no-score", "--no-plot")
    assert rc == 0
    report = json.loads(out)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last_val = [r for r in logged if "val_bpb" in r][-1]
    assert report["heldout"]["bpb"] == pytest.approx(last_val["val_bpb"], rel=1e-6)
    assert report["heldout"]["loss"] == pytest.approx(last_val["val_loss"], rel=1e-6)
    assert report["heldout"]["ppl"] == pytest.approx(math.exp(report["heldout"]["loss"]))
    assert report["step"] == 4 and report["objective"] == "mdlm"
    assert report["training"]["last_step"] == 4
    assert report["plot"] is None and report["sample_quality"] is None


def test_more_batches_score_more_tokens(run, capsys):
    _, one, _ = _eval(capsys, run, "--json", "--no-score", "--no-plot", "--batches", "1")
    _, whole, _ = _eval(capsys, run, "--json", "--no-score", "--no-plot", "--batches", "0")
    n1, n_all = json.loads(one)["heldout"]["n_tokens"], json.loads(whole)["heldout"]["n_tokens"]
    assert n1 == 4 * 32 and n_all > n1


def test_evaluate_loss_max_batches_0_is_the_whole_split(run):
    """``evaluate_loss(max_batches=0)`` reads the whole split, as ``--batches 0`` and a run's
    ``eval_batches: 0`` do (called directly it scored one batch); a negative count is an
    error, not one batch either."""
    from unmask.checkpoint import load
    from unmask.data import TokenDataset
    from unmask.evaluate import evaluate_loss

    model, val = load(run).model, TokenDataset(run.parent / "prepared", "val")

    def tokens(n):
        return evaluate_loss(model, val, objective="mdlm", seq_len=32, batch_size=4,
                             max_batches=n).n_tokens

    whole = tokens(None)
    assert whole > 4 * 32 and tokens(0) == whole and tokens(1) == 4 * 32
    with pytest.raises(ValueError, match="max_batches must be 0 .* got -1"):
        tokens(-1)
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        evaluate_loss(model, val, objective="mdlm", seq_len=32, batch_size=0, max_batches=1)


def test_bits_per_byte_count_the_bytes_of_the_windows_scored(tmp_path):
    """bits/byte = nats / ln 2 / the bytes of the windows evaluated (their tokens' text, EOS
    0 bytes), not the whole split's average bytes per token, which differs where the
    windows are part of the split (0.5-0.7% at a few batches)."""
    from unmask.data import TokenDataset, prepare
    from unmask.evaluate import evaluate_loss
    from unmask.model import Transformer

    g = torch.Generator().manual_seed(1)
    lines = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (int(n),), generator=g))
             for n in torch.randint(1, 30, (400,), generator=g)]
    (tmp_path / "a.txt").write_text("\n".join(lines) + "\n")
    prepare([tmp_path / "a.txt"], tmp_path / "d", tokenizer="bpe", vocab_size=300,
            val_fraction=0.5, line_docs=True, progress=False)
    data = TokenDataset(tmp_path / "d", "val")
    tok = data.tokenizer()
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32,
                                     **tok.special_ids())).eval()
    r = evaluate_loss(model, data, objective="mdlm", seq_len=32, batch_size=4, max_batches=1)
    windows = torch.stack([w for _, w in zip(range(4), data.windows(32), strict=False)])
    nbytes = int(tok.token_byte_lengths()[windows.numpy()].sum())
    assert abs(nbytes / windows.numel() / data.bytes_per_token - 1) > 1e-3  # they differ here
    assert r.bpb == pytest.approx(r.loss / math.log(2) / (nbytes / windows.numel()), rel=1e-9)
    # a causal model predicts tokens 1..L-1 of each window: the bytes are theirs (the first
    # token is context); counted with it, the 4 windows' first tokens moved bits/byte 1.1%
    torch.manual_seed(0)
    ar = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32,
                                  attention="causal", **tok.special_ids())).eval()
    r = evaluate_loss(ar, data, objective="ar", seq_len=32, batch_size=4, max_batches=1)
    scored = int(tok.token_byte_lengths()[windows[:, 1:].numpy()].sum())
    assert r.n_tokens == 4 * 31
    assert r.bpb == pytest.approx(r.loss * r.n_tokens / math.log(2) / scored, rel=1e-9)
    assert abs(scored / (4 * 31) / (nbytes / windows.numel()) - 1) > 1e-3  # they differ here
    # a Dream-style (logit_shift) model's bound scores positions 1..L-1 too: their bytes
    torch.manual_seed(0)
    dream = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32,
                                     logit_shift=True, **tok.special_ids())).eval()
    r = evaluate_loss(dream, data, objective="mdlm", seq_len=32, batch_size=4, max_batches=1)
    assert r.n_tokens == 4 * 31
    assert r.bpb == pytest.approx(r.loss * r.n_tokens / math.log(2) / scored, rel=1e-9)


def test_noise_draws_average_seeds_and_give_their_standard_error(run, capsys):
    """K noise draws are the bound under seeds 1234.. 1234+K-1, averaged; the first is the
    number training logs; the spread is the standard error of their mean. --seq-len sets
    the windows."""
    import statistics

    from unmask.checkpoint import load
    from unmask.data import TokenDataset
    from unmask.evaluate import evaluate_loss

    _, out, _ = _eval(capsys, run, "--json", "--no-score", "--no-plot", "--batches", "0",
                      "--noise-draws", "3")
    h = json.loads(out)["heldout"]
    model = load(run).model
    each = [evaluate_loss(model, TokenDataset(run.parent / "prepared", "val"), objective="mdlm",
                          seq_len=32, batch_size=4, max_batches=None, seed=1234 + k).bpb
            for k in range(3)]
    assert h["noise_draws"] == 3 and h["seq_len"] == 32
    assert h["bpb"] == pytest.approx(statistics.fmean(each), rel=1e-6)
    assert h["bpb_se"] == pytest.approx(statistics.stdev(each) / math.sqrt(3), rel=1e-6)
    assert len(set(each)) == 3  # the draws differ: a diffusion bound is an estimate
    _, out, _ = _eval(capsys, run, "--json", "--no-score", "--no-plot", "--seq-len", "16")
    assert json.loads(out)["heldout"]["seq_len"] == 16
    rc, _, err = _eval(capsys, run, "--no-score", "--no-plot", "--seq-len", "100000")
    assert rc == 2 and "longer than the model's context" in err


def test_loss_curve_png_next_to_run(run, capsys):
    rc, out, _ = _eval(capsys, run, "--no-score")
    assert rc == 0
    png = run / "loss_curve.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (700, 400)
    assert f"loss curve  {png}" in out
    assert "held-out" in out and "bits/byte" in out


def test_loss_curve_writes_through_a_temp_file_of_its_own(tmp_path):
    """The PNG goes through a temp file no other writer uses (one fixed name,
    ``.loss_curve.png.tmp``, was shared by every eval writing that plot: RUN and RUN/best
    both default to RUN/loss_curve.png), and nothing is left beside it; rewriting replaces it."""
    from unmask.report import TrainingSummary, plot_loss_curve

    (tmp_path / ".loss_curve.png.tmp").mkdir()  # another writer's, in the way of the old name
    summary = TrainingSummary(steps=[1, 2], loss=[3.0, 2.5], val_steps=[2], val_loss=[2.7])
    for _ in range(2):
        path = plot_loss_curve(summary, tmp_path / "loss_curve.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".loss_curve.png.tmp", "loss_curve.png"]


def test_without_matplotlib_numbers_still_print(run, capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    rc, out, _ = _eval(capsys, run, "--no-score", "--plot", tmp_path / "c.png")
    assert rc == 0
    assert not (tmp_path / "c.png").exists()
    hint = [line for line in out.splitlines() if line.startswith("loss curve:")]
    assert hint == ["loss curve: not drawn, matplotlib is not installed (pip install matplotlib)"]
    assert "bits/byte" in out


@pytest.fixture
def uniform_scorer(monkeypatch):
    """The reference scorer replaced by one that predicts every token uniformly over V = 50."""
    from unmask.scoring import ReferenceScorer

    V = 50

    def uniform(ids, attention_mask):
        return torch.zeros(*ids.shape, V)  # (B, T, V)

    scorer = ReferenceScorer(
        uniform, lambda text: [ord(c) % V for c in text], start_id=0, name="uniform"
    )
    monkeypatch.setattr(ReferenceScorer, "from_smollm2", classmethod(lambda cls, device: scorer))
    return V


def test_gen_ppl_of_a_uniform_scorer_is_its_vocabulary(run, capsys, uniform_scorer):
    """A reference that predicts every token uniformly over V scores perplexity exactly V."""
    V = uniform_scorer
    rc, out, _ = _eval(
        capsys,
        run,
        "--json",
        "--no-plot",
        "--samples",
        "3",
        "--gen-length",
        "8",
        "--steps",
        "8",
        "--temperature",
        "1",
    )
    assert rc == 0
    q = json.loads(out)["sample_quality"]
    assert q["samples"] == 3 and q["gen_length"] == 8 and q["scorer"] == "uniform"
    assert q["gen_ppl"] == pytest.approx(V, rel=1e-5)
    assert q["entropy"] >= 0
    # an mdlm run recommends blocks of 4, repetition penalty 1.3, the 4-gram ban; the given
    # temperature wins over its argmax
    assert q["sampling"] == {"decoder": "llada", "temperature": 1.0, "block_length": 4,
                             "steps": 8, "policy": "llada",
                             "repetition_penalty": 1.3, "presence_penalty": 0.0,
                             "frequency_penalty": 0.0, "no_repeat_ngram_size": 4}


def test_data_without_validation_split_samples_unconditionally(run, capsys, uniform_scorer,
                                                               tmp_path):
    """A dataset prepared with no validation split: the bound is a note, the samples are
    unconditional, and the rest of the report (the task scores too) still prints."""
    from unmask.data import prepare
    from unmask.tasks import write_task

    (tmp_path / "a.txt").write_text("the lord said unto moses\n" * 20)
    prepare([tmp_path / "a.txt"], tmp_path / "noval", tokenizer="byte", val_fraction=0,
            min_val_tokens=0, progress=False)  # fmt: skip
    write_task("reversal", tmp_path / "task", n_train=2, n_eval=1, seed=0)
    rc, out, err = _eval(capsys, run, "--json", "--no-plot", "--data", tmp_path / "noval",
                         "--samples", "2", "--gen-length", "8", "--steps", "8",
                         "--task-file", tmp_path / "task")
    assert rc == 0, err
    report = json.loads(out)
    assert report["sample_quality"]["samples"] == 2 and report["tasks"]["total"] == 2
    assert "generative perplexity: no held-out text, samples are unconditional" in report["notes"]
    assert any(n.startswith("held-out bound: not measured") for n in report["notes"])


def test_a_split_shorter_than_the_prompts_is_named(run, capsys, uniform_scorer):
    """Prompts longer than the validation split: the samples are unconditional, and the note
    says that the split is too short for them (it said there was no held-out text)."""
    from unmask.data import TokenDataset

    n = len(TokenDataset(run.parent / "prepared", "val"))
    rc, out, err = _eval(capsys, run, "--json", "--no-plot", "--samples", "1", "--gen-length",
                         "8", "--steps", "8", "--prompt-tokens", n + 1)
    assert rc == 0, err
    note = (f"generative perplexity: the validation split holds {n:,} tokens, fewer than "
            f"--prompt-tokens {n + 1}, samples are unconditional")
    assert note in json.loads(out)["notes"]


def test_fewer_prompts_than_samples_are_a_note(run, capsys, uniform_scorer, tmp_path):
    """Documents that hold fewer prompts of --prompt-tokens than --samples: the samples are
    that many and a note says so (the report's sample count dropped silently), and with
    none that long the note names the longest document (it said that no window of that many
    tokens lay inside one, having tried only fixed windows)."""
    from unmask.data import prepare

    lines = ["moses said unto the lord" if i % 50 else "go down and speak to the people"
             for i in range(400)]  # documents of 24 and 31 tokens
    (tmp_path / "a.txt").write_text("\n".join(lines) + "\n")
    prepare([tmp_path / "a.txt"], tmp_path / "d", tokenizer="byte", val_fraction=0.2,
            line_docs=True, min_val_tokens=0, progress=False)
    args = ("--json", "--no-plot", "--data", tmp_path / "d", "--samples", "8", "--gen-length",
            "4", "--steps", "4")
    rc, out, err = _eval(capsys, run, *args, "--prompt-tokens", "28")
    assert rc == 0, err
    report = json.loads(out)
    held = report["sample_quality"]["samples"]  # the documents of 31 tokens
    assert 0 < held < 8
    assert (f"generative perplexity: {held} samples of --samples 8, the validation split's "
            f"documents hold only {held} prompts of 28 tokens (fewer --prompt-tokens find more)"
            in report["notes"])
    rc, out, err = _eval(capsys, run, *args[:4], "--samples", "1", "--gen-length", "4",
                         "--steps", "4", "--prompt-tokens", "32")
    assert rc == 0, err
    assert ("generative perplexity: no document of the validation split holds 32 tokens (the "
            "longest holds 31; give --prompt-tokens 31 or fewer), samples are unconditional"
            in json.loads(out)["notes"])


def test_missing_scorer_is_one_line_and_the_rest_prints(run, capsys, monkeypatch):
    from unmask.errors import UserError
    from unmask.scoring import ReferenceScorer

    def missing(cls, device):
        raise UserError("the reference scorer SmolLM2 is not installed; install with: pip x")

    monkeypatch.setattr(ReferenceScorer, "from_smollm2", classmethod(missing))
    rc, out, _ = _eval(capsys, run, "--no-plot")
    assert rc == 0
    notes = [line for line in out.splitlines() if line.startswith("generative perplexity")]
    assert notes == [
        "generative perplexity: not measured, the reference scorer SmolLM2 is not "
        "installed; install with: pip x"
    ]
    assert "held-out" in out


def test_checkpoint_folder_and_other_data(run, capsys, tmp_path):
    """The checkpoint folder finds its run; a moved dataset is a note, --data fixes it."""
    rc, out, _ = _eval(capsys, run / "checkpoint", "--json", "--no-score", "--no-plot")
    assert rc == 0 and json.loads(out)["run"] == str(run)
    cfg = json.loads((run / "train_config.json").read_text())
    moved = tmp_path / "copy"
    moved.mkdir()
    for name in ("checkpoint",):
        (moved / name).symlink_to(run / name)
    (moved / "train_config.json").write_text(json.dumps({**cfg, "data": str(tmp_path / "gone")}))
    rc, out, _ = _eval(capsys, moved, "--no-score", "--no-plot")
    assert rc == 0 and "held-out bound: not measured" in out and "give --data DIR" in out
    rc, out, _ = _eval(capsys, moved, "--json", "--no-score", "--no-plot", "--data", cfg["data"])
    assert json.loads(out)["heldout"]["bpb"] > 0


def test_bad_input_is_one_line(run, capsys, tmp_path):
    rc, _, err = _eval(capsys, tmp_path / "nope")
    assert rc == 2 and err.count("\n") == 1 and "no such folder" in err
    rc, _, err = _eval(capsys, run, "--data", tmp_path, "--no-score")
    assert rc == 2 and "not a prepared dataset" in err
    rc, _, err = _eval(capsys, run, "--samples", "0")
    assert rc == 2 and "--samples must be at least 1" in err


def test_report_reads_a_torn_metrics_file(tmp_path):
    from unmask.report import read_metrics, summarize_training

    p = tmp_path / "metrics.jsonl"
    p.write_text(
        '{"event": "start", "params": 10}\n{"step": 1, "loss": 2.0}\n'
        '{"step": 1, "val_loss": 1.5, "val_bpb": 0.7}\n{"step": 2, "lo'
    )
    s = summarize_training(read_metrics(p))
    assert (s.params, s.steps, s.loss, s.val_bpb) == (10, [1], [2.0], [0.7])
    p.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    from unmask.errors import UserError

    with pytest.raises(UserError, match=r"metrics.jsonl:2: not a JSON line"):
        read_metrics(p)


def test_eval_report_lines_align():
    from unmask.report import RunReport

    r = RunReport(
        checkpoint="c",
        run="runs/x",
        step=5,
        objective="mdlm",
        heldout={"loss": 1.0, "ppl": math.e, "bpb": 0.5, "n_tokens": 1000},
        notes=["generative perplexity: not measured, x"],
    )
    lines = r.lines()
    assert lines[0] == "run       runs/x (step 5, objective mdlm)"
    assert lines[1].startswith("held-out  bound 1.0000 nats/token (perplexity <= 2.72)")
    assert lines[-1] == "generative perplexity: not measured, x"
    assert Path(r.as_dict()["run"]) == Path("runs/x")


def test_report_lines_of_a_family_without_a_bound_and_of_one_sample():
    """The held-out line of a loss that is no bound names its windows too, as the bound's
    does; one sample is "1 sample" (it said "1 samples")."""
    from unmask.report import RunReport

    r = RunReport(checkpoint="c", run=None, step=None, objective=None,
                  heldout={"loss": 1.0, "ppl": math.nan, "bpb": math.nan, "n_tokens": 64,
                           "likelihood": False, "seq_len": 32},
                  sample_quality={"gen_ppl": 5.0, "scorer": "u", "entropy": 0.0, "samples": 1,
                                  "gen_length": 8})
    lines = r.lines()
    assert lines[1].endswith("not a likelihood bound), 64 tokens, windows of 32")
    assert lines[2].endswith("(1 sample of 8 tokens)")
    # every sample ended at once: no perplexity (it printed "nan under u")
    r.sample_quality["gen_ppl"] = math.nan
    assert r.lines()[2].split(None, 2)[2].startswith(
        "none (no sample has a token to score: each ended at once), unigram entropy 0.000")


def test_gaps_exact_match_in_the_report_equals_the_api(run, capsys, tmp_path):
    """``--gaps``: the printed line and the JSON hold what ``infill_exact_match`` computes."""
    from unmask.checkpoint import load
    from unmask.gapset import infill_exact_match, read_gap_set

    gaps = tmp_path / "gaps.jsonl"
    rows = [("the lord ", "said", " unto moses"), ("go down and ", "s", "peak to the")]
    keys = ("prefix", "middle", "suffix")
    gaps.write_text("".join(json.dumps(dict(zip(keys, r, strict=True))) + "\n" for r in rows))
    rc, out, _ = _eval(capsys, run, "--json", "--no-score", "--no-plot", "--gaps", gaps)
    got = json.loads(out)["infill"]
    loaded = load(run)
    want = infill_exact_match(loaded.model, loaded.tokenizer, read_gap_set(gaps, loaded.tokenizer))
    assert rc == 0 and got["n"] == 2 and got["gaps"] == str(gaps)
    assert (got["exact"], got["token_acc"]) == (want.exact, want.token_acc)
    assert [e["fill"] for e in got["examples"]] == [e["fill"] for e in want.examples]
    rc, out, _ = _eval(capsys, run, "--no-score", "--no-plot", "--gaps", gaps)
    assert f"on 2 gaps of {gaps} (diffusion, true lengths" in out
    rc, _, err = _eval(capsys, run, "--no-score", "--gaps", tmp_path / "none.jsonl")
    assert rc == 2 and err.count("\n") == 1 and "no such gap set" in err


@pytest.fixture(scope="module", params=["sedd", "bd3lm"])
def kept(request, run):
    """A ``--keep-best`` run of another objective on the ``run`` fixture's data, whose one
    validation is its last step (RUN/best then holds the final weights); training batches of
    TrainConfig's default size, which an imported checkpoint's bound uses too."""
    from unmask.train import train

    cfg = TrainConfig(
        data=str(run.parent / "prepared"), out=str(run.parent / f"kept-{request.param}"),
        objective=request.param, block_size=8 if request.param == "bd3lm" else None,
        preset="tiny", seq_len=32, batch_size=32, steps=2, warmup=1, eval_every=2,
        eval_batches=2, log_every=1, save_every=0, seed=3, keep_best=True,
    )  # fmt: skip
    return train(cfg, progress=False)


def test_keep_best_weights_find_their_run_and_objective(kept, capsys, tmp_path):
    """RUN/best is the run's (its step, objective and numbers); copied out of the run and
    given --data, it is measured by the objective its checkpoint records, not as mdlm."""
    import shutil

    args = ("--json", "--no-score", "--no-plot", "--batches", "0")
    _, out, _ = _eval(capsys, kept, *args)
    whole = json.loads(out)
    _, out, _ = _eval(capsys, kept / "best", *args)
    best = json.loads(out)
    assert best["run"] == str(kept) and best["step"] == 2
    assert best["objective"] == whole["objective"] == kept.name.removeprefix("kept-")
    assert best["heldout"]["bpb"] == pytest.approx(whole["heldout"]["bpb"], rel=1e-6)
    shutil.copytree(kept / "best" / "checkpoint", tmp_path / "bare")
    rc, out, _ = _eval(capsys, tmp_path / "bare", *args, "--data", kept.parent / "prepared",
                       "--seq-len", "32")
    bare = json.loads(out)
    assert rc == 0 and bare["objective"] == whole["objective"] and bare["run"] is None
    assert bare["heldout"]["bpb"] == pytest.approx(whole["heldout"]["bpb"], rel=1e-6)


def _bare(root, **kind):
    """A fresh byte-level tiny checkpoint (no run) of attention/objective ``kind``."""
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64, **kind)
    save_checkpoint(root, model=Transformer(cfg), tokenizer=tok)
    return root


def test_causal_seq_len_1_is_one_line(run, capsys, tmp_path):
    """A causal window of one token has nothing to predict: --seq-len 1 is refused in one
    line (exit 2), and evaluate_loss says why rather than blaming the split's size."""
    from unmask.checkpoint import load
    from unmask.data import TokenDataset
    from unmask.errors import UserError
    from unmask.evaluate import evaluate_loss

    ar = _bare(tmp_path / "ar", attention="causal")
    rc, _, err = _eval(capsys, ar, "--no-score", "--no-plot", "--data", run.parent / "prepared",
                       "--seq-len", "1")
    assert rc == 2 and err.count("\n") == 1
    assert "--seq-len must be at least 2 for a causal model" in err
    with pytest.raises(UserError, match="no token to score .*seq_len must be at least 2"):
        evaluate_loss(load(ar).model, TokenDataset(run.parent / "prepared", "val"), objective="ar",
                      seq_len=1, max_batches=1)


def test_bd3lm_seq_len_off_the_blocks_is_one_line(run, capsys, tmp_path):
    """A --seq-len that is not whole blocks of a bd3lm model is the user's flag: exit 2, one
    line with the nearest lengths that work (it was a note and exit 0)."""
    bd3 = _bare(tmp_path / "bd3", attention="block-causal", block_size=8, objective="bd3lm")
    args = ("--no-score", "--no-plot", "--data", run.parent / "prepared", "--batches", "1")
    rc, _, err = _eval(capsys, bd3, *args, "--seq-len", "12")
    assert rc == 2 and err.count("\n") == 1
    assert "--seq-len 12 is not a multiple of the model's block size (8); try 8 or 16" in err
    rc, out, _ = _eval(capsys, bd3, *args, "--seq-len", "16", "--json")
    assert rc == 0 and json.loads(out)["heldout"]["seq_len"] == 16


def test_default_gen_length_fits_a_small_context(run, capsys, uniform_scorer, tmp_path,
                                                 monkeypatch):
    """A 64-token model with 8-token prompts: the default 64-token samples shrink to the 56
    that fit (the whole report was thrown away); a --gen-length that cannot fit fails before
    the held-out bound and the scorer, in one line."""
    from unmask.scoring import ReferenceScorer

    small = _bare(tmp_path / "small")
    args = ("--no-plot", "--data", run.parent / "prepared", "--samples", "2", "--batches", "1")
    rc, out, err = _eval(capsys, small, *args, "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["sample_quality"]["gen_length"] == 56 and report["heldout"] is not None
    monkeypatch.setattr(ReferenceScorer, "from_smollm2", None)  # reached: a TypeError
    rc, _, err = _eval(capsys, small, *args, "--gen-length", "60")
    assert rc == 2 and err.count("\n") == 1
    assert "--gen-length 60 after --prompt-tokens 8 does not fit the model's context (64" in err


@pytest.mark.parametrize("kind", ["bd3lm", "causal"])
def test_sampled_with_names_what_ran(kind, run, capsys, uniform_scorer, tmp_path):
    """The gen-ppl "sampled with" line: a bd3lm model's own block size (not None); an ar
    decoder has no steps, blocks or commit policy to name."""
    spec = ({"attention": "block-causal", "block_size": 8, "objective": "bd3lm"}
            if kind == "bd3lm" else {"attention": "causal"})
    ckpt = _bare(tmp_path / kind, **spec)
    rc, out, err = _eval(capsys, ckpt, "--json", "--no-plot", "--data", run.parent / "prepared",
                         "--samples", "2", "--gen-length", "16", "--batches", "1")
    assert rc == 0, err
    sampling = json.loads(out)["sample_quality"]["sampling"]
    if kind == "bd3lm":
        assert (sampling["decoder"], sampling["block_length"], sampling["steps"]) == (
            "bd3lm", 8, 16)
    else:
        assert sampling["decoder"] == "ar"
        assert not {"steps", "block_length", "policy"} & set(sampling)


def test_unconditional_samples_keep_their_length(word_corpus, tmp_path):
    """Without held-out text as long as --prompt-tokens the samples are unconditional: the
    room beside the prompt is the whole context (it was shortened, or a given length
    refused, for prompts that never come)."""
    from unmask.commands.eval import _prompt_tokens

    data = word_corpus("evalpt", ["alpha", "beta", "gamma"])
    assert _prompt_tokens(str(data), 8) == 8
    assert _prompt_tokens(str(data), 10**9) == 0  # the split is shorter: no prompts
    assert _prompt_tokens(None, 8) == 0 and _prompt_tokens(str(tmp_path), 8) == 0


def test_sft_model_gets_the_mdlm_bound_on_a_corpus(run, capsys, tmp_path):
    """An sft run (prompt/response pairs, no validation split) with --data: the masked-diffusion
    (mdlm) bound of its weights on that corpus, as the docs promise; it was a note that sft
    has no validation split, --data or not."""
    from unmask.checkpoint import load
    from unmask.report import heldout_bound
    from unmask.tasks import SFT_TEMPLATE
    from unmask.train import train

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"the {w}", "response": " lord."}) + "\n"
                             for w in WORDS))
    sft = train(TrainConfig(data=str(pairs), out=str(tmp_path / "sft"), objective="sft",
                            init=str(run), seq_len=32, batch_size=4, steps=2, warmup=1,
                            save_every=0, chat_template=SFT_TEMPLATE), progress=False)
    data = run.parent / "prepared"
    rc, out, _ = _eval(capsys, sft, "--data", data, "--json", "--no-score", "--no-plot")
    assert rc == 0
    report = json.loads(out)
    loaded = load(sft)
    want = heldout_bound(loaded.model, TrainConfig(data=str(data), objective="mdlm", seq_len=32,
                                                   batch_size=4), data=data)
    assert report["heldout"]["loss"] == pytest.approx(want.loss, rel=1e-6)
    assert report["heldout"]["bpb"] == pytest.approx(want.bpb, rel=1e-6)
    rc, out, _ = _eval(capsys, sft, "--no-score", "--no-plot")  # its pairs: a note, not a bound
    assert rc == 0 and "held-out bound: not measured" in out


def test_bound_flags_without_a_bound_are_one_line(run, capsys, tmp_path):
    """--seq-len, --batches and --noise-draws set the held-out bound: where it cannot be
    measured (a checkpoint with no run and no --data, a run whose dataset has gone) they are
    refused in one line, before anything is drawn, rather than silently ignored."""
    bare = _bare(tmp_path / "bare")
    rc, _, err = _eval(capsys, bare, "--no-score", "--no-plot", "--seq-len", "16")
    assert rc == 2 and err == (
        "unmask eval: error: --seq-len applies to the held-out bound, which cannot be "
        "measured: the checkpoint has no training configuration (give --data DIR)\n")
    cfg = json.loads((run / "train_config.json").read_text())
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("checkpoint", "metrics.jsonl"):
        (moved / name).symlink_to(run / name)
    (moved / "train_config.json").write_text(json.dumps({**cfg, "data": str(tmp_path / "gone")}))
    for flag in (["--batches", "0"], ["--noise-draws", "2"]):
        rc, _, err = _eval(capsys, moved, "--no-score", "--plot", tmp_path / "c.png", *flag)
        assert rc == 2 and err.count("\n") == 1 and f"error: {flag[0]} applies to the held" in err
        assert f"the run's dataset {tmp_path / 'gone'} is not here (give --data DIR)" in err
    assert not (tmp_path / "c.png").exists()
    rc, out, _ = _eval(capsys, moved, "--no-score", "--no-plot")  # not typed: a note, as before
    assert rc == 0 and "held-out bound: not measured, the run's dataset" in out
    rc, out, _ = _eval(capsys, bare, "--no-score", "--no-plot", "--json", "--seq-len", "16",
                       "--data", run.parent / "prepared", "--batches", "1")
    assert rc == 0 and json.loads(out)["heldout"]["seq_len"] == 16


def test_sampling_flags_the_decoder_refuses_fail_before_the_bound(run, capsys, monkeypatch):
    """A sampling flag the checkpoint's decoder refuses (``--top-k`` on a diffusion model) is
    one line before the held-out bound and the scorer run: it came after both."""
    import unmask.report

    monkeypatch.setattr(unmask.report, "heldout_bound", lambda *a, **k: pytest.fail("ran"))
    rc, _, err = _eval(capsys, run, "--no-plot", "--top-k", "3")
    assert rc == 2 and err.count("\n") == 1 and "error: --top-k applies to autoregressive" in err


DRAFTER = ("needs a drafter (--draft CKPT of unmask generate, chat and serve), which unmask "
           "eval does not take: leave it out to sample a causal checkpoint with its own decoder "
           "(ar), whose text speculative decoding reproduces")


@pytest.mark.parametrize("flags, said", [
    (["--no-score", "--samples", "3"],
     "--samples applies to the generative perplexity, which --no-score skips"),
    (["--no-score", "--prompt-tokens", "3", "--gaps", "g.jsonl"],
     "--prompt-tokens applies to the generative perplexity, which --no-score skips"),
    (["--no-score", "--steps", "3"], "--steps sets how text is sampled: for the generative "
     "perplexity (which --no-score skips), --task-file, --gaps or --tasks"),
    (["--plot", "c.png", "--no-plot"], "--plot FILE and --no-plot: give one of them"),
    (["--batch-size", "4"], "--batch-size applies to lm-eval tasks: give --tasks"),
    # eval has no --draft: the refusal names the commands that have it (not the API's draft=)
    (["--decoder", "speculative"], f"--decoder speculative {DRAFTER}"),
    (["--no-score", "--draft-cache", "none", "--gaps", "g.jsonl"], f"--draft-cache {DRAFTER}"),
])
def test_flags_that_would_go_unused_are_one_line(flags, said, run, capsys, monkeypatch):
    """A flag of a part that will not run (sampling flags with --no-score, the lm-eval batch
    size without --tasks, --plot with --no-plot) is refused before anything loads: they were
    silently ignored. So is a drafter's (--decoder speculative, --draft-cache), which eval
    cannot take: that refusal named the API's draft= argument."""
    import unmask.checkpoint

    monkeypatch.setattr(unmask.checkpoint, "load", lambda *a, **k: pytest.fail("loaded"))
    rc, _, err = _eval(capsys, run, *flags)
    assert rc == 2 and err == f"unmask eval: error: {said}\n"


def test_no_score_keeps_the_flags_of_the_other_parts(run, capsys, tmp_path):
    """--seed is the run's, and with --gaps the sampling flags set how the gaps are filled."""
    gaps = tmp_path / "gaps.jsonl"
    gaps.write_text(json.dumps({"prefix": "the lord ", "middle": "said", "suffix": " unto"}) + "\n")
    rc, out, _ = _eval(capsys, run, "--no-score", "--no-plot", "--seed", "3", "--batches", "1",
                       "--gaps", gaps, "--steps", "2", "--json")
    assert rc == 0 and json.loads(out)["infill"]["n"] == 1


def test_gaps_a_model_cannot_fill_fail_before_the_bound(run, capsys, tmp_path, monkeypatch):
    """--gaps with a causal model trained without FIM sentinels, or a gap set that does not
    parse, is one line before the held-out bound runs (it came after the whole report)."""
    import unmask.report

    gaps = tmp_path / "gaps.jsonl"
    gaps.write_text(json.dumps({"prefix": "the lord ", "middle": "said", "suffix": " unto"}) + "\n")
    monkeypatch.setattr(unmask.report, "heldout_bound", lambda *a, **k: pytest.fail("ran"))
    ar = _bare(tmp_path / "ar", attention="causal")
    rc, _, err = _eval(capsys, ar, "--no-score", "--no-plot", "--data", run.parent / "prepared",
                       "--gaps", gaps)
    assert rc == 2 and err.count("\n") == 1 and "not trained for fill-in-the-middle" in err
    gaps.write_text(json.dumps({"prefix": "the lord "}) + "\n")
    rc, _, err = _eval(capsys, run, "--no-score", "--no-plot", "--gaps", gaps)
    assert rc == 2 and err.count("\n") == 1 and "missing field 'middle'" in err


def test_hybrid_seq_len_shorter_than_its_rows_is_one_line(run, capsys, tmp_path):
    """A hybrid model's rows hold its draft block + 2 tokens or more: a shorter --seq-len is
    the user's flag, one line and exit 2 (it was a note and exit 0)."""
    hy = _bare(tmp_path / "hy", attention="causal", objective="hybrid", draft_block=4)
    args = ("--no-score", "--no-plot", "--data", run.parent / "prepared", "--batches", "1")
    rc, _, err = _eval(capsys, hy, *args, "--seq-len", "5")
    assert rc == 2 and err == ("unmask eval: error: --seq-len 5 is shorter than this hybrid "
                               "model's rows: its draft block (4) + 2 = 6 tokens or more\n")
    rc, out, _ = _eval(capsys, hy, *args, "--seq-len", "6", "--json")
    assert rc == 0 and json.loads(out)["heldout"]["seq_len"] == 6


def test_noise_draws_of_an_exact_likelihood_are_said_to_be_one(run, capsys, tmp_path):
    """A causal model's likelihood is exact: --noise-draws K draws it once, and a note says
    so (the K was dropped silently)."""
    ar = _bare(tmp_path / "ar", attention="causal")
    rc, out, _ = _eval(capsys, ar, "--no-score", "--no-plot", "--data", run.parent / "prepared",
                       "--batches", "1", "--noise-draws", "3", "--json")
    report = json.loads(out)
    assert rc == 0 and report["heldout"]["noise_draws"] == 1 and report["heldout"]["exact"]
    assert report["notes"] == ["held-out: the likelihood of a causal model is exact, drawn "
                               "once (not 3 noise draws)"]


def test_sampled_with_names_every_option_set(run, capsys, uniform_scorer, tmp_path):
    """The "sampled with" record names every option set away from its default (top_k, a
    cfg scale, ...) and the one its commit policy reads: two reports that sampled differently
    said the same."""
    ar = _bare(tmp_path / "ar", attention="causal")
    args = ("--json", "--no-plot", "--data", run.parent / "prepared", "--samples", "2",
            "--gen-length", "8", "--batches", "1")
    rc, out, err = _eval(capsys, ar, *args, "--top-k", "3", "--temperature", "0.5")
    assert rc == 0, err
    sampling = json.loads(out)["sample_quality"]["sampling"]
    assert sampling["top_k"] == 3 and sampling["temperature"] == 0.5
    assert list(sampling)[-4:] == ["repetition_penalty", "presence_penalty",
                                   "frequency_penalty", "no_repeat_ngram_size"]
    rc, out, err = _eval(capsys, run, *args, "--policy", "threshold", "--cfg-scale", "1")
    assert rc == 0, err
    sampling = json.loads(out)["sample_quality"]["sampling"]
    assert (sampling["policy"], sampling["threshold"], sampling["cfg_scale"]) == (
        "threshold", 0.9, 1.0)


def test_eval_reads_the_checkpoints_facts_once(run, capsys, uniform_scorer, monkeypatch):
    """The report's parts share one reading of the checkpoint's facts (``api.facts_of``):
    eval itself read them three times (its latent check twice, the gen_length fit once)."""
    import unmask.api

    real, callers = unmask.api.facts_of, []

    def counting(loaded):
        callers.append(Path(sys._getframe(1).f_code.co_filename).as_posix())
        return real(loaded)

    monkeypatch.setattr(unmask.api, "facts_of", counting)
    rc, out, _ = _eval(capsys, run, "--json", "--no-plot", "--samples", "2", "--gen-length", "8",
                       "--steps", "8", "--batches", "1")
    assert rc == 0 and json.loads(out)["sample_quality"]["samples"] == 2
    assert sum(c.endswith("unmask/commands/eval.py") for c in callers) == 1


def test_sampled_with_names_the_penalties_only_where_the_decoder_applies_them(
    run, capsys, uniform_scorer, tmp_path
):
    """The four penalties are named at their defaults too, for the decoders that apply
    them: a SEDD model's record listed them, though its decoder refuses every one."""
    sedd = _bare(tmp_path / "sedd", objective="sedd", sedd_graph="uniform")
    rc, out, err = _eval(capsys, sedd, "--json", "--no-plot", "--data", run.parent / "prepared",
                         "--samples", "2", "--gen-length", "8", "--steps", "4", "--batches", "1")
    assert rc == 0, err
    sampling = json.loads(out)["sample_quality"]["sampling"]
    assert (sampling["decoder"], sampling["steps"]) == ("sedd", 4)
    assert not {"repetition_penalty", "presence_penalty", "frequency_penalty",
                "no_repeat_ngram_size"} & set(sampling)


def test_best_logged_bpb_skips_a_non_finite_validation():
    """The best logged bits/byte is the least finite one, wherever a NaN validation (an
    overflow) falls in the run; NaN only when none is finite (an objective without a bound)."""
    from unmask.report import RunReport, summarize_training

    def best(*bpbs):
        recs = [{"step": i, "val_loss": 1.0, "val_bpb": b} for i, b in enumerate(bpbs)]
        return summarize_training(recs).as_dict()["best_val_bpb"]

    assert best(math.nan, 8.0, 7.5) == 7.5 and best(8.0, math.nan, 7.5) == 7.5
    assert math.isnan(best(math.nan, math.nan)) and best() is None
    training = summarize_training([{"step": 0, "loss": 2.0}, {"step": 1, "val_loss": 1.0,
                                   "val_bpb": math.nan}, {"step": 2, "val_loss": 1.0,
                                   "val_bpb": 7.25}]).as_dict()
    lines = RunReport(checkpoint="c", run="r", step=2, objective="mdlm",
                      training=training).lines()
    assert any("7.2500 bits/byte last, 7.2500 best" in line for line in lines)
    # the last validation overflowed, an earlier one did not: not "nan bits/byte last"
    training = summarize_training([{"step": 1, "val_loss": 1.0, "val_bpb": 7.25},
                                   {"step": 2, "val_loss": 1.0, "val_bpb": None}]).as_dict()
    lines = RunReport(checkpoint="c", run="r", step=2, objective="mdlm",
                      training=training).lines()
    (line,) = [x for x in lines if x.startswith("logged val")]
    assert "not finite last, 7.2500 best" in line and "nan" not in line


def test_a_diverged_models_perplexity_is_inf_not_a_false_finite_bound() -> None:
    """Past what a float holds, perplexity is inf (it was capped at exp(50), and the report
    then printed a finite "perplexity <= 5.2e21" for a model whose bound is far above it);
    the report's JSON writes it as null, its text as inf."""
    from unmask.evaluate import EvalResult
    from unmask.report import RunReport
    from unmask.scoring import perplexity

    assert perplexity(2.0) == pytest.approx(math.exp(2.0))
    assert perplexity(60.0) == pytest.approx(math.exp(60.0))  # was exp(50)
    assert perplexity(800.0) == math.inf  # math.exp would overflow
    assert math.isnan(perplexity(math.nan))  # not inf: a NaN loss is no bound at all
    from unmask.scoring import TextScore

    assert TextScore(nll=1600.0, n_tokens=2).ppl == math.inf  # was an OverflowError
    h = dataclasses.asdict(EvalResult(loss=800.0, ppl=perplexity(800.0), bpb=1000.0,
                                      n_tokens=10))
    report = RunReport(checkpoint="x", run=None, step=None, objective="mdlm", heldout=h)
    assert "(perplexity <= inf)" in "\n".join(report.lines())
    assert report.as_dict()["heldout"]["ppl"] is None


def test_a_damaged_trainer_state_is_one_line(run, capsys, tmp_path):
    """A trainer.json that is JSON but not an object (``[1]``) was an AttributeError
    traceback; not UTF-8 likewise: one line naming the file; a step that is no whole number
    too (it was printed as the report's step)."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    trainer = copy / "checkpoint" / "trainer.json"
    for damage in (b"[1]", b"\xff\xfe{", b'{"step": "abc"}', b'{"step": [4]}'):
        trainer.write_bytes(damage)  # a step that is no number was printed: "step abc"
        assert main(["eval", str(copy), "--no-score", "--no-plot"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "trainer.json" in err, err


def test_offline_hub_restores_the_switches_of_modules_imported_inside(tmp_path, monkeypatch):
    """``offline_hub`` turns the Hub's and datasets' offline switches on, then back: a module
    first imported inside it (it reads the variable at import, as ``datasets.config`` does)
    kept its switch on afterwards."""
    import importlib

    from unmask import lm_eval, scoring

    (tmp_path / "fake_hub_config.py").write_text(
        "import os\nHF_HUB_OFFLINE = os.environ.get('HF_HUB_OFFLINE') == '1'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(scoring, "_OFFLINE_FLAGS", (("fake_hub_config", "HF_HUB_OFFLINE"),))
    monkeypatch.delitem(sys.modules, "fake_hub_config", raising=False)
    with lm_eval.offline_hub():
        module = importlib.import_module("fake_hub_config")
        assert module.HF_HUB_OFFLINE is True  # offline inside
    assert module.HF_HUB_OFFLINE is False


class _ShiftedOracle(torch.nn.Module):
    """A perfect Dream-style (``logit_shift``) predictor of ``truth`` (L,): the logits at
    position i put all their mass on token i + 1, whatever is masked."""

    def __init__(self, truth: torch.Tensor, vocab: int):
        super().__init__()
        self.truth, self.vocab = truth, vocab
        self.config = dataclasses.replace(
            model_preset("tiny", vocab_size=vocab), logit_shift=True
        )

    def forward(self, x, attention_mask=None):
        n, length = x.shape
        assert length == self.truth.shape[0]
        logits = torch.full((n, length, self.vocab), -60.0, dtype=torch.float64)
        nxt = torch.cat([self.truth[1:], self.truth[:1]])  # position i predicts token i + 1
        logits[:, torch.arange(length), nxt] = 60.0
        return logits


def test_sequence_elbo_of_a_dream_model_scores_no_token_that_no_logits_predict():
    """A Dream-style model's logits at i - 1 predict token i, so the first real token of a
    row (position 0, or the one after left padding) has no prediction: as the ``mdlm`` loss
    (``objectives.predicted``), it is neither masked nor scored, and a perfect predictor's
    bound is 0. Before, position 0 was masked and scored on the logits that predict token 1
    (several nats a sample), and the per-token bound divided by a token without a term."""
    from unmask.evaluate import sequence_elbo, sequence_elbo_terms

    V = 16
    g = torch.Generator().manual_seed(0)
    truth = torch.randperm(V - 4, generator=g)[:10] + 4  # no token twice in a row
    model = _ShiftedOracle(truth, V)
    terms = sequence_elbo_terms(model, truth[None], mask_id=0, n_samples=16,
                                generator=torch.Generator().manual_seed(1))
    assert terms.shape == (1, 10)
    assert float(terms.abs().max()) < 1e-9
    # left padding: the first real token (index 3) is the one no logits predict
    padded = torch.cat([torch.ones(3, dtype=torch.long), truth])[None]
    am = torch.zeros(1, 13, dtype=torch.bool)
    am[0, 3:] = True
    terms = sequence_elbo_terms(model, padded, mask_id=0, n_samples=16, attention_mask=am,
                                generator=torch.Generator().manual_seed(2))
    assert float(terms.abs().max()) < 1e-9
    per_token = sequence_elbo(model, padded, mask_id=0, n_samples=16, attention_mask=am,
                              generator=torch.Generator().manual_seed(2))
    assert float(per_token[0]) == pytest.approx(0.0, abs=1e-9)
    # the same predictor read without the shift is wrong everywhere it is scored
    plain = _ShiftedOracle(truth, V)
    plain.config = dataclasses.replace(plain.config, logit_shift=False)
    terms = sequence_elbo_terms(plain, truth[None], mask_id=0, n_samples=16,
                                generator=torch.Generator().manual_seed(1))
    assert float(terms[0, 1:].min()) > 1.0


def test_an_old_time_conditioned_bd3lm_gets_an_evaluators_advice(run, capsys, tmp_path):
    """A bd3lm model trained with time conditioning before bd3lm refused it has no bound:
    the note said how to train (``--model-set``, a train flag); it says what eval still
    measures. Its lm-eval log-likelihoods (the same bound, block by block) are refused too,
    not computed with the noise level the refusal is about."""
    from unmask.checkpoint import load
    from unmask.errors import UserError
    from unmask.evaluate import block_elbo_loglikelihood

    timed = _bare(tmp_path / "timed", attention="block-causal", block_size=8, objective="bd3lm",
                  time_conditioning=True, sigma_input="masked_fraction")
    rc, out, _ = _eval(capsys, timed, "--no-score", "--no-plot", "--data", run.parent / "prepared")
    assert rc == 0
    (note,) = [line for line in out.splitlines() if line.startswith("held-out bound")]
    assert "--model-set" not in note and "cannot be trained" not in note
    assert "no bound" in note and "generative perplexity" in note
    with pytest.raises(UserError, match="time-conditioned model .* no bound"):
        block_elbo_loglikelihood(load(timed).model, [5], [7, 9], mask_id=0, block_size=8,
                                 n_samples=2, generator=torch.Generator())


@pytest.mark.parametrize("line, said", [
    ("[1, 2]", "not a JSON object"),
    ('{"step": "abc", "loss": 1.0}', 'step is not a whole number ("abc")'),
    ('{"step": 1.5, "loss": 1.0}', "step is not a whole number (1.5)"),
    ('{"step": 1, "loss": "x"}', 'loss is not a number ("x")'),
    ('{"step": 1, "val_loss": 2.0, "val_bpb": true}', "val_bpb is not a number (true)"),
    ('{"event": "start", "params": "many"}', 'params is not a whole number ("many")'),
    ('{"step": 1, "loss": 1.0, "tokens_per_s": "fast"}', "tokens_per_s is not a number"),
])
def test_a_metrics_record_of_the_wrong_shape_is_one_line(line, said, run, capsys, tmp_path):
    """A metrics.jsonl line that is JSON but not a record the summary can read (a list, a
    step or loss that is no number) was a traceback (AttributeError, ValueError, TypeError
    from the report's format); it is one line naming the line, exit 2. A null (a non-finite
    number as the log writes it) and a whole float step still read."""
    import shutil

    from unmask.report import read_metrics

    shutil.copytree(run / "checkpoint", tmp_path / "r" / "checkpoint")
    (tmp_path / "r" / "metrics.jsonl").write_text(f'{line}\n{{"step": 2, "loss": 1.0}}\n')
    rc, _, err = _eval(capsys, tmp_path / "r", "--no-score", "--no-plot")
    assert rc == 2 and err.count("\n") == 1 and f"metrics.jsonl:1: {said}" in err
    (tmp_path / "r" / "metrics.jsonl").write_bytes(b'\xff{"step": 1}\n')
    rc, _, err = _eval(capsys, tmp_path / "r", "--no-score", "--no-plot")
    assert rc == 2 and err.count("\n") == 1 and "metrics.jsonl: not UTF-8 text (byte 0)" in err
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"step": 1.0, "loss": null, "val_loss": 2.0, "val_bpb": NaN}\n')
    assert len(read_metrics(ok)) == 1


def test_dream_style_seq_len_1_is_one_line(run, capsys, tmp_path):
    """A Dream-style (logit_shift) model predicts no window's first token: a window of one
    has nothing to score, refused as a causal model's is (it was a note and exit 0 that did
    not say why)."""
    from unmask.checkpoint import load
    from unmask.data import TokenDataset
    from unmask.errors import UserError
    from unmask.evaluate import evaluate_loss

    dream = _bare(tmp_path / "dream", logit_shift=True)
    rc, _, err = _eval(capsys, dream, "--no-score", "--no-plot", "--data", run.parent / "prepared",
                       "--seq-len", "1")
    assert rc == 2 and err.count("\n") == 1
    assert "--seq-len must be at least 2 for a Dream-style model" in err
    with pytest.raises(UserError, match="Dream-style.*seq_len must be at least 2"):
        evaluate_loss(load(dream).model, TokenDataset(run.parent / "prepared", "val"),
                      objective="mdlm", seq_len=1, max_batches=1)


def test_the_loss_curve_calls_a_loss_without_bound_a_loss(tmp_path, monkeypatch):
    """The validation series is a "bound" where the run logged bits/byte, and a "loss" where
    the family has no bound (embed-diffusion, latent: no bits/byte logged); it was called a
    bound for every family."""
    import matplotlib.pyplot as plt

    from unmask.report import plot_loss_curve, summarize_training

    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (figures.append(fig), close(fig)))
    train = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}]
    for val, want in (({"val_loss": 2.5, "val_bpb": 3.6}, "validation bound"),
                      ({"val_loss": 0.4}, "validation loss")):
        plot_loss_curve(summarize_training([*train, {"step": 2, **val}]), tmp_path / "c.png")
        labels = figures[-1].axes[0].get_legend_handles_labels()[1]
        assert labels == ["training loss", want]
