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


@pytest.mark.parametrize("sampler", ["analytic", "euler"])
def test_a_score_function_run_takes_banned_ids_and_keeps_the_rest_of_the_law(sampler):
    """With a score of all ratios 1 (the uniform data law) and ids 0 and 1 banned, the sample
    is uniform over the other ids; the score that favours staying moves off a banned id too."""
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
