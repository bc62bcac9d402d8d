"""Infilling and editing as a demanding user runs them (review of session 35):
``benchmarks/infill.py``'s rows are what ``unmask infill`` does and its results file is
written whole; ``--sedd-sampler`` is refused where nothing reads it; a later round of
``revise`` that cannot fit its blocks ends the revision instead of failing it."""

from __future__ import annotations

import json

import pytest
import torch

from unmask.config import InfillOptions, SampleConfig, model_preset
from unmask.gapset import GapFiller, GapSample
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


def test_the_per_token_row_is_scored_as_length_score_per_token_scores(benchmark):
    """The ``diffusion (ELBO/tok)`` row was read from the candidates of the ``total`` run: the
    continuous-time bound per token, where ``length_score="per_token"`` scores with the count
    estimator and more copies for close calls (``paired_per_token_terms``); its lengths and
    NFE were not those of any ``unmask infill`` run."""
    bench = benchmark("infill")
    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64)).eval()
    options = InfillOptions(max_candidates=5, elbo_samples=2)
    window = tok.encode("the cat sat on the mat and the dog sat")
    samples = [GapSample(window=window, start=s, length=2, lo=1, hi=5) for s in (4, 8, 15, 20)]
    rows = {r["method"]: r for r in bench.run_variable({2: samples}, GapFiller(model, tok,
                                                                                 options), None)}
    own = GapFiller(model, tok, InfillOptions(max_candidates=5, elbo_samples=2,
                                              length_score="per_token"))
    runs = [own(x, x.lo, x.hi, SampleConfig(steps=x.hi)) for x in samples]
    got = rows[bench.ELBO["per_token"]]
    assert got["nfe"] == sum(r.nfe for r in runs) / len(runs)
    assert got["mean_len_err"] == sum(len(r.gaps[0].tokens) - 2 for r in runs) / len(runs)


def _stubbed(bench, monkeypatch) -> None:
    """``bench.main`` with nothing loaded, prepared nor measured: only its results are written."""
    from types import SimpleNamespace

    config = SimpleNamespace(max_seq_len=256, attention="bidirectional", empty_id=None)
    model = SimpleNamespace(model=SimpleNamespace(parameters=lambda: iter([torch.zeros(3)]),
                                                  config=config),
                            config=config, path=None, tokenizer=None)
    data = SimpleNamespace(tokenizer=lambda: None, n_tokens=10)
    monkeypatch.setattr(bench, "load", lambda *a, **k: model)
    monkeypatch.setattr(bench, "held_out", lambda *a, **k: data)
    monkeypatch.setattr(bench, "TokenDataset", lambda *a, **k: data)
    monkeypatch.setattr(bench, "check_vocab", lambda *a, **k: None)
    monkeypatch.setattr(bench, "make_gap_set", lambda *a, **k: {1: []})
    rows = [{"method": "x", "pad": "y" * 2000}]
    monkeypatch.setattr(bench, "run_fixed", lambda *a, **k: rows)
    monkeypatch.setattr(bench, "run_variable", lambda *a, **k: [])
    monkeypatch.setattr(bench, "print_tables", lambda *a, **k: None)


def test_a_results_file_is_written_whole_or_not_at_all(benchmark, monkeypatch, tmp_path):
    """``--json`` wrote the results in place: a write cut short (here the file size limit a
    full disk acts as) left half a JSON file where the last results were."""
    import os
    import resource
    import signal

    bench = benchmark("infill")
    _stubbed(bench, monkeypatch)
    out = tmp_path / "infill.json"
    out.write_text('{"old": 1}\n')
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (500, resource.RLIM_INFINITY))
            bench.main(["--quick", "--data", str(tmp_path), "--json", str(out)])
        except OSError:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # the write failed
    assert out.read_text() == '{"old": 1}\n'  # was the first 500 bytes of the new results
    assert [p.name for p in tmp_path.iterdir()] == ["infill.json"]  # no temporary file left
    bench.main(["--quick", "--data", str(tmp_path), "--json", str(out)])  # no limit: written
    assert json.loads(out.read_text())["fixed"][0]["method"] == "x"


def test_sedd_sampler_is_refused_by_the_template_tasks(tmp_path, capsys):
    """``--sedd-sampler`` is read only by SEDD's reverse process, which generation runs; the
    gaps of infill, edit and forms are filled by the commit loop on every checkpoint (a
    SEDD one's too), so ``unmask infill --sedd-sampler euler`` ran and changed nothing."""
    from unmask import api
    from unmask.checkpoint import load, save_checkpoint
    from unmask.cli import main
    from unmask.errors import UserError

    tok = byte_tokenizer()
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32)).eval()
    run = str(save_checkpoint(tmp_path / "run", model=model, tokenizer=tok))
    flags = ["--model", run, "--no-live", "--device", "cpu", "--sedd-sampler", "euler"]
    assert main(["infill", "the [MASK:2] sat", *flags]) == 2
    err = capsys.readouterr().err
    assert "--sedd-sampler applies to generation" in err and "not to infill" in err
    assert main(["edit", "--text", "the cat", "--span", "4:7", *flags]) == 2
    assert "--sedd-sampler applies to generation" in capsys.readouterr().err
    loaded = load(run)
    for call in (lambda c: api.infill(loaded, "the [MASK:2] sat", config=c),
                 lambda c: api.edit(loaded, "the cat", spans=[(4, 7)], config=c),
                 lambda c: api.fill_form(loaded, '{"a": "<int:0..9>"}', config=c)):
        with pytest.raises(UserError, match="sedd_sampler applies to generation"):
            call({"sedd_sampler": "euler"})
        assert call({}).text  # the default still runs


class _Hashed:
    """Logits drawn from a generator seeded by each row's tokens: deterministic, context
    dependent, no training."""

    def __init__(self, vocab_size: int) -> None:
        self.V, self.calls = vocab_size, 0

    def __call__(self, tokens, attention_mask=None):
        import hashlib

        self.calls += 1
        out = torch.empty(*tokens.shape, self.V)
        for b, row in enumerate(tokens.tolist()):
            seed = int(hashlib.md5(str(row).encode()).hexdigest()[:8], 16)
            out[b] = torch.randn(len(row), self.V, generator=torch.Generator().manual_seed(seed))
        return out * 3


@pytest.mark.parametrize(("text", "block_length", "steps"),
                         [("abcdef", 1, 2), ("abcdef", 2, 1), ("a cat", 3, 1)])
def test_a_later_round_whose_tokens_span_more_blocks_than_steps_ends_the_revision(
        text, block_length, steps):
    """The first round's two least confident tokens fit the blocks its steps allow; a later
    round's lay further apart, and its fill refused the steps (one line, after the rounds
    before it had run: their changes were lost). The revision now ends before that round,
    as it does when a round's scoring outgrows its share of ``max_calls``."""
    from unmask.config import SampleConfig
    from unmask.errors import UserError
    from unmask.infill import revise

    tok = byte_tokenizer()
    config = SampleConfig(steps=steps, block_length=block_length)
    one = revise(_Hashed(tok.vocab_size), tok, text, rounds=1, lowest=2, config=config)
    model = _Hashed(tok.vocab_size)
    got = revise(model, tok, text, rounds=3, lowest=2, config=config)
    assert 1 <= got.rounds < 3 and got.nfe == model.calls
    assert [c for c in got.changes if c.round == 1] == one.changes
    with pytest.raises(UserError, match="must be at least the number of blocks"):  # round 1
        revise(_Hashed(tok.vocab_size), tok, text, rounds=3, lowest=2,
               config=SampleConfig(steps=1, block_length=1))
