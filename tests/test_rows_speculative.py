"""Seeded rows of the two-model ``speculative`` decoder in one batched run, a generator per row.

A round's draft length is the batch's (what its least advanced row can use) and the drafter's
``draft_steps`` chunks were cut from it, so a row of a batch drew its drafts, acceptance tests
and corrections in calls of other shapes than alone, and seeded rows ran one run each. Now
``SpeculativeRun(generator=[...])`` gives each row its own draft length (its k alone), its
own chunks and draws, its own acceptance call, and, for a drafter without explicit layouts,
its own drafter forward: a batch of seeded rows writes, token for token, what each row writes
alone under its seed (fp32), and ``api.generate`` runs them as one batch."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch import nn

from unmask import api
from unmask.config import model_preset
from unmask.loaded import Loaded
from unmask.model import Transformer
from unmask.sampling.ar import row_generators
from unmask.sampling.penalties import Penalties
from unmask.sampling.protocol import make_generator
from unmask.sampling.speculative import SpeculativeRun
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
PROMPTS = [[10, 20, 30, 40, 50], [], [100, 101, 102, 103, 104, 105, 106, 107], [7],
           [10, 20, 30, 40, 50]]
SEEDS = [3, 4, 3, 99, 100]


def transformer(attention: str, seed: int, block_size: int | None = None, **extra) -> Transformer:
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, attention=attention,
                       block_size=block_size, init_std=0.3, **TOK.special_ids(), **extra)
    torch.manual_seed(seed)
    return Transformer(cfg).eval()  # float32


class NoLayouts(nn.Module):
    """A drafter without the cache interface (a Hugging Face model, say): it sees the
    left-padded canvas of the batch, every mask column included."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, tokens, attention_mask=None):
        return self.inner(tokens, attention_mask)


def canvas_reader() -> Transformer:
    """A block-causal drafter that reads its noise level off the canvas (no explicit layouts)."""
    cfg = dataclasses.replace(transformer("block-causal", 16, block_size=4).config,
                              time_conditioning=True, sigma_input="masked_fraction")  # fmt: skip
    torch.manual_seed(16)  # a seed whose drafts the verifier accepts now and then
    drafter = Transformer(cfg).eval()
    with torch.no_grad():  # adaLN-Zero starts as the identity: random modulation reads the canvas
        for p in drafter.parameters():
            if not p.any():
                p.normal_(0, 0.3)
    return drafter


DRAFTERS = {
    "bidirectional, prefix cache": (lambda: transformer("bidirectional", 3), "prefix"),
    "bidirectional, no cache": (lambda: transformer("bidirectional", 3), "none"),
    "block-causal, prefix cache": (lambda: transformer("block-causal", 4, 4), "prefix"),
    "no explicit layouts": (lambda: NoLayouts(transformer("bidirectional", 3)), "prefix"),
    "reads the canvas": (canvas_reader, "none"),
}
SETTINGS = [  # temperatures above 1: random models then agree on some drafts
    {"temperature": 2.0},
    {"temperature": 1.5, "top_k": 150, "top_p": 0.98, "draft_steps": 2},
    {"temperature": 3.0, "draft_steps": 3, "draft_threshold": 0.01},
    {"temperature": 2.0, "penalties": Penalties(repetition=1.3, ngram=2), "draft_length": 3},
]


def run(verifier, drafter, prompts, generator, **kw) -> SpeculativeRun:
    opts = {"max_new_tokens": 20, "draft_length": 5, **kw}
    return SpeculativeRun(verifier, drafter, prompts, generator=generator, **opts)


