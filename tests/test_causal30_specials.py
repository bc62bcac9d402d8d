"""The causal decoders (``ar``, ``speculative``, ``hybrid``) never write a special token but
EOS: an untrained model wrote [PAD], BOS and [EMPTY] mid-text (only [MASK] and the FIM
markers were banned). The rule is the masked decoders' ``banned_ids``, in the drafter's q and
the verifier's p alike, so greedy speculative output stays ``ar``'s and sampled output is
distributed as ``ar``'s banned distribution."""

from dataclasses import replace

import pytest
import torch
from test_speculative import TABLE, Cfg, FixedDrafter, Markov, exact_marginals, tv
from torch import nn

from unmask.config import model_preset
from unmask.model import Transformer
from unmask.sampling.ar import ARRun, never_proposed
from unmask.sampling.hybrid import HybridRun
from unmask.sampling.penalties import banned_ids
from unmask.sampling.speculative import SpeculativeRun

SPECIALS = dict(mask_id=0, pad_id=1, eos_id=2, bos_id=3, empty_id=4, fim_prefix_id=9,
                fim_suffix_id=10, fim_middle_id=11)  # fmt: skip
BANNED = torch.tensor([0, 1, 3, 4, 9, 10, 11])  # all of them but EOS
PROMPTS = [[5, 6]] * 48


def _model(attention: str = "causal", seed: int = 0, **extra) -> Transformer:
    cfg = model_preset("tiny", vocab_size=16, max_seq_len=40, attention=attention,
                       init_std=0.5, **{**SPECIALS, **extra})  # fmt: skip
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


class Loves(nn.Module):
    """A model whose every position puts extra weight on ``ids`` (an untrained model ranks
    specials too; this one ranks them first)."""

    def __init__(self, inner: nn.Module, ids: list[int], boost: float = 3.0) -> None:
        super().__init__()
        self.inner, self.config, self.supports_kv_cache = inner, inner.config, True
        self.ids, self.boost = ids, boost

    def forward(self, tokens, attention_mask=None, **kw):
        out = self.inner(tokens, attention_mask, **kw).clone()
        out[..., self.ids] += self.boost
        return out


class Drafts:
    """An ``on_view`` that keeps every draft a run shows."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def __call__(self, step, view) -> None:
        pass

    def draft(self, step, view, drafts) -> None:
        self.seen.append(drafts.clone())


def _made(res, eos: int = 2) -> torch.Tensor:
    """The generated tokens up to each row's first EOS (the padding after it: -1)."""
    made = res.tokens[:, res.region[0] : res.region[1]]
    after = (made == eos).long().cumsum(dim=1) - (made == eos).long() > 0
    return made.masked_fill(after, -1)


def test_never_proposed_is_banned_ids_and_mask_but_the_runs_eos():
    cfg = _model().config
    assert never_proposed(cfg, cfg.mask_id) == (0, 1, 3, 4, 9, 10, 11)
    assert never_proposed(cfg, cfg.mask_id, 2) == (0, 1, 2, 3, 4, 9, 10, 11)  # forbid_eos
    assert 2 in never_proposed(cfg, cfg.mask_id, 2, eos_id=2)  # forbid_eos wins
    # a checkpoint whose EOS is its [PAD] too (GPT-2 style) still ends its text with it
    assert 2 not in never_proposed(replace(cfg, pad_id=2), cfg.mask_id, eos_id=2)
    assert 3 not in never_proposed(cfg, cfg.mask_id, eos_id=3)  # the run's own EOS
    assert set(banned_ids(cfg)) | {cfg.mask_id} == set(never_proposed(cfg, cfg.mask_id))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_ar_never_writes_a_special_token(temperature):
    model = Loves(_model(), [1, 3, 4])
    res = ARRun(model, PROMPTS, max_new_tokens=12, temperature=temperature, eos_id=2,
                generator=torch.Generator().manual_seed(0)).run()  # fmt: skip
    made = _made(res)
    assert not torch.isin(made, BANNED).any()  # before: [PAD], BOS, [EMPTY]
    if temperature:
        assert (made == 2).any()  # EOS still ends a text


