"""Session 38, helper ``model``: SEDD log-score made in place, model/config audit fixes."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from unmask.canvas import Canvas
from unmask.config import ModelConfig, dtype_choice, load_json
from unmask.errors import UserError
from unmask.model import (
    Transformer,
    denoiser_logits,
    log_expm1,
    masked_fraction_sigma,
    sedd_log_score,
)
from unmask.sampling.sedd import euler_step
from unmask.sedd import AbsorbingGraph, Graph, LogLinearNoise, UniformGraph


def test_the_in_place_log_scores_leave_their_inputs_and_match_the_formula() -> None:
    """A guard of the in-place log-score (``sedd_log_score``, ``log_score_from_logits``): the
    caller's head output or logits stay as they were, and the values are the formula's."""
    g = torch.Generator().manual_seed(0)
    V = 7
    head = torch.randn(2, 5, V, generator=g)
    tokens = torch.randint(0, V, (2, 5), generator=g)
    sigma = torch.tensor([0.3, 4.0])
    before = head.clone()
    score = sedd_log_score(head, tokens, sigma)
    assert torch.equal(head, before)
    want = head - log_expm1(sigma)[:, None, None] - math.log(V - 1)
    want = want.scatter(-1, tokens[..., None], 0.0)
    assert torch.equal(score, want)
    graph = AbsorbingGraph(V, 0)
    log_score = graph.log_score_from_logits(head, tokens, sigma)
    assert torch.equal(head, before)
    logits = head.index_fill(-1, torch.tensor([0]), float("-inf"))
    want = torch.log_softmax(logits, dim=-1) - log_expm1(sigma)[:, None, None]
    assert torch.equal(log_score, want.scatter(-1, tokens[..., None], 0.0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, "torch.bfloat16", torch.float16])
def test_load_for_decoding_takes_a_torch_dtype_as_unmask_load_does(dtype: object) -> None:
    """``unmask.load(dtype=torch.bfloat16)`` loads; ``load_for_decoding`` refused the same
    dtype as "choose one of auto, fp32, bf16, fp16" (``config.dtype_choice``)."""
    from unmask.api import load_for_decoding

    loaded = load_for_decoding("demo", dtype=dtype)  # type: ignore[arg-type]
    want = torch.float16 if dtype is torch.float16 else torch.bfloat16
    assert loaded.model.embed.weight.dtype == want


def test_dtype_choice_still_refuses_what_is_no_decoding_dtype() -> None:
    for name in ("torch.bf16", torch.float64, "double", "torch.auto"):
        with pytest.raises(UserError, match="choose one of auto, fp32, bf16, fp16"):
            dtype_choice(name)  # type: ignore[arg-type]


def test_an_unknown_config_field_names_the_field_a_typo_meant(tmp_path: Path) -> None:
    """A hand-edited config.json with ``n_head`` said only "unknown ModelConfig field(s):
    n_head"; ``sample_defaults`` typos already got "did you mean"."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"n_head": 4, "bogus_thing": 1}))
    with pytest.raises(UserError) as e:
        load_json(ModelConfig, path)
    assert str(e.value) == (f"{path}: unknown ModelConfig field(s): bogus_thing, n_head (did "
                            "you mean n_heads?)")


@pytest.mark.parametrize("graph", [AbsorbingGraph(9, 0), UniformGraph(9)], ids=["absorbing",
                                                                                "uniform"])
