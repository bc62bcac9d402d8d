"""One decoding path: checkpoint facts, ``choose_decoder`` and its refusals, and the same tokens
from the Python API, ``unmask generate`` and the server's engine for every checkpoint kind."""

from __future__ import annotations

import dataclasses
import functools
import json
from types import SimpleNamespace

import pytest
import torch
from test_convert import make_llada

import unmask
from unmask import api
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.facts import ModelFacts, default_decoder, infer_objective
from unmask.model import Transformer
from unmask.sampling import DECODERS, choose_decoder, sample_blocks
from unmask.server.batching import Engine, Job
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
KINDS = {
    "mdlm": dict(),
    "bd3lm": dict(attention="block-causal", block_size=4),
    "sedd": dict(sedd_graph="absorbing"),
    "ar": dict(attention="causal"),
}


def tiny(**overrides):
    return model_preset(
        "tiny", vocab_size=TOK.vocab_size, max_seq_len=48, **TOK.special_ids(), **overrides
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    paths = {}
    for i, (kind, overrides) in enumerate(KINDS.items()):
        torch.manual_seed(i)
        paths[kind] = save_checkpoint(
            root / kind, model=Transformer(tiny(**overrides)), tokenizer=TOK
        )
    make_llada(root / "llada", n_shards=1)
    paths["llada"] = root / "llada"
    return paths


# The options each kind is sampled with: a seed that matters (temperature, or SEDD's draws).
OPTIONS = {
    "mdlm": ["--temperature", "0.7"],
    "bd3lm": ["--temperature", "0.7"],
    "sedd": [],
    "ar": ["--temperature", "0.7"],
    "llada": ["--temperature", "0.7"],
}
DECODER = {"mdlm": "llada", "bd3lm": "bd3lm", "sedd": "sedd", "ar": "ar", "llada": "llada"}


def _config(kind: str) -> SampleConfig:
    temperature = 0.7 if OPTIONS[kind] else 0.0
    return SampleConfig(gen_length=8, steps=8, seed=3, temperature=temperature)


@pytest.mark.parametrize("kind", list(OPTIONS))
def test_api_cli_and_engine_return_the_same_tokens(kind, checkpoints, capsys):
    loaded = unmask.load(checkpoints[kind])
    config = _config(kind)
    views = []
    out = api.generate(
        loaded,
        ["In the", "x"],
        config=config,
        step_callback=lambda step, view: views.append(view.clone()),
    )
    assert out.decoder == DECODER[kind]
    # seeded sampling: every row seeded on its own (api.row_seeds; both rows seed 3, choice
    # 0), each row the text of its prompt alone; every decoder runs the rows as one batch,
    # a generator per row (a view per step of the batch)
    alone = [api.generate(loaded, p, config=config) for p in ["In the", "x"]]
    assert [a.ids[0] for a in alone] == out.ids
    assert out.steps == max(a.steps for a in alone)  # a row's steps, as the server counts
    assert len(views) == max(a.steps for a in alone)
    assert all(v.shape == (2, 8) for v in views)
    assert views[-1][:, : len(out.ids[0])].tolist() == out.ids  # the last view is the result

    args = [
        "generate",
        "--model",
        str(checkpoints[kind]),
        "--gen-length",
        "8",
        "--steps",
        "8",
        "--seed",
        "3",
        "--json",
        "--no-live",
        "--device",
        "cpu",
        "--dtype",  # as unmask.load (auto is bf16 on a CPU with AMX: other near-ties)
        "fp32",
        *OPTIONS[kind],
        "In the",
        "x",
    ]
    assert main(args) == 0
    cli = json.loads(capsys.readouterr().out)
    assert [r["tokens"] for r in cli["results"]] == out.ids
    assert (cli["decoder"], cli["nfe"], cli["steps"]) == (out.decoder, out.nfe, out.steps)

    # as the server's engine is made (server.engine.make_engine): ar's seeded rows, one run
    engine = Engine(functools.partial(api.start, loaded),
                    seeds_in_one_run=functools.partial(api.seeds_in_one_run, loaded))
    try:
        rows = [TOK.encode("In the"), TOK.encode("x")] if kind != "llada" else out.prompt_ids
        # the seeds of the server's rows (routes.completions.prepare): the same rule
        job = Job(rows=rows, config=config, seeds=api.row_seeds(config.seed, 2, 1),
                  batchable=False)
        engine.submit(job)
        served = job.future.result(timeout=30)
    finally:
        engine.close()
    assert served.gen_ids == out.ids and served.nfe == out.nfe
    if kind != "ar":  # (an AR run puts a start token before an empty prompt)
        assert served.prompt_ids == out.prompt_ids

    if kind == "bd3lm":  # the block decoder ran: the NFE of BD3-LM's block sampler
        cfg = loaded.config
        refs = [  # each row alone, seeded 3 each (above); the batch is one run
            sample_blocks(loaded.model, [row], config, mask_id=cfg.mask_id, pad_id=cfg.pad_id,
                          eos_id=cfg.eos_id)
            for row in rows
        ]
        assert out.nfe == max(r.nfe for r in refs)
        assert out.ids == [r.gen_ids[0] for r in refs]


def test_a_mask_in_a_generate_prompt_is_filled_and_shown(checkpoints, capsys):
    loaded = unmask.load(checkpoints["mdlm"])
    out = api.generate(loaded, "a[MASK]b", config=SampleConfig(gen_length=4, steps=4))
    mask = loaded.config.mask_id
    assert out.prompt_ids[0][0] == TOK.encode("a")[0] and out.prompt_ids[0][2] == TOK.encode("b")[0]
    assert mask not in out.prompt_ids[0] and mask not in out.ids[0]
    assert "[MASK]" not in out.prompts[0] and len(TOK.encode(out.prompts[0])) >= 3
    args = [
        "generate",
        "--model",
        str(checkpoints["mdlm"]),
        "--gen-length",
        "4",
        "--steps",
        "4",
        "--json",
        "--device",
        "cpu",
        "a[MASK]b",
    ]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)["results"][0]
    assert res["prompt"] == "a[MASK]b" and res["filled_prompt"] == out.prompts[0]
    assert mask not in res["tokens"]
    # the plain text: the prompt as it ended, then the continuation
    assert main([a for a in args if a != "--json"] + ["--no-live"]) == 0
    assert capsys.readouterr().out.startswith(out.prompts[0])


