"""SEDD follow-ups of session 34 (seddmend): each test failed on the code before its fix."""

import dataclasses
import json

import pytest
import torch

from unmask.checkpoint import read_config
from unmask.config import ModelConfig, TrainConfig
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.objectives.score_entropy import sedd_model_config
from unmask.sampling.sedd import _analytic, model_score_fn
from unmask.sedd import Graph, UniformGraph, graph_of

BASE = ModelConfig(vocab_size=12, mask_id=11, pad_id=0, eos_id=1, d_model=16, n_layers=1,
                   n_heads=2, max_seq_len=32, logit_shift=True, time_conditioning=True,
                   sigma_input="given")  # fmt: skip


def test_a_checkpoint_with_the_pre_fix_shifted_sedd_output_is_read_as_the_fixed_config(tmp_path):
    """A Dream-style time-conditioned ``sedd`` run wrote ``output='sedd_log_score'`` before the
    fix: loaded, it still scored a masked position's left neighbour's token at 0 (ratio 1)
    whatever the noise. It is read as the config the objective writes now (``logits``): the
    same weights give exactly the fixed model's log-score."""
    fixed = sedd_model_config(BASE, TrainConfig(objective="sedd"))
    fixed = dataclasses.replace(fixed, objective="sedd")
    stale = {**dataclasses.asdict(fixed), "output": "sedd_log_score"}
    (tmp_path / "config.json").write_text(json.dumps(stale))
    loaded = read_config(tmp_path)
    assert loaded == fixed and loaded.output == "logits"
    torch.manual_seed(0)
    reference = Transformer(fixed).eval()
    model = Transformer(loaded).eval()
    model.load_state_dict(reference.state_dict())
    x = torch.tensor([[5, 11, 11, 7]])
    sigma = torch.tensor([1.0])
    with torch.no_grad():
        got = model_score_fn(model, graph=graph_of(loaded))(x, sigma)
        want = model_score_fn(reference, graph=graph_of(fixed))(x, sigma)
    assert torch.equal(got, want)
    assert got[0, 1, 11] == 0 and got[0, 1, 5] != 0  # its own [MASK], not the neighbour's 5
    # a config older than the objective field: its graph says sedd, and sedd it is
    assert ModelConfig(**{**stale, "objective": None}) == fixed


def test_a_shifted_sedd_output_on_the_uniform_graph_is_refused_in_one_line():
    """Without the absorbing graph there is no fixed config it maps to."""
    with pytest.raises(UserError, match="^output='sedd_log_score' with logit_shift .*'logits'"):
        dataclasses.replace(BASE, output="sedd_log_score", sedd_graph="uniform",
                            objective="sedd")


def test_a_pre_fix_sedd_run_fine_tuned_as_mdlm_still_loads():
    """``--init`` of such a run with ``--objective mdlm`` kept ``output='sedd_log_score'``;
    an mdlm forward passes no noise level, so the head is the same as ``logits``: it loads
    (it did before the fix) with its objective kept."""
    config = dataclasses.replace(BASE, output="sedd_log_score", objective="mdlm",
                                 sedd_graph="absorbing")
    assert config.output == "logits" and config.objective == "mdlm"


class _ColumnGraph(UniformGraph):
    """A graph written against ``transition_into`` alone (the API before ``transition_parts``),
    whose staggered score at dσ = 0 is the score tensor itself."""

    transition_parts = Graph.transition_parts

    def transition_into(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        move = -torch.expm1(-sigma)[:, None]  # (B, 1)
        out = (move / self.vocab_size).expand(*x.shape, self.vocab_size).clone()
        return out.scatter_(-1, x[:, None], 1.0 - move + move / self.vocab_size)

    def staggered_score(self, score: torch.Tensor, dsigma: torch.Tensor) -> torch.Tensor:
        return score if bool((dsigma == 0).all()) else super().staggered_score(score, dsigma)


class _SameScoreGraph(UniformGraph):
    """The uniform graph with a staggered score that is the score tensor itself at dσ = 0."""

    def staggered_score(self, score: torch.Tensor, dsigma: torch.Tensor) -> torch.Tensor:
        return score if bool((dsigma == 0).all()) else super().staggered_score(score, dsigma)


@pytest.mark.parametrize("graph", [_ColumnGraph(7), _SameScoreGraph(7)],
                         ids=lambda g: type(g).__name__)
def test_the_analytic_step_takes_a_graph_with_transition_into_only_and_keeps_the_score(graph):
    """A ``Graph`` subclass that overrides ``transition_into`` only (``transition_parts`` came
    later) raised ``NotImplementedError`` in the analytic step; one whose staggered score is the
    score it was given had that score overwritten (the sampler reads it again). Both give the
    uniform graph's step and leave the score as it was."""
    x = torch.tensor([0, 3, 6])
    score = torch.rand(3, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for dsigma in (0.0, 0.4):
        ds = torch.full((3,), dsigma, dtype=torch.float64)
        kept = score.clone()
        got = _analytic(graph, score, x, ds)
        assert torch.equal(score, kept)
        want = UniformGraph(7).transition_into(x, ds) * graph.staggered_score(score.clone(), ds)
        torch.testing.assert_close(got, want.clamp_min(0.0), rtol=0, atol=1e-15)
