"""``benchmarks/objectives.py``: its family runs resume after an interruption, finished runs
are reused, and its samples start from held-out text with broken samples counted."""

import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from unmask.config import TrainConfig
from unmask.errors import UserError
from unmask.train_guards import TrainingStopped, saved_progress

WORDS = "in the beginning god created the heavens and the earth and it was good".split()


@pytest.fixture
def bench(benchmark):
    return benchmark("objectives")


@pytest.fixture(scope="module")
def corpus(word_corpus):
    return word_corpus("families", WORDS)


def _cfg(corpus, out, **kw):
    base = dict(
        data=str(corpus), out=str(out), preset="tiny", objective="mdlm", seq_len=16, batch_size=4,
        steps=6, warmup=1, eval_every=0, eval_batches=1, save_every=2, log_every=1, seed=0,
        threads=1,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_interrupted_family_resumes_to_the_uninterrupted_run(corpus, tmp_path, monkeypatch, bench):
    whole = bench.train_run(_cfg(corpus, tmp_path / "whole"))

    import unmask.train as train_module

    lr_at = train_module.lr_at

    def interrupting(step, config):  # Ctrl-C in the middle of step 3
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return lr_at(step, config)

    monkeypatch.setattr(train_module, "lr_at", interrupting)
    cut = tmp_path / "cut"
    with pytest.raises(TrainingStopped):
        bench.train_run(_cfg(corpus, cut))
    stopped_at = saved_progress(cut / "checkpoint").step
    assert 0 < stopped_at < 6
    monkeypatch.setattr(train_module, "lr_at", lr_at)
    calls = []
    train = bench.train

    def recording(config, **kw):
        calls.append(kw.get("resume", False))
        return train(config, **kw)

    monkeypatch.setattr(bench, "train", recording)
    bench.train_run(_cfg(corpus, cut))  # the same call again: resumes, does not restart
    assert calls == [True]
    assert saved_progress(cut / "checkpoint").step == 6
    a = load_file(whole / "checkpoint" / "model.safetensors")
    b = load_file(cut / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert bench.train_seconds(cut) > 0


def test_finished_run_is_kept_and_another_plan_refused(corpus, tmp_path, monkeypatch, bench):
    run = bench.train_run(_cfg(corpus, tmp_path / "run", steps=2))
    before = (run / "checkpoint" / "model.safetensors").read_bytes()

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(bench, "train", no_training)
    assert bench.train_run(_cfg(corpus, tmp_path / "run", steps=2, save_every=1)) == run
    assert (run / "checkpoint" / "model.safetensors").read_bytes() == before
    with pytest.raises(UserError, match="steps=2"):
        bench.train_run(_cfg(corpus, tmp_path / "run", steps=4))


def test_run_stopped_before_its_first_checkpoint_starts_afresh(corpus, tmp_path, bench):
    out = tmp_path / "early"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"event": "start"}\n')  # killed before any save
    run = bench.train_run(_cfg(corpus, out, steps=2))
    assert saved_progress(run / "checkpoint").step == 2


def test_prompts_are_distinct_held_out_starts_and_broken_samples_counted(corpus, bench):
    from unmask.data import TokenDataset

    prompts = bench.held_out_prompts(corpus, 4, 5, 16)
    assert prompts == bench.held_out_prompts(corpus, 4, 5, 16)
    assert len(prompts) == 4 and all(len(p) == 5 for p in prompts)
    assert len({tuple(p) for p in prompts}) == 4
    val = TokenDataset(corpus, "val")
    starts = [[int(t) for t in w[:5]] for w in val.windows(16)]
    assert all(p in starts for p in prompts)
    with pytest.raises(UserError, match="windows"):
        bench.held_out_prompts(corpus, 10**6, 5, 16)

    tok = val.tokenizer()
    text = "the earth"
    ids = tok.encode(text)
    assert not bench.is_broken(ids, text, tok)
    assert bench.is_broken([*ids, val.special_ids["pad_id"]], text, tok)
    assert bench.is_broken(ids, text + "\ufffd", tok)


def test_floor_interpolates_log_gen_ppl_in_entropy_and_refuses_to_extrapolate(bench):
    # the point without a gen ppl (no scorer) is left out
    curve = [{"entropy": 4.0, "gen_ppl": 10_000.0}, {"entropy": 3.0, "gen_ppl": 100.0},
             {"entropy": 2.0, "gen_ppl": None}]  # fmt: skip
    assert bench.floor_at(curve, 3.5) == pytest.approx(1_000.0)
    assert bench.floor_at(curve, 3.0) == pytest.approx(100.0)
    assert bench.floor_at(curve, 3.25) == pytest.approx(100.0 * 10**0.5)
    assert bench.floor_at(curve, 2.5) is None and bench.floor_at(curve, 4.1) is None


def test_tempered_unigram_samples_are_less_diverse(corpus, bench):
    from types import SimpleNamespace

    from unmask.data import TokenDataset

    vocab = TokenDataset(corpus, "train").vocab_size
    nll = bench.unigram_nll(corpus, vocab)
    args = SimpleNamespace(gen_samples=8, gen_length=32)
    hot = bench.unigram_samples(corpus, nll, args, 1.2)
    plain = bench.unigram_samples(corpus, nll, args)
    cold = bench.unigram_samples(corpus, nll, args, 0.3)
    assert hot["entropy"] > plain["entropy"] > cold["entropy"]
    assert plain == bench.unigram_samples(corpus, nll, args, 1.0)  # seeded




def test_infill_scores_count_spans_and_tokens(corpus, tmp_path, monkeypatch, bench):
    """Exact match counts whole spans, token accuracy single tokens: a sampler that fills the
    five spans with their truth but one wrong token in spans 0, 2 and 4 scores 2/5 and 17/20."""
    from types import SimpleNamespace

    import unmask.sampling
    from unmask.data import SPLIT_BLOCK, TokenDataset
    from unmask.gapset import make_gap_set

    args = SimpleNamespace(seq_len=16, infill_span=4, infill_n=5, sample_steps=0)
    ar = bench.train_run(_cfg(corpus, tmp_path / "ar", objective="ar", steps=1))
    none = {"infill_exact_match": None, "infill_token_acc": None}
    assert bench.infill_scores(ar, corpus, args) == none

    run = bench.train_run(_cfg(corpus, tmp_path / "mdlm", steps=1))
    tok = bench.load(run).tokenizer
    rows = make_gap_set(TokenDataset(corpus, "val"), tok, window=16, spans=[4], n=5, seed=0,
                        block=SPLIT_BLOCK)[4]  # fmt: skip
    calls = []

    def oracle(model, canvas, config):
        r = rows[len(calls)]
        ids = r.prefix + list(r.truth) + r.suffix
        assert canvas.tokens[0].tolist()[: r.start] == r.prefix  # the gap sits where it should
        if len(calls) % 2 == 0:  # spans 0, 2, 4: one token wrong
            ids[r.start + 1] = -1
        calls.append(config)
        return SimpleNamespace(tokens=torch.tensor([ids]))

    monkeypatch.setattr(unmask.sampling, "sample", oracle)
    got = bench.infill_scores(run, corpus, args)
    assert len(calls) == 5
    assert got["infill_exact_match"] == pytest.approx(2 / 5)
    assert got["infill_token_acc"] == pytest.approx(17 / 20)
