"""Seeded rows of a causal checkpoint in one batched run, each row with a generator of its own.

With a seed and a run that draws random numbers, every row of ``api.generate``, ``unmask
generate`` and the server is seeded on its own (``api.row_seeds``), so that a prompt writes
the same text alone or beside others. The ``ar`` decoder ran such rows one run per row, one
after another (a KV cache cannot share forwards across runs): several times slower than one
batch. Now its run takes one generator per row (``ARRun(generator=[...])``,
``Decoder.row_seeds``): row i of a batch draws exactly the calls, of the same shapes, that
it draws alone, so the batch writes, token for token, what each row writes alone."""

from __future__ import annotations

import json

import pytest
import torch
from test_cli_seed import _checkpoint  # a tiny checkpoint of the byte tokenizer

from unmask import api
from unmask.config import model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.sampling.ar import ARRun
from unmask.sampling.penalties import Penalties
from unmask.sampling.protocol import make_generator

PROMPTS = ["ab", "The cat", "", "In the beginning"]


def _model() -> Transformer:
    cfg = model_preset("tiny", vocab_size=48, max_seq_len=64, attention="causal", init_std=0.3)
    torch.manual_seed(0)
    return Transformer(cfg).eval()  # float32


@pytest.fixture(scope="module")
def ar_ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ar"), objective="ar", attention="causal")


def _loaded(path: str):
    return api.load_for_decoding(path, device="cpu", dtype="fp32")


@pytest.mark.parametrize("sampling", [
    {"temperature": 0.8},
    {"temperature": 0.6, "top_k": 20, "top_p": 0.9},
    {"temperature": 1.0, "top_p": 0.5, "penalties": Penalties(repetition=1.3, ngram=2)},
])
def test_a_batch_of_seeded_rows_draws_what_each_row_draws_alone(sampling):
    """Prompts of different lengths (one empty), seeds with a repeat, EOS so that rows end
    at different steps: row i of the batch = the row alone under ``seeds[i]``, token for
    token, and its generator ends in the same state (the same draws, none after its EOS)."""
    from unmask.sampling.ar import row_generators

    model = _model()
    prompts = [[5, 9, 17], [], [30, 4, 8, 11, 2, 7], [12], [5, 9, 17]]
    seeds = [3, 4, 3, 99, 100]
    kw = {"max_new_tokens": 24, "eos_id": None, "start_id": 2, **sampling}
    free = ARRun(model, prompts, generator=row_generators(seeds), **kw).run().gen_ids
    kw["eos_id"] = eos = free[0][3]  # row 0 ends by its fourth token
    gens = row_generators(seeds)
    batch = ARRun(model, prompts, generator=gens, **kw).run()
    ended = 0
    for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
        g = make_generator(seed)
        alone = ARRun(model, [prompt], generator=g, **kw).run()
        width = len(alone.gen_ids[0])
        assert batch.gen_ids[i][:width] == alone.gen_ids[0], i
        assert torch.equal(gens[i].get_state(), g.get_state()), i
        ended += eos in alone.gen_ids[0]
    assert 0 < ended < len(prompts)  # some rows stopped early, some ran to the end
    assert batch.gen_ids[0] != batch.gen_ids[4]  # the same prompt, other seeds: other draws


@pytest.mark.parametrize("sampling", [
    {"temperature": 0.8},
    {"temperature": 0.6, "top_k": 5, "top_p": 0.9},
    {"temperature": 1.0, "draft_threshold": 0.3},
    {"temperature": 1.0, "predraft": "ends", "penalties": Penalties(repetition=1.3)},
])
def test_a_hybrid_batch_of_seeded_rows_draws_what_each_row_draws_alone(sampling):
    """The one-model hybrid (drafts, acceptance tests and corrections all drawn): row i of a
    batch with a generator per row = the row alone under its seed, token for token, its
    generator in the same state at the end; rows accept different numbers of drafts per
    round and end at different steps."""
    from unmask.sampling.ar import row_generators
    from unmask.sampling.hybrid import HybridRun

    cfg = model_preset("tiny", vocab_size=12, max_seq_len=64, attention="causal", init_std=0.3,
                       draft_block=3, mask_id=0, pad_id=1, eos_id=2, bos_id=3)  # fmt: skip
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    prompts = [[4, 5, 6], [], [7, 8, 9, 4, 5], [6], [4, 5, 6]]
    seeds = [3, 4, 3, 99, 100]
    kw = {"max_new_tokens": 20, "eos_id": 2, **sampling}
    gens = row_generators(seeds)
    batch = HybridRun(model, prompts, generator=gens, **kw).run()
    accepted = 0
    for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
        g = make_generator(seed)
        alone = HybridRun(model, [prompt], generator=g, **kw).run()
        assert batch.gen_ids[i][: len(alone.gen_ids[0])] == alone.gen_ids[0], i
        assert torch.equal(gens[i].get_state(), g.get_state()), i
        accepted += alone.accepted
    assert batch.accepted == accepted > 0


