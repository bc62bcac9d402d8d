"""``unmask eval`` and the evaluation library (session 38 of the eval audit)."""

import json

import pytest
import torch
from corpus_helpers import word_corpus

from unmask.cli import main
from unmask.config import TrainConfig

WORDS = "the lord said unto moses go down and speak to the people of israel".split()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4-step ``tiny`` mdlm run on a byte-level corpus of random word lines."""
    from unmask.train import train

    root = tmp_path_factory.mktemp("eval38")
    data = word_corpus(root, WORDS, 300, 0)
    cfg = TrainConfig(data=str(data), out=str(root / "run"), preset="tiny", seq_len=32,
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
    """At a temperature above 0 sample i is its prompt's, decoded alone under its seed: one
    generator served the batch, so the first sample changed with --samples."""
    args = (run, "--gen-length", "8", "--steps", "8", "--temperature", "1", "--seed", "5")
    two, three = _texts(capsys, *args, "--samples", "2"), _texts(capsys, *args, "--samples", "3")
    assert three[:2] == two
    assert len(set(three)) == 3  # draws of their own (under one seed for all: one text)
    assert _texts(capsys, *args, "--samples", "2", "--seed", "6") != two  # the seed decides


def _verses(tmp_path, words: tuple[int, int] = (12, 17)) -> str:
    """A byte-level corpus of 900 word lines of ``words`` (from, to) words, a verse a line."""
    from unmask.data import prepare

    g = torch.Generator().manual_seed(1)
    lines = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (n,), generator=g).tolist())
             for n in torch.randint(*words, (900,), generator=g).tolist()]
    (tmp_path / "a.txt").write_text("\n".join(lines) + "\n")
    prepare([tmp_path / "a.txt"], tmp_path / "d", tokenizer="byte", val_fraction=0.2,
            line_docs=True, min_val_tokens=0, progress=False)
    return str(tmp_path / "d")


def test_lm_eval_demo_draws_other_distractors_for_each_item(benchmark, tmp_path):
    """benchmarks/lm_eval_demo.py's verse_mc: the three wrong endings of an item are drawn
    from the other verses; they were the first three others, so every item from the fourth
    on had the same three (the first three items' true endings)."""
    benchmark("lm_eval_demo").build_tasks(_verses(tmp_path), tmp_path, 8, seed=0)
    items = [json.loads(line) for line in (tmp_path / "mc.jsonl").read_text().splitlines()]
    wrong = [frozenset(c for k, c in enumerate(it["choices"]) if k != it["label"])
             for it in items]
    assert all(len(w) == 3 for w in wrong)
    assert len(set(wrong[3:])) > 1


def test_lm_eval_demo_on_too_few_verses_is_one_line(benchmark, tmp_path):
    """Fewer than four verses (of 12 words or more) cannot make an item of four endings: the
    draw was random.sample's traceback (the first three others: items of fewer endings)."""
    from unmask.errors import UserError

    with pytest.raises(UserError, match="need 4"):
        benchmark("lm_eval_demo").build_tasks(_verses(tmp_path, (5, 9)), tmp_path, 8, seed=0)


def test_gen_ppl_samples_decoded_a_few_at_a_time_are_those_of_one_batch(
        run, capsys, uniform_scorer, monkeypatch, tmp_path):
    """The samples are decoded ``SAMPLE_ROWS`` at a time (one batch of every sample held all
    their logits at once), each as alone under its seed: the texts are those of any chunk
    size, and the unconditional samples (copies of the empty prompt) differ across chunks
    (their seeds drawn over all of them)."""
    from unmask.commands import eval as eval_command
    from unmask.data import prepare

    (tmp_path / "a.txt").write_text("the lord said unto moses\n" * 20)
    prepare([tmp_path / "a.txt"], tmp_path / "noval", tokenizer="byte", val_fraction=0,
            min_val_tokens=0, progress=False)
    args = (run, "--gen-length", "8", "--steps", "8", "--temperature", "1", "--samples", "3")
    whole = _texts(capsys, *args)
    unconditional = _texts(capsys, *args, "--data", tmp_path / "noval")
    monkeypatch.setattr(eval_command, "SAMPLE_ROWS", 2, raising=False)
    assert _texts(capsys, *args) == whole
    assert _texts(capsys, *args, "--data", tmp_path / "noval") == unconditional
    assert len(set(unconditional)) == 3


def test_monte_carlo_masks_are_drawn_a_chunk_at_a_time(monkeypatch):
    """The estimator drew every mask before the first forward (``n_samples`` by the target's
    length: 10**11 was an 800 GB allocation), and refused past 65,536 samples, which turned
    away benchmarks/elbo_stderr.py --samples 70000. Now the draws are ``MC_DRAW_ROWS`` rows
    at a time, whatever the count, and the estimate still does not depend on the batch size."""
    from unmask.config import model_preset
    from unmask.evaluate import MC_DRAW_ROWS, elbo_loglikelihood, exact_elbo
    from unmask.model import Transformer

    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=48, max_seq_len=16)).eval()
    rand, rows = torch.rand, []

    def spy(*size, **kw):
        rows.append(size[0])
        return rand(*size, **kw)

    monkeypatch.setattr(torch, "rand", spy)
    one = elbo_loglikelihood(model, [5, 9], [7], mask_id=0, n_samples=70_000, batch_size=8192,
                             generator=torch.Generator().manual_seed(0))
    assert one.n_samples == 70_000 and max(rows) <= MC_DRAW_ROWS == 1024
    # one target token: every sample is the exact value
    assert one.logprob == pytest.approx(exact_elbo(model, [5, 9], [7], mask_id=0), abs=1e-4)
    est = {b: elbo_loglikelihood(model, [5], [7, 20, 31], mask_id=0, n_samples=2500,
                                 batch_size=b, generator=torch.Generator().manual_seed(1))
           for b in (7, 1000, 4096)}
    assert est[7] == est[1000] == est[4096]