@pytest.mark.parametrize("sampling", SETTINGS)
@pytest.mark.parametrize("drafter_kind", list(DRAFTERS))
def test_a_batch_of_seeded_rows_writes_what_each_row_writes_alone(drafter_kind, sampling):
    """Prompts of different lengths (one empty), a repeated prompt under other seeds, an EOS
    that ends some rows early: row i of the batch = the row alone under ``seeds[i]``, token
    for token; its generator ends in the same state; drafts and acceptances are the rows'
    own (their sums); the batch runs as many rounds as its slowest row."""
    make, cache = DRAFTERS[drafter_kind]
    verifier, drafter = transformer("causal", 5), make()
    kw = {**sampling, "draft_cache": cache}
    free = run(verifier, drafter, PROMPTS, row_generators(SEEDS), eos_id=TOK.eos_id,
               **kw).run()  # fmt: skip
    eos = free.gen_ids[0][2]  # row 0 ends by its third token
    gens = row_generators(SEEDS)
    batch = run(verifier, drafter, PROMPTS, gens, eos_id=eos, **kw).run()
    alone = []
    for i, (prompt, seed) in enumerate(zip(PROMPTS, SEEDS, strict=True)):
        g = make_generator(seed)
        one = run(verifier, drafter, [prompt], g, eos_id=eos, **kw).run()
        width = len(one.gen_ids[0])
        assert batch.gen_ids[i][:width] == one.gen_ids[0], i
        assert torch.equal(gens[i].get_state(), g.get_state()), i
        alone.append(one)
    assert 0 < sum(eos in a.gen_ids[0] for a in alone) < len(PROMPTS)
    assert batch.gen_ids[0] != batch.gen_ids[4]  # the same prompt, other seeds
    for f in ("drafted", "accepted", "row_rounds", "committed"):
        assert getattr(batch, f) == sum(getattr(a, f) for a in alone), f
    assert batch.accepted > 0
    assert batch.steps == max(a.steps for a in alone)
    assert batch.verifier_nfe < sum(a.verifier_nfe for a in alone)  # one batch


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("drafter_kind", ["bidirectional, prefix cache", "bidirectional, no cache",
                                          "block-causal, prefix cache"])
def test_a_drafter_in_16_bits_drafts_each_row_as_alone(drafter_kind, dtype):
    """A drafter in 16 bits beside an fp32 verifier: in one batched forward a row's drafts
    rounded otherwise than alone (4 of 5 rows differed in bf16), so each row then runs its
    drafter forward by itself, against its own prefix cache: every row as alone again."""
    make, cache = DRAFTERS[drafter_kind]
    verifier, drafter = transformer("causal", 5), make().to(dtype)
    kw = {"temperature": 1.5, "draft_steps": 2, "draft_cache": cache}
    gens = row_generators(SEEDS)
    batch = run(verifier, drafter, PROMPTS, gens, eos_id=TOK.eos_id, **kw).run()
    alone = []
    for i, (prompt, seed) in enumerate(zip(PROMPTS, SEEDS, strict=True)):
        g = make_generator(seed)
        one = run(verifier, drafter, [prompt], g, eos_id=TOK.eos_id, **kw).run()
        assert batch.gen_ids[i][: len(one.gen_ids[0])] == one.gen_ids[0], i
        assert torch.equal(gens[i].get_state(), g.get_state()), i
        alone.append(one)
    for f in ("drafted", "accepted", "row_rounds"):
        assert getattr(batch, f) == sum(getattr(a, f) for a in alone), f
    assert batch.drafter_cache == alone[0].drafter_cache
    assert batch.verifier_nfe < sum(a.verifier_nfe for a in alone)


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_a_quantised_drafter_drafts_each_row_by_itself(scheme):
    """A drafter torchao quantised keeps fp32 parameters beside its quantised weights, whose
    kernels round as they do: it was taken for an exact one (its first parameter's dtype)
    and drafted the rows in one batched forward. Now each row runs its drafter forward by
    itself (every one of batch 1), as for a drafter in 16 bits: each row as alone."""
    pytest.importorskip("torchao")
    from unmask.quantize import quantize_model

    verifier = transformer("causal", 5)
    drafter = quantize_model(transformer("bidirectional", 3), scheme, "cpu")
    rows: list[int] = []
    drafter.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    kw = {"temperature": 1.5, "draft_steps": 2}
    gens = row_generators(SEEDS)
    batch = run(verifier, drafter, PROMPTS, gens, eos_id=TOK.eos_id, **kw).run()
    assert rows and set(rows) == {1}
    for i, (prompt, seed) in enumerate(zip(PROMPTS, SEEDS, strict=True)):
        g = make_generator(seed)
        one = run(verifier, drafter, [prompt], g, eos_id=TOK.eos_id, **kw).run()
        assert batch.gen_ids[i][: len(one.gen_ids[0])] == one.gen_ids[0], i
        assert torch.equal(gens[i].get_state(), g.get_state()), i


