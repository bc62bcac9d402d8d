"""SEDD: graphs, the score-entropy loss, the objective and the Euler / analytic samplers.

The closed forms of ``unmask.sedd`` are checked against brute force on tiny vocabularies: the
rate matrix Q written out in full, transitions by ``torch.linalg.matrix_exp``, the DWDSE
formula summed term by term; the samplers are checked against known data distributions
with an oracle (exact) score.
"""

import importlib.util
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from corpus_helpers import word_corpus

from unmask.canvas import Canvas
from unmask.config import ModelConfig, SampleConfig, TrainConfig, model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.objectives import ObjectiveOptions, get_objective, objective_spec, sedd
from unmask.sampling import generate
from unmask.sampling.sedd import generate_sedd, sample_model, sample_sedd, uses_sedd_sampler
from unmask.schedules import get_schedule
from unmask.sedd import AbsorbingGraph, LogLinearNoise, UniformGraph, get_graph

MASK = 3  # absorbing tests: tokens 0, 1, 2 and the mask


def rate_matrix(graph) -> torch.Tensor:
    """Q[i, j] = rate of i → j, written out from the definitions (not from the graph's methods)."""
    V = graph.vocab_size
    if isinstance(graph, AbsorbingGraph):
        Q = torch.zeros(V, V, dtype=torch.float64)
        Q[:, graph.mask_id] = 1.0
    else:
        Q = torch.full((V, V), 1.0 / V, dtype=torch.float64)
    Q.fill_diagonal_(0.0)
    Q -= torch.diag(Q.sum(dim=1))
    return Q


def brute_dse(graph, log_score, sigma, x, x0) -> float:
    """Σ_{y≠x} Q(y→x)·[s_y - r_y log s_y + r_y (log r_y - 1)], r_y = q(y|x0)/q(x|x0), term by
    term."""
    Q = rate_matrix(graph)
    P = torch.linalg.matrix_exp(sigma * Q)  # P[a, b] = q(x_t = b | x_0 = a)
    total = 0.0
    for y in range(graph.vocab_size):
        if y == x or Q[y, x] == 0:
            continue
        r = float(P[x0, y] / P[x0, x])
        ls = float(log_score[y])
        const = r * (math.log(r) - 1.0) if r > 0 else 0.0
        total += float(Q[y, x]) * (math.exp(ls) - r * ls + const)
    return total


GRAPHS = [AbsorbingGraph(4, MASK), UniformGraph(4)]


def reachable(graph, sigma):
    P = torch.linalg.matrix_exp(sigma * rate_matrix(graph))
    V = graph.vocab_size
    data = range(V) if isinstance(graph, UniformGraph) else [v for v in range(V) if v != MASK]
    return [(x0, x) for x0 in data for x in range(V) if P[x0, x] > 0]


@pytest.mark.parametrize("graph", GRAPHS, ids=["absorbing", "uniform"])
def test_score_entropy_matches_brute_force(graph):
    g = torch.Generator().manual_seed(0)
    for sigma in (0.05, 0.7, 3.0):
        pairs = reachable(graph, sigma)
        x0 = torch.tensor([p[0] for p in pairs])
        x = torch.tensor([p[1] for p in pairs])
        ls = torch.randn(len(pairs), graph.vocab_size, generator=g, dtype=torch.float64)
        got = graph.score_entropy(ls, torch.full((len(pairs),), sigma, dtype=torch.float64), x, x0)
        want = torch.tensor(
            [brute_dse(graph, ls[i], sigma, int(x[i]), int(x0[i])) for i in range(len(pairs))],
            dtype=torch.float64,
        )
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("graph", GRAPHS, ids=["absorbing", "uniform"])
def test_score_entropy_is_zero_at_the_true_score_and_positive_elsewhere(graph):
    g = torch.Generator().manual_seed(1)
    for sigma in (0.1, 1.0, 4.0):
        P = torch.linalg.matrix_exp(sigma * rate_matrix(graph))
        for x0, x in reachable(graph, sigma):
            # the conditional ratios; -inf where unreachable
            true = torch.log(P[x0] / P[x0, x])[None]
            s = torch.tensor([sigma], dtype=torch.float64)
            args = (s, torch.tensor([x]), torch.tensor([x0]))
            assert abs(float(graph.score_entropy(true, *args))) < 1e-12
            bumped = true + 0.3 * torch.randn(true.shape, generator=g, dtype=torch.float64)
            bumped[0, x] = 0.0
            # mass where none is due
            bumped = torch.where(torch.isinf(true), torch.full_like(true, -1.0), bumped)
            dse = float(graph.score_entropy(bumped, *args))
            has_score = bool((rate_matrix(graph)[:, x] > 0).any())
            assert (dse > 1e-6) if has_score else dse == 0.0


