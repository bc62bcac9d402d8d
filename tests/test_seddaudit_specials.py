"""SEDD samples hold only ordinary tokens: the uniform graph's prior and forward process move
tokens into every id ([MASK], [PAD], BOS, [EMPTY], ...), and a sample ended on them."""

from dataclasses import replace

import pytest
import torch

from unmask.canvas import Canvas
from unmask.config import SampleConfig, model_preset
from unmask.model import Transformer
from unmask.sampling.sedd import generate_sedd, sample_sedd
from unmask.sedd import UniformGraph


def _uniform_model(**overrides):
    torch.manual_seed(0)
    cfg = replace(model_preset("tiny", vocab_size=12, max_seq_len=16), sedd_graph="uniform",
                  objective="sedd", **overrides)
    return Transformer(cfg).eval(), cfg


@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("sampler", ["analytic", "euler"])
def test_a_uniform_graph_checkpoint_never_ends_on_a_special_token(sampler, steps):
    model, cfg = _uniform_model(empty_id=4)
    config = SampleConfig(decoder="sedd", gen_length=8, steps=steps, seed=0,
                          sedd_sampler=sampler)
    res = generate_sedd(model, [[5, 6]] * 64, config, mask_id=cfg.mask_id, pad_id=cfg.pad_id,
                        eos_id=cfg.eos_id)
    start, end = res.region
    made = res.tokens[:, start:end]
    banned = torch.tensor([cfg.mask_id, cfg.pad_id, cfg.bos_id, 4])
    assert not torch.isin(made, banned).any()  # before: ~1 in 3 positions held one
    assert (made == cfg.eos_id).any()  # EOS is a token the model may end its text with
    assert torch.all(res.tokens[:, start - 2:start] == torch.tensor([5, 6]))  # prompt kept


def test_the_banned_ids_of_a_checkpoint_are_its_special_tokens_but_eos():
    from unmask.sampling.sedd import banned_ids

    _, cfg = _uniform_model(empty_id=7, fim_prefix_id=8, fim_suffix_id=9, fim_middle_id=10)
    assert banned_ids(cfg) == (0, 1, 3, 7, 8, 9, 10)
    assert banned_ids(replace(cfg, bos_id=None, fim_prefix_id=None, fim_suffix_id=None,
                              fim_middle_id=None, empty_id=None)) == (0, 1)


_LAW = torch.tensor([0.0, 0.0, 0.6, 0.25, 0.1, 0.05], dtype=torch.float64)  # ids 0, 1: none


def _exact_score(x, sigma):
    """The exact log-score of one position under the uniform graph for the data law ``_LAW``:
    p_t = e^-σ·p_0 + (1 - e^-σ)/V."""
    e = torch.exp(-sigma.double())[:, None]
    pt = e * _LAW[None] + (1 - e) / _LAW.numel()  # (B, V)
    return (pt / pt.gather(1, x)).log()[:, None, :].float()  # (B, 1, V)


@pytest.mark.parametrize("steps", [1, 16])
@pytest.mark.parametrize("banned, forbid_eos", [([0, 1], False), ([0], True)])
def test_a_score_function_run_with_banned_ids_keeps_a_non_uniform_law(steps, banned,
                                                                       forbid_eos):
    """Under the exact score of a law that never holds ids 0 and 1, banning them (or banning 0
    and forbidding EOS = 1) leaves the sample's law alone. Before, the ban zeroed their scores
    at every step: the uniform graph's staggered score e·s + (1 - e)·mean(s) then moved every
    other token's probability (at these 20000 rows, 1 step: uniform over ids 2-5, chi² 25162;
    16 steps: 0.576 for the 0.6 token, chi² 74), and no path went through them on the way."""
    n = 20000
    canvas = Canvas.from_tokens(torch.zeros(n, 1, dtype=torch.long), mask_id=0)
    cfg = SampleConfig(gen_length=1, steps=steps, sedd_sampler="analytic", seed=1,
                       forbid_eos=forbid_eos)
    res = sample_sedd(_exact_score, canvas, cfg, graph=UniformGraph(6), banned=banned,
                      eos_id=1)
    counts = torch.bincount(res.tokens.flatten(), minlength=6).double()
    assert counts[:2].sum() == 0
    expected = n * _LAW[2:]
    chi2 = float(((counts[2:] - expected) ** 2 / expected).sum())
    assert chi2 < 16.3  # df 3, p = 0.001 (now 3.6 and 1.1)


@pytest.mark.parametrize("sampler", ["analytic", "euler"])
def test_a_score_that_favours_staying_still_moves_off_a_banned_id(sampler):
    """Ratios 1 (the uniform law) and 0.01 (stay where you are): ids 0 and 1 banned, no sample
    ends on them, and the others share the rows evenly."""
    V = 5
    canvas = Canvas.from_tokens(torch.zeros(2000, 2, dtype=torch.long), mask_id=0)
    cfg = SampleConfig(gen_length=2, steps=4, sedd_sampler=sampler, seed=0)
    for ratio in (0.0, -4.6):  # log-ratios 1 and 0.01
        res = sample_sedd(lambda x, s, r=ratio: torch.full((*x.shape, V), r), canvas, cfg,
                          graph=UniformGraph(V), banned=[0, 1])
        counts = torch.bincount(res.tokens.flatten(), minlength=V)
        assert counts[:2].sum() == 0
        assert counts[2:].min() > 4000 / 3 * 0.85


@pytest.mark.parametrize("objective", ["embed-diffusion", "latent-diffusion"])
def test_the_continuous_decoders_never_round_to_a_special_token(objective):
    """Rounding read any id off the logits but [MASK]: an untrained model wrote [PAD] and BOS
    (none of them ever a training target)."""
    from unmask.config import TrainConfig
    from unmask.objectives import objective_spec
    from unmask.sampling.continuous import EmbedRun, LatentRun

    cfg = replace(model_preset("tiny", vocab_size=12, max_seq_len=40), empty_id=4)
    torch.manual_seed(0)
    model = Transformer(objective_spec(objective).configure(
        cfg, TrainConfig(seq_len=8, latent_len=2))).eval()  # fmt: skip
    rows = [[]] * 64 if objective == "latent-diffusion" else [[5, 6]] * 64
    canvas = Canvas.from_prompts(rows, 8, mask_id=cfg.mask_id, pad_id=cfg.pad_id)
    run_cls = LatentRun if objective == "latent-diffusion" else EmbedRun
    for temperature in (0.0, 1.0):
        config = SampleConfig(decoder=objective, gen_length=8, steps=3, seed=0,
                              temperature=temperature)
        res = run_cls(model, canvas, config).run()
        made = res.tokens[:, res.region[0]:res.region[1]]
        assert not torch.isin(made, torch.tensor([0, 1, 3, 4])).any()
    assert torch.isin(made, torch.tensor([2])).any()  # EOS may end the text


def test_banned_ids_outside_the_vocabulary_are_a_one_line_error():
    from unmask.errors import UserError

    canvas = Canvas.from_tokens(torch.zeros(2, 2, dtype=torch.long), mask_id=0)
    with pytest.raises(UserError, match=r"banned ids \[5, 9\] are outside"):
        sample_sedd(lambda x, s: torch.zeros(*x.shape, 5), canvas,
                    SampleConfig(gen_length=2, steps=2, seed=0), graph=UniformGraph(5),
                    banned=[9, 1, 5])
