import math

import pytest
import torch

from unmask.config import model_preset
from unmask.errors import UserError
from unmask.objectives import ObjectiveOptions, ar, get_objective, mdlm
from unmask.schedules import CosineSchedule, LinearSchedule, get_schedule

V = 40


class Uniform(torch.nn.Module):
    """Predicts every token with equal probability."""

    def forward(self, x, attention_mask=None):
        return torch.zeros(*x.shape, V, requires_grad=True)


class Oracle(torch.nn.Module):
    """Knows x0: puts (nearly) all mass on the true token."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0

    def forward(self, x, attention_mask=None):
        return torch.nn.functional.one_hot(self.x0[:, : x.shape[1]], V).float() * 100.0


def cfg(attention="bidirectional"):
    return model_preset("tiny", vocab_size=V, attention=attention)


def opts(**kw):
    return ObjectiveOptions(schedule=LinearSchedule(1e-3), **kw)


def test_uniform_predictor_gives_log_v():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(4, V, (64, 32))
    total = n = 0.0
    for _ in range(40):
        parts = mdlm(Uniform(), cfg(), x0, attention_mask=None, generator=gen, options=opts())
        total += float(parts.loss_sum.detach())
        n += float(parts.n_tokens)
    assert total / n == pytest.approx(math.log(V), rel=0.02)


def test_oracle_gives_zero():
    x0 = torch.randint(4, V, (8, 16))
    parts = mdlm(Oracle(x0), cfg(), x0, attention_mask=None, generator=torch.Generator().manual_seed(1), options=opts())
    assert float(parts.loss_sum) < 1e-6


def test_gradient_only_at_masked_positions():
    x0 = torch.randint(4, V, (4, 16))
    logits_holder = {}

    class Spy(torch.nn.Module):
        def forward(self, x, attention_mask=None):
            logits = torch.randn(*x.shape, V, generator=torch.Generator().manual_seed(3), requires_grad=True)
            logits_holder["logits"], logits_holder["xt"] = logits, x
            return logits

    gen = torch.Generator().manual_seed(2)
    parts = mdlm(Spy(), cfg(), x0, attention_mask=None, generator=gen, options=opts())
    parts.loss_sum.backward()
    grad_norm = logits_holder["logits"].grad.abs().sum(-1)  # (B, L)
    masked = logits_holder["xt"] == cfg().mask_id
    assert masked.any() and (~masked).any()
    assert torch.all(grad_norm[~masked] == 0)
    assert torch.all(grad_norm[masked] > 0)


def test_padding_never_masked_nor_counted():
    x0 = torch.randint(4, V, (4, 16))
    am = torch.ones(4, 16, dtype=torch.bool)
    am[:, 10:] = False
    seen = {}

    class Spy(Uniform):
        def forward(self, x, attention_mask=None):
            seen["xt"] = x
            return super().forward(x)

    parts = mdlm(Spy(), cfg(), x0, attention_mask=am, generator=torch.Generator().manual_seed(0),
                 options=opts(), t=torch.ones(4) * 0.999)
    assert torch.equal(seen["xt"][:, 10:], x0[:, 10:])
    assert int(parts.n_tokens) == 40


def test_random_length_cut():
    x0 = torch.randint(4, V, (2, 16))
    lengths = set()

    class Spy(Uniform):
        def forward(self, x, attention_mask=None):
            lengths.add(x.shape[1])
            return super().forward(x)

    for s in range(20):
        mdlm(Spy(), cfg(), x0, attention_mask=None, generator=torch.Generator().manual_seed(s),
             options=opts(random_length_frac=1.0))
    assert len(lengths) > 3 and max(lengths) <= 16


def test_antithetic_times_cover_unit_interval():
    t = LinearSchedule().sample_t(8, torch.Generator().manual_seed(0), antithetic=True)
    gaps = torch.sort(t).values.diff()
    torch.testing.assert_close(gaps, torch.full((7,), 1 / 8), atol=1e-6, rtol=0)


def test_schedule_p_mask_and_weight():
    s = LinearSchedule(eps=1e-3)
    t = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(s.p_mask(t), torch.tensor([1e-3, 0.5005, 1.0]))
    torch.testing.assert_close(s.weight(t), 1 / s.p_mask(t))
    c = CosineSchedule(eps=0.0)
    assert float(c.p_mask(torch.tensor(1.0))) == pytest.approx(1.0)


def test_transfer_counts_match_llada():
    s = get_schedule("linear")
    assert s.transfer_counts(10, 4) == [3, 3, 2, 2]
    assert s.transfer_counts(8, 8) == [1] * 8
    assert s.transfer_counts(3, 5) == [1, 1, 1, 0, 0]
    c = get_schedule("cosine")
    counts = c.transfer_counts(64, 8)
    assert sum(counts) == 64 and counts[0] < counts[-1]  # cosine reveals slowly first


def test_ar_loss_and_wrong_mode():
    x0 = torch.randint(4, V, (2, 8))
    parts = ar(Uniform(), cfg("causal"), x0, attention_mask=None, generator=torch.Generator(), options=opts())
    assert float(parts.loss_sum.detach() / parts.n_tokens) == pytest.approx(math.log(V))
    assert int(parts.n_tokens) == 14
    with pytest.raises(UserError, match="causal"):
        ar(Uniform(), cfg(), x0, attention_mask=None, generator=torch.Generator(), options=opts())
    with pytest.raises(UserError, match="bidirectional"):
        mdlm(Uniform(), cfg("causal"), x0, attention_mask=None, generator=torch.Generator(), options=opts())


def test_registry():
    assert get_objective("mdlm") is mdlm
    with pytest.raises(UserError, match="unknown objective"):
        get_objective("nope")
    with pytest.raises(UserError, match="unknown schedule"):
        get_schedule("nope")