def test_the_reference_option_keeps_llada_budgeting(checkpoints):
    loaded = unmask.load(checkpoints["mdlm"])
    ids = [[TOK.encode("a")[0], loaded.config.mask_id, TOK.encode("b")[0]]]
    for masks, left in (("fill", False), ("reference", None)):
        run = api.start(loaded, ids, SampleConfig(gen_length=4, steps=1, prompt_masks=masks))
        res = run.run()
        filled = not bool((res.tokens == loaded.config.mask_id).any())
        if left is False:
            assert filled
        else:  # one step commits 4 (the generated part's budget) of the 5 masks: one is left
            assert not filled


# -- facts -----------------------------------------------------------------------------------------


def test_facts_infer_the_objective_and_read_what_the_config_records():
    assert [
        infer_objective(a, g)
        for a, g in [
            ("causal", None),
            ("block-causal", None),
            ("bidirectional", "uniform"),
            ("bidirectional", None),
        ]
    ] == ["ar", "bd3lm", "sedd", "mdlm"]
    assert [default_decoder(o) for o in ("mdlm", "sft", "bd3lm", "sedd", "ar")] == [
        "llada",
        "llada",
        "bd3lm",
        "sedd",
        "ar",
    ]
    f = ModelFacts.of(Transformer(tiny(attention="block-causal", block_size=4)))
    assert (f.objective, f.attention, f.block_size, f.schedule, f.has_kv_cache) == (
        "bd3lm",
        "block-causal",
        4,
        "linear",
        True,
    )
    recorded = dataclasses.make_dataclass("Cfg", [("objective", str), ("schedule", str)])
    g = ModelFacts.of(recorded(objective="sft", schedule="cosine"))
    assert (g.objective, g.schedule, g.default_decoder) == ("sft", "cosine", "llada")
    with pytest.raises(UserError, match="unknown attention 'sideways'"):
        ModelFacts.of(SimpleNamespace(attention="sideways"))


# -- refusals: one per combination -----------------------------------------------------------------

MDLM, BD3LM = ModelFacts.of(tiny()), ModelFacts.of(tiny(attention="block-causal", block_size=4))
SEDD_UNIFORM = ModelFacts.of(tiny(sedd_graph="uniform"))
AR = ModelFacts.of(tiny(attention="causal"))


