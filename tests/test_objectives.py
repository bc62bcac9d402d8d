import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from unmask.config import TrainConfig, model_preset
from unmask.errors import UserError
from unmask.objectives import (
    OBJECTIVE_OPTIONS,
    OBJECTIVES,
    ObjectiveOptions,
    ObjectiveSpec,
    ar,
    get_objective,
    mdlm,
    objective_of,
    objective_spec,
    register_objective,
)
from unmask.schedules import CosineSchedule, LinearSchedule, get_schedule

V = 40


class Uniform(torch.nn.Module):
    """Predicts every token with equal probability."""

    def forward(self, x, attention_mask=None):
        return torch.zeros(*x.shape, V, requires_grad=True)


class Oracle(torch.nn.Module):
    """Knows x0: puts (nearly) all mass on the true token."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0

    def forward(self, x, attention_mask=None):
        return torch.nn.functional.one_hot(self.x0[:, : x.shape[1]], V).float() * 100.0


def cfg(attention="bidirectional"):
    return model_preset("tiny", vocab_size=V, attention=attention)


def opts(**kw):
    return ObjectiveOptions(schedule=LinearSchedule(1e-3), **kw)


def test_uniform_predictor_gives_log_v():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(4, V, (64, 32))
    total = n = 0.0
    for _ in range(40):
        parts = mdlm(Uniform(), cfg(), x0, attention_mask=None, generator=gen, options=opts())
        total += float(parts.loss_sum.detach())
        n += float(parts.n_tokens)
    assert total / n == pytest.approx(math.log(V), rel=0.02)


class ShiftedOracle(Oracle):
    """A Dream-style oracle (``logit_shift``): position i puts its mass on token i + 1."""

    def forward(self, x, attention_mask=None):
        logits = super().forward(x)
        return torch.cat([logits[:, 1:], logits[:, -1:]], dim=1)


def test_dream_models_train_on_shifted_logits():
    """A ``logit_shift`` model's loss reads position i's prediction at i - 1, as decoding does
    (a loss on the raw logits taught position i its own token: fine-tuned Dream models then
    decoded garbage). Position 0, which nothing predicts, is kept unmasked by a prompt."""
    from unmask.objectives import sft

    x0 = torch.randint(4, V, (8, 16))
    shifted = replace(cfg(), logit_shift=True)
    gen = torch.Generator().manual_seed(1)
    prompt = torch.zeros_like(x0, dtype=torch.bool)
    prompt[:, 0] = True
    parts = sft(ShiftedOracle(x0), shifted, x0, attention_mask=None, generator=gen,
                options=opts(), prompt_mask=prompt)
    assert float(parts.loss_sum) < 1e-6
    parts = sft(ShiftedOracle(x0), cfg(), x0, attention_mask=None, generator=gen, options=opts(),
                prompt_mask=prompt)
    assert float(parts.loss_sum) > 10  # read unshifted, the same predictions are wrong
    for row in range(x0.shape[0]):  # mdlm: every masked position but 0 is predicted exactly
        one = x0[row:row + 1]
        parts = mdlm(ShiftedOracle(one), shifted, one, attention_mask=None, generator=gen,
                     options=opts(), keep_terms=True)
        assert float(parts.terms[0, 1:].abs().max()) < 1e-6


def test_oracle_gives_zero():
    x0 = torch.randint(4, V, (8, 16))
    parts = mdlm(
        Oracle(x0),
        cfg(),
        x0,
        attention_mask=None,
        generator=torch.Generator().manual_seed(1),
        options=opts(),
    )
    assert float(parts.loss_sum) < 1e-6


def test_gradient_only_at_masked_positions():
    x0 = torch.randint(4, V, (4, 16))
    logits_holder = {}

    class Spy(torch.nn.Module):
        def forward(self, x, attention_mask=None):
            logits = torch.randn(
                *x.shape, V, generator=torch.Generator().manual_seed(3), requires_grad=True
            )
            logits_holder["logits"], logits_holder["xt"] = logits, x
            return logits

    gen = torch.Generator().manual_seed(2)
    parts = mdlm(Spy(), cfg(), x0, attention_mask=None, generator=gen, options=opts())
    parts.loss_sum.backward()
    grad_norm = logits_holder["logits"].grad.abs().sum(-1)  # (B, L)
    masked = logits_holder["xt"] == cfg().mask_id
    assert masked.any() and (~masked).any()
    assert torch.all(grad_norm[~masked] == 0)
    assert torch.all(grad_norm[masked] > 0)


def test_padding_never_masked_nor_counted():
    x0 = torch.randint(4, V, (4, 16))
    am = torch.ones(4, 16, dtype=torch.bool)
    am[:, 10:] = False
    seen = {}

    class Spy(Uniform):
        def forward(self, x, attention_mask=None):
            seen["xt"] = x
            return super().forward(x)

    parts = mdlm(Spy(), cfg(), x0, attention_mask=am, generator=torch.Generator().manual_seed(0),
                 options=opts(), t=torch.ones(4) * 0.999)
    assert torch.equal(seen["xt"][:, 10:], x0[:, 10:])
    assert int(parts.n_tokens) == 40


def test_random_length_cut():
    x0 = torch.randint(4, V, (2, 16))
    lengths = set()

    class Spy(Uniform):
        def forward(self, x, attention_mask=None):
            lengths.add(x.shape[1])
            return super().forward(x)

    for s in range(20):
        mdlm(Spy(), cfg(), x0, attention_mask=None, generator=torch.Generator().manual_seed(s),
             options=opts(random_length_frac=1.0))
    assert len(lengths) > 3 and max(lengths) <= 16


def test_antithetic_times_cover_unit_interval():
    t = LinearSchedule().sample_t(8, torch.Generator().manual_seed(0), antithetic=True)
    gaps = torch.sort(t).values.diff()
    torch.testing.assert_close(gaps, torch.full((7,), 1 / 8), atol=1e-6, rtol=0)


def test_schedule_p_mask_and_weight():
    s = LinearSchedule(eps=1e-3)
    t = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(s.p_mask(t), torch.tensor([1e-3, 0.5005, 1.0]))
    torch.testing.assert_close(s.weight(t), 1 / s.p_mask(t))
    c = CosineSchedule(eps=0.0)
    assert float(c.p_mask(torch.tensor(1.0))) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_a_tokens_expected_weight_is_one_for_every_schedule(name):
    """E over t ~ U(0, 1) of weight(t) · p_mask(t) (a token's masked-CE weight times its chance
    of being masked) is 1, so a uniform predictor's bound is log V a token under either
    schedule. The cosine schedule's weight carried a (1 - eps) factor the linear one did not:
    its bound came out eps short (0.999 log V at eps 1e-3, 0.9 at eps 0.1)."""
    s = get_schedule(name, eps=0.1)
    t = (torch.arange(200_000, dtype=torch.float64) + 0.5) / 200_000  # midpoint rule
    assert float((s.weight(t) * s.p_mask(t)).mean()) == pytest.approx(1.0, abs=1e-6)


def test_transfer_counts_match_llada():
    s = get_schedule("linear")
    assert s.transfer_counts(10, 4) == [3, 3, 2, 2]
    assert s.transfer_counts(8, 8) == [1] * 8
    assert s.transfer_counts(3, 5) == [1, 1, 1, 0, 0]
    c = get_schedule("cosine")
    counts = c.transfer_counts(64, 8)
    assert sum(counts) == 64 and counts[0] < counts[-1]  # cosine reveals slowly first


def test_ar_loss_and_wrong_mode():
    x0 = torch.randint(4, V, (2, 8))
    parts = ar(
        Uniform(),
        cfg("causal"),
        x0,
        attention_mask=None,
        generator=torch.Generator(),
        options=opts(),
    )
    assert float(parts.loss_sum.detach() / parts.n_tokens) == pytest.approx(math.log(V))
    assert int(parts.n_tokens) == 14
    with pytest.raises(UserError, match="causal"):
        ar(Uniform(), cfg(), x0, attention_mask=None, generator=torch.Generator(), options=opts())
    with pytest.raises(UserError, match="bidirectional"):
        mdlm(
            Uniform(),
            cfg("causal"),
            x0,
            attention_mask=None,
            generator=torch.Generator(),
            options=opts(),
        )


def test_registry():
    assert get_objective("mdlm") is mdlm
    with pytest.raises(UserError, match="unknown objective"):
        get_objective("nope")
    with pytest.raises(UserError, match="unknown schedule"):
        get_schedule("nope")


# -- specs -------------------------------------------------------------------------------------

SPECS = {  # name: (attention, decoder, batch, options)
    "mdlm": ("bidirectional", "llada", "tokens", {"empty_rate", "schedule", "eps"}),
    "sft": ("bidirectional", "llada", "prompt_response", {"schedule", "eps", "chat_template"}),
    "ar": ("causal", "ar", "tokens", {"fim_rate"}),
    "bd3lm": ("block-causal", "bd3lm", "tokens", {"block_size", "schedule", "eps"}),
    "sedd": ("bidirectional", "sedd", "tokens", {"sedd_graph", "schedule", "eps"}),
    "embed-diffusion": ("bidirectional", "embed-diffusion", "tokens", set()),
    "latent-ae": ("bidirectional", "latent-diffusion", "tokens", {"latent_len"}),
    "latent-diffusion": ("bidirectional", "latent-diffusion", "tokens", {"latent_len"}),
    "hybrid": ("causal", "hybrid", "tokens", {"draft_block", "draft_weight"}),
    "distill": ("bidirectional", "llada", "trajectory",
                {"distill_ce_weight", "distill_entropy_weight", "distill_temperature",
                 "distill_window"}),
}  # fmt: skip
NON_DEFAULT = {"eps": 0.01, "fim_rate": 0.5, "empty_rate": 0.3, "block_size": 4,
               "sedd_graph": "uniform",
               "schedule": "geometric", "latent_len": 4, "draft_block": 4, "draft_weight": 0.5,
               "distill_ce_weight": 0.5, "distill_entropy_weight": 1.0,
               "distill_temperature": 1.0, "distill_window": 4,
               "chat_template": "plain"}  # fmt: skip


def test_each_objective_is_a_spec():
    assert set(OBJECTIVES) == set(SPECS)
    for name, (attention, decoder, batch, options) in SPECS.items():
        spec = objective_spec(name)
        assert (spec.name, spec.attention, spec.decoder, spec.batch) == (
            name, attention, decoder, batch,
        )  # fmt: skip
        assert set(spec.options) == options
        assert get_objective(name) is spec.loss
    assert set(NON_DEFAULT) == set(OBJECTIVE_OPTIONS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_an_option_of_another_objective_is_a_one_line_error_naming_it(name):
    spec = objective_spec(name)
    base = TrainConfig(objective=name, seq_len=16, block_size=4 if spec.blocks else None)
    spec.validate(base)  # the defaults are fine
    for option, value in NON_DEFAULT.items():
        cfg = replace(base, **{option: value})
        if option in spec.options:
            spec.validate(cfg)
            continue
        with pytest.raises(UserError, match=f"^{option} applies to objective") as e:
            spec.validate(cfg)
        assert "\n" not in str(e.value) and repr(name) in str(e.value)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_random_length_cut_is_refused_where_it_is_ignored(name):
    """``random_length_frac`` other than its default: taken by mdlm (LLaDA's cut), refused in
    one line by every other objective, which ignored it silently."""
    spec = objective_spec(name)
    cfg = TrainConfig(objective=name, seq_len=16, block_size=4 if spec.blocks else None,
                      random_length_frac=0.2)
    if name == "mdlm":
        spec.validate(cfg)
        return
    with pytest.raises(UserError, match=rf"^random_length_frac applies to objective 'mdlm', "
                                        rf"not {name!r}$"):
        spec.validate(cfg)


def test_option_values_and_blocks_are_checked():
    with pytest.raises(UserError, match=r"fim_rate=2.0 must be in \[0, 1\]"):
        objective_spec("ar").validate(TrainConfig(objective="ar", fim_rate=2.0))
    with pytest.raises(UserError, match=r"empty_rate=1.0 must be in \[0, 1\)"):
        objective_spec("mdlm").validate(TrainConfig(empty_rate=1.0))
    bd3lm_spec = objective_spec("bd3lm")
    with pytest.raises(UserError, match="needs --block-size"):
        bd3lm_spec.validate(TrainConfig(objective="bd3lm", seq_len=16))
    with pytest.raises(UserError, match="block_size=5 must divide seq_len=16"):
        bd3lm_spec.validate(TrainConfig(objective="bd3lm", seq_len=16, block_size=5))
    cfg = TrainConfig(objective="bd3lm", seq_len=16, block_size=4)
    assert bd3lm_spec.facts(cfg) == {"attention": "block-causal", "block_size": 4}
    with pytest.raises(UserError, match="schedule='nope'; choose one of linear, cosine"):
        TrainConfig(schedule="nope")


def test_mismatch_says_why_a_model_cannot_continue():
    cfg = TrainConfig()
    causal = model_preset("tiny", vocab_size=V, attention="causal")
    assert objective_spec("mdlm").mismatch(causal, cfg) == (
        "the model has attention='causal'; objective 'mdlm' trains 'bidirectional'"
    )
    assert objective_spec("ar").mismatch(causal, cfg) is None
    assert "fill-in-the-middle" in objective_spec("ar").mismatch(causal, replace(cfg, fim_rate=0.5))
    assert "[EMPTY]" in objective_spec("mdlm").mismatch(cfg_model(), replace(cfg, empty_rate=0.3))
    blocks = model_preset("tiny", vocab_size=V, attention="block-causal", block_size=8)
    bd = TrainConfig(objective="bd3lm", block_size=4)
    assert "block_size=8" in objective_spec("bd3lm").mismatch(blocks, bd)


def cfg_model():
    return model_preset("tiny", vocab_size=V)


def test_configure_records_objective_and_schedule():
    spec = objective_spec("sedd")
    out = spec.configure(cfg_model(), TrainConfig(objective="sedd", eps=0.01))
    assert (out.objective, out.schedule, out.schedule_eps) == ("sedd", "linear", 0.01)
    assert (out.sedd_graph, out.output) == ("absorbing", "logits")
    out = objective_spec("mdlm").configure(cfg_model(), TrainConfig(schedule="cosine"))
    assert (out.objective, out.schedule, out.sedd_graph) == ("mdlm", "cosine", None)


def test_objective_of_reads_old_checkpoints_too():
    assert objective_of(replace(cfg_model(), objective="sft")).name == "sft"
    assert objective_of(cfg_model()).name == "mdlm"  # no field: read off the other facts
    assert objective_of(model_preset("tiny", vocab_size=V, attention="causal")).name == "ar"
    blocks = model_preset("tiny", vocab_size=V, attention="block-causal", block_size=4)
    assert objective_of(blocks).decoder == "bd3lm"
    assert objective_of(replace(cfg_model(), sedd_graph="uniform")).decoder == "sedd"
    assert objective_of(replace(cfg_model(), chat_template="{{ x }}")).name == "sft"
    with pytest.raises(UserError, match="unknown objective 'nope'"):
        objective_of(replace(cfg_model(), objective="nope"))


def test_train_and_sft_name_no_objective():
    import unmask.sft
    import unmask.train

    for module in (unmask.train, unmask.sft):
        source = Path(module.__file__).read_text()
        for name in OBJECTIVES:
            assert f'"{name}"' not in source and f"'{name}'" not in source, (module, name)


# -- training with each objective (tiny, a few steps) -------------------------------------------

WORDS = "the lord said unto moses go down and speak to the people of israel".split()


@pytest.fixture(scope="module")
def corpus(word_corpus):
    return word_corpus("objectives", WORDS)


def _train(corpus, out, **kw):
    from unmask.train import train

    cfg = TrainConfig(
        data=str(corpus), out=str(out), preset="tiny", seq_len=16, batch_size=4, steps=2, warmup=1,
        eval_every=0, eval_batches=1, save_every=0, log_every=1, seed=0, **kw,
    )  # fmt: skip
    return train(cfg, progress=False)


@pytest.mark.parametrize(
    "objective, kw",
    [("mdlm", {}), ("ar", {}), ("bd3lm", {"block_size": 4}), ("sedd", {})],
)
def test_training_records_the_objective_and_its_facts(corpus, tmp_path, objective, kw):
    from unmask.checkpoint import load

    run = _train(corpus, tmp_path / objective, objective=objective, **kw)
    config = load(run).config
    spec = objective_spec(objective)
    assert (config.objective, config.attention, config.schedule) == (
        objective, spec.attention, "linear",
    )  # fmt: skip
    assert objective_of(config) is spec


def test_a_new_objective_is_one_registration(corpus, tmp_path, monkeypatch):
    from unmask.checkpoint import load

    calls = []

    def toy(model, config, x0, *, attention_mask, generator, options):
        calls.append(x0.shape)
        return mdlm(model, config, x0, attention_mask=attention_mask, generator=generator,
                    options=options)  # fmt: skip

    spec = ObjectiveSpec(name="toy", loss=toy, attention="bidirectional", decoder="llada")
    monkeypatch.setitem(OBJECTIVES, "toy", spec)  # so that the test removes it again
    del OBJECTIVES["toy"]
    register_objective(spec)
    with pytest.raises(ValueError, match="already registered"):
        register_objective(spec)
    run = _train(corpus, tmp_path / "toy", objective="toy")
    assert calls == [(4, 16)] * 3  # two training steps, then the final validation
    assert load(run).config.objective == "toy"

def test_cosine_schedule_is_saved_and_loaded_through_the_cli(corpus, tmp_path):
    from unmask.checkpoint import load
    from unmask.cli import main

    out = tmp_path / "cos"
    args = ["train", "--data", str(corpus), "--out", str(out), "--preset", "tiny", "--seq-len",
            "16", "--batch-size", "4", "--steps", "2", "--warmup", "1", "--eval-every", "0",
            "--save-every", "0", "--no-progress", "--schedule", "cosine",
            "--eps", "0.01"]  # fmt: skip
    assert main(args) == 0
    config = load(out).config
    assert (config.schedule, config.schedule_eps, config.objective) == ("cosine", 0.01, "mdlm")
    saved = json.loads((out / "checkpoint" / "config.json").read_text())
    assert (saved["schedule"], saved["objective"]) == ("cosine", "mdlm")
    bad = ["train", "--data", str(corpus), "--out", str(tmp_path / "ar"), "--objective", "ar",
           "--schedule", "cosine"]  # fmt: skip
    assert main(bad) == 2  # schedule applies to the diffusion objectives only


def test_time_conditioning_needs_an_objective_that_passes_the_noise_level():
    """A model conditioned on a given noise level trains only where the loss passes it (SEDD,
    embedding diffusion); elsewhere it must read the level off the canvas. Refused before the
    first step, which would fail in the model with "pass sigma"."""
    on = {"time_conditioning": True}
    with pytest.raises(UserError, match="objective 'mdlm' passes the model no noise level") as e:
        objective_spec("mdlm").validate(TrainConfig(model_overrides=on))
    assert "sigma_input=masked_fraction" in str(e.value)
    read = {**on, "sigma_input": "masked_fraction"}
    objective_spec("mdlm").validate(TrainConfig(model_overrides=read))
    objective_spec("sedd").validate(TrainConfig(objective="sedd", model_overrides=on))
    objective_spec("embed-diffusion").validate(
        TrainConfig(objective="embed-diffusion", model_overrides=on))


class Float64Logits(torch.nn.Module):
    """Fixed random float64 logits, as a float64 model gives."""

    def forward(self, x, attention_mask=None, **kw):
        g = torch.Generator().manual_seed(5)
        return torch.randn(*x.shape, V, generator=g, dtype=torch.float64) * 3


@pytest.mark.parametrize("name", ["mdlm", "sft", "bd3lm"])
def test_losses_keep_float64_logits_in_float64(name):
    """The cross-entropy runs in float32 for half-precision logits and in float64 for float64
    ones (it cast them down to float32: 1e-7 off, so float64 checks of a loss were loose).
    ``ar`` stays float32 for now: the hybrid objective's tests compare its loss with ar's."""
    x0 = torch.randint(4, V, (3, 16))
    gen = torch.Generator().manual_seed(0)
    model = Float64Logits()
    logp = torch.log_softmax(model(x0), -1)  # (B, L, V) float64, the same for any input
    nll = -logp.gather(-1, x0[..., None])[..., 0]  # (B, L): each position's cross-entropy
    p = (1 - 1e-3) * 0.5 + 1e-3  # p_mask at t = 0.5
    t = torch.full((3,), 0.5, dtype=torch.float64)
    w = torch.full((3, 16), 1 / p, dtype=torch.float64)  # the linear schedule's weight
    if name == "mdlm":
        parts = mdlm(model, cfg(), x0, attention_mask=None, generator=gen, options=opts(), t=t)
    elif name == "sft":
        prompt = torch.zeros_like(x0, dtype=torch.bool)
        parts = get_objective("sft")(model, cfg(), x0, attention_mask=None, generator=gen,
                                     options=opts(), prompt_mask=prompt, t=t)
        w = w / 16  # per row, over its answer length
    else:
        c = model_preset("tiny", vocab_size=V, attention="block-causal", block_size=4)
        parts = get_objective("bd3lm")(model, c, x0, attention_mask=None, generator=gen,
                                       options=opts(), t=t[:, None].expand(3, 4))
        logp = torch.log_softmax(model(torch.cat([x0, x0], 1)), -1)[:, :16]  # [x_t ; x_0]
        nll = -logp.gather(-1, x0[..., None])[..., 0]
    u = torch.rand(x0.shape, generator=torch.Generator().manual_seed(0))  # the loss's draws
    want = (w * nll)[u < p].sum()
    assert parts.loss_sum.dtype == torch.float64
    torch.testing.assert_close(parts.loss_sum.detach(), want, rtol=1e-12, atol=0)


def test_ar_scores_position_i_on_token_i_plus_1_and_skips_padding():
    """The shift: the logits at i are scored on x0[i + 1] (a next-token oracle scores 0, one
    that predicts its own token scores high); a pair that touches padding is not counted."""
    x0 = torch.randint(4, V, (2, 8))
    nxt = torch.cat([x0[:, 1:], x0[:, :1]], dim=1)  # position i knows x0[i + 1]
    gen = torch.Generator()
    parts = ar(Oracle(nxt), cfg("causal"), x0, attention_mask=None, generator=gen, options=opts())
    assert float(parts.loss_sum) < 1e-6 and int(parts.n_tokens) == 14
    own = ar(Oracle(x0), cfg("causal"), x0, attention_mask=None, generator=gen, options=opts())
    assert float(own.loss_sum) > 100
    am = torch.ones(2, 8, dtype=torch.bool)
    am[1, 5:] = False  # row 1: 5 real tokens, 4 pairs
    wrong = nxt.clone()
    wrong[1, 4:] = 0  # the logits at the last real token and at padding are not scored
    parts = ar(Oracle(wrong), cfg("causal"), x0, attention_mask=am, generator=gen, options=opts())
    assert float(parts.loss_sum) < 1e-6 and int(parts.n_tokens) == 7 + 4


def test_cosine_weight_is_the_elbo_weight_of_its_alpha():
    """-α'(t)/p_mask(t) with α = 1 - sin(πt/2): (π/2)·cos(πt/2) / ((1 - eps)·sin(πt/2) + eps),
    0 at t = 1 (no information lost there), and α' matches a finite difference of α."""
    s = CosineSchedule(eps=1e-3)
    t = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    want = (math.pi / 2) * torch.cos(math.pi * t / 2) / (
        (1 - 1e-3) * torch.sin(math.pi * t / 2) + 1e-3)
    torch.testing.assert_close(s.weight(t), want, rtol=1e-12, atol=1e-12)
    h = 1e-6
    mid = t[1:4]
    torch.testing.assert_close(s.dalpha(mid), (s.alpha(mid + h) - s.alpha(mid - h)) / (2 * h),
                               rtol=1e-6, atol=1e-9)


def test_a_dream_model_is_not_scored_where_no_logits_predict():
    """A ``logit_shift`` model's logits at i - 1 predict token i, so position 0 (and a token
    right after padding) has no prediction: never masked, never counted. Masked, position 0
    was scored on the logits that predict token 1: an oracle's bound was ~100 nats a window,
    not 0, and training pulled those logits towards two tokens."""
    from unmask.objectives import sft

    x0 = torch.randint(4, V, (4, 16))
    shifted = replace(cfg(), logit_shift=True)
    total = 0.0
    for s in range(5):
        parts = mdlm(ShiftedOracle(x0), shifted, x0, attention_mask=None,
                     generator=torch.Generator().manual_seed(s), options=opts(),
                     t=torch.full((4,), 0.999))
        total += float(parts.loss_sum)
        assert int(parts.n_tokens) == 4 * 15
    assert total < 1e-6
    am = torch.ones(4, 16, dtype=torch.bool)
    am[1, :3] = False  # left padding: position 3 follows a pad, 4..15 are predicted
    seen = {}

    class Spy(ShiftedOracle):
        def forward(self, x, attention_mask=None):
            seen["xt"] = x
            return super().forward(x)

    parts = mdlm(Spy(x0), shifted, x0, attention_mask=am, generator=torch.Generator(),
                 options=opts(), t=torch.full((4,), 0.999))
    assert int(parts.n_tokens) == 3 * 15 + 12
    assert not (seen["xt"][:, 0] == shifted.mask_id).any()
    assert seen["xt"][1, 3] == x0[1, 3]
    no_prompt = torch.zeros_like(x0, dtype=torch.bool)
    parts = sft(Spy(x0), shifted, x0, attention_mask=None, generator=torch.Generator(),
                options=opts(), prompt_mask=no_prompt, t=torch.full((4,), 0.999))
    assert float(parts.loss_sum) < 1e-6
    assert not (seen["xt"][:, 0] == shifted.mask_id).any()
