"""SEDD (objective ``sedd`` and its decoder): the geometric noise (``--schedule geometric``)
runs the loss and the sampler on σ(t) = 1e-4^{1-t}·20^t as the reference's ``GeometricNoise``
(sigma_min 1e-4, sigma_max 20), a schedule with no SEDD noise is one line before training,
and a Dream-style (``logit_shift``) model is scored on its shifted output."""

import math
from dataclasses import replace

import pytest
import torch

from unmask.config import ModelConfig, SampleConfig, TrainConfig
from unmask.errors import UserError
from unmask.objectives import ObjectiveOptions, objective_spec, sedd
from unmask.sampling.sedd import denoise_step, generate_sedd, model_noise
from unmask.schedules import GeometricSchedule, get_schedule
from unmask.sedd import AbsorbingGraph, LogLinearNoise, UniformGraph, noise_of


def test_the_geometric_schedule_is_the_references_noise():
    s = get_schedule("geometric")
    assert isinstance(s, GeometricSchedule)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    want = torch.tensor([1e-4 ** (1 - u) * 20.0**u for u in t.tolist()], dtype=torch.float64)
    torch.testing.assert_close(s.sigma(t), want)
    torch.testing.assert_close(s.dsigma(t), want * math.log(20.0 / 1e-4))
    torch.testing.assert_close(s.alpha(t), torch.exp(-want))
    h = 1e-6  # α' by central differences
    mid = torch.tensor([0.3, 0.7], dtype=torch.float64)
    fd = (s.alpha(mid + h) - s.alpha(mid - h)) / (2 * h)
    torch.testing.assert_close(s.dalpha(mid), fd, rtol=1e-6, atol=0)
    assert s.sigma_max == 20.0
    assert noise_of(s) is s
    assert isinstance(noise_of(get_schedule("linear", eps=0.01)), LogLinearNoise)


def _spy(V: int, seen: list):
    def model(xt, attention_mask=None, **kw):
        seen.append(xt.clone())
        return torch.zeros(*xt.shape, V)

    return model


def test_the_sedd_loss_noises_by_the_geometric_sigma_and_adds_its_prior():
    """At t = 0.5 the geometric σ is sqrt(1e-4·20) ≈ 0.045: ~4.4% of tokens masked (the
    log-linear noise masks half); the prior term is e^{-20}·log(V - 1) a token, not
    eps·log(V - 1)."""
    V, mask = 32, 31
    cfg = ModelConfig(vocab_size=V, mask_id=mask, pad_id=0, eos_id=1, d_model=16, n_layers=1,
                      n_heads=2, max_seq_len=4096, sedd_graph="absorbing")  # fmt: skip
    x0 = torch.randint(2, mask, (8, 512), generator=torch.Generator().manual_seed(0))
    seen: list = []
    geo = ObjectiveOptions(schedule=get_schedule("geometric"))
    sedd(_spy(V, seen), cfg, x0, attention_mask=None, generator=torch.Generator().manual_seed(1),
         options=geo, t=torch.full((8,), 0.5))  # fmt: skip
    frac = float((seen[0] == mask).float().mean())
    assert frac == pytest.approx(-math.expm1(-math.sqrt(1e-4 * 20.0)), abs=0.006)
    # nothing masked (t = 0 draws σ = 1e-4: none of 8 tokens here): the loss is the prior term
    few = x0[:1, :8]
    parts = sedd(_spy(V, []), cfg, few, attention_mask=None,
                 generator=torch.Generator().manual_seed(2), options=geo, t=torch.zeros(1))
    assert float(parts.loss_sum) == pytest.approx(8 * math.exp(-20.0) * math.log(V - 1), rel=1e-5)


def test_a_schedule_with_no_sedd_noise_is_refused_before_training():
    spec = objective_spec("sedd")
    spec.validate(TrainConfig(objective="sedd", schedule="geometric"))  # accepted
    spec.validate(TrainConfig(objective="sedd", schedule="linear", eps=0.01))
    with pytest.raises(UserError, match="^objective 'sedd' takes schedule linear .* not 'cosine'$"):
        spec.validate(TrainConfig(objective="sedd", schedule="cosine"))
    with pytest.raises(UserError, match="^eps applies to SEDD's log-linear noise"):
        spec.validate(TrainConfig(objective="sedd", schedule="geometric", eps=0.01))
    with pytest.raises(UserError, match="^SEDD noise eps=0.0 must be in"):
        spec.validate(TrainConfig(objective="sedd", eps=0.0))
    model = spec.configure(ModelConfig(), TrainConfig(objective="sedd", schedule="geometric"))
    assert model.schedule == "geometric"