def test_the_euler_step_is_the_identity_plus_the_reverse_rates(graph: Graph) -> None:
    """A guard of the in-place Euler step: I + Δt·σ'(t)·R written out, clipped at 0, from
    the caller's score left as it was."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 9, (6,), generator=g)
    x[:3] = 0  # masked positions under the absorbing graph
    score = torch.rand(6, 9, generator=g, dtype=torch.float64) * 3
    before = score.clone()
    noise = LogLinearNoise()
    probs = euler_step(graph, score, x, 0.9, 0.6, noise)
    assert torch.equal(score, before)
    rate = float(noise.dsigma(torch.tensor(0.9, dtype=torch.float64)))
    rev = (graph.rate_into(x).double() * score).scatter(-1, x[:, None], 0.0)
    rev = rev.scatter(-1, x[:, None], -rev.sum(dim=-1, keepdim=True))
    want = torch.nn.functional.one_hot(x, 9).double() + (0.9 - 0.6) * rate * rev
    assert torch.equal(probs, want.clamp_min(0.0))


def test_the_euler_step_never_writes_a_graph_s_own_rate_tensor() -> None:
    """A graph may hand out a tensor it keeps (``rate_into``): the step works on a copy."""

    class Kept(UniformGraph):
        def rate_into(self, x: torch.Tensor) -> torch.Tensor:
            self.kept = super().rate_into(x).double()
            self.seen = self.kept.clone()
            return self.kept

    graph = Kept(5)
    x = torch.tensor([1, 3])
    euler_step(graph, torch.full((2, 5), 2.0, dtype=torch.float64), x, 0.5, 0.25,
               LogLinearNoise())
    assert torch.equal(graph.kept, graph.seen)


def test_the_forward_s_in_place_log_score_trains_as_the_formula_does() -> None:
    """A time-conditioned absorbing SEDD model writes its log-score into its head's own output
    (``in_place``): the same outputs and gradients as the log-score of a fresh tensor."""
    cfg = ModelConfig(vocab_size=11, d_model=16, n_layers=1, n_heads=2, max_seq_len=8,
                      time_conditioning=True, output="sedd_log_score", sedd_graph="absorbing",
                      norm="layer", mlp="gelu", head_bias=True, cond_dim=8)
    torch.manual_seed(0)
    model = Transformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)  # adaLN-Zero starts at 0: no gradient would reach the head
    tokens = torch.randint(0, 11, (2, 6))
    sigma = torch.tensor([0.4, 2.0])
    weights = torch.randn(2, 6, 11)

    def grads(out: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        (out * weights).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    out = model(tokens, sigma=sigma)
    got = grads(out)
    h = model(tokens, sigma=sigma, return_hidden=True)
    want_out = sedd_log_score(model.lm_head(h), tokens, sigma)
    assert torch.equal(out, want_out)
    want = grads(want_out)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize(("name", "value", "why"), [
    ("threshold", 5.0, r"threshold must be a finite number in \(0, 1\], got 5.0"),
    ("factor", -1.0, "factor must be a finite number > 0, got -1.0"),
    ("entropy_bound", float("nan"), "entropy_bound must be a finite number >= 0, got nan"),
])
def test_a_policy_parameter_out_of_range_in_sample_defaults_names_config_json(
    tmp_path: Path, name: str, value: float, why: str
) -> None:
    """A checkpoint whose config.json recommends ``threshold: 5`` loaded, and the first run
    under that policy failed with "threshold must be ... got 5.0", a value the user never
    gave, not naming the file (the rule the other sample_defaults values follow)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"sample_defaults": {name: value}}))
    with pytest.raises(UserError, match=f"^{re.escape(str(path))}: sample_defaults: {why}$"):
        load_json(ModelConfig, path)
    ModelConfig(sample_defaults={"policy": "threshold", "threshold": 0.95, "factor": 1.0,
                                 "entropy_bound": 0.0})  # in range: as before


def test_the_forward_s_in_place_denoiser_logits_are_the_log_score_s() -> None:
    """Without ``sigma`` a masked_fraction SEDD model fills the [MASK] column of its own
    log-score with -inf (in place): the log-score at the canvas' noise level, that column
    aside, as ``denoiser_logits`` of a separate tensor gives it."""
    cfg = ModelConfig(vocab_size=11, d_model=16, n_layers=1, n_heads=2, max_seq_len=8,
                      time_conditioning=True, sigma_input="masked_fraction",
                      output="sedd_log_score", sedd_graph="absorbing", cond_dim=8)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    tokens = torch.randint(0, 11, (2, 6))
    tokens[:, 3:] = cfg.mask_id
    with torch.no_grad():
        got = model(tokens)
        score = model(tokens, sigma=masked_fraction_sigma(tokens, cfg.mask_id))
    assert torch.equal(got, denoiser_logits(score, cfg))
    assert torch.isneginf(got[..., cfg.mask_id]).all() and torch.isfinite(score).all()


@pytest.mark.parametrize("prompts", [{9, 5}, [{9, 5}], [[4], frozenset({9, 5})]],
                         ids=["set", "row-set", "frozenset"])
def test_a_set_of_prompt_ids_is_refused_in_one_line(prompts: object) -> None:
    """A set has no order: {9, 5} was the prompt [5, 9] (hash order), silently."""
    with pytest.raises(UserError, match="prompt ids must be in order .* not a (frozen)?set"):
        Canvas.from_prompts(prompts, 2, mask_id=0, pad_id=1)  # type: ignore[arg-type]
    assert Canvas.from_prompts((9, 5), 1, mask_id=0, pad_id=1).tokens.tolist() == [[9, 5, 0]]