def test_uniforms_from_one_generator_per_row():
    """Row i's uniform is the (1, 1) draw of its own generator; a row that does not draw
    leaves its generator as it was; a count that does not match is refused."""
    from unmask.sampling.ar import row_generators, uniforms

    gens = row_generators([7, 8, 7])
    u = uniforms(3, torch.device("cpu"), gens, torch.tensor([True, True, False]))
    first = torch.rand((1, 1), dtype=torch.float64, generator=make_generator(7))
    second = torch.rand((1, 1), dtype=torch.float64, generator=make_generator(8))
    assert u.shape == (3, 1) and u[0] == first[0] and u[1] == second[0] and u[2] == 0
    assert torch.equal(gens[2].get_state(), make_generator(7).get_state())
    with pytest.raises(ValueError, match="2 generators for 3 rows"):
        uniforms(3, torch.device("cpu"), gens[:2])
    with pytest.raises(ValueError, match="2 generators for 3 rows"):
        ARRun(_model(), [[1], [2], [3]], max_new_tokens=2, eos_id=None, generator=gens[:2])


def test_generate_runs_seeded_causal_rows_as_one_batch(ar_ckpt):
    """``api.generate`` with a seed, several prompts and ``n`` 2 on a causal checkpoint at
    temperature 0.6 with top-k and top-p: one run (a forward per token for all rows, not a
    run per row), and every row's text is that prompt's alone under seed + choice."""
    loaded = _loaded(ar_ckpt)
    config = {"gen_length": 12, "temperature": 0.6, "top_k": 40, "top_p": 0.95, "seed": 5}
    views = []
    out = api.generate(loaded, PROMPTS, config=config, n=2,
                       step_callback=lambda step, view: views.append(view.shape))
    assert out.decoder == "ar"
    assert out.nfe <= config["gen_length"]  # one run; a run per row took about 8 times that
    assert views and set(views) == {(len(PROMPTS) * 2, config["gen_length"])}
    assert len(views) == out.steps
    for k, prompt in enumerate(PROMPTS):
        for j in range(2):
            alone = api.generate(loaded, prompt, config={**config, "seed": 5 + j})
            assert alone.ids == [out.ids[k * 2 + j]], (prompt, j)
    assert len(set(out.texts)) > 1


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_seeded_rows_in_half_precision_stay_runs_of_their_own(ar_ckpt, dtype):
    """In bfloat16 / float16 a prompt left-padded beside longer ones rounds otherwise than
    alone, so near ties would sample other tokens: seeded rows are then a run each (as
    before rows had generators of their own), and each row is its prompt's text alone."""
    loaded = api.load_for_decoding(ar_ckpt, device="cpu", dtype=dtype)
    config = {"gen_length": 12, "temperature": 1.0, "seed": 4}
    assert not api.seeds_in_one_run(loaded, config)
    assert api.seeds_in_one_run(_loaded(ar_ckpt), config)
    out = api.generate(loaded, PROMPTS, config=config)
    for k, prompt in enumerate(PROMPTS):
        assert api.generate(loaded, prompt, config=config).ids == [out.ids[k]], prompt


def test_generate_runs_seeded_hybrid_rows_as_one_batch(tmp_path):
    """A checkpoint of objective ``hybrid`` (decoder ``hybrid``): seeded sampled rows of
    ``api.generate`` are one run too, each row the text of its prompt alone."""
    loaded = _loaded(_checkpoint(tmp_path / "hybrid", objective="hybrid", attention="causal",
                                 draft_block=3))
    config = {"gen_length": 12, "temperature": 0.8, "seed": 2}
    out = api.generate(loaded, PROMPTS, config=config)
    assert out.decoder == "hybrid"
    alone = [api.generate(loaded, p, config=config) for p in PROMPTS]
    assert out.ids == [a.ids[0] for a in alone]
    assert out.nfe == max(a.nfe for a in alone) < sum(a.nfe for a in alone)
    stats = out.result.acceptance_stats()
    assert stats["drafted"] == sum(a.result.acceptance_stats()["drafted"] for a in alone)


