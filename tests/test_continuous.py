"""The continuous families: embedding diffusion (``embed-diffusion``) and latent diffusion
(``latent-ae`` then ``latent-diffusion``): the forward process, clamping, infilling, the
autoencoder, resume, guidance and the refusals."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from unmask.config import SampleConfig, TrainConfig, model_preset
from unmask.errors import UserError
from unmask.facts import ModelFacts
from unmask.model import Transformer
from unmask.objectives import OBJECTIVES, ObjectiveOptions, objective_spec
from unmask.objectives.continuous import SqrtSchedule, expected_embedding, token_embeddings
from unmask.objectives.latent import decode_logits, encode, latent_ae
from unmask.sampling import DECODERS, Target, choose_decoder
from unmask.sampling.continuous import BagOfWords, EmbedRun, guide
from unmask.schedules import get_schedule

WORDS = "the lord said unto moses go down and speak to the people of israel".split()


def _model(objective: str, latent_len: int = 4) -> Transformer:
    """A tiny random model configured as ``objective`` trains it."""
    cfg = model_preset("tiny", vocab_size=48, max_seq_len=40)
    train_cfg = TrainConfig(seq_len=24, latent_len=latent_len)
    torch.manual_seed(0)
    return Transformer(objective_spec(objective).configure(cfg, train_cfg)).eval()


# -- the forward process ----------------------------------------------------------------------


def test_sqrt_schedule_matches_its_closed_form():
    sched = SqrtSchedule()
    t = torch.tensor([0.0, 0.25, 1.0])
    want = [1 - math.sqrt(1e-4), 1 - math.sqrt(1e-4 + (1 - 1e-4) * 0.25), 0.0]
    assert sched.alpha_bar(t).tolist() == pytest.approx(want, abs=1e-12)
    # q(x_t | x0) = N(sqrt(ab) x0, (1 - ab) I), checked on many draws of one x0
    x0 = torch.tensor([1.0, -2.0, 0.5])[None, None].expand(20000, 1, 3)
    g = torch.Generator().manual_seed(0)
    xt = sched.q_sample(x0, torch.full((20000,), 0.25), g)  # (N, 1, 3)
    ab = want[1]
    assert xt.mean(0).flatten().tolist() == pytest.approx((math.sqrt(ab) * x0[0, 0]).tolist(),
                                                          abs=0.02)  # fmt: skip
    assert xt.var(0).flatten().tolist() == pytest.approx([1 - ab] * 3, abs=0.02)


def test_posterior_step_keeps_the_marginal():
    """x_t ~ q(x_t | x0), then x_s ~ q(x_s | x_t, x0): x_s has the marginal q(x_s | x0)."""
    sched = SqrtSchedule()
    g = torch.Generator().manual_seed(1)
    x0 = torch.tensor([0.7, -1.3])[None, None].expand(20000, 1, 2)
    xt = sched.q_sample(x0, torch.full((20000,), 0.6), g)
    xs = sched.posterior_step(xt, x0, 0.6, 0.3, g)
    ab_s = float(sched.alpha_bar(torch.tensor(0.3)))
    assert xs.mean(0).flatten().tolist() == pytest.approx(
        (math.sqrt(ab_s) * x0[0, 0]).tolist(), abs=0.02
    )
    assert xs.var(0).flatten().tolist() == pytest.approx([1 - ab_s] * 2, abs=0.02)


def test_loss_is_the_cross_entropy_of_the_noisy_embeddings():
    """At t = 1 the input is pure noise, so an untrained model's loss is near log V."""
    model = _model("embed-diffusion")
    x0 = torch.randint(4, 48, (4, 16), generator=torch.Generator().manual_seed(0))
    options = ObjectiveOptions(schedule=get_schedule("linear"))
    parts = objective_spec("embed-diffusion").loss(
        model, model.config, x0, attention_mask=None, generator=torch.Generator().manual_seed(0),
        options=options, t=torch.ones(4),
    )  # fmt: skip
    assert int(parts.n_tokens) == 64
    assert float(parts.loss_sum.detach()) / 64 == pytest.approx(math.log(48), rel=0.1)
    emb = token_embeddings(model)
    assert emb.pow(2).mean(-1).tolist() == pytest.approx([1.0] * 48, rel=1e-4)


# -- the embed-diffusion decoder --------------------------------------------------------------


def _start(model: Transformer, prompt: list[int], **kw: object):
    facts = ModelFacts.of(model)
    config = SampleConfig(gen_length=6, steps=5, seed=0, **kw)  # type: ignore[arg-type]
    decoder = choose_decoder(facts, config)
    return decoder.start(Target(model, facts), prompt, replace(config, decoder=decoder.name))


def test_clamping_keeps_predictions_on_token_embeddings():
    model = _model("embed-diffusion")
    table = token_embeddings(model)
    run = _start(model, [5, 6, 7])
    assert isinstance(run, EmbedRun)
    views = []
    with torch.no_grad():
        while not run.done:
            run.advance()
            on_rows = (run.x0_hat[0][:, None] == table[None]).all(-1).any(-1)  # (L,)
            assert bool(on_rows.all())  # every predicted x0 is exactly a token embedding
            assert torch.equal(run.x0_hat, table[run.ids])
            views.append(run.view().clone())
    assert len(views) == 5 and run.nfe == 5
    res = run.result()
    assert res.tokens[0, :3].tolist() == [5, 6, 7]
    assert (res.tokens != model.config.mask_id).all()
    assert torch.equal(res.tokens[:, 3:], views[-1])