def test_greedy_rows_with_their_own_generators_draw_nothing_and_equal_ar():
    """At temperature 0 nothing is drawn: generators per row change nothing (the batch's
    drafter prefix cache, which once was dropped for a drafter in 16 bits: every forward
    then ran the whole canvas; no generator touched), and the text is the verifier's."""
    from test_speculative_draft import Widths

    from unmask.sampling.ar import generate_ar

    verifier = transformer("causal", 5)
    drafter = Widths(transformer("bidirectional", 3).half())
    gens = row_generators(SEEDS)
    r = run(verifier, drafter, PROMPTS, gens, eos_id=TOK.eos_id, draft_steps=2).run()
    assert r.gen_ids == generate_ar(verifier, PROMPTS, max_new_tokens=20,
                                    eos_id=TOK.eos_id).gen_ids  # fmt: skip
    assert r.drafter_cache == "prefix-approximate"
    assert max(drafter.widths[2:]) <= 2 * (5 + 1)  # new tokens and drafts, not the canvas
    assert all(torch.equal(g.get_state(), make_generator(s).get_state())
               for g, s in zip(gens, SEEDS, strict=True))  # fmt: skip


def test_a_row_generator_count_that_does_not_match_is_refused():
    verifier, drafter = transformer("causal", 5), transformer("bidirectional", 3)
    with pytest.raises(ValueError, match="2 generators for 5 rows"):
        run(verifier, drafter, PROMPTS, row_generators([1, 2]), eos_id=2, temperature=1.0)


def _loaded(model: nn.Module) -> Loaded:
    return Loaded(model=model, tokenizer=TOK, config=model.config, path=Path("runs/x"))


def test_generate_runs_seeded_speculative_rows_as_one_batch():
    """``api.generate`` with a drafter, a seed and several rows: one batched run (the
    verifier's forwards are the slowest row's, not the sum), each row what its prompt writes
    alone under its seed (choice j: seed + j), the acceptance counts the rows' sums."""
    verifier, drafter = _loaded(transformer("causal", 5)), _loaded(transformer("bidirectional", 3))
    config = {"gen_length": 16, "temperature": 0.9, "top_k": 30, "seed": 11, "draft_length": 4}
    prompts = ["ab", "The cat", "In the beginning"]
    assert api.seeds_in_one_run(verifier, config, draft=drafter)
    with mock.patch.object(SpeculativeRun, "__init__", autospec=True,
                           side_effect=SpeculativeRun.__init__) as made:  # fmt: skip
        out = api.generate(verifier, prompts, config=config, n=2, draft=drafter)
    assert made.call_count == 1 and out.decoder == "speculative"
    alone = [api.generate(verifier, p, config={**config, "seed": 11 + j}, draft=drafter)
             for p in prompts for j in range(2)]  # fmt: skip
    assert out.ids == [a.ids[0] for a in alone]
    stats = out.result.acceptance_stats()
    for name in ("drafted", "accepted"):
        assert stats[name] == sum(a.result.acceptance_stats()[name] for a in alone), name
    assert stats["verifier_forwards"] == max(a.result.verifier_nfe for a in alone)
    assert out.nfe < sum(a.nfe for a in alone)


class ChainDrafter(nn.Module):
    """Proposes after token t from a table of its own (another chain than the verifier's), so
    its confidence differs by context and an adaptive length cuts some drafts, not all."""

    TABLE = torch.tensor([[0.5, 1.0, 0.0, 0.2, 0.0], [2.0, 0.0, 0.0, 0.0, 0.0],
                          [0.0, 1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.5, 0.0],
                          [1.0, 0.5, 0.0, 0.0, 0.0]], dtype=torch.float64)  # fmt: skip

    def __init__(self) -> None:
        from test_speculative import Cfg

        super().__init__()
        self.config = Cfg("bidirectional")

    def forward(self, tokens, attention_mask=None):
        before = torch.cat([tokens[:, :1], tokens[:, :-1]], dim=1)
        return self.TABLE[before]  # (B, L, V)


def _markov_rows(runs: int, gen: int, *, per_row: bool = True, **kw) -> list[list[int]]:
    """``runs`` rows of prompt [1, 2] in one batch, row i seeded i (a generator each; or one
    generator seeded 0 for the batch), under the Markov-chain verifier of
    tests/test_speculative.py and ``ChainDrafter``."""
    from test_speculative import Markov

    gens = row_generators(range(runs)) if per_row else make_generator(0)
    return SpeculativeRun(Markov(), ChainDrafter(), [[1, 2]] * runs, max_new_tokens=gen,
                          temperature=1.0, eos_id=None, generator=gens, **kw).run().gen_ids