def test_a_geometric_checkpoint_samples_on_its_own_noise(tiny_config):
    cfg = replace(tiny_config, time_conditioning=True, sigma_input="given", objective="sedd",
                  sedd_graph="uniform", schedule="geometric")  # fmt: skip
    assert isinstance(model_noise(cfg), GeometricSchedule)
    from unmask.model import Transformer

    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    seen = []
    forward = model.forward

    def recording(*args, **kw):
        seen.append(float(kw["sigma"][0]))
        return forward(*args, **kw)

    model.forward = recording  # type: ignore[method-assign]
    config = SampleConfig(decoder="sedd", gen_length=4, steps=4, seed=0)
    generate_sedd(model, [[5, 6]], config, mask_id=cfg.mask_id, pad_id=cfg.pad_id,
                  eos_id=cfg.eos_id)  # fmt: skip
    want = [1e-4 ** (1 - u) * 20.0**u for u in (1.0, 0.75, 0.5, 0.25)]
    assert seen == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("graph", [AbsorbingGraph(4, 3), UniformGraph(4)],
                         ids=["absorbing", "uniform"])
def test_the_last_step_removes_all_the_noise_left(graph):
    """The geometric σ(0) is 1e-4, not 0: the denoiser steps down by σ(t) (SEDD's
    ``Denoiser``), so with the exact score it draws from the clean data p0 itself, not from
    the marginal at σ = 1e-4 (uniform flips). Absorbing: with the mask ruled out the draw
    does not depend on the noise removed, so that case only checks the step stays exact)."""
    noise = GeometricSchedule()
    V = graph.vocab_size
    Q = torch.zeros(V, V, dtype=torch.float64)
    if graph.absorbing:
        Q[:, graph.mask_id] = 1.0
    else:
        Q[:] = 1.0 / V
    Q.fill_diagonal_(0.0)
    Q -= torch.diag(Q.sum(dim=1))
    p0 = torch.tensor([0.5, 0.3, 0.2, 0.0 if graph.absorbing else 0.4], dtype=torch.float64)
    p0 /= p0.sum()
    xs = torch.tensor([graph.mask_id]) if graph.absorbing else torch.arange(V)
    t = 0.25
    sig = float(noise.sigma(torch.tensor(t, dtype=torch.float64)))
    p_t = p0 @ torch.linalg.matrix_exp(sig * Q)
    T = torch.linalg.matrix_exp(sig * Q)  # q(x_t = b | x_0 = a)
    score = p_t[None, :] / p_t[xs][:, None]
    exact = p0[None, :] * T[:, xs].T / p_t[xs][:, None]  # Bayes: p(x_0 | x_t)
    got = denoise_step(graph, score, xs, t, 0.0, noise)
    torch.testing.assert_close(got / got.sum(-1, keepdim=True), exact, atol=1e-12, rtol=0)


@pytest.mark.parametrize("graph", ["absorbing", "uniform"])
def test_a_dream_style_model_is_scored_on_its_shifted_output(graph):
    """A ``logit_shift`` model's output at i - 1 is position i's (as ``mdlm`` and the SEDD
    samplers read it): its loss equals that of the same outputs unshifted, position 0 (which
    no output predicts) left out. Read raw, each position was scored on its neighbour's
    output (training taught position i the score of i + 1, the sampler read it shifted)."""
    V, mask, B, L = 12, 11, 4, 16
    base = ModelConfig(vocab_size=V, mask_id=mask, pad_id=0, eos_id=1, d_model=16, n_layers=1,
                       n_heads=2, max_seq_len=64, sedd_graph=graph)  # fmt: skip
    x0 = torch.randint(2, mask, (B, L), generator=torch.Generator().manual_seed(0))
    good = torch.full((B, L, V), -4.0).scatter(-1, x0[..., None], 4.0)
    out = good.log_softmax(-1) + math.log(V - 1)  # near the absorbing optimum

    def plain(xt, attention_mask=None, **kw):
        return out

    def shifted(xt, attention_mask=None, **kw):  # position i's output at i - 1
        return torch.cat([out[:, 1:], out[:, -1:]], dim=1)

    opts = ObjectiveOptions(schedule=get_schedule("linear"))
    t = torch.tensor([0.2, 0.5, 0.7, 0.9])
    no_first = torch.ones(B, L, dtype=torch.bool)
    no_first[:, 0] = False
    want = sedd(plain, base, x0, attention_mask=no_first, options=opts, t=t,
                generator=torch.Generator().manual_seed(3))
    got = sedd(shifted, replace(base, logit_shift=True), x0, attention_mask=None, options=opts,
               t=t, generator=torch.Generator().manual_seed(3))
    assert int(got.n_tokens) == B * (L - 1) == int(want.n_tokens)
    assert float(got.loss_sum) == pytest.approx(float(want.loss_sum), rel=1e-6)