@pytest.mark.parametrize(
    "facts,options,message",
    [
        (MDLM, dict(decoder="sedd"), "decoder 'sedd' needs a SEDD checkpoint .* this one is mdlm"),
        (MDLM, dict(policy="sedd-analytic"), "needs a SEDD checkpoint"),
        (
            dataclasses.replace(MDLM, has_kv_cache=False),
            dict(cache="dual"),
            "cache 'dual' needs a model with a KV cache",
        ),
        (MDLM, dict(top_k=5), "^top_k applies to autoregressive .* not decoder 'llada'"),
        (BD3LM, dict(top_p=0.9), "^top_p applies to autoregressive .* not decoder 'bd3lm'"),
        (AR, dict(cfg_scale=1.0), "cfg_scale applies to diffusion models"),
        (AR, dict(decoder="llada"), "decoder 'llada' needs a bidirectional model; .* causal"),
        (BD3LM, dict(decoder="llada"), "use decoder 'bd3lm'"),
        (MDLM, dict(decoder="bd3lm"), "decoder 'bd3lm' needs a block-causal model"),
        (MDLM, dict(decoder="ar"), "decoder 'ar' needs a causal model"),
        (SEDD_UNIFORM, dict(decoder="llada"), "uniform-graph SEDD model"),
        (SEDD_UNIFORM, dict(temperature=0.5), "temperature does not apply to decoder 'sedd'"),
        (SEDD_UNIFORM, dict(gen_length=8, block_length=4), "need the absorbing graph"),
        (BD3LM, dict(block_length=8, gen_length=16), "block_length=8 must equal the model's block"),
        (MDLM, dict(decoder="spec"), "unknown decoder 'spec'; choose one of auto, ar, bd3lm"),
    ],
)
def test_choose_decoder_refuses(facts, options, message):
    with pytest.raises(UserError, match=message):
        choose_decoder(facts, SampleConfig(**options))


def test_choose_decoder_refuses_unused_options_once(monkeypatch):
    """Each decoder's unused options are checked by one ``refuse_unused`` on the way through
    ``choose_decoder``: the sedd and continuous decoders' own checks ran it a second time."""
    import unmask.sampling.continuous
    import unmask.sampling.registry
    import unmask.sampling.sedd
    from unmask.config import TrainConfig
    from unmask.objectives import objective_spec

    real, calls = unmask.sampling.registry.refuse_unused, []

    def counting(decoder, config, *explicit):
        calls.append(decoder.name)
        real(decoder, config, *explicit)

    for module in (unmask.sampling.registry, unmask.sampling.sedd, unmask.sampling.continuous):
        monkeypatch.setattr(module, "refuse_unused", counting)
    continuous = [ModelFacts.of(objective_spec(o).configure(tiny(), TrainConfig(seq_len=24,
                  latent_len=4))) for o in ("embed-diffusion", "latent-diffusion")]  # fmt: skip
    for facts in (MDLM, BD3LM, SEDD_UNIFORM, AR, *continuous):
        calls.clear()
        name = choose_decoder(facts, SampleConfig()).name
        assert calls == [name]
    with pytest.raises(UserError, match="temperature does not apply to decoder 'sedd'"):
        choose_decoder(SEDD_UNIFORM, SampleConfig(temperature=0.5))  # still refused
    with pytest.raises(UserError, match="cache does not apply to decoder 'embed-diffusion'"):
        choose_decoder(continuous[0], SampleConfig(cache="prefix"))


def test_choose_decoder_picks_the_checkpoints_own_and_honours_aliases():
    assert [choose_decoder(f, SampleConfig()).name for f in (MDLM, BD3LM, SEDD_UNIFORM, AR)] == [
        "llada",
        "bd3lm",
        "sedd",
        "ar",
    ]
    euler = SampleConfig(policy="sedd-euler")
    assert (euler.decoder, euler.sedd_sampler, euler.policy) == ("sedd", "euler", "llada")
    assert set(DECODERS) == {
        "llada", "bd3lm", "sedd", "ar", "speculative", "hybrid", "embed-diffusion",
        "latent-diffusion",
    }  # fmt: skip


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(prompt_masks="keep"), "unknown prompt_masks 'keep'; choose one of fill, reference"),
        (dict(sedd_sampler="heun"), "unknown sedd_sampler 'heun'; choose one of analytic, euler"),
        (dict(policy="sedd-euler", decoder="ar"), "policy 'sedd-euler' selects decoder 'sedd'"),
    ],
)
def test_sample_config_modes_are_checked_on_construction(options, message):
    with pytest.raises(UserError, match=message):
        SampleConfig(**options)