ADAPTIVE = {"draft_length": 3, "draft_steps": 3, "draft_threshold": 0.3}
"""An adaptive length that a confidence read off the drawn token biases (TV 0.135 at 1000
rows, 0.028 as it is: the check below tells them apart; the settings beside it do not)."""


@pytest.mark.parametrize("kw", [{"draft_length": 2},
                                {"draft_length": 3, "draft_steps": 2, "draft_threshold": 0.5},
                                ADAPTIVE])  # fmt: skip
def test_rows_with_their_own_generators_are_distributed_as_the_verifier(kw):
    """Each row's own chunks, adaptive length and acceptance call keep speculative sampling
    exact: 1000 rows seeded 0..999 follow the verifier's marginals (fixed seeds: the same
    numbers every run); a rule that accepts every draft, or a draft length decided by the
    drawn token, fails the same check (below)."""
    from test_speculative import empirical, exact_marginals, tv

    exact = exact_marginals(2, 3)
    got = empirical(lambda n: _markov_rows(n, 3, **kw), 3, 1000)
    assert max(tv(e, g) for e, g in zip(exact, got, strict=True)) < 0.06


def test_a_wrong_acceptance_rule_fails_the_check_on_rows_with_their_own_generators(monkeypatch):
    from test_speculative import empirical, exact_marginals, tv

    from unmask.sampling import speculative as spec_mod

    def always_accept(draft, q, p, generator=None, lengths=None):
        B, k = draft.shape
        bonus = spec_mod._draw(p[:, k], generator)
        return torch.full((B,), k), torch.cat([draft, bonus[:, None]], dim=1)

    monkeypatch.setattr(spec_mod, "accept_sampled", always_accept)
    got = empirical(lambda n: _markov_rows(n, 2, draft_length=2), 2, 1000)
    assert max(tv(e, g) for e, g in zip(exact_marginals(2, 2), got, strict=True)) > 0.1


def test_an_adaptive_length_on_one_generator_is_distributed_as_the_verifier():
    """``ADAPTIVE`` on the batch's one generator (``_draft``'s batched chunks), the same check."""
    from test_speculative import empirical, exact_marginals, tv

    got = empirical(lambda n: _markov_rows(n, 3, per_row=False, **ADAPTIVE), 3, 1000)
    assert max(tv(e, g) for e, g in zip(exact_marginals(2, 3), got, strict=True)) < 0.06


@pytest.mark.parametrize("per_row", [True, False])
def test_a_confidence_read_after_the_draw_fails_the_check(monkeypatch, per_row):
    """The control of ``ADAPTIVE``: a draft length cut by the probability of the token drawn
    (not q's top one, decided before the draw) keeps drafts the drafter happened to like,
    and the rows' marginals leave the verifier's (TV 0.135 with a generator per row, 0.143
    on one; 0.028 and 0.022 as it is)."""
    from test_speculative import empirical, exact_marginals, tv

    from unmask.sampling import speculative as spec_mod

    def drawn_token(q, drawn):
        return q.gather(-1, drawn[..., None])[..., 0]

    monkeypatch.setattr(spec_mod, "_confidence", drawn_token)
    got = empirical(lambda n: _markov_rows(n, 3, per_row=per_row, **ADAPTIVE), 3, 1000)
    assert max(tv(e, g) for e, g in zip(exact_marginals(2, 3), got, strict=True)) > 0.1


def test_the_server_runs_seeded_speculative_choices_as_one_batch_with_the_api_texts():
    """A seeded sampled request with ``n`` choices to a server with a drafter: one batched run
    (``batch_rows`` = every row), the texts ``api.generate`` writes for the same request."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    verifier, drafter = _loaded(transformer("causal", 5)), _loaded(transformer("bidirectional", 3))
    prompts = ["ab", "The cat"]
    body = {"prompt": prompts, "max_tokens": 12, "temperature": 1.2, "seed": 4, "n": 2}
    with TestClient(create_app(verifier, draft=drafter,
                               limits=ServerLimits(max_batch=16))) as c:  # fmt: skip
        r = c.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    texts = [ch["text"] for ch in sorted(out["choices"], key=lambda ch: ch["index"])]
    want = api.generate(verifier, prompts, n=2, draft=drafter,
                        config={"gen_length": 12, "temperature": 1.2, "seed": 4}).texts
    assert texts == want and out["batch_rows"] == 4
