"""Session 35 (sampling): block diffusion's penalties see the blocks it wrote before."""

from __future__ import annotations

import dataclasses
import gc
import weakref

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.model import Transformer
from unmask.sampling import generate
from unmask.sampling.blocks import BlockRun, sample_blocks

V = 10


class Flat:
    """A mask predictor whose logits are the same at every position whatever the canvas:
    token 5 first, then 6, then 7, so only the penalties move a choice."""

    def __call__(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        row = torch.zeros(V, dtype=torch.float64)
        row[5], row[6], row[7] = 4.0, 3.0, 2.5
        return row.expand(*x.shape, V).clone()  # (B, L, V)


@pytest.mark.parametrize("penalty", [dict(frequency_penalty=2.0), dict(presence_penalty=2.0)])
def test_presence_and_frequency_count_the_earlier_blocks(penalty: dict) -> None:
    # one token a step: 5, then 6 (5 penalised); the second block must still see 5 and 6
    # (5 -> 2, 6 -> 1, 7 -> 2.5: 7), as the flat loop over the same blocks does; the
    # finished blocks were locked like the prompt and forgotten: 5, 6 again
    cfg = SampleConfig(gen_length=4, steps=4, block_length=2, **penalty)
    flat = generate(Flat(), [[8, 9]], cfg, mask_id=0, pad_id=1, eos_id=2)
    blocks = sample_blocks(Flat(), [[8, 9]], cfg, mask_id=0, pad_id=1, eos_id=2, block_size=2)
    assert flat.gen_ids == [[5, 6, 7, 5]]
    assert blocks.gen_ids == flat.gen_ids


def test_block_causal_model_writes_what_the_flat_loop_writes_under_penalties() -> None:
    # under block-causal attention a block never sees the blocks after it, so the flat loop
    # with blocks of the model's size (prompts of whole blocks) writes what bd3lm writes
    cfg = model_preset("tiny", vocab_size=40, attention="block-causal", block_size=4,
                       max_seq_len=32, init_std=0.5)
    torch.manual_seed(0)
    model = Transformer(cfg).double().eval()
    prompts = [[5, 6, 7, 8], [9, 10, 11, 12]]
    sample = SampleConfig(gen_length=12, steps=12, block_length=4, presence_penalty=1.5,
                          frequency_penalty=0.7, repetition_penalty=1.3)
    ids = dict(mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=None)
    flat = generate(model, prompts, sample, **ids)
    blocks = sample_blocks(model, prompts, sample, **ids)
    assert blocks.gen_ids == flat.gen_ids


@pytest.mark.parametrize("penalty", [{}, dict(presence_penalty=1.0)])
def test_a_mask_in_the_prompt_is_still_filled(penalty: dict) -> None:
    # the prompt's given tokens are locked, its [MASK] is not: the first block fills it
    cfg = SampleConfig(gen_length=4, steps=4, block_length=2, **penalty)
    out = sample_blocks(Flat(), [[8, 0, 9]], cfg, mask_id=0, pad_id=1, eos_id=2, block_size=2)
    assert out.tokens[0, :4].tolist() == [1, 8, 5, 9]
    assert 0 not in out.tokens.tolist()[0]


class Widths:
    """A block-causal ``Transformer`` that records the columns each call runs."""

    def __init__(self, model: Transformer) -> None:
        self.model, self.config, self.widths = model, model.config, []
        self.supports_kv_cache = True

    def __call__(self, tokens: torch.Tensor, **kw: object) -> torch.Tensor:
        self.widths.append(tokens.shape[1])
        return self.model(tokens, **kw)

    def parameters(self):  # noqa: ANN201 -- the device probe of the decoders
        return self.model.parameters()


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_a_block_starts_from_the_last_blocks_cache(cache: str) -> None:
    # block-causal blocks aligned with the run's: a finished block's K/V never change, so a
    # new block's first call runs the last block and itself (8 columns), not the whole
    # canvas (it did: 8, 12, 16, 20, 24 columns, the prompt recomputed every block); the
    # tokens are those of no cache
    cfg = model_preset("tiny", vocab_size=40, attention="block-causal", block_size=4,
                       max_seq_len=32, init_std=0.5)
    torch.manual_seed(0)
    model = Widths(Transformer(cfg).double().eval())
    sample = SampleConfig(gen_length=20, steps=20)
    ids = dict(mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=None)
    off = sample_blocks(model.model, [[5, 6, 7, 8], [9, 10]], sample, **ids)
    on = sample_blocks(model, [[5, 6, 7, 8], [9, 10]], dataclasses.replace(sample, cache=cache),
                       **ids)
    assert torch.equal(on.tokens, off.tokens) and on.nfe == off.nfe == 20
    firsts = model.widths[::4]  # one call a step, 4 steps a block
    assert firsts == [8, 8, 8, 8, 8]
    assert all(w == 4 for i, w in enumerate(model.widths) if i % 4)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_a_prompt_mask_mid_block_is_exact_under_a_cache(cache: str) -> None:
    # the prompt's [MASK] sits mid attention block (padded prompt: pad, 5, [MASK], 6): the
    # columns of its block before it see it, so the cache recomputes from the block's start
    # (it started at the mask, and those columns kept the K/V of a masked canvas)
    cfg = model_preset("tiny", vocab_size=40, attention="block-causal", block_size=4,
                       max_seq_len=32, init_std=0.5)
    torch.manual_seed(0)
    model = Transformer(cfg).double().eval()
    sample = SampleConfig(gen_length=16, steps=32, skip_empty_steps=True,
                          prompt_masks="reference")
    ids = dict(mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=None)
    off = sample_blocks(model, [[5, 0, 6]], sample, **ids)
    on = sample_blocks(model, [[5, 0, 6]], dataclasses.replace(sample, cache=cache), **ids)
    assert torch.equal(on.tokens, off.tokens)


@pytest.mark.parametrize(("attention", "model_block", "run_block", "carried"), [
    ("block-causal", 4, 2, False), ("bidirectional", None, 4, False), ("causal", None, 4, True),
])
def test_the_cache_is_carried_only_where_it_is_exact(
    attention: str, model_block: int | None, run_block: int, carried: bool
) -> None:
    # an explicit block_size other than the model's attention blocks (or a bidirectional
    # model): a finished block's K/V see the block after it, so every block's first call
    # refreshes the whole canvas, as before the carry (carried, the blocks-of-4 model wrote
    # 37 where no cache writes 43, and the bidirectional model's finished blocks never saw
    # any later text); causal attention is exact, carried
    extra = dict(block_size=model_block) if model_block else {}
    cfg = model_preset("tiny", vocab_size=48, max_seq_len=96, init_std=0.5,
                       attention=attention, **extra)
    torch.manual_seed(1)
    model = Widths(Transformer(cfg).double().eval())
    sample = SampleConfig(gen_length=16, steps=16)
    ids = dict(mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=None, block_size=run_block)
    prompt = [[5, 6, 7, 8, 9, 10]]
    off = sample_blocks(model.model, prompt, sample, **ids)
    on = sample_blocks(model, prompt, dataclasses.replace(sample, cache="prefix"), **ids)
    padded = -(-6 // run_block) * run_block
    canvases = list(range(padded + run_block, padded + 17, run_block))
    firsts = model.widths[::run_block]  # one call a step, one step a token
    assert firsts == (canvases[:1] + [2 * run_block] * (len(canvases) - 1) if carried
                      else canvases)
    if attention != "bidirectional":  # exact: the tokens of no cache
        assert torch.equal(on.tokens, off.tokens)


class Slots:
    """A ``Transformer`` that records, after each call, the K/V slots of the cache it was
    given (weakly: the cache's life is the run's)."""

    def __init__(self, model: Transformer) -> None:
        self.model, self.config, self.supports_kv_cache = model, model.config, True
        self.slots: list[int] = []
        self.caches: list[weakref.ref] = []
        self.alive: list[int] = []  # caches alive at each call

    def __call__(self, tokens: torch.Tensor, **kw: object) -> torch.Tensor:
        out = self.model(tokens, **kw)
        kv = kw["cache"]
        self.slots.append(kv.layers[0][0].shape[2])  # type: ignore[attr-defined]
        if not any(ref() is kv for ref in self.caches):
            self.caches.append(weakref.ref(kv))
        self.alive.append(sum(ref() is not None for ref in self.caches))
        return out

    def parameters(self):  # noqa: ANN201 -- the device probe of the decoders
        return self.model.parameters()


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_a_carried_cache_holds_the_last_canvas_and_is_let_go(cache: str) -> None:
    # the one cache of the run grows by doubling capped at the last canvas (4 padded prompt
    # + 16 = 20 slots): it grew 8, 16, then 32 slots (up to twice the K/V memory of the old
    # per-block cache, on a GPU-sized model), and the finished run kept it after its result
    cfg = model_preset("tiny", vocab_size=40, attention="block-causal", block_size=4,
                       max_seq_len=32, init_std=0.5)
    torch.manual_seed(0)
    model = Slots(Transformer(cfg).double().eval())
    sample = SampleConfig(gen_length=16, steps=16, cache=cache)
    run = BlockRun(model, [[5, 6, 7]], sample, mask_id=cfg.mask_id, pad_id=cfg.pad_id,
                   eos_id=None)
    out = run.run()
    assert out.tokens.shape[1] == 20 and len(model.caches) == 1
    assert model.slots == [8] * 4 + [16] * 8 + [20] * 4  # was 8, 16, 16, 32: doubling
    gc.collect()
    assert model.caches[0]() is None  # released with the run's end, the run still held
    assert run.done


def test_a_reserve_caps_doubling_and_allocates_nothing_up_front() -> None:
    """``KVCache.reserve`` caps growth by doubling at the sequence's final length, and is no
    up-front allocation (review rm9: a run of ``gen_length`` 1024 that met EOS in its second
    block held 1,032 slots for a 28-column canvas)."""
    from unmask.model import KVCache

    kv = KVCache(reserve=100)

    def write(start: int, end: int) -> int:
        x = torch.zeros(1, 1, end - start, 2)
        kv.length = end
        kv.update(0, start, x, x)
        return kv.layers[0][0].shape[2]

    assert [write(0, 8), write(8, 16), write(16, 60), write(60, 100)] == [8, 16, 60, 100]
    assert write(100, 101) == 200  # past the reserve: doubling again, no error


def test_a_run_that_does_not_carry_keeps_one_cache_at_a_time() -> None:
    """Blocks of 2 on a model whose attention blocks are 4 do not carry the cache (not exact
    there), and the block that ended lets its cache go (review rm9: it was kept, unused,
    beside the next block's: twice the K/V memory)."""
    cfg = model_preset("tiny", vocab_size=40, attention="block-causal", block_size=4,
                       max_seq_len=32, init_std=0.5)
    torch.manual_seed(0)
    model = Slots(Transformer(cfg).double().eval())
    sample = SampleConfig(gen_length=8, steps=8, cache="prefix", block_length=2)
    BlockRun(model, [[5, 6, 7]], sample, mask_id=cfg.mask_id, pad_id=cfg.pad_id, eos_id=None,
             block_size=2).run()
    assert len(model.caches) > 1 and max(model.alive) == 1