@pytest.mark.parametrize("graph", GRAPHS, ids=["absorbing", "uniform"])
def test_denoising_score_entropy_is_score_entropy_plus_a_constant(graph):
    """With a known data distribution p0 (one token), the expected DSE over x0 ~ p0, x ~ q(·|x0)
    differs from the score entropy against the true marginal score p_t(y)/p_t(x) by a constant,
    and the score entropy is 0 at that score: minimising the DSE learns the true score."""
    V, sigma = graph.vocab_size, 0.8
    Q = rate_matrix(graph)
    P = torch.linalg.matrix_exp(sigma * Q)
    p0 = torch.tensor(
        [0.5, 0.3, 0.2, 0.0] if isinstance(graph, AbsorbingGraph) else [0.4, 0.3, 0.2, 0.1],
        dtype=torch.float64,
    )
    pt = p0 @ P  # marginal at σ
    true = torch.log(pt[None, :] / pt[:, None])  # true[x, y] = log p_t(y)/p_t(x)
    s = torch.tensor([sigma], dtype=torch.float64)

    def expected_dse(table):
        return sum(
            float(p0[a] * P[a, x])
            * float(graph.score_entropy(table[x][None], s, torch.tensor([x]), torch.tensor([a])))
            for a in range(V)
            if p0[a] > 0
            for x in range(V)
            if P[a, x] > 0
        )

    def score_entropy(table):  # against the marginal ratios, term by term
        total = 0.0
        for x in range(V):
            for y in range(V):
                if y != x and Q[y, x] > 0:
                    r, ls = float(pt[y] / pt[x]), float(table[x, y])
                    const = r * (math.log(r) - 1.0) if r > 0 else 0.0
                    total += float(pt[x] * Q[y, x]) * (math.exp(ls) - r * ls + const)
        return total

    assert abs(score_entropy(true)) < 1e-12
    base = expected_dse(true)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        other = true + 0.5 * torch.randn(V, V, generator=g, dtype=torch.float64)
        assert score_entropy(other) > 1e-4
        assert expected_dse(other) - base == pytest.approx(
            score_entropy(other), rel=1e-9, abs=1e-12
        )


def test_loglinear_noise():
    noise = LogLinearNoise(1e-3)
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    torch.testing.assert_close(torch.exp(-noise.sigma(t)), 1.0 - (1.0 - 1e-3) * t)
    h = 1e-6
    tt = t[1:-1]
    numeric = (noise.sigma(tt + h) - noise.sigma(tt - h)) / (2 * h)
    torch.testing.assert_close(noise.dsigma(tt), numeric, rtol=1e-6, atol=1e-6)
    assert noise.sigma_max == pytest.approx(-math.log(1e-3))
    with pytest.raises(UserError):
        LogLinearNoise(0.0)


def test_forward_process_marginals():
    g = torch.Generator().manual_seed(3)
    sigma = torch.tensor([0.1, 0.5, 1.0, 3.0])
    n = 20000
    absorbing, uniform = AbsorbingGraph(8, 7), UniformGraph(8)
    x0 = torch.randint(0, 7, (4, n), generator=g)
    keep = torch.ones_like(x0, dtype=torch.bool)
    keep[:, :100] = False  # e.g. padding: never noised
    xt = absorbing.sample_transition(x0, sigma, g, maskable=keep)
    assert torch.equal(xt[:, :100], x0[:, :100])
    frac = (xt[:, 100:] == 7).double().mean(dim=1)
    want = 1.0 - torch.exp(-sigma.double())
    assert torch.all((frac - want).abs() < 4 * torch.sqrt(want * (1 - want) / n) + 1e-9)
    assert bool(((xt == x0) | (xt == 7)).all())  # a token only ever becomes the mask
    xt = uniform.sample_transition(x0, sigma, g)
    changed = (xt != x0).double().mean(dim=1)
    want = (1.0 - torch.exp(-sigma.double())) * 7 / 8
    assert torch.all((changed - want).abs() < 4 * torch.sqrt(want * (1 - want) / n))


class Leaf(torch.nn.Module):
    """A 'network' whose output is a free (B, L, V) parameter; records its input."""

    def __init__(self, B, L, V, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.out = torch.nn.Parameter(torch.randn(B, L, V, generator=g))
        self.seen = None

    def forward(self, x, attention_mask=None):
        self.seen = x.clone()
        return self.out


def _options(eps=1e-3):
    return ObjectiveOptions(schedule=get_schedule("linear", eps=eps))


def test_gradient_flows_only_where_it_should():
    V, B, L = 6, 4, 12
    cfg = ModelConfig(
        vocab_size=V, d_model=8, n_layers=1, n_heads=2, mask_id=5, pad_id=4, eos_id=3, bos_id=None
    )
    x0 = torch.randint(0, 4, (B, L), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 0.5, 0.7, 0.9])
    net = Leaf(B, L, V)
    sedd(
        net,
        cfg,
        x0,
        attention_mask=None,
        generator=torch.Generator().manual_seed(1),
        options=_options(),
        t=t,
    ).loss_sum.backward()
    grad, masked = net.out.grad, net.seen == 5
    assert masked.any() and (~masked).any()
    assert torch.all(grad[~masked] == 0)  # unmasked positions carry no loss
    assert torch.all(grad[masked][:, 5] == 0)  # the mask entry of a masked position is fixed at 0
    assert torch.all(grad[masked][:, :5] != 0)

    uni = replace(cfg, sedd_graph="uniform")
    net = Leaf(B, L, V)
    attn = torch.ones(B, L, dtype=torch.bool)
    attn[:, :3] = False  # left padding: no loss, no noise
    sedd(
        net,
        uni,
        x0,
        attention_mask=attn,
        generator=torch.Generator().manual_seed(1),
        options=_options(),
        t=t,
    ).loss_sum.backward()
    grad, xt = net.out.grad, net.seen
    assert torch.equal(xt[:, :3], x0[:, :3])
    assert torch.all(grad[:, :3] == 0)
    current = torch.nn.functional.one_hot(xt, V).bool()
    assert torch.all(grad[:, 3:][current[:, 3:]] == 0)  # the current token's entry is fixed at 0
    assert torch.all(grad[:, 3:][~current[:, 3:]] != 0)