def test_the_server_runs_seeded_causal_rows_as_one_batch(ar_ckpt):
    """The server seeds the rows of a sampled causal request one generator each in one run
    (``batch_rows`` = every row), and writes what ``api.generate`` writes; a request of more
    rows than ``max_batch`` runs in slices, each row still its own seed's."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import ServerLimits, create_app

    loaded = _loaded(ar_ckpt)
    body = {"prompt": PROMPTS, "max_tokens": 10, "temperature": 0.7, "top_p": 0.9, "seed": 11,
            "n": 2}
    want = api.generate(loaded, PROMPTS, n=2, config={
        "gen_length": 10, "temperature": 0.7, "top_p": 0.9, "seed": 11}).texts
    for max_batch, rows in [(16, 8), (3, 3)]:
        with TestClient(create_app(loaded, limits=ServerLimits(max_batch=max_batch))) as c:
            r = c.post("/v1/completions", json=body)
            streamed = c.post("/v1/completions", json={**body, "stream": True})
        assert r.status_code == 200, r.text
        out = r.json()
        texts = [ch["text"] for ch in sorted(out["choices"], key=lambda ch: ch["index"])]
        assert texts == want
        assert out["batch_rows"] == rows and out["seed"] == 11
        pieces = [""] * len(want)  # the stream's deltas add up to the same texts
        for event in streamed.text.strip().split("\n\n"):
            if "[DONE]" not in event:
                for ch in json.loads(event.split("data: ", 1)[1])["choices"]:
                    pieces[ch["index"]] += ch["text"]
        assert pieces == want


def test_start_takes_seeds_only_where_the_decoder_has_a_generator_per_row(
        ar_ckpt, tmp_path):
    """``api.start(..., seeds=)``: a seed per row of an ``ar`` run, in segments too; refused
    in one line for a run that draws from one generator per run (here the commit loop under
    a registered policy) and for a count that does not match the rows (``seeds_in_one_run``
    says which runs take them)."""
    from unmask.sampling.policies import POLICIES, register_policy

    ar = _loaded(ar_ckpt)
    mdlm = _loaded(_checkpoint(tmp_path / "mdlm"))
    config = {"gen_length": 8, "temperature": 1.0}
    assert api.seeds_in_one_run(ar, config)
    assert api.seeds_in_one_run(ar, {**config, "segment_length": 4})  # a batch per segment
    assert api.seeds_in_one_run(mdlm, config)  # the commit loop: a generator per row too
    register_policy("own_rows")(lambda c: POLICIES["llada"](c))
    try:
        assert not api.seeds_in_one_run(mdlm, {**config, "policy": "own_rows"})
        with pytest.raises(UserError, match="one generator per run"):
            api.start(mdlm, [[65], [66]], {**config, "policy": "own_rows"}, seeds=[1, 2])
    finally:
        del POLICIES["own_rows"]
    assert api.seeds_in_one_run(ar, config, draft=mdlm)  # speculative: one batch too
    hybrid = _loaded(_checkpoint(tmp_path / "hybrid", objective="hybrid", attention="causal",
                                 draft_block=3))
    assert api.seeds_in_one_run(hybrid, config)
    run = api.start(ar, [[65, 66], [67]], config, seeds=[1, 2])
    assert run.run().tokens.shape[0] == 2
    run = api.start(ar, [[65, 66], [67]], {**config, "segment_length": 4}, seeds=[1, 2])
    assert run.run().tokens.shape[0] == 2
    with pytest.raises(UserError, match="3 seeds for 2 rows"):
        api.start(ar, [[65], [66]], config, seeds=[1, 2, 3])
    for bad, words in [(-1, "from 0 to 2"), (2**63, "from 0 to 2"), (1.5, "whole numbers"),
                       (True, "whole numbers"), (None, "whole numbers")]:
        with pytest.raises(UserError, match=words):
            api.start(ar, [[65], [66]], config, seeds=[1, bad])