def test_ar_of_an_untrained_model_never_writes_a_special_token():
    res = ARRun(_model(seed=1), PROMPTS, max_new_tokens=12, temperature=1.0, eos_id=2,
                generator=torch.Generator().manual_seed(0)).run()  # fmt: skip
    made = _made(res)
    assert not torch.isin(made, BANNED).any()
    assert (made == 2).any()


def test_an_eos_that_is_also_pad_still_stops_ar():
    model = Loves(_model(pad_id=2), [2], boost=20.0)
    res = ARRun(model, [[5, 6]], max_new_tokens=6, eos_id=2).run()
    assert res.gen_ids[0][0] == 2 and res.steps == 1


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_speculative_never_drafts_nor_writes_a_special_token(temperature):
    verifier = Loves(_model(seed=2), [1, 3, 4])
    drafter = Loves(_model("bidirectional", seed=3), [1, 3, 4])
    seen = Drafts()
    res = SpeculativeRun(verifier, drafter, PROMPTS, max_new_tokens=12, draft_length=3,
                         temperature=temperature, eos_id=2, on_view=seen,
                         generator=torch.Generator().manual_seed(0)).run()  # fmt: skip
    assert not torch.isin(_made(res), BANNED).any()
    assert seen.seen and not any(torch.isin(d, BANNED[1:]).any() for d in seen.seen)


@pytest.mark.parametrize("draft_length", [1, 4])
def test_speculative_greedy_equals_ar_greedy_with_the_bans(draft_length):
    verifier = Loves(_model(seed=4), [1, 3, 4, 9], boost=1.0)
    drafter = Loves(_model("bidirectional", seed=5), [1, 3], boost=2.0)
    prompts = [[5, 6, 7], [8], [12, 13, 14, 15, 5]]
    ar = ARRun(verifier, prompts, max_new_tokens=16, eos_id=None).run()
    assert not torch.isin(_made(ar), BANNED).any()
    res = SpeculativeRun(verifier, drafter, prompts, max_new_tokens=16,
                         draft_length=draft_length, eos_id=None).run()  # fmt: skip
    assert res.gen_ids == ar.gen_ids


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_hybrid_never_drafts_nor_writes_a_special_token(temperature):
    model = Loves(_model(seed=6, draft_block=3), [1, 3, 4])
    model.inner.config = model.config
    seen = Drafts()
    res = HybridRun(model, PROMPTS, max_new_tokens=12, temperature=temperature, eos_id=2,
                    use_cache=True, on_view=seen,
                    generator=torch.Generator().manual_seed(0)).run()  # fmt: skip
    assert not torch.isin(_made(res), BANNED).any()
    assert seen.seen and not any(torch.isin(d, BANNED[1:]).any() for d in seen.seen)
    if temperature == 0:
        ar = ARRun(model, PROMPTS, max_new_tokens=12, eos_id=2).run()
        assert res.gen_ids == ar.gen_ids


def test_speculative_sampling_is_the_banned_ar_distribution():
    """A verifier whose [PAD] (0) and BOS (3) are ordinary Markov states but banned, and a
    drafter that loves token 0: the committed tokens follow the verifier's banned chain (the
    unbanned one is far: the check would see a p left unbanned)."""
    cfg = Cfg("causal", pad_id=0, bos_id=3)
    runs, gen = 3000, 3
    res = SpeculativeRun(Markov(cfg), FixedDrafter(), [[1, 2]] * runs, max_new_tokens=gen,
                         draft_length=2, temperature=1.0, eos_id=None,
                         generator=torch.Generator().manual_seed(0)).run()  # fmt: skip
    ids = torch.tensor(res.gen_ids)  # (runs, gen)
    banned = exact_marginals(2, gen, banned=(0, 3))
    unbanned = exact_marginals(2, gen)
    assert res.accepted > 0
    assert not torch.isin(ids, torch.tensor([0, 3])).any()
    for j in range(gen):
        got = torch.bincount(ids[:, j], minlength=TABLE.shape[0]).double() / runs
        assert tv(banned[j], got) < 0.04, (j, got, banned[j])
        assert tv(unbanned[j], banned[j]) > 0.1  # the check can tell them apart