def test_absorbing_loss_with_a_normalised_output_is_cross_entropy_weighted_by_one_over_t():
    V, B, L, mask = 7, 4, 10, 6
    cfg = ModelConfig(
        vocab_size=V,
        d_model=8,
        n_layers=1,
        n_heads=2,
        mask_id=mask,
        pad_id=5,
        eos_id=4,
        bos_id=None,
    )
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, L, V, generator=g)
    logits[..., mask] = float("-inf")
    out = torch.log_softmax(logits, dim=-1) + math.log(V - 1)  # Σ_{y≠mask} e^{out_y} = V - 1

    class Net(torch.nn.Module):
        def forward(self, x, attention_mask=None):
            self.seen = x
            return out

    net, eps = Net(), 1e-3
    x0 = torch.randint(0, 5, (B, L), generator=g)
    t = torch.tensor([0.2, 0.4, 0.6, 0.8])
    parts = sedd(net, cfg, x0, attention_mask=None, generator=torch.Generator().manual_seed(1),
                 options=_options(eps), t=t)
    masked = net.seen == mask
    ce = -torch.log_softmax(logits, dim=-1).gather(-1, x0[..., None]).squeeze(-1)  # (B, L)
    want = (ce / t[:, None].double())[masked].sum() + eps * math.log(V - 1) * B * L
    assert float(parts.loss_sum) == pytest.approx(float(want), rel=1e-5)
    assert int(parts.n_tokens) == B * L


def test_objective_registry_and_errors(tiny_config):
    assert get_objective("sedd") is sedd
    causal = model_preset("tiny", vocab_size=48, max_seq_len=32, attention="causal")
    x0 = torch.randint(4, 48, (2, 8))
    with pytest.raises(UserError, match="bidirectional"):
        sedd(
            Transformer(causal),
            causal,
            x0,
            attention_mask=None,
            generator=torch.Generator(),
            options=_options(),
        )
    with pytest.raises(UserError, match="unknown SEDD graph"):
        get_graph("circle", vocab_size=8, mask_id=0)


def test_uniform_prior_kl_matches_brute_force():
    for graph, sigma in ((UniformGraph(5), 2.0), (AbsorbingGraph(5, 4), 2.0)):
        P = torch.linalg.matrix_exp(sigma * rate_matrix(graph))[0]  # from token 0
        if isinstance(graph, UniformGraph):
            prior = torch.full((5,), 0.2, dtype=torch.float64)
        else:  # the mask with prob 1 - e^{-σ}, else a uniform token
            prior = torch.full((5,), math.exp(-sigma) / 4, dtype=torch.float64)
            prior[4] = 1 - math.exp(-sigma)
        kl = float((P * torch.log(P / prior)).nan_to_num(0.0).sum())
        assert graph.prior_kl(sigma) == pytest.approx(kl, rel=1e-9)


@pytest.mark.parametrize(
    "graph", [AbsorbingGraph(4, MASK), UniformGraph(3)], ids=["absorbing", "uniform"]
)
def test_with_the_exact_score_the_bound_is_the_entropy(graph):
    """The DWDSE + prior term of a perfect score network, averaged exactly over x0 ~ p0 and
    x_t ~ q(x_t | x0) and integrated over the noise, is the data's entropy per token (the
    bound is tight at the true score, up to the prior mismatch that eps leaves), never below
    it: the loss's weights σ'(t), its constants and ``prior_kl`` fit together."""
    V, L = graph.vocab_size, 2
    p0 = _data(V, 3)
    entropy = float(-(p0[p0 > 0] * p0[p0 > 0].log()).sum()) / L
    noise = LogLinearNoise(1e-3)
    score_fn = joint_oracle(graph, p0, L)
    seqs = torch.cartesian_prod(*[torch.arange(V)] * L)  # (S, L): every sequence
    S = seqs.shape[0]
    x0_of, xt_of = (i.flatten() for i in torch.meshgrid(torch.arange(S), torch.arange(S),
                                                       indexing="ij"))  # fmt: skip
    nodes, weights = (torch.tensor(a) for a in np.polynomial.legendre.leggauss(32))
    lo, hi = math.log(1e-9), math.log(noise.sigma_max)  # ∫ σ'(t)·f dt = ∫ f dσ, over log σ
    sigmas = (lo + (nodes + 1) / 2 * (hi - lo)).exp()
    dsigmas = weights / 2 * (hi - lo) * sigmas
    total = 0.0
    for sigma, w in zip(sigmas.tolist(), dsigmas.tolist(), strict=True):
        P = torch.linalg.matrix_exp(sigma * rate_matrix(graph))  # P[a, b] = q(b | a)
        log_score = score_fn(seqs, torch.full((S,), sigma))  # (S, L, V)
        joint = p0.flatten()[x0_of] * P[seqs[x0_of], seqs[xt_of]].prod(dim=-1)  # (S*S,)
        for i in range(L):
            dse = graph.score_entropy(log_score[xt_of, i], torch.full((S * S,), sigma),
                                      seqs[xt_of, i], seqs[x0_of, i])  # fmt: skip
            total += w * float((joint * dse.double()).sum())
    bound = total / L + graph.prior_kl(noise.sigma_max)
    assert entropy - 1e-6 <= bound <= entropy + 1e-4


# -- samplers ------------------------------------------------------------------------------------


