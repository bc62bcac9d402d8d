"""The SEDD sampler's banned ids (and ``forbid_eos``): a set that leaves no token to sample is a
one-line error, and the given tokens stay."""

import pytest
import torch

from unmask.canvas import Canvas
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.sampling.sedd import sample_sedd
from unmask.sedd import AbsorbingGraph, UniformGraph


def _flat(V):
    return lambda x, s: torch.zeros(*x.shape, V)


@pytest.mark.parametrize("sampler", ["analytic", "euler"])
def test_banning_the_whole_vocabulary_is_a_one_line_error(sampler):
    """Before, the run returned banned tokens (the fallback of a row with no mass)."""
    canvas = Canvas.from_tokens(torch.zeros(4, 3, dtype=torch.long), mask_id=0)
    cfg = SampleConfig(gen_length=3, steps=2, sedd_sampler=sampler, seed=0)
    with pytest.raises(UserError, match="whole vocabulary") as err:
        sample_sedd(_flat(3), canvas, cfg, graph=UniformGraph(3), banned=[0, 1, 2])
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="EOS"):  # EOS under forbid_eos takes the last one
        sample_sedd(_flat(3), canvas, SampleConfig(gen_length=3, steps=2, seed=0,
                                                   sedd_sampler=sampler, forbid_eos=True),
                    graph=UniformGraph(3), banned=[0, 1], eos_id=2)
    with pytest.raises(UserError, match="whole vocabulary"):  # [MASK] is no token to end on
        sample_sedd(_flat(3), canvas, cfg, graph=AbsorbingGraph(3, mask_id=0), banned=[1, 2])


def test_an_eos_id_outside_the_vocabulary_under_forbid_eos_is_a_one_line_error():
    canvas = Canvas.from_tokens(torch.zeros(2, 3, dtype=torch.long), mask_id=0)
    cfg = SampleConfig(gen_length=3, steps=2, seed=0, forbid_eos=True)
    with pytest.raises(UserError, match="outside"):
        sample_sedd(_flat(4), canvas, cfg, graph=UniformGraph(4), eos_id=7)


@pytest.mark.parametrize("graph", [UniformGraph(6), AbsorbingGraph(6, mask_id=0)])
def test_one_token_left_is_every_generated_token_and_the_given_ones_stay(graph):
    """A banned given token (prompt) stays as it is: only the positions to generate move."""
    tokens = torch.tensor([[1, 2, 0, 0, 0]] * 50)
    canvas = Canvas.from_tokens(tokens, mask_id=0)
    cfg = SampleConfig(gen_length=3, steps=3, seed=0, forbid_eos=True)
    res = sample_sedd(_flat(6), canvas, cfg, graph=graph, banned=[1, 2, 3, 4], eos_id=0
                      if not graph.absorbing else 4)
    assert torch.all(res.tokens[:, :2] == torch.tensor([1, 2]))
    assert torch.all(res.tokens[:, 2:] == 5)