def test_elbo_stderr_refuses_samples_past_the_most_before_loading(benchmark, tmp_path):
    """benchmarks/elbo_stderr.py --samples: a count the estimator takes runs (70000 did not),
    one past ``MAX_MC_SAMPLES`` is one line naming the flag before the model loads."""
    from unmask.errors import UserError

    with pytest.raises(UserError, match="--samples must be at most 1,048,576, got 2,000,000"):
        benchmark("elbo_stderr").main(["--model", str(tmp_path / "none"),
                                        "--samples", "4,2000000"])


def test_seed_sweeps_of_gen_ppl_share_no_sample(run, capsys, uniform_scorer, tmp_path):
    """Sample i ran under seed + i: unprompted (no held-out prompts), sample i of --seed 6
    was sample i + 1 of --seed 5, so a sweep of seeds counted the same samples again."""
    from unmask.data import prepare

    (tmp_path / "a.txt").write_text("the lord said unto moses\n" * 20)
    prepare([tmp_path / "a.txt"], tmp_path / "noval", tokenizer="byte", val_fraction=0,
            min_val_tokens=0, progress=False)
    args = (run, "--data", tmp_path / "noval", "--gen-length", "8", "--steps", "8",
            "--temperature", "1", "--samples", "3")
    five, six = _texts(capsys, *args, "--seed", "5"), _texts(capsys, *args, "--seed", "6")
    assert len(set(five)) == len(set(six)) == 3
    assert not set(five) & set(six)


def test_lm_eval_demo_counts_each_verse_once(benchmark, tmp_path):
    """A split of repeated verses passed the four-verse count and then was random.sample's
    traceback (the item's own text is no other verse); now it is the count's one line."""
    from unmask.data import prepare
    from unmask.errors import UserError

    verse = " ".join(WORDS[:13])
    (tmp_path / "a.txt").write_text(f"{verse}\n" * 900)
    prepare([tmp_path / "a.txt"], tmp_path / "d", tokenizer="byte", val_fraction=0.2,
            line_docs=True, min_val_tokens=0, progress=False)
    with pytest.raises(UserError, match="holds [123] distinct verses? of .* need 4"):
        benchmark("lm_eval_demo").build_tasks(str(tmp_path / "d"), tmp_path, 8, seed=0)