def test_cli_refuses_a_sedd_sampler_on_an_mdlm_checkpoint(checkpoints, capsys):
    code = main(
        [
            "generate",
            "--model",
            str(checkpoints["mdlm"]),
            "--decoder",
            "sedd",
            "--gen-length",
            "4",
            "--steps",
            "4",
            "x",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "needs a SEDD checkpoint" in err and "Traceback" not in err


def test_a_length_range_on_a_block_causal_model_names_the_limit(checkpoints, capsys):
    """It said "objective 'mdlm' needs attention='bidirectional'" of a bd3lm checkpoint."""
    args = ["infill", "--model", str(checkpoints["bd3lm"]), "--no-live", "City [MASK:2-4]."]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "sized by the ELBO of a bidirectional" in err and "block-causal" in err
    assert err.count("\n") == 1
    assert main([*args[:-1], "City [MASK:4]."]) == 0  # a fixed length fills


def test_a_commit_policy_on_the_sedd_decoder_is_refused_not_ignored(checkpoints, capsys):
    args = ["generate", "--model", str(checkpoints["sedd"]), "--gen-length", "4", "--steps", "4",
            "--policy", "threshold", "--threshold", "0.5", "x"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "policy 'threshold' is a commit policy of decoder 'llada'" in err
    assert err.count("\n") == 1
    assert main([*args, "--decoder", "llada"]) == 0  # an absorbing SEDD model runs it there


# -- the worked example of docs/architecture.md ---------------------------------------------------


def test_the_docs_example_decoder_is_one_file_and_one_registration(checkpoints, monkeypatch):
    from pathlib import Path

    import unmask.sampling.registry as registry

    doc = (Path(__file__).parent.parent / "docs" / "architecture.md").read_text()
    code = doc.split("<!-- worked example: oneshot -->\n```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setattr(registry, "DECODERS", dict(registry.DECODERS))  # undone after the test
    monkeypatch.setattr("unmask.sampling.DECODERS", registry.DECODERS)
    exec(compile(code, "docs/architecture.md", "exec"), {})
    assert "oneshot" in registry.DECODERS
    loaded = unmask.load(checkpoints["mdlm"])
    config = SampleConfig(gen_length=6, decoder="oneshot")
    out = api.generate(loaded, ["ab", "c"], config=config)
    assert (out.decoder, out.nfe, out.steps) == ("oneshot", 1, 1)
    assert all(loaded.config.mask_id not in ids and len(ids) == 6 for ids in out.ids)
    engine = Engine(functools.partial(api.start, loaded))
    try:  # it shares forward passes: two requests join one batch
        jobs = [Job(rows=[TOK.encode(p)], config=config) for p in ("ab", "c")]
        for j in jobs:
            engine.submit(j)
        served = [j.future.result(timeout=30).gen_ids[0] for j in jobs]
    finally:
        engine.close()
    assert served == out.ids
    with pytest.raises(UserError, match="decoder 'oneshot' needs a bidirectional model"):
        choose_decoder(AR, config)
    # as the CLI runs it, over the checkpoint's recommendation: its penalties are for the
    # decoders that apply them, left out here (a new decoder was refused for them)
    import dataclasses

    recommended = {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3}  # the demo's
    loaded = dataclasses.replace(loaded, config=dataclasses.replace(
        loaded.config, sample_defaults=recommended))
    cli = api.sample_config(loaded, {"decoder": "oneshot", "gen_length": 6})
    assert (cli.repetition_penalty, cli.no_repeat_ngram_size) == (1.0, 0)
    assert api.generate(loaded, ["ab", "c"], config=cli).ids == out.ids
    given = api.sample_config(loaded, {"decoder": "oneshot", "repetition_penalty": 1.2})
    with pytest.raises(UserError, match="repetition_penalty applies to the decoders .*oneshot"):
        api.generate(loaded, ["ab"], config=given)


@pytest.mark.parametrize("kind", list(OPTIONS))
def test_the_http_server_decodes_like_the_api(kind, checkpoints):
    """``/v1/completions`` returns the API's text, NFE and steps for every checkpoint kind:
    the served bd3lm checkpoint runs the block decoder, not the plain masked loop."""
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    loaded = unmask.load(checkpoints[kind])
    config = _config(kind)
    out = api.generate(loaded, ["In the"], config=config)
    body = {"prompt": "In the", "max_tokens": 8, "steps": 8, "seed": 3,
            "temperature": config.temperature}
    with TestClient(create_app(loaded, access_log=False)) as client:
        r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["choices"][0]["text"] == out.texts[0]
    assert (got["nfe"], got["steps"]) == (out.nfe, out.steps)
    if kind == "bd3lm":  # the block sampler's count, not the masked loop's
        blocks = sample_blocks(loaded.model, [TOK.encode("In the")], config,
                               mask_id=loaded.config.mask_id, pad_id=loaded.config.pad_id,
                               eos_id=loaded.config.eos_id)
        assert got["nfe"] == blocks.nfe


def test_a_report_names_what_the_sedd_decoder_draws_with():
    """``report.decoding_options`` (eval's "sampled with" record) named a temperature for the
    SEDD decoder, which refuses one, and never its ``sedd_sampler``; the other decoders keep
    their temperature."""
    from unmask.report import decoding_options

    def of(cfg):
        return SimpleNamespace(config=cfg, model=SimpleNamespace())

    sedd = decoding_options(of(tiny(sedd_graph="uniform")), SampleConfig(sedd_sampler="euler"))
    assert sedd["decoder"] == "sedd" and "temperature" not in sedd
    assert sedd["sedd_sampler"] == "euler"
    mdlm = decoding_options(of(tiny()), SampleConfig(temperature=0.5))
    assert mdlm["temperature"] == 0.5 and "sedd_sampler" not in mdlm
