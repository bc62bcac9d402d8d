"""Session 33: a positive temperature too small for ``logits / temperature`` (a subnormal one,
``1e-310``) samples the argmax, as its limit does, under every causal decoder; it wrote
token 0 (``[MASK]``) at every position (the scaled logits overflowed and softmax gave NaN)."""

from __future__ import annotations

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.facts import ModelFacts
from unmask.model import Transformer
from unmask.sampling import choose_decoder
from unmask.sampling.registry import Target


def _model(attention: str = "causal", seed: int = 0) -> Transformer:
    draft = dict(draft_block=3) if attention == "causal" else {}
    cfg = model_preset("tiny", vocab_size=16, max_seq_len=64, attention=attention, init_std=0.3,
                       mask_id=0, pad_id=1, eos_id=2, bos_id=3, **draft)  # fmt: skip
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


def _decode(model: Transformer, decoder: str, drafter: Transformer | None, seeds=None,
            **options) -> list:
    facts = ModelFacts.of(model)
    config = SampleConfig(decoder=decoder, gen_length=10, **options)
    aux = {} if drafter is None else {"drafter": drafter}
    run = choose_decoder(facts, config).start(Target(model, facts, aux), [[4, 5]], config,
                                              seeds=seeds)  # fmt: skip
    return run.run().gen_ids


@pytest.mark.parametrize("temperature", [1e-310, 5e-324])
@pytest.mark.parametrize("decoder", ["ar", "hybrid", "speculative"])
def test_a_subnormal_temperature_samples_the_argmax(decoder, temperature):
    model = _model()
    drafter = _model("bidirectional", 1) if decoder == "speculative" else None
    greedy = _decode(model, decoder, drafter, temperature=0.0)
    got = _decode(model, decoder, drafter, temperature=temperature, seed=1)
    assert got == greedy
    assert 0 not in got[0]  # [MASK], which no causal decoder proposes


@pytest.mark.parametrize("seeds", [None, [1]])
@pytest.mark.parametrize("decoder", ["hybrid", "speculative"])
def test_a_subnormal_temperature_drafts_the_argmax_too(decoder, seeds):
    """The drafts' distribution q (hybrid's proposals, speculative's drafter, with per-row
    seeds too) was NaN at 1e-310: every draft was rejected and redrawn from the verifier, so
    the text stayed greedy's and only the number of verifier forwards showed it (hybrid 9 ->
    10, speculative 7 -> 10 here)."""
    model = _model()
    drafter = _model("bidirectional", 1) if decoder == "speculative" else None
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    greedy = _decode(model, decoder, drafter, temperature=0.0)
    greedy_calls, calls[0] = calls[0], 0
    got = _decode(model, decoder, drafter, seeds, temperature=1e-310, seed=1)
    assert (got, calls[0]) == (greedy, greedy_calls)


def test_tempered_divides_as_before_at_or_above_the_floor_and_keeps_ties_below():
    from unmask.sampling.ar import TEMPERATURE_FLOOR, tempered

    logits = torch.tensor([[1.5, -2.0, 1.5, float("-inf")]], dtype=torch.float64)
    for t in (TEMPERATURE_FLOOR, 0.7, 3.0):
        assert torch.equal(tempered(logits, t), logits / t)  # bit for bit: same samples
    tiny = tempered(logits, 1e-310)
    assert torch.isfinite(tiny[0, :3]).tolist() == [True, False, True]
    probs = torch.softmax(tiny, dim=-1)
    assert probs.tolist() == [[0.5, 0.0, 0.5, 0.0]]  # the two tied maxima, nothing else


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("temperature", [1e-310, 1e-5])
def test_tempered_is_finite_for_logits_of_any_float_dtype(dtype, temperature):
    """Float32/half logits: a temperature below 1e-45 became 0 in their dtype (``0/0`` NaN at
    the maxima), and half logits of 10 over 1e-5 overflowed to inf (softmax NaN)."""
    from unmask.sampling.ar import tempered

    logits = torch.tensor([[10.0, 3.0, 10.0, float("-inf")]], dtype=dtype)
    got = tempered(logits, temperature)
    assert got.dtype == dtype
    assert torch.softmax(got.double(), dim=-1).tolist() == [[0.5, 0.0, 0.5, 0.0]]
