"""Session 36 (model area): defects found by probing model.py, config.py, canvas.py and the
SEDD sampler, each with the test that failed before its fix."""

import pytest
import torch

from unmask.canvas import Canvas
from unmask.config import ModelConfig, SampleConfig, TrainConfig, from_dict
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.sampling.sedd import generate_sedd, sample_sedd
from unmask.sedd import AbsorbingGraph


def _sedd_model() -> Transformer:
    cfg = ModelConfig(vocab_size=50, d_model=32, n_layers=1, n_heads=4, max_seq_len=64,
                      objective="sedd", sedd_graph="absorbing")
    return Transformer(cfg).eval()


def test_sedd_refuses_prompt_ids_outside_the_vocabulary():
    """The commit loop refuses an id the model has no embedding for in one line; the SEDD
    decoder raised torch's IndexError from inside the embedding."""
    config = SampleConfig(decoder="sedd", gen_length=4, steps=2, seed=0)
    with pytest.raises(UserError, match="token id 60 is outside"):
        generate_sedd(_sedd_model(), [[5, 60]], config, mask_id=0, pad_id=1, eos_id=2)


def test_sedd_score_function_refuses_canvas_ids_outside_the_graph():
    canvas = Canvas.from_tokens(torch.tensor([[7, 0, 0]]), mask_id=0)

    def score_fn(tokens, sigma):  # never reached
        raise AssertionError

    with pytest.raises(UserError, match="token id 7 is outside"):
        sample_sedd(score_fn, canvas, SampleConfig(decoder="sedd", gen_length=3, steps=1),
                    graph=AbsorbingGraph(5, 0))


def test_a_uniform_graph_with_the_absorbing_log_score_head_is_refused():
    """``output='sedd_log_score'`` is the absorbing parameterisation; beside
    ``sedd_graph='uniform'`` the sampler ran the absorbing graph (``graph_of``) while the
    facts said uniform. Training never writes the pair: only a hand-edited config.json."""
    with pytest.raises(UserError, match="^output='sedd_log_score' is the absorbing"):
        ModelConfig(time_conditioning=True, output="sedd_log_score", sedd_graph="uniform")
    ModelConfig(time_conditioning=True, output="sedd_log_score", sedd_graph="absorbing")
    ModelConfig(time_conditioning=True, output="logits", sedd_graph="uniform")


@pytest.mark.parametrize("router", ["softmax", "sigmoid"])
def test_a_float64_mixture_of_experts_routes_in_float64(router):
    """Every other layer of a float64 model stays float64 (``at_least_fp32``); the router
    computed its probabilities in float32, so a float64 model's routing weights (and its
    outputs, the tests' exact comparisons) were off by ~1e-8."""
    extra = {"router_expert_bias": True} if router == "sigmoid" else {}
    cfg = ModelConfig(vocab_size=40, d_model=32, n_layers=1, n_heads=4, max_seq_len=16,
                      n_experts=4, experts_top_k=2, router=router, **extra)
    torch.manual_seed(0)
    moe = Transformer(cfg).double().eval().layers[0].mlp
    x = torch.randn(6, 32, dtype=torch.float64)
    weights, chosen = moe.route(x)
    logits = x @ moe.router.weight.T  # (N, E) float64
    probs = logits.softmax(-1) if router == "softmax" else logits.sigmoid()
    assert weights.dtype == torch.float64
    assert torch.allclose(weights, probs.gather(1, chosen), rtol=0, atol=1e-14)


@pytest.mark.parametrize(("cls", "name"), [(ModelConfig, "rope_theta"),
                                           (SampleConfig, "temperature"),
                                           (TrainConfig, "lr")])
def test_an_integer_too_large_for_a_float_field_is_one_line(cls, name):
    """JSON reads 1 followed by 400 zeros as an int; the range checks' ``math.isfinite``
    raised an ``OverflowError`` traceback (``unmask train --config`` too)."""
    with pytest.raises(UserError, match=f"^cfg.json: {name} must be a finite number"):
        from_dict(cls, {name: 10**400}, source="cfg.json")
    with pytest.raises(UserError, match=f"^{name} must be a finite number"):
        cls(**{name: -(10**400)})


def test_unmask_train_config_with_a_huge_integer_exits_2(tmp_path, capsys):
    from unmask.cli import main

    cfg = tmp_path / "big.json"
    cfg.write_text('{"lr": 1' + "0" * 400 + "}")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "lr must be a finite number" in err and "Traceback" not in err


@pytest.mark.parametrize("other", ["eos_id", "pad_id"])
def test_a_mask_id_shared_with_eos_or_pad_is_refused(other):
    """The importers refused a [MASK] that is also the EOS or padding (``convert.load``); a
    native config.json, ``--model-set mask_id=2`` or ``ModelConfig`` took it, and a run
    trained with every document separator read as a [MASK]."""
    with pytest.raises(UserError, match=f"^mask_id=7 is also the {other}: the"):
        ModelConfig(vocab_size=16, mask_id=7, **{other: 7})


def test_from_dict_names_the_file_of_a_mask_clash():
    with pytest.raises(UserError, match="^config.json: mask_id=2 is also the eos_id"):
        from_dict(ModelConfig, {"mask_id": 2}, source="config.json")


def test_the_sedd_log_score_head_is_finite_at_a_large_noise_level():
    """``log(expm1(sigma))`` overflowed from sigma = 89 in float32: every score of the
    absorbing head was -inf (a run with ``--eps 1e-40`` starts at sigma(1) = 92)."""
    from unmask.model import sedd_log_score

    head = torch.zeros(1, 2, 5)
    tokens = torch.tensor([[0, 3]])
    for sigma in (1e-4, 1.0, 30.0, 100.0):
        got = sedd_log_score(head, tokens, torch.tensor([sigma]))
        want = -torch.tensor(sigma, dtype=torch.float64).expm1().log() - torch.tensor(4.0).log()
        assert torch.isfinite(got).all()
        assert abs(float(got[0, 0, 1]) - float(want)) < 1e-5 * max(1.0, sigma)
        assert got[0, 0, 0] == 0 and got[0, 1, 3] == 0  # each position's own token


def test_an_odd_head_dimension_names_its_numbers():
    """The refusal named no values: which of d_model and n_heads to change was left to guess."""
    with pytest.raises(UserError, match=r"^head dimension d_model/n_heads = 36/4 = 9 must be"):
        ModelConfig(d_model=36, n_heads=4)