def joint_oracle(graph, p0, L):
    """Exact log-score of a joint distribution p0 over L-token sequences (a (V,)*L tensor)."""
    V = graph.vocab_size
    Q = rate_matrix(graph)

    def score_fn(tokens, sigma):
        P = torch.linalg.matrix_exp(float(sigma[0]) * Q)
        pt = p0.clone()
        for i in range(L):  # push every axis through the forward transition
            pt = torch.movedim(torch.tensordot(pt, P, dims=([i], [0])), -1, i)
        out = torch.empty(tokens.shape[0], L, V, dtype=torch.float64)
        here = pt[tuple(tokens.T)]
        for i in range(L):
            for y in range(V):
                nb = tokens.clone()
                nb[:, i] = y
                out[:, i, y] = torch.log(pt[tuple(nb.T)] / here)
        return out.float()

    return score_fn


def _chi2(tokens, p0, V):
    L = tokens.shape[1]
    idx = sum(tokens[:, i] * V ** (L - 1 - i) for i in range(L))
    counts = torch.bincount(idx, minlength=V**L).double()
    expect = p0.flatten() * tokens.shape[0]
    keep = expect > 0
    assert counts[~keep].sum() == 0  # nothing outside the support
    return float(((counts[keep] - expect[keep]) ** 2 / expect[keep]).sum())


def _data(V, support, seed=0):
    g = torch.Generator().manual_seed(seed)
    p0 = torch.zeros(V, V, dtype=torch.float64)
    p0[:support, :support] = torch.rand(support, support, generator=g, dtype=torch.float64) + 0.2
    return p0 / p0.sum()


# chi-square, 8 degrees of freedom: 26.1 is its 0.999 quantile
@pytest.mark.parametrize("policy", ["sedd-analytic", "sedd-euler"])
@pytest.mark.parametrize(
    "graph", [AbsorbingGraph(4, MASK), UniformGraph(3)], ids=["absorbing", "uniform"]
)
def test_sampler_with_an_oracle_score_draws_the_data_distribution(graph, policy):
    V, L, N = graph.vocab_size, 2, 4000
    p0 = _data(V, 3)  # a joint (not factorised) distribution over two tokens
    score_fn = joint_oracle(graph, p0, L)
    canvas = Canvas.from_tokens(
        torch.full((N, L), MASK if graph.absorbing else 0), mask_id=MASK if graph.absorbing else 0
    )
    res = sample_sedd(
        score_fn, canvas, SampleConfig(gen_length=L, steps=64, policy=policy, seed=1), graph=graph
    )
    assert res.nfe == 64
    assert _chi2(res.tokens, p0, V) < 26.1
    # one step draws the two tokens independently: the test can tell
    one = sample_sedd(
        score_fn, canvas, SampleConfig(gen_length=L, steps=1, policy=policy, seed=1), graph=graph
    )
    assert _chi2(one.tokens, p0, V) > 100


@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("sampler", ["analytic", "euler"])
def test_forbid_eos_holds_under_the_uniform_graph(steps, sampler):
    """The uniform prior draws every token, EOS too, and a position may keep its token to the
    end: with ``forbid_eos`` the last step must move it off (EOS was left in ~7% of the
    positions at 1 step, ~3% at 4). Under a score of all ratios 1 the rest stays uniform."""
    V, eos = 4, 3
    score_fn = lambda tokens, sigma: torch.zeros(*tokens.shape, V)  # noqa: E731
    canvas = Canvas.from_tokens(torch.zeros(1000, 2, dtype=torch.long), mask_id=0)
    cfg = SampleConfig(gen_length=2, steps=steps, sedd_sampler=sampler, seed=0, forbid_eos=True)
    res = sample_sedd(score_fn, canvas, cfg, graph=UniformGraph(V), eos_id=eos)
    counts = torch.bincount(res.tokens.flatten(), minlength=V)
    assert counts[eos] == 0
    assert counts[:eos].min() > 2000 / 3 * 0.85


@pytest.mark.parametrize("policy", ["threshold", "entropy", "factor"])
def test_the_library_samplers_refuse_a_commit_policy(policy, tiny_config):
    """``sample_sedd`` / ``generate_sedd`` ran SEDD's steps under ``policy='threshold'`` as if
    it were not given (only the CLI's ``choose_decoder`` refused it)."""
    graph = AbsorbingGraph(4, MASK)
    score_fn = joint_oracle(graph, _data(4, 3), 2)
    canvas = Canvas.from_tokens(torch.full((2, 2), MASK), mask_id=MASK)
    config = SampleConfig(gen_length=2, steps=2, seed=0, policy=policy)
    with pytest.raises(UserError, match=f"policy '{policy}' is a commit policy"):
        sample_sedd(score_fn, canvas, config, graph=graph)
    model = Transformer(tiny_config).eval()
    with pytest.raises(UserError, match="is a commit policy"):
        generate_sedd(model, [[5]], replace(config, gen_length=4, steps=4),
                      mask_id=tiny_config.mask_id, pad_id=tiny_config.pad_id,
                      eos_id=None)  # fmt: skip
    euler = replace(config, policy="sedd-euler")  # the old spelling is the decoder's own
    assert sample_sedd(score_fn, canvas, euler, graph=graph).nfe == 2


