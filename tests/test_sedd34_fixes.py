"""SEDD fixes of session 34: each test failed on the code before its fix."""

import json

import pytest
import torch
from test_dit import make_sedd

import unmask
from unmask.cli import main
from unmask.config import ModelConfig, SampleConfig, TrainConfig
from unmask.model import Transformer
from unmask.objectives.score_entropy import sedd_model_config
from unmask.sampling.sedd import model_score_fn
from unmask.sedd import graph_of


def test_a_dream_style_time_conditioned_model_scores_each_position_against_its_own_token():
    """A ``logit_shift`` model's output at i - 1 is position i's. With the absorbing
    log-score computed in the forward (``output='sedd_log_score'``) the 0 of each position's
    own token was put before the shift: a masked position held its left neighbour's token at
    score 1 (e^0) whatever the noise, and its [MASK] entry a learned value, so the first steps
    of sampling copied the neighbour and training could not learn that entry."""
    base = ModelConfig(vocab_size=12, mask_id=11, pad_id=0, eos_id=1, d_model=16, n_layers=1,
                       n_heads=2, max_seq_len=32, logit_shift=True, time_conditioning=True,
                       sigma_input="given")  # fmt: skip
    cfg = sedd_model_config(base, TrainConfig(objective="sedd"))
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    x = torch.tensor([[5, 11, 11, 7], [6, 8, 11, 11]])
    sigma = torch.tensor([1.0, 3.0])
    graph = graph_of(cfg)
    with torch.no_grad():
        got = model_score_fn(model, graph=graph)(x, sigma)
        raw = model(x, sigma=sigma)
    masked = x == cfg.mask_id
    assert torch.all(got[masked][:, cfg.mask_id] == 0)  # the current token's ratio is 1
    left = torch.cat([x[:, :1], x[:, :-1]], dim=1)[masked]  # the left neighbour's token
    clean = left != cfg.mask_id
    assert clean.sum() == 2 and torch.all(got[masked][clean].gather(-1, left[clean, None]) != 0)
    # the shifted raw output, parameterised as the absorbing graph does (scale_by_sigma)
    shifted = torch.cat([raw[:, :1], raw[:, :-1]], dim=1)
    torch.testing.assert_close(got, graph.parameterize(shifted, x, sigma))


def test_an_imported_sedd_checkpoint_samples_with_the_sedd_decoder(tmp_path, capsys):
    """A published SEDD folder (louaaron/sedd-small's layout) records no objective: it was
    taken for an ``mdlm`` checkpoint, so ``--decoder sedd`` (and ``--policy sedd-analytic``)
    was refused, though its head is SEDD's log-score and its ``noise`` sets the schedule that
    decoder steps on (docs/models.md). Its default decoder stays the commit loop."""
    make_sedd(tmp_path / "sedd")
    args = ["generate", "w1 w2", "--model", str(tmp_path / "sedd"), "--json", "--no-live",
            "--gen-length", "4", "--steps", "4", "--seed", "0"]  # fmt: skip
    for flags in (["--decoder", "sedd"], ["--policy", "sedd-euler"]):
        assert main([*args, *flags]) == 0, capsys.readouterr().err
        out = json.loads(capsys.readouterr().out)
        assert out["decoder"] == "sedd" and len(out["results"][0]["tokens"]) == 4
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["decoder"] == "llada"
    loaded = unmask.load(tmp_path / "sedd")
    seen = []
    forward = loaded.model.forward

    def recording(*a, **kw):
        seen.append(kw.get("sigma"))
        return forward(*a, **kw)

    loaded.model.forward = recording  # type: ignore[method-assign]
    res = unmask.api.generate(loaded, "w1", config=SampleConfig(decoder="sedd", gen_length=4,
                                                                 steps=2, seed=0))  # fmt: skip
    assert (res.decoder, res.nfe, len(seen)) == ("sedd", 2, 2)
    # the log-linear noise with the reference's eps: σ(1) = -log(1e-3), then σ(1/2)
    assert [float(s[0]) for s in seen] == pytest.approx([6.90776, 0.69215], abs=1e-5)


def test_elbo_stderr_refuses_a_window_longer_than_the_model_in_one_line(benchmark, tmp_path):
    """``--context`` + ``--targets`` past the model's ``max_seq_len`` was a ValueError
    traceback from inside the forward, after the data had been read."""
    from pathlib import Path

    from unmask.data import prepare
    from unmask.errors import UserError

    demo = Path(unmask.__file__).parent / "assets" / "demo"
    line = "In the beginning God created the heaven and the earth.\n"
    (tmp_path / "a.txt").write_text(line * 800)
    prepare([tmp_path / "a.txt"], tmp_path / "data", tokenizer=demo / "tokenizer.json",
            val_fraction=0.5, progress=False)  # fmt: skip
    script = benchmark("elbo_stderr")
    with pytest.raises(UserError, match=r"--context 250 \+ the longest of --targets \(8\) = 258"):
        script.main(["--data", str(tmp_path / "data"), "--context", "250", "--targets", "4,8",
                     "--items", "1", "--samples", "1", "--repeats", "2"])  # fmt: skip