def test_infilling_keeps_known_positions_verbatim():
    model = _model("embed-diffusion")
    mask = model.config.mask_id
    prompt = [9, 10, mask, 11, mask, 12]
    res = _start(model, [prompt, [13, 14]]).run()  # a padded batch
    row = res.tokens[0, :6].tolist()
    assert [row[i] for i in (0, 1, 3, 5)] == [9, 10, 11, 12]
    assert mask not in res.tokens[0].tolist() and mask not in res.tokens[1, 4:].tolist()
    assert res.tokens[1, :6].tolist() == [model.config.pad_id] * 4 + [13, 14]  # left-padded
    # same seed, same text
    assert torch.equal(res.tokens, _start(model, [prompt, [13, 14]]).run().tokens)


@pytest.mark.parametrize("objective", ["embed-diffusion", "latent-diffusion"])
def test_a_run_leaves_the_callers_canvas_alone(objective):
    """``EmbedRun`` / ``LatentRun`` filled the caller's canvas in place (and appended the
    ``forbid_eos`` constraint to it): a second run on the same canvas had nothing left to
    sample and returned the first one's tokens whatever its seed."""
    from unmask.canvas import Canvas
    from unmask.sampling.continuous import LatentRun

    model = _model(objective)
    mask = model.config.mask_id
    prompt = [[9, 10, mask, mask, 11]] if objective == "embed-diffusion" else [[]]
    canvas = Canvas.from_prompts(prompt, 24 if objective == "latent-diffusion" else 6,
                                 mask_id=mask, pad_id=model.config.pad_id)  # fmt: skip
    before = canvas.tokens.clone()
    run_of = EmbedRun if objective == "embed-diffusion" else LatentRun
    outs = []
    for seed in (0, 1, 0):
        config = SampleConfig(gen_length=canvas.region[1] - canvas.region[0], steps=3, seed=seed,
                              forbid_eos=True, temperature=1.0)  # fmt: skip
        outs.append(run_of(model, canvas, config, eos_id=model.config.eos_id).run().tokens)
    assert torch.equal(canvas.tokens, before) and canvas.constraints == []
    assert torch.equal(outs[0], outs[2]) and not torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("objective", ["embed-diffusion", "latent-diffusion"])
@pytest.mark.parametrize(
    "option", [{"block_length": 2}, {"policy": "threshold"}, {"cfg_scale": 1.0}, {"top_k": 3}],
    ids=lambda o: next(iter(o)),
)  # fmt: skip
def test_a_run_started_directly_refuses_what_it_cannot_use(objective, option):
    """``EmbedRun`` / ``LatentRun`` (exported, started without ``choose_decoder``) ran with
    blocks, a commit policy, cfg or top-k as if they were not given."""
    from unmask.canvas import Canvas
    from unmask.sampling.continuous import LatentRun

    model = _model(objective)
    length = 6 if objective == "embed-diffusion" else 24
    canvas = Canvas.from_prompts([[]], length, mask_id=model.config.mask_id,
                                 pad_id=model.config.pad_id)  # fmt: skip
    run_of = EmbedRun if objective == "embed-diffusion" else LatentRun
    config = SampleConfig(gen_length=length, steps=2, seed=0)
    assert run_of(model, canvas, config).run().nfe >= 2
    with pytest.raises(UserError, match=f"{next(iter(option))}.* not |does not apply"):
        run_of(model, canvas, replace(config, **option))  # type: ignore[arg-type]


def _self_conditioned() -> Transformer:
    model = _model("embed-diffusion")
    torch.manual_seed(0)
    return Transformer(replace(model.config, embed_self_condition=True)).eval()


def test_self_conditioning_starts_closed_and_reads_the_last_estimate():
    model = _self_conditioned()
    assert not model.self_condition.weight.detach().any()  # zero at init
    plain = Transformer(replace(model.config, embed_self_condition=False)).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items()
                           if k != "self_condition.weight"})  # fmt: skip
    # a closed map samples exactly what the same weights without it sample
    assert torch.equal(_start(model, [5, 6, 7]).run().tokens,
                       _start(plain, [5, 6, 7]).run().tokens)  # fmt: skip
    with torch.no_grad():
        model.self_condition.weight.normal_(0.0, 1.0)
    inputs, outputs = [], []
    forward = model.forward

    def spy(*args, **kwargs):
        inputs.append(kwargs["inputs_embeds"].clone())
        outputs.append(forward(*args, **kwargs))
        return outputs[-1]

    model.forward = spy  # type: ignore[method-assign]
    run = _start(model, [5, 6, 7])
    first_state = run.state.clone()
    with torch.no_grad():
        run.advance()
        state = run.state.clone()
        run.advance()
        prev = expected_embedding(outputs[0], token_embeddings(model))  # (B, L, D)
        want = state + model.self_condition(prev)
    assert torch.equal(inputs[0][:, 3:], first_state[:, 3:])  # no estimate yet: x_t alone
    torch.testing.assert_close(inputs[1][:, 3:], want[:, 3:])  # generated positions
    assert not torch.equal(_start(model, [5, 6, 7]).run().tokens,
                           _start(plain, [5, 6, 7]).run().tokens)  # fmt: skip


def test_self_conditioned_training_refines_a_first_estimate_half_the_time():
    model = _self_conditioned().train()
    x0 = torch.randint(4, 48, (4, 16), generator=torch.Generator().manual_seed(0))
    options = ObjectiveOptions(schedule=get_schedule("linear"))
    opened = []
    for seed in range(12):
        model.zero_grad()
        parts = objective_spec("embed-diffusion").loss(
            model, model.config, x0, attention_mask=None,
            generator=torch.Generator().manual_seed(seed), options=options,
        )  # fmt: skip
        parts.loss_sum.backward()
        # the map is zero, so its gradient is non-zero exactly when an estimate was fed
        opened.append(float(model.self_condition.weight.grad.abs().sum()) > 0)
    assert 3 <= sum(opened) <= 9