def test_sampler_is_deterministic_given_a_seed_and_keeps_given_tokens():
    graph = AbsorbingGraph(4, MASK)
    score_fn = joint_oracle(graph, _data(4, 3), 2)
    tokens = torch.full((64, 2), MASK)
    tokens[:32, 0] = 1  # a prompt in half the rows
    canvas = Canvas.from_tokens(tokens, mask_id=MASK)
    cfg = SampleConfig(gen_length=2, steps=8, policy="sedd-analytic")
    a = sample_sedd(
        score_fn, canvas, cfg, graph=graph, generator=torch.Generator().manual_seed(5)
    ).tokens
    b = sample_sedd(
        score_fn, canvas, cfg, graph=graph, generator=torch.Generator().manual_seed(5)
    ).tokens
    c = sample_sedd(
        score_fn, canvas, cfg, graph=graph, generator=torch.Generator().manual_seed(6)
    ).tokens
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.all(a[:32, 0] == 1) and torch.all(a != MASK)
    assert torch.equal(canvas.tokens, tokens)  # the caller's canvas is untouched
    seeded = SampleConfig(gen_length=2, steps=8, policy="sedd-analytic", seed=5)
    assert torch.equal(sample_sedd(score_fn, canvas, seeded, graph=graph).tokens, a)


@pytest.mark.parametrize("graph", ["absorbing", "uniform"])
def test_a_checkpoint_samples_on_the_noise_it_was_trained_with(tiny_config, graph):
    """A SEDD model trained with ``--eps 0.1`` never saw σ above -log(0.1) ≈ 2.3; the sampler
    passed it σ(1) = -log(1e-3) ≈ 6.9 (the default eps), whatever the checkpoint said."""
    cfg = replace(tiny_config, time_conditioning=True, sigma_input="given", objective="sedd",
                  sedd_graph=graph, schedule_eps=0.1)  # fmt: skip
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    seen = []
    forward = model.forward

    def recording(*args, **kw):
        seen.append(float(kw["sigma"][0]))
        return forward(*args, **kw)

    model.forward = recording  # type: ignore[method-assign]
    config = SampleConfig(decoder="sedd", gen_length=4, steps=4, seed=0)
    res = generate_sedd(model, [[5, 6]], config, mask_id=cfg.mask_id, pad_id=cfg.pad_id,
                        eos_id=cfg.eos_id)  # fmt: skip
    assert res.nfe == 4 and len(seen) == 4
    noise = LogLinearNoise(0.1)
    want = noise.sigma(torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64))
    assert seen == pytest.approx(want.tolist(), rel=1e-5)
    assert max(seen) == pytest.approx(noise.sigma_max, rel=1e-5)


def test_model_sampling_blocks_options_and_errors(tiny_config):
    torch.manual_seed(0)
    model = Transformer(tiny_config).eval()  # a masked-diffusion model (logits)
    mask = tiny_config.mask_id
    cfg = SampleConfig(
        gen_length=8, steps=8, block_length=4, policy="sedd-analytic", seed=0, forbid_eos=True
    )
    res = generate_sedd(model, [[5, 6, 7], [8]], cfg, mask_id=mask, pad_id=tiny_config.pad_id,
                        eos_id=tiny_config.eos_id)
    gen = res.tokens[:, res.region[0]:]
    assert res.nfe == 8 and gen.shape == (2, 8)
    assert not (gen == mask).any() and not (gen == tiny_config.eos_id).any()
    assert res.tokens[0, :3].tolist() == [5, 6, 7]
    with pytest.raises(UserError, match="temperature"):
        generate_sedd(
            model,
            [5],
            SampleConfig(gen_length=4, steps=4, policy="sedd-euler", temperature=0.5),
            mask_id=mask,
            pad_id=1,
            eos_id=2,
        )
    with pytest.raises(UserError, match="own loop"):  # the commit loop cannot run a SEDD sampler
        generate(
            model,
            [5],
            SampleConfig(gen_length=4, steps=4, policy="sedd-analytic"),
            mask_id=mask,
            pad_id=1,
            eos_id=2,
        )
    causal = model_preset("tiny", vocab_size=48, max_seq_len=32, attention="causal")
    with pytest.raises(UserError, match="bidirectional"):
        uses_sedd_sampler(SampleConfig(policy="sedd-analytic"), causal)
    assert not uses_sedd_sampler(SampleConfig(), tiny_config)
    with pytest.raises(UserError, match="max_seq_len"):
        sample_model(
            model,
            Canvas.from_prompts([5], 40, mask_id=mask, pad_id=1),
            SampleConfig(gen_length=40, steps=4, policy="sedd-analytic"),
        )


# -- training ------------------------------------------------------------------------------------

WORDS = "in the beginning god created the heavens and the earth and the earth was formless".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return word_corpus(tmp_path_factory.mktemp("sedd-corpus"), WORDS, 600, 0)


def _train(corpus, out, **kw):
    from unmask.train import train

    base = dict(
        data=str(corpus),
        out=str(out),
        preset="tiny",
        objective="sedd",
        seq_len=32,
        batch_size=16,
        steps=6,
        warmup=2,
        lr=5e-3,
        eval_every=0,
        eval_batches=2,
        save_every=0,
        log_every=1,
        seed=0,
    )
    return train(TrainConfig(**{**base, **kw}), progress=False)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _generate(run, capsys, *flags):
    from unmask.cli import main

    code = main(
        [
            "generate",
            "--model",
            str(run),
            "--gen-length",
            "8",
            "--steps",
            "4",
            "--seed",
            "0",
            "--json",
            "--no-live",
            *flags,
            "the",
        ]
    )
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_short_training_lowers_the_loss_and_generate_samples_it(corpus, tmp_path, capsys):
    from unmask.checkpoint import load

    run = _train(corpus, tmp_path / "run", steps=40, warmup=4)
    recs = _metrics(run)
    losses = [r["loss"] for r in recs if "loss" in r]
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8
    assert [r["val_loss"] > 0 for r in recs if "val_loss" in r] == [True]
    cfg = load(run).config
    # a time-free absorbing model: denoiser logits
    assert (cfg.sedd_graph, cfg.output) == ("absorbing", "logits")
    out = _generate(run, capsys, "--policy", "sedd-analytic")
    assert out["nfe"] == 4 and len(out["results"][0]["tokens"]) == 8
    assert _generate(run, capsys)["decoder"] == "sedd"  # the checkpoint's own decoder by default
    # and the commit policies sample it as it is
    assert _generate(run, capsys, "--decoder", "llada")["nfe"] == 4
    with pytest.raises(UserError, match="sedd_graph applies"):
        objective_spec("mdlm").validate(TrainConfig(objective="mdlm", sedd_graph="uniform"))


