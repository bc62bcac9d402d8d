"""The SEDD steps' transition probabilities at every step of a grid, t = 1 and the step into
t = 0 included: finite, non-negative, with mass in every row, and under the absorbing graph
an exact distribution (the analytic step sums to 1 for any score small enough not to clip)."""

import pytest
import torch

from unmask.sampling.sedd import analytic_step, denoise_step, euler_step
from unmask.sedd import AbsorbingGraph, LogLinearNoise, UniformGraph

V, MASK = 6, 5


@pytest.mark.parametrize("eps", [1e-5, 1e-3, 0.5])
@pytest.mark.parametrize("graph", [AbsorbingGraph(V, MASK), UniformGraph(V)],
                         ids=["absorbing", "uniform"])
@pytest.mark.parametrize("steps", [1, 2, 7, 1000])
def test_every_step_gives_valid_probabilities(graph, eps, steps):
    noise = LogLinearNoise(eps)
    grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
    g = torch.Generator().manual_seed(steps)
    for k in sorted({0, 1, steps - 2, steps - 1} & set(range(steps))):
        t, s = grid[k], grid[k + 1]
        x = torch.full((64,), MASK) if graph.absorbing else torch.randint(0, V, (64,), generator=g)
        for scale in (0.1, 3.0, 10.0):
            log_s = torch.randn(64, V, generator=g, dtype=torch.float64) * scale
            score = log_s.scatter(-1, x[:, None], 0.0).exp()
            steppers = [euler_step, analytic_step] if k < steps - 1 else [denoise_step]
            for step in steppers:
                p = step(graph, score, x, t, s, noise)
                assert torch.isfinite(p).all() and (p >= 0).all()
                assert (p.sum(-1) > 0).all()
                if step is denoise_step and graph.absorbing:
                    assert (p[:, MASK] == 0).all()


@pytest.mark.parametrize("t,s", [(1.0, 0.5), (0.5, 0.25), (1e-3, 5e-4)])
def test_the_absorbing_analytic_step_is_a_distribution(t, s):
    graph, noise = AbsorbingGraph(V, MASK), LogLinearNoise(1e-3)
    dsig = float(noise.sigma(torch.tensor(t, dtype=torch.float64))
                 - noise.sigma(torch.tensor(s, dtype=torch.float64)))
    x = torch.full((32,), MASK)
    score = torch.rand(32, V, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    score = score / score.sum(-1, keepdim=True) / (torch.tensor(dsig).exp() - 1)  # no clipping
    score[:, MASK] = 1.0
    p = analytic_step(graph, score, x, t, s, noise)
    torch.testing.assert_close(p.sum(-1), torch.ones(32, dtype=torch.float64))
    torch.testing.assert_close(p, euler_step(graph, score, x, t, s, noise))  # the same law