@pytest.mark.parametrize("absorbing", [True, False], ids=["absorbing", "uniform"])
def test_the_transition_into_a_state_is_the_matrix_exponential(absorbing):
    """``transition_parts`` (the one value from every other state, and the one from the state
    itself) written out by ``transition_into`` is the column of exp(σQ), Q written in full;
    the analytic step multiplies by the parts in place of an (N, V) transition tensor."""
    from test_sedd import rate_matrix

    from unmask.sedd import AbsorbingGraph, UniformGraph

    graph = AbsorbingGraph(5, 4) if absorbing else UniformGraph(5)
    x = torch.arange(5)
    for sigma in (1e-4, 0.3, 7.0):
        P = torch.linalg.matrix_exp(sigma * rate_matrix(graph))  # P[y, x] = q(x | y)
        got = graph.transition_into(x, torch.full((5,), sigma, dtype=torch.float64))
        torch.testing.assert_close(got, P[:, x].T, atol=1e-12, rtol=0)


def conditional_oracle(graph, p0, given):
    """Exact log-score of p0 (a (V,)*L joint) given clean tokens ``given`` {position: token}:
    only the free positions are noised (the given ones never move)."""
    from test_sedd import rate_matrix

    V, L = graph.vocab_size, p0.dim()
    cond = p0.clone()
    for i, tok in given.items():
        keep = torch.zeros(V, dtype=torch.float64)
        keep[tok] = 1.0
        cond = cond * keep.reshape([V if j == i else 1 for j in range(L)])
    cond = cond / cond.sum()
    Q = rate_matrix(graph)

    def score_fn(tokens, sigma):
        P = torch.linalg.matrix_exp(float(sigma[0]) * Q)
        pt = cond.clone()
        for i in range(L):
            if i not in given:
                pt = torch.movedim(torch.tensordot(pt, P, dims=([i], [0])), -1, i)
        out = torch.zeros(tokens.shape[0], L, V, dtype=torch.float64)
        here = pt[tuple(tokens.T)]
        for i in range(L):
            if i in given:
                continue
            for y in range(V):
                nb = tokens.clone()
                nb[:, i] = y
                out[:, i, y] = torch.log(pt[tuple(nb.T)] / here)
        return out.float()

    return score_fn, cond


# chi-square, 8 degrees of freedom: 26.1 is its 0.999 quantile
@pytest.mark.parametrize("sampler", ["analytic", "euler"])
@pytest.mark.parametrize("absorbing", [True, False], ids=["absorbing", "uniform"])
@pytest.mark.parametrize("given", [{0: 1}, {1: 2}], ids=["prompt", "infill"])
def test_with_given_tokens_the_sampler_draws_the_conditional_law(absorbing, sampler, given):
    """A prompt (position 0 given) and an infill (the middle given): with the exact score
    given those tokens, the free positions follow p0(free | given) jointly, and the given
    tokens stay."""
    from unmask.canvas import Canvas
    from unmask.sampling.sedd import sample_sedd
    from unmask.sedd import AbsorbingGraph, UniformGraph

    graph = AbsorbingGraph(4, 3) if absorbing else UniformGraph(3)
    V, L, N = graph.vocab_size, 3, 4000
    g = torch.Generator().manual_seed(0)
    p0 = torch.zeros((V,) * L, dtype=torch.float64)
    p0[:3, :3, :3] = torch.rand(3, 3, 3, generator=g, dtype=torch.float64) + 0.1
    p0 /= p0.sum()
    score_fn, cond = conditional_oracle(graph, p0, given)
    mask = 3 if absorbing else 0
    tokens = torch.full((N, L), mask)
    for i, tok in given.items():
        tokens[:, i] = tok
    canvas = Canvas.from_tokens(tokens, mask_id=mask)
    cfg = SampleConfig(gen_length=L, steps=128, sedd_sampler=sampler, seed=0)
    res = sample_sedd(score_fn, canvas, cfg, graph=graph)
    for i, tok in given.items():
        assert torch.all(res.tokens[:, i] == tok)
    free = [i for i in range(L) if i not in given]
    want = cond.sum(dim=tuple(given)).flatten()  # (V * V,) over the free positions
    idx = res.tokens[:, free[0]] * V + res.tokens[:, free[1]]
    counts = torch.bincount(idx, minlength=V * V).double()
    keep = want > 0
    assert counts[~keep].sum() == 0

    def chi2(law):
        expect = law[keep] / law[keep].sum() * N
        return float(((counts[keep] - expect) ** 2 / expect).sum())

    assert chi2(want) < 26.1
    assert chi2(p0.sum(dim=tuple(given)).flatten()) > 100  # the law without the given token