def test_self_conditioning_is_refused_for_other_objectives(corpus, tmp_path, capsys):
    from unmask.cli import main

    argv = ["train", "--data", str(corpus), "--out", str(tmp_path / "r"), "--preset", "tiny",
            "--objective", "mdlm", "--model-set", "embed_self_condition=true", "--steps", "1",
            "--seq-len", "16", "--batch-size", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "embed_self_condition" in err and "'mdlm'" in err
    assert not (tmp_path / "r" / "checkpoint").exists()


def test_guidance_step_lowers_the_constraint():
    model = _model("embed-diffusion")
    run = _start(model, [5])
    want = BagOfWords([20, 21])

    def logits_of(x):
        return run._view_logits(run._forward(x, 0.5))

    state = run.state
    before = float(want(logits_of(state)).sum().detach())
    moved = guide(state, logits_of, want, 0.05)
    assert float(want(logits_of(moved)).sum().detach()) < before
    guided = _start(model, [5], guide_words=None)
    assert guided.constraint is None


# -- the autoencoder --------------------------------------------------------------------------


def test_autoencoder_paths_are_open_at_initialisation():
    """The plateau fix: at init the latent already depends on the text (slots start as chunk
    means of the unit-scale token embeddings) and the decoder's logits on the latent (each
    text position reads its chunk's vector). With slots and text positions starting from the
    [MASK] vector, both dependences were ~1e-5: the gradient opening either path is
    proportional to the other, and training sat at the unigram loss for 150+ steps."""
    model = _model("latent-ae", latent_len=4)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(4, 48, (2, 16), generator=g)
    with torch.no_grad():
        z, z_flip = encode(model, model.config, x0), encode(model, model.config, x0.flip(1))
        a = decode_logits(model, model.config, z, 16)
        b = decode_logits(model, model.config, torch.randn(z.shape, generator=g), 16)
    assert float((z - z_flip).abs().mean()) > 0.1  # unit-RMS latents that differ
    assert float((a - b).abs().mean()) > 0.1 * float(a.abs().mean())


def test_autoencoder_reconstructs_a_short_text_after_brief_training():
    """Two different rows, so the decoder must read which one from the latent. 120 steps:
    every token comes back from step 60 on (measured every 10 steps up to 200), so twice
    that; the plateau this guards against lasted 150+ steps."""
    model = _model("latent-ae", latent_len=2).train()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(4, 48, (2, 8), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    options = ObjectiveOptions(schedule=get_schedule("linear"))
    for _ in range(120):
        parts = latent_ae(model, model.config, x0, attention_mask=None, generator=g,
                          options=options)  # fmt: skip
        opt.zero_grad()
        (parts.loss_sum / parts.n_tokens).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        z = encode(model, model.config, x0)  # (2, 2, D): 8 tokens in 2 vectors
        back = decode_logits(model, model.config, z, 8).argmax(-1)
    assert z.shape == (2, 2, model.config.d_model)
    assert torch.equal(back, x0)


# -- training: resume, checkpoints, generate --------------------------------------------------


@pytest.fixture(scope="module")
def corpus(word_corpus):
    return word_corpus("continuous", WORDS)


def _cfg(corpus: Path, out: Path, **kw: object) -> TrainConfig:
    base = TrainConfig(
        data=str(corpus), out=str(out), preset="tiny", seq_len=16, batch_size=4, steps=4,
        warmup=1, eval_every=0, eval_batches=1, save_every=0, log_every=1, seed=0,
        random_length_frac=0.0,
    )  # fmt: skip
    if str(kw.get("objective", "")).startswith("latent"):
        base = replace(base, latent_len=4)
    return replace(base, **kw)  # type: ignore[arg-type]


def _losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


@pytest.fixture(scope="module")
def ae_run(corpus, tmp_path_factory):
    from unmask.train import train

    return train(_cfg(corpus, tmp_path_factory.mktemp("ae") / "ae", objective="latent-ae"),
                 progress=False)  # fmt: skip


@pytest.mark.parametrize(
    "objective", ["embed-diffusion", "embed-diffusion+sc", "latent-ae", "latent-diffusion"]
)
def test_resume_equals_uninterrupted(corpus, ae_run, tmp_path, objective):
    from safetensors.torch import load_file

    from unmask.train import train

    init = str(ae_run) if objective == "latent-diffusion" else ""
    kw: dict = {"objective": objective, "init": init}
    if objective == "embed-diffusion+sc":  # self-conditioned: its random half-batches resume too
        kw.update(objective="embed-diffusion", model_overrides={"embed_self_condition": True})
    full = train(_cfg(corpus, tmp_path / "full", **kw), progress=False)
    part = train(_cfg(corpus, tmp_path / "part", steps=2, **kw), progress=False)
    train(_cfg(corpus, part, **kw), resume=True, progress=False)
    assert _losses(full) == pytest.approx(_losses(part), rel=1e-5)
    wa = load_file(str(full / "checkpoint" / "model.safetensors"))
    wb = load_file(str(part / "checkpoint" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def embed_run(corpus, tmp_path_factory):
    from unmask.train import train

    out = tmp_path_factory.mktemp("embed") / "e"
    return train(_cfg(corpus, out, objective="embed-diffusion"), progress=False)


def test_cli_equals_api_with_guidance_and_a_blank(embed_run, capsys):
    from unmask import api
    from unmask.checkpoint import load
    from unmask.cli import main

    prompt = "the lord [MASK] unto"
    args = ["generate", "--model", str(embed_run), "--gen-length", "8", "--steps", "4",
            "--seed", "0", "--guide-words", "moses, israel", "--json", prompt]  # fmt: skip
    assert main(args) == 0
    cli = json.loads(capsys.readouterr().out)
    loaded = load(embed_run)  # the CLI takes the checkpoint's rounding temperature
    given = dict(gen_length=8, steps=4, seed=0, guide_words="moses, israel")
    config = api.sample_config(loaded, given)
    out = api.generate(loaded, prompt, config=config)
    assert cli["decoder"] == out.decoder == "embed-diffusion"
    assert cli["results"][0]["tokens"] == out.ids[0] and cli["nfe"] == out.nfe == 8
    assert "[MASK]" not in cli["results"][0]["filled_prompt"]
    assert main([*args[:-2], "--policy", "threshold", prompt]) == 2
    assert "policy does not apply to decoder 'embed-diffusion'" in capsys.readouterr().err


def test_checkpoints_recommend_a_rounding_temperature(corpus, embed_run, ae_run, tmp_path):
    """Argmax rounding repeats frequent tokens (benchmarks/rounding.py), so a continuous
    checkpoint recommends a measured temperature, which a run with no flags gets; a given
    ``temperature`` wins, and the Python API takes its SampleConfig as given."""
    from unmask import api
    from unmask.checkpoint import load

    embed = load(embed_run)
    assert embed.config.sample_defaults == {"temperature": 0.7}
    assert api.sample_config(embed, {}).temperature == 0.7
    assert api.sample_config(embed, {"temperature": 0.0}).temperature == 0.0
    cfg = objective_spec("latent-diffusion").configure(load(ae_run).config, _cfg(corpus, tmp_path))
    assert cfg.sample_defaults == {"temperature": 1.0}
    plain = SampleConfig(gen_length=8, steps=4, seed=0)
    a = api.generate(embed, "the lord", config=plain).ids
    b = api.generate(embed, "the lord", config=api.sample_config(embed, {
        "gen_length": 8, "steps": 4, "seed": 0})).ids  # fmt: skip
    assert a != b  # the recommendation is a draw at 0.7, not the argmax


def test_checkpoints_generate_through_the_api(corpus, embed_run, ae_run, tmp_path):
    from unmask import api
    from unmask.checkpoint import load
    from unmask.train import train

    embed = load(embed_run)
    config = SampleConfig(gen_length=8, steps=4, seed=0)
    views: list[torch.Tensor] = []
    out = api.generate(embed, "the lord", config=config,
                       step_callback=lambda s, v: views.append(v.clone()))  # fmt: skip
    assert out.decoder == "embed-diffusion" and out.nfe == 4 and len(views) == 4
    assert len(out.ids[0]) == 8 and views[-1][0].tolist() == out.ids[0]
    latent = load(train(_cfg(corpus, tmp_path / "l", objective="latent-diffusion",
                             init=str(ae_run)), progress=False))  # fmt: skip
    assert latent.config.latent_len == 4 and latent.config.objective == "latent-diffusion"
    assert latent.config.latent_window == load(ae_run).config.latent_window == 16  # --seq-len
    window = replace(config, gen_length=16)  # the windows its autoencoder compresses
    out = api.generate(latent, ["", ""], config=replace(window, guide_words="lord"))
    assert out.decoder == "latent-diffusion" and len(out.ids) == 2 and len(out.ids[1]) == 16
    # guided steps cost two calls, plus the final decode; seeded, each row draws from a
    # generator of its own (api.row_seeds, as on the server) in one batched run
    assert out.nfe == 4 * 2 + 1
    with pytest.raises(UserError, match="writes windows of 16 tokens"):
        api.generate(latent, ["", ""], config=config)  # 8 tokens: chunks it never saw
    assert api.sample_config(latent, {}).gen_length == 16  # what the CLI runs with no flags
    assert api.sample_config(latent, {"steps": 3}).gen_length == 16
    with pytest.raises(UserError, match="--seq-len 16"):
        train(_cfg(corpus, tmp_path / "l2", objective="latent-diffusion", seq_len=24,
                   init=str(ae_run)), progress=False)  # fmt: skip
    with pytest.raises(UserError, match="takes no prompt"):
        api.generate(latent, "the lord", config=window)
    with pytest.raises(UserError, match="stage 1"):
        api.generate(load(ae_run), "", config=config)
    with pytest.raises(UserError, match="fill plain \\[MASK\\] / \\[MASK:n\\] gaps with infill"):
        api.edit(embed, "the lord said", lowest=1)
    with pytest.raises(UserError, match="objective latent-diffusion"):
        api.edit(latent, "the lord said", lowest=1)


def test_template_infill_keeps_the_text_and_cli_equals_api(embed_run, capsys):
    """``unmask infill`` / ``api.infill`` on an embed-diffusion checkpoint: fixed-length gaps
    filled, every template character kept verbatim, the CLI's JSON = the API's result."""
    from unmask import api
    from unmask.checkpoint import load
    from unmask.cli import main

    loaded = load(embed_run)
    template = "the lord [MASK:3] unto moses[MASK]go down"
    config = {"steps": 6, "seed": 0}  # the flags given: over the recommended temperature
    out = api.infill(loaded, template, config=config)
    res = out.detail
    assert [len(g.tokens) for g in res.gaps] == [3, 1] and out.nfe == 6
    # the text around the gaps is the template's, character for character
    a, b = res.gaps
    assert out.text[: a.start] == "the lord " and out.text[a.end : b.start] == " unto moses"
    assert out.text[b.end :] == "go down" and out.text[a.start : a.end] == a.text
    mask = loaded.config.mask_id
    assert mask not in res.tokens
    assert loaded.tokenizer.decode(res.tokens) == out.text
    assert main(["infill", "--model", str(embed_run), "--steps", "6", "--seed", "0", "--json",
                 template]) == 0  # fmt: skip
    cli = json.loads(capsys.readouterr().out)
    assert cli["text"] == out.text and cli["tokens"] == res.tokens and cli["nfe"] == 6
    # another seed fills differently somewhere but keeps the template's text again
    other = api.infill(loaded, template, config={**config, "seed": 1}).detail
    assert other.text.startswith("the lord ") and other.text.endswith("go down")


def test_template_infill_takes_the_recommendation_and_refuses_length_options(embed_run):
    """``api.infill`` with no config (or a mapping) on an embed-diffusion checkpoint rounds at
    its recommended temperature, as ``generate`` does (it rounded by argmax), a given
    SampleConfig is taken as it is; an infill option that chooses gap lengths, which this
    family never does, is refused in one line (it was silently dropped)."""
    from unmask import api
    from unmask.checkpoint import load
    from unmask.config import InfillOptions

    loaded = load(embed_run)
    template = "the lord [MASK:6] unto moses"
    by_default = api.infill(loaded, template, config={"seed": 0, "steps": 4})
    at_07 = api.infill(loaded, template, config=SampleConfig(seed=0, steps=4, temperature=0.7))
    argmax = api.infill(loaded, template, config=SampleConfig(seed=0, steps=4))
    assert by_default.text == at_07.text != argmax.text
    assert by_default.nfe == 4
    assert api.infill(loaded, template, config={"seed": 0, "steps": 4, "temperature": 0.0}
                      ).text == argmax.text  # fmt: skip
    assert api.infill(loaded, template).nfe == SampleConfig.steps  # the template sets the length
    for options in ({"length_mode": "elbo"}, InfillOptions(max_candidates=2)):
        with pytest.raises(UserError, match=r"^(length_mode|max_candidates) chooses the length "
                           r"of a variable-length gap; an embed-diffusion"):
            api.infill(loaded, template, config={"steps": 2}, options=options)
    limit = InfillOptions(max_search_calls=8)  # a limit (the server's), not an option
    assert api.infill(loaded, template, config={"steps": 2}, options=limit).nfe == 2


def test_template_infill_through_the_server_equals_the_api(embed_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask import api
    from unmask.checkpoint import load
    from unmask.server import create_app

    loaded = load(embed_run)
    template = "the lord [MASK:3] unto moses"
    want = api.infill(loaded, template, config={"steps": 5, "seed": 3})
    with TestClient(create_app(loaded)) as c:
        got = c.post("/v1/infill", json={"template": template, "steps": 5, "seed": 3})
        assert got.status_code == 200 and got.json()["text"] == want.text
        bad = c.post("/v1/infill", json={"template": "the [MASK:2-4] said", "steps": 5})
        assert bad.status_code == 400 and "variable length" in bad.json()["error"]["message"]


def test_cli_api_and_server_round_a_fill_at_the_recommended_temperature(embed_run, capsys):
    """``unmask infill``, ``api.infill`` and ``POST /v1/infill`` without a temperature all
    round at the checkpoint's recommendation (the CLI and the server passed a full
    SampleConfig, so they rounded by argmax while the API did not); the CLI's JSON reports the
    options that ran, the drawn seed among them."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask import api
    from unmask.checkpoint import load
    from unmask.cli import main
    from unmask.server import create_app

    loaded = load(embed_run)
    template = "the lord [MASK:6] unto moses"
    want = api.infill(loaded, template, config={"steps": 4, "seed": 0}).text
    argmax = api.infill(loaded, template, config={"steps": 4, "seed": 0, "temperature": 0.0})
    assert want != argmax.text
    assert main(["infill", "--model", str(embed_run), "--steps", "4", "--seed", "0", "--json",
                 template]) == 0  # fmt: skip
    cli = json.loads(capsys.readouterr().out)
    assert cli["text"] == want and cli["config"]["temperature"] == 0.7
    with TestClient(create_app(loaded)) as c:
        got = c.post("/v1/infill", json={"template": template, "steps": 4, "seed": 0})
        assert got.status_code == 200 and got.json()["text"] == want
        # threshold at its default (a client that echoes defaults): a 400 "this run's policy
        # is 'llada'" where the CLI's --threshold 0.9 ran; another value is refused
        got = c.post("/v1/infill", json={"template": template, "steps": 4, "seed": 0,
                                         "threshold": 0.9})
        assert got.status_code == 200 and got.json()["text"] == want, got.text
        got = c.post("/v1/infill", json={"template": template, "threshold": 0.5})
        assert got.status_code == 400 and got.json()["error"]["param"] == "threshold"
    # no --seed: the run samples, so it draws one and reports it; that seed reproduces it
    assert main(["infill", "--model", str(embed_run), "--steps", "4", "--json", template]) == 0
    drawn = json.loads(capsys.readouterr().out)
    seed = drawn["config"]["seed"]
    assert isinstance(seed, int) and drawn["config"]["steps"] == 4
    again = api.infill(loaded, template, config={"steps": 4, "seed": seed})
    assert again.text == drawn["text"]
    # at temperature 0 the fill still draws (its Gaussian start): a seed is drawn and reported
    assert main(["infill", "--model", str(embed_run), "--steps", "4", "--temperature", "0",
                 "--json", template]) == 0  # fmt: skip
    zero = json.loads(capsys.readouterr().out)
    assert isinstance(zero["config"]["seed"], int)
    cfg = {"steps": 4, "temperature": 0.0, "seed": zero["config"]["seed"]}
    assert api.infill(loaded, template, config=cfg).text == zero["text"]
    # steps not given: the library's, as the API (the template sets the length)
    assert main(["infill", "--model", str(embed_run), "--seed", "0", "--json", template]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["steps"] == SampleConfig.steps


def test_template_infill_refuses_what_it_cannot_fill(embed_run, capsys):
    from unmask.checkpoint import load
    from unmask.cli import main
    from unmask.infill import Gap
    from unmask.infill.continuous import infill_template

    loaded = load(embed_run)
    model, tok = loaded.model, loaded.tokenizer
    with pytest.raises(UserError, match="gap 1 .*has a variable length.*write \\[MASK:n\\]"):
        infill_template(model, tok, "the [MASK:2-4] said")
    for gap in [Gap(2, regex="[a-z]+"), Gap(choices=["lord", "moses"]), Gap(2, allowed="digits"),
                Gap(2, banned=["x"])]:  # fmt: skip
        with pytest.raises(UserError, match="constrained gaps .* need the masked commit loop"):
            infill_template(model, tok, ["the ", gap, " said"])
    argv = ["infill", "--model", str(embed_run), "--regex", "1=[a-z]+", "the [MASK:2] said"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "masked commit loop" in err and "Traceback" not in err


def test_template_infill_refuses_blocks_and_a_commit_loop_decoder(embed_run, capsys):
    """``block_length`` and ``decoder='llada'`` did nothing to an embed-diffusion infill (the
    first was dropped, the second never read): refused in one line, as ``generate`` does."""
    from unmask.checkpoint import load
    from unmask.cli import main
    from unmask.infill.continuous import infill_template

    loaded = load(embed_run)
    model, tok = loaded.model, loaded.tokenizer
    with pytest.raises(UserError, match="block_length does not apply to decoder"):
        infill_template(model, tok, "the [MASK:2] said", SampleConfig(steps=2, block_length=1))
    with pytest.raises(UserError, match="decoder 'llada' cannot sample .* embed-diffusion"):
        infill_template(model, tok, "the [MASK:2] said", SampleConfig(steps=2, decoder="llada"))
    ok = infill_template(model, tok, "the [MASK:2] said",
                         SampleConfig(steps=2, decoder="embed-diffusion"))  # fmt: skip
    assert ok.nfe == 2
    for flags in (["--block-length", "1"], ["--decoder", "llada"]):
        argv = ["infill", "--model", str(embed_run), "--steps", "2", *flags, "the [MASK:2] said"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


# -- refusals ---------------------------------------------------------------------------------


def test_bad_input_is_refused_in_one_line(corpus, tmp_path):
    from unmask.train import train

    facts = ModelFacts.of(_model("embed-diffusion"))
    for bad, what in [
        ({"policy": "threshold"}, "policy"),
        ({"remasking": "random"}, "remasking"),
        ({"block_length": 2, "gen_length": 4}, "block_length"),
        ({"cfg_scale": 1.0}, "cfg_scale"),
        ({"top_k": 5}, "top_k"),
    ]:
        with pytest.raises(UserError, match=what):
            choose_decoder(facts, SampleConfig(**bad))  # type: ignore[arg-type]
    mdlm = ModelFacts.of(model_preset("tiny", vocab_size=48))
    with pytest.raises(UserError, match="objective embed-diffusion"):
        choose_decoder(mdlm, SampleConfig(decoder="embed-diffusion"))
    with pytest.raises(UserError, match="guide_scale"):
        SampleConfig(guide_scale=-1)
    with pytest.raises(UserError, match="latent_len applies"):
        train(_cfg(corpus, tmp_path / "b", objective="mdlm", latent_len=3), progress=False)
    with pytest.raises(UserError, match="latent_len=40"):
        train(_cfg(corpus, tmp_path / "c", objective="latent-ae", latent_len=40), progress=False)
    mdlm_run = train(_cfg(corpus, tmp_path / "m", objective="mdlm", steps=1), progress=False)
    with pytest.raises(UserError, match="continues a latent-ae run"):
        train(_cfg(corpus, tmp_path / "d", objective="latent-diffusion", init=str(mdlm_run)),
              progress=False)  # fmt: skip
    assert {"embed-diffusion", "latent-ae", "latent-diffusion"} <= set(OBJECTIVES)
    assert {"embed-diffusion", "latent-diffusion"} <= set(DECODERS)


def test_validation_reports_a_loss_not_a_bound(embed_run, capsys):
    """The continuous losses bound no likelihood: the run logs ``val_loss`` without bits/byte
    or a perplexity bound, and ``unmask eval`` says so instead of printing a bound."""
    from unmask.cli import main

    assert not objective_spec("embed-diffusion").likelihood
    assert objective_spec("mdlm").likelihood and objective_spec("ar").likelihood
    records = [json.loads(x) for x in (embed_run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if "val_loss" in r]
    assert val and all("val_bpb" not in r and "val_ppl" not in r for r in val)
    assert math.isfinite(val[-1]["val_loss"])
    argv = ["eval", str(embed_run), "--device", "cpu", "--batches", "1", "--no-score"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "not a likelihood bound" in out and "bits/byte" not in out


def test_noise_draws_average_the_loss_of_a_family_without_a_bound(embed_run, capsys):
    """``eval --noise-draws K`` on a family with no bound (NaN bits/byte) averages its loss over
    the K seeds and gives the loss' standard error, as it does the bits/byte of a bound (it
    crashed in ``statistics.stdev`` of NaNs)."""
    import statistics

    from unmask.checkpoint import load
    from unmask.cli import main
    from unmask.data import TokenDataset
    from unmask.evaluate import evaluate_loss

    argv = ["eval", str(embed_run), "--device", "cpu", "--batches", "1", "--no-score",
            "--no-plot", "--noise-draws", "3"]  # fmt: skip
    assert main([*argv, "--json"]) == 0
    h = json.loads(capsys.readouterr().out)["heldout"]
    model = load(embed_run).model
    val = TokenDataset(Path(json.loads((embed_run / "train_config.json").read_text())["data"]),
                       "val")  # fmt: skip
    each = [evaluate_loss(model, val, objective="embed-diffusion", seq_len=16, batch_size=4,
                          max_batches=1, seed=1234 + k).loss for k in range(3)]  # fmt: skip
    assert len(set(each)) == 3 and h["noise_draws"] == 3
    assert h["loss"] == pytest.approx(statistics.fmean(each), rel=1e-6)
    assert h["loss_se"] == pytest.approx(statistics.stdev(each) / math.sqrt(3), rel=1e-6)
    assert h["bpb"] is None and h["ppl"] is None and h["bpb_se"] is None  # keys of every family
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "± " in out and "over 3 noise draws" in out and "bits/byte" not in out


def test_eval_samples_a_latent_model_unconditionally(corpus, ae_run, tmp_path, capsys,
                                                     monkeypatch):
    """``unmask eval`` of a latent-diffusion run scores unconditional windows (the decoder
    refuses a prompt; eval used to give it held-out prompts and fail), with a note saying so."""
    from unmask.cli import main
    from unmask.scoring import ReferenceScorer
    from unmask.train import train

    V = 50
    scorer = ReferenceScorer(lambda ids, attention_mask: torch.zeros(*ids.shape, V),
                             lambda text: [ord(c) % V for c in text], start_id=0, name="uniform")
    monkeypatch.setattr(ReferenceScorer, "from_smollm2", classmethod(lambda cls, device: scorer))
    run = train(_cfg(corpus, tmp_path / "l", objective="latent-diffusion", init=str(ae_run),
                     steps=1), progress=False)  # fmt: skip
    argv = ["eval", str(run), "--device", "cpu", "--batches", "1", "--no-plot", "--samples",
            "2", "--steps", "2", "--json"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    q = report["sample_quality"]
    assert q["samples"] == 2 and q["gen_length"] == 16  # the autoencoder's window
    assert q["gen_ppl"] == pytest.approx(V, rel=1e-5)
    assert any("unconditional" in n for n in report["notes"])
    # task items are decoded after their prompts, which a latent model cannot take: one line
    # before the bound and the samples (it was generate's "give an empty prompt", after both)
    from unmask.tasks import write_task

    write_task("reversal", tmp_path / "task", n_train=1, n_eval=1, seed=0)
    monkeypatch.setattr(ReferenceScorer, "from_smollm2", None)  # reached: a TypeError
    assert main([*argv, "--task-file", str(tmp_path / "task")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "eval --task-file decodes each item's answer after" in err


def test_eval_of_an_autoencoder_reports_its_loss_and_a_note(ae_run, capsys, monkeypatch):
    """``unmask eval`` of stage 1 (``latent-ae``, which samples no text): its held-out loss and
    a note that the generative perplexity is not measured, exit 0 (the whole report was one
    error line, after the bound and the scorer had run); the reference scorer is not loaded."""
    from unmask.cli import main
    from unmask.scoring import ReferenceScorer

    monkeypatch.setattr(ReferenceScorer, "from_smollm2", None)  # reached: a TypeError
    argv = ["eval", str(ae_run), "--device", "cpu", "--batches", "1", "--no-plot", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["heldout"]["loss"] > 0 and report["sample_quality"] is None
    assert ("generative perplexity: not measured, this checkpoint is stage 1 of latent "
            "diffusion (an autoencoder)") in report["notes"][0]


def test_eval_of_a_bare_latent_checkpoint_uses_its_window(ae_run, corpus, capsys, tmp_path):
    """A latent checkpoint without its run, given --data: the bound's windows are the ones its
    autoencoder compresses (it took the model's context, and the slots after it overflowed
    into a ValueError traceback); another --seq-len is one line."""
    import shutil

    from unmask.cli import main

    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(ae_run / "checkpoint" / name, bare / name)
    argv = ["eval", str(bare), "--data", str(corpus), "--device", "cpu", "--batches", "1",
            "--no-score", "--no-plot"]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["heldout"]["seq_len"] == 16
    assert main([*argv, "--seq-len", "8"]) == 2
    assert capsys.readouterr().err == (
        "unmask eval: error: --seq-len 8: this latent model's autoencoder compresses windows "
        "of 16 tokens; give 16 or leave --seq-len out\n")


class _PosteriorOracle(torch.nn.Module):
    """The exact denoiser of a data distribution that writes token 5 or 6 (probabilities
    ``pi``) at every position independently: logits = log p(x0 | x_t) under the sqrt schedule,
    from the embeddings of ``model`` (rows 5 and 6 made close, so the posterior stays
    uncertain over many steps)."""

    def __init__(self, model: Transformer, pi: tuple[float, float]) -> None:
        super().__init__()
        self.embed, self.config = model.embed, model.config
        self.pi = torch.tensor(pi, dtype=torch.float64)

    def forward(self, tokens, attention_mask=None, sigma=None, inputs_embeds=None, **kw):
        from unmask.objectives.continuous import TIME_SCALE

        a = SqrtSchedule().alpha_bar(sigma.double() / TIME_SCALE)[:, None, None]  # (B, 1, 1)
        e = token_embeddings(self).detach().double()[[5, 6]]  # (2, D)
        x = inputs_embeds.double()  # (B, L, D)
        d2 = (x[:, :, None] - a.sqrt()[..., None] * e[None, None]).pow(2).sum(-1)  # (B, L, 2)
        loglik = torch.where(a > 0, -d2 / (2 * (1 - a)), torch.zeros_like(d2))
        out = torch.full((*x.shape[:2], self.config.vocab_size), -1e30, dtype=torch.float64)
        out[..., [5, 6]] = self.pi.log() + loglik
        return out.float()  # (B, L, V)


def test_with_the_exact_posterior_the_sampler_draws_the_data_distribution():
    """Drawing x0 from the exact p(x0 | x_t) (temperature 1) and stepping with q(x_s | x_t, x0)
    is exact ancestral sampling: the tokens follow the data distribution for any number of
    steps (this fails if the sampler's time, grid or posterior step disagree with the
    schedule). And an oracle that knows x0 returns it exactly at argmax rounding."""
    model = _model("embed-diffusion")
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        u, v = torch.randn(2, model.config.d_model, generator=g)
        model.embed.weight[5], model.embed.weight[6] = u + 0.05 * v, u - 0.05 * v
    oracle = _PosteriorOracle(model, (0.8, 0.2))
    facts = ModelFacts.of(model)
    n = 1500
    for steps in (1, 3, 12):
        config = SampleConfig(gen_length=2, steps=steps, seed=1, temperature=1.0,
                              decoder="embed-diffusion")  # fmt: skip
        res = choose_decoder(facts, config).start(Target(oracle, facts), [[]] * n, config).run()
        assert set(res.tokens.unique().tolist()) <= {5, 6}
        share = float((res.tokens == 5).float().mean())
        assert share == pytest.approx(0.8, abs=0.03), steps  # 4 standard errors
    x0 = torch.tensor([[7, 9, 11, 13]])

    def knows_x0(tokens, attention_mask=None, sigma=None, inputs_embeds=None, **kw):
        return torch.nn.functional.one_hot(x0, 48).float().expand(len(tokens), -1, -1) * 20

    knows = _PosteriorOracle(model, (0.5, 0.5))
    knows.forward = knows_x0  # type: ignore[method-assign]
    for steps in (1, 7):
        config = SampleConfig(gen_length=4, steps=steps, seed=0, decoder="embed-diffusion")
        res = choose_decoder(facts, config).start(Target(knows, facts), [[]], config).run()
        assert res.tokens.tolist() == x0.tolist()


def test_loss_equals_a_hand_implementation_of_the_paper_on_a_padded_batch():
    """x_t = sqrt(ab)·E[x0] + sqrt(1 - ab)·eps with ab = 1 - sqrt(s + (1 - s)·t) and E the
    embeddings at unit RMS; the loss is the cross-entropy at the real positions only."""
    import torch.nn.functional as F

    model = _model("embed-diffusion")
    x0 = torch.randint(4, 48, (3, 10), generator=torch.Generator().manual_seed(0))
    real = torch.ones(3, 10, dtype=torch.bool)
    real[1, :3] = False
    t = torch.tensor([0.03, 0.5, 0.97])
    parts = objective_spec("embed-diffusion").loss(
        model, model.config, x0, attention_mask=real, generator=torch.Generator().manual_seed(7),
        options=ObjectiveOptions(schedule=get_schedule("linear")), t=t,
    )  # fmt: skip
    E = model.embed.weight / model.embed.weight.pow(2).mean(-1, keepdim=True).sqrt()
    ab = (1 - torch.sqrt(1e-4 + (1 - 1e-4) * t.double())).float()[:, None, None]
    eps = torch.randn(3, 10, E.shape[1], generator=torch.Generator().manual_seed(7))
    xt = ab.sqrt() * E[x0] + (1 - ab).sqrt() * eps
    logits = model(x0, attention_mask=real, sigma=1000 * t, inputs_embeds=xt)
    want = F.cross_entropy(logits[real], x0[real], reduction="sum")
    assert int(parts.n_tokens) == 27
    assert float(parts.loss_sum.detach()) == pytest.approx(float(want.detach()), rel=1e-5)


@pytest.mark.parametrize("objective", ["embed-diffusion", "latent-diffusion"])
@pytest.mark.parametrize(
    "option",
    [{"prompt_masks": "reference"}, {"skip_empty_steps": True}, {"edit_threshold": 0.5},
     {"max_post_steps": 3}],
    ids=lambda o: next(iter(o)),
)  # fmt: skip
def test_commit_loop_options_are_refused_not_ignored(objective, option):
    """Options of the masked commit loop and its token editing do nothing to a continuous
    state: refused in one line (they were silently ignored)."""
    facts = ModelFacts.of(_model(objective))
    assert choose_decoder(facts, SampleConfig()).name == objective
    with pytest.raises(UserError, match=f"{next(iter(option))} does not apply to decoder"):
        choose_decoder(facts, SampleConfig(**option))  # type: ignore[arg-type]


def test_lm_eval_refuses_the_families_without_a_mask_elbo(embed_run, ae_run, corpus, tmp_path,
                                                          capsys):  # fmt: skip
    """lm-eval scores a diffusion model by the masked ELBO: an embed-diffusion or latent
    checkpoint has none (it failed mid-run with an internal message about sigma, or about
    prompts), nor has a uniform-graph SEDD one (it scored nonsense): one line. A latent model
    takes no prompt either, so no task can run: refused up front; the others still generate
    (generate_until tasks), so only their log-likelihoods are refused."""
    from lm_eval.api.instance import Instance

    from unmask.checkpoint import load
    from unmask.cli import main
    from unmask.lm_eval import UnmaskLM
    from unmask.train import train

    why = "objective latent-ae has no likelihood"
    with pytest.raises(UserError, match=re.escape(why)):
        UnmaskLM(loaded=load(ae_run))
    argv = ["eval", str(ae_run), "--device", "cpu", "--no-score", "--no-plot", "--tasks", "x"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert why in err and len(err.strip().splitlines()) == 1
    uniform = train(_cfg(corpus, tmp_path / "u", objective="sedd", sedd_graph="uniform",
                         steps=1), progress=False)  # fmt: skip
    for run, why in ((embed_run, "objective embed-diffusion has no likelihood"),
                     (uniform, "uniform-graph SEDD checkpoint never read a [MASK]")):
        lm = UnmaskLM(loaded=load(run), greedy_check=False)
        with pytest.raises(UserError, match=re.escape(why)):
            lm.loglikelihood([Instance("loglikelihood", {}, ("a", " b"), 0)])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_self_conditioned_model_samples_in_half_precision(dtype):
    """``--dtype bf16`` / ``fp16`` on a self-conditioned embed-diffusion checkpoint stopped
    with a traceback ("expected m1 and m2 to have the same dtype"): the state and the x0
    estimate were float32, the self-conditioning map's weights half. The run keeps its state
    in float32 and samples the tokens the float32 weights sample at argmax rounding."""
    model = _self_conditioned()
    with torch.no_grad():
        model.self_condition.weight.normal_(0.0, 0.05)
    want = _start(model, [5, 6, 7], temperature=0.0).run().tokens
    half = model.to(dtype)
    run = _start(half, [5, 6, 7], temperature=0.0)
    assert run.state.dtype == torch.float32
    got = run.run().tokens
    assert got.shape == want.shape and torch.equal(got[:, :3], want[:, :3])
    assert float((got == want).float().mean()) >= 0.5  # half precision may flip a near tie