def test_time_conditioned_model_computes_the_same_log_score(corpus, tmp_path, capsys):
    from unmask.checkpoint import load

    run = _train(
        corpus,
        tmp_path / "tc",
        model_overrides={"time_conditioning": True, "sigma_input": "masked_fraction"},
    )
    loaded = load(run)
    cfg = loaded.config
    assert cfg.output == "sedd_log_score"
    # the model's own parameterisation is the objective's: same weights with output='logits',
    # parameterised here
    raw = Transformer(replace(cfg, output="logits"))
    raw.load_state_dict(loaded.model.state_dict())
    x = torch.randint(4, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    x[:, ::3] = cfg.mask_id
    sigma = torch.tensor([0.3, 2.0])
    with torch.no_grad():
        want = AbsorbingGraph(cfg.vocab_size, cfg.mask_id).parameterize(
            raw(x, sigma=sigma), x, sigma
        )
        torch.testing.assert_close(loaded.model(x, sigma=sigma), want)
    assert _generate(run, capsys, "--policy", "sedd-euler")["nfe"] == 4


def test_uniform_graph_trains_and_samples_only_with_sedd_samplers(corpus, tmp_path, capsys):
    from unmask.checkpoint import load

    run = _train(corpus, tmp_path / "uni", sedd_graph="uniform")
    assert all(math.isfinite(r["loss"]) for r in _metrics(run) if "loss" in r)
    assert load(run).config.sedd_graph == "uniform"
    assert len(_generate(run, capsys, "--policy", "sedd-analytic")["results"][0]["tokens"]) == 8
    from unmask.cli import main

    assert main(["generate", "--model", str(run), "--gen-length", "8", "--steps", "4", "--json",
                 "--no-live", "--decoder", "llada", "x"]) == 2
    assert "uniform-graph SEDD model" in capsys.readouterr().err
    assert _generate(run, capsys)["decoder"] == "sedd"  # decoder auto: the one that can sample it


@pytest.mark.parametrize(
    "option",
    [{"remasking": "random"}, {"confidence": "margin"}, {"prompt_masks": "reference"},
     {"skip_empty_steps": True}, {"edit_threshold": 0.5}, {"max_post_steps": 3}],
    ids=lambda o: next(iter(o)),
)  # fmt: skip
def test_commit_loop_options_are_refused_not_ignored(option):
    """The SEDD decoder moves tokens by its reverse process and commits none: the commit
    loop's options are refused in one line (they were silently ignored)."""
    from unmask.facts import ModelFacts
    from unmask.sampling import choose_decoder

    facts = ModelFacts.of(replace(model_preset("tiny", vocab_size=48), objective="sedd",
                                  sedd_graph="absorbing"))  # fmt: skip
    assert choose_decoder(facts, SampleConfig(decoder="sedd")).name == "sedd"
    with pytest.raises(UserError, match=f"{next(iter(option))} does not apply to decoder 'sedd'"):
        choose_decoder(facts, SampleConfig(decoder="sedd", **option))


def test_uniform_graph_refuses_the_template_tasks_and_fills_a_blank_by_generate(
    corpus, tmp_path, capsys
):
    """A uniform-graph model never read a [MASK]: infill and edit (the masked commit loop) are
    refused in one line (infill used to run the loop and write garbage); a [MASK] in a
    generate prompt is drawn by the sedd decoder, around given tokens that stay."""
    from unmask.cli import main

    run = _train(corpus, tmp_path / "uni", sedd_graph="uniform")
    for argv in (["infill", "--model", str(run), "--steps", "2", "the [MASK:2] said"],
                 ["edit", "--model", str(run), "--text", "the lord said", "--span", "4:8"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "uniform-graph SEDD checkpoint never saw a [MASK]" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    argv = ["generate", "--model", str(run), "--gen-length", "2", "--steps", "4", "--seed", "0",
            "--no-live", "the [MASK] said"]  # fmt: skip
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decoder"] == "sedd"
    filled = out["results"][0]["filled_prompt"]
    assert filled.startswith("the ") and filled.endswith(" said") and "[MASK]" not in filled
    # the plain output shows it too: the prompt as it ended, then the continuation
    assert main(argv) == 0
    assert capsys.readouterr().out == filled + out["results"][0]["text"] + "\n"


def test_time_conditioned_sigma_given_model_refuses_the_mask_loops_with_a_way_out(
    corpus, tmp_path, capsys
):
    """A time-conditioned SEDD model with sigma_input 'given' needs its noise level from the
    caller: edit and lm-eval (which call it on token ids alone) are refused in one line
    naming the ways out (they failed on the model's internal 'pass sigma (B,) to
    forward'); the sedd decoder samples it, a [MASK] in the prompt included, and fills
    infill's fixed-length gaps (tests/test_infill39_sedd.py; infill was refused too)."""
    from unmask.checkpoint import load
    from unmask.cli import main
    from unmask.facts import ModelFacts

    run = _train(corpus, tmp_path / "tc", model_overrides={"time_conditioning": True,
                                                          "sigma_input": "given"})  # fmt: skip
    assert ModelFacts.of(load(run).config).needs_sigma
    assert main(["edit", "--model", str(run), "--text", "the lord said", "--span", "4:8"]) == 2
    err = capsys.readouterr().err
    assert "cannot give this model its noise level" in err and "masked_fraction" in err
    assert "unmask infill fills its fixed-length gaps" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["infill", "--model", str(run), "--steps", "2", "the [MASK:2] said"]) == 0
    assert capsys.readouterr().out.startswith("the ")
    if importlib.util.find_spec("lm_eval") is not None:  # lm-eval's log-likelihoods
        from lm_eval.api.instance import Instance

        from unmask.lm_eval import UnmaskLM

        lm = UnmaskLM(loaded=load(run), greedy_check=False)
        with pytest.raises(UserError, match="cannot give this model its noise level"):
            lm.loglikelihood([Instance("loglikelihood", {}, ("a", " b"), 0)])
    assert main(["generate", "--model", str(run), "--gen-length", "2", "--steps", "2", "--json",
                 "--no-live", "the [MASK] said"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["decoder"] == "sedd"
    assert not ModelFacts.of(replace(load(run).config, sigma_input="masked_fraction")).needs_sigma


def test_the_llada_decoder_refuses_a_model_that_needs_its_noise_level(capsys):
    """A time-conditioned SEDD model with ``sigma_input: given`` reads its noise level from
    the caller: ``--decoder llada`` ended in the model's internal "pass sigma (B,) to
    forward"; now one line at the choice, with what to do, and its own decoder runs."""
    from server_helpers import loaded

    from unmask import api
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32, **tok.special_ids())
    cfg = objective_spec("sedd").configure(cfg, TrainConfig(seq_len=8, sedd_graph="absorbing"))
    cfg = replace(cfg, time_conditioning=True, cond_dim=16, sigma_input="given")
    torch.manual_seed(0)
    model = loaded(Transformer(cfg).eval())
    with pytest.raises(UserError, match="decoder 'llada' runs the masked-diffusion commit loop, "
                                        "which cannot give this model its noise level") as e:
        api.generate(model, "ab", config={"decoder": "llada", "gen_length": 4})
    assert "masked_fraction" in str(e.value) and "pass sigma" not in str(e.value)
    assert api.generate(model, "ab", config={"gen_length": 4}).decoder == "sedd"


def test_a_uniform_graph_model_is_pointed_at_its_own_bound():
    """lm-eval's masked ELBO cannot score a uniform-graph SEDD model: the refusal names where
    its own bound on held-out text is (the hint had been lost in a rewrite)."""
    from unmask.facts import ModelFacts
    from unmask.sampling.continuous import refuse_mask_elbo

    cfg = objective_spec("sedd").configure(model_preset("tiny", vocab_size=48),
                                           TrainConfig(sedd_graph="uniform"))  # fmt: skip
    with pytest.raises(UserError, match=r"never read a \[MASK\] token; its own bound on "
                                        "held-out text: unmask eval RUN"):
        refuse_mask_elbo(ModelFacts.of(cfg), "lm-eval")


# -- edges of the loss and exactness of the steps ------------------------------------------------


def test_uniform_loss_is_finite_at_t_zero_and_equals_its_limit():
    """At t = 0 (σ = 0) nothing moves and every ratio r is 0: each term r·φ(log s - log r) is
    its limit s. It was 0·∞ = NaN, so a batch whose antithetic times hit 0 (u + k/B rounding
    to 1.0, about once in 10⁶ steps at B = 32) gave a NaN loss and gradient."""
    V, B, L = 6, 4, 12
    cfg = ModelConfig(vocab_size=V, d_model=8, n_layers=1, n_heads=2, mask_id=5, pad_id=4,
                      eos_id=3, bos_id=None, sedd_graph="uniform")  # fmt: skip
    x0 = torch.randint(0, 4, (B, L), generator=torch.Generator().manual_seed(0))

    def loss(t0):
        net = Leaf(B, L, V)
        parts = sedd(net, cfg, x0, attention_mask=None, options=_options(),
                     generator=torch.Generator().manual_seed(1),
                     t=torch.tensor([t0, 0.5, 0.7, 0.9]))  # fmt: skip
        parts.loss_sum.backward()
        return float(parts.loss_sum.detach()), net.out.grad

    at_zero, grad = loss(0.0)
    near_zero, grad_near = loss(1e-30)
    assert math.isfinite(at_zero) and torch.isfinite(grad).all()
    assert at_zero == pytest.approx(near_zero, rel=1e-6)
    assert torch.allclose(grad, grad_near)
    graph = UniformGraph(V)
    log_score = torch.randn(3, V, generator=torch.Generator().manual_seed(2))
    x = torch.tensor([0, 2, 4])
    dse = graph.score_entropy(log_score, torch.zeros(3), x, x)
    want = (log_score.exp().sum(-1) - log_score.exp().gather(-1, x[:, None]).squeeze(-1)) / V
    assert torch.allclose(dse, want)


@pytest.mark.parametrize("graph", GRAPHS, ids=["absorbing", "uniform"])
def test_score_entropy_of_a_huge_score_is_finite_and_exact(graph):
    """A log-score far above log r (e^{log s - log r} past float32's range) gave ∞ (and NaN
    gradients) instead of the large finite s - r - r·log(s/r)."""
    V = graph.vocab_size
    sigma = 6.5 if graph.absorbing else 0.01  # log r ≈ -6.5 (a masked token; x = x0 uniform)
    x0 = torch.tensor([1, 0])
    x = torch.tensor([MASK, MASK]) if graph.absorbing else x0
    log_score = torch.full((2, V), 84.0, requires_grad=True)  # s finite, s/r ≈ e^90 is not
    dse = graph.score_entropy(log_score, torch.full((2,), sigma), x, x0)
    dse.sum().backward()
    assert torch.isfinite(dse).all() and torch.isfinite(log_score.grad).all()
    for i in range(2):
        want = brute_dse(graph, log_score[i].detach().double(), sigma, int(x[i]), int(x0[i]))
        assert float(dse[i].detach()) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("graph", [AbsorbingGraph(5, 4), UniformGraph(4)],
                         ids=["absorbing", "uniform"])  # fmt: skip
def test_the_analytic_step_is_the_exact_reverse_transition_of_one_token(graph):
    """For one token the analytic (Tweedie) step with the exact score is Bayes' rule:
    P(x_s = y | x_t = x) = p_s(y)·q(x_t = x | x_s = y) / p_t(x), for any step size, under both
    graphs; the denoiser is the same to s = 0 (the mask excluded, which has no mass there)."""
    from unmask.sampling.sedd import analytic_step, denoise_step, euler_step

    V, noise = graph.vocab_size, LogLinearNoise(1e-3)
    Q = rate_matrix(graph)
    p0 = torch.rand(V, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    if graph.absorbing:
        p0[graph.mask_id] = 0.0
    p0 /= p0.sum()
    xs = torch.tensor([graph.mask_id]) if graph.absorbing else torch.arange(V)
    for t, s in ((1.0, 0.75), (0.9, 0.6), (0.5, 0.1), (0.3, 0.0)):
        sig_t, sig_s = (float(noise.sigma(torch.tensor(u, dtype=torch.float64))) for u in (t, s))
        p_t = p0 @ torch.linalg.matrix_exp(sig_t * Q)  # (V,) marginal at t
        p_s = p0 @ torch.linalg.matrix_exp(sig_s * Q)
        T = torch.linalg.matrix_exp((sig_t - sig_s) * Q)  # T[a, b] = q(x_t = b | x_s = a)
        score = p_t[None, :] / p_t[xs][:, None]  # (N, V) exact ratios
        exact = p_s[None, :] * T[:, xs].T / p_t[xs][:, None]  # (N, V)
        step = denoise_step if s == 0.0 else analytic_step
        got = step(graph, score, xs, t, s, noise)
        assert torch.allclose(got / got.sum(-1, keepdim=True), exact, atol=1e-10)
        if graph.absorbing:  # Δt·σ'(t) = e^{Δσ} - 1: Euler gives the same law (sampling.md)
            euler = euler_step(graph, score, xs, t, s, noise)
            assert torch.allclose(euler / euler.sum(-1, keepdim=True), exact, atol=1e-10)


def test_blocks_of_one_token_with_the_exact_score_sample_the_joint_exactly():
    """Absorbing graph, block_length 1, one step per block: each block's denoiser draws its
    token from p(x_i | the tokens before it) (the exact score of a masked position given
    masked later ones), so the joint law is exact (chi-square at its 0.999 quantile), where
    one step over both tokens draws them independently."""
    graph, V, L, N = AbsorbingGraph(4, MASK), 4, 2, 4000
    p0 = _data(V, 3)
    score_fn = joint_oracle(graph, p0, L)
    canvas = Canvas.from_tokens(torch.full((N, L), MASK), mask_id=MASK)
    cfg = SampleConfig(gen_length=L, steps=2, block_length=1, decoder="sedd", seed=1)
    res = sample_sedd(score_fn, canvas, cfg, graph=graph)
    assert res.nfe == 2
    assert _chi2(res.tokens, p0, V) < 26.1
    one = sample_sedd(score_fn, canvas, replace(cfg, steps=1, block_length=None), graph=graph)
    assert _chi2(one.tokens, p0, V) > 100


@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("sampler", ["analytic", "euler"])
def test_forbid_eos_holds_when_the_score_favours_staying(steps, sampler):
    """Under the uniform graph a score that favours staying (every other ratio 0.01) makes the
    last step's staggered score negative for every other token: once EOS was masked out no
    move was left, and a position the prior started at EOS kept it (a quarter of them here,
    despite ``forbid_eos``). Such a position now draws by the score among the allowed tokens."""
    V, eos = 4, 3
    score_fn = lambda tokens, sigma: torch.full((*tokens.shape, V), math.log(0.01))  # noqa: E731
    canvas = Canvas.from_tokens(torch.zeros(1000, 2, dtype=torch.long), mask_id=0)
    cfg = SampleConfig(gen_length=2, steps=steps, sedd_sampler=sampler, seed=0, forbid_eos=True)
    res = sample_sedd(score_fn, canvas, cfg, graph=UniformGraph(V), eos_id=eos)
    counts = torch.bincount(res.tokens.flatten(), minlength=V)
    assert counts[eos] == 0
    assert counts[:eos].min() > 2000 / 3 * 0.85