def test_a_masked_objective_on_the_geometric_schedule_weighs_a_token_by_its_alpha_range():
    """As a masking schedule (mdlm, bd3lm, sft) α = e^{-σ}: a token's expected ELBO weight is
    α(0) - α(1) = e^{-1e-4} - e^{-20} (documented: the ~1e-4 masked at t = 0 are left out)."""
    s = get_schedule("geometric", eps=0.1)
    t = (torch.arange(400_000, dtype=torch.float64) + 0.5) / 400_000  # midpoint rule
    want = math.exp(-1e-4) - math.exp(-20.0)
    assert float((s.weight(t) * s.p_mask(t)).mean()) == pytest.approx(want, abs=1e-6)
    assert s.transfer_counts(64, 8) == [1, 24, 27, 8, 1, 1, 1, 1]  # most of them early


def test_score_entropy_of_a_three_token_vocabulary_by_hand():
    """Numbers worked out on paper at σ = log 2 (e^σ - 1 = 1), so the rates, the ratios and
    the constant term are each checked, not only their shape.

    Uniform, V = 3: q(x0|x0) = 2/3, q(y|x0) = 1/6, Q(y → x) = 1/3. At x = x0 the ratios are
    1/4: with s = 1, 2·(1/3)·[1 + (1/4)(log(1/4) - 1)]. At x = 1 ≠ x0 = 0: r_0 = 4, r_2 = 1:
    (1/3)·[1 + 4(log 4 - 1)] + (1/3)·[1 - 1]. Absorbing, tokens 0, 1 and mask 2, x0 = 0:
    r_0 = 1, r_1 = 0, Q = 1: with s = (2, 1/2), [2 - log 2 - 1] + 1/2. At s = r both are 0."""
    sigma = torch.tensor([math.log(2.0)] * 2, dtype=torch.float64)
    uni = UniformGraph(3)
    ones = torch.zeros(2, 3, dtype=torch.float64)  # log s = 0
    got = uni.score_entropy(ones, sigma, torch.tensor([0, 1]), torch.tensor([0, 0]))
    want = [2 / 3 * (1 + 0.25 * (math.log(0.25) - 1)), (1 + 4 * (math.log(4.0) - 1)) / 3]
    assert got.tolist() == pytest.approx(want, abs=1e-12)
    true = torch.log(torch.tensor([[1.0, 0.25, 0.25], [4.0, 1.0, 1.0]], dtype=torch.float64))
    exact = uni.score_entropy(true, sigma, torch.tensor([0, 1]), torch.tensor([0, 0]))
    assert exact.abs().max() < 1e-12
    absorb = AbsorbingGraph(3, 2)
    log_s = torch.log(torch.tensor([[2.0, 0.5, 1.0]], dtype=torch.float64))
    got = absorb.score_entropy(log_s, sigma[:1], torch.tensor([2]), torch.tensor([0]))
    assert float(got) == pytest.approx(2 - math.log(2.0) - 1 + 0.5, abs=1e-12)
    near = torch.log(torch.tensor([[1.0, 1e-300, 1.0]], dtype=torch.float64))
    zero = absorb.score_entropy(near, sigma[:1], torch.tensor([2]), torch.tensor([0]))
    assert 0 <= float(zero) < 1e-12
