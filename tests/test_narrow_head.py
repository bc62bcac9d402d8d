"""The sampler loop runs the model's output head on the columns a step reads alone (the first
masked column up to the block end), not on the whole canvas: the same tokens, fewer head rows."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unmask.canvas import Canvas, CanvasConstraint
from unmask.config import SampleConfig, model_preset
from unmask.model import Transformer
from unmask.sampling.cache import MIN_HEAD_ROWS, NoCache, exact_head, widened
from unmask.sampling.loop import Denoiser

PROMPTS = [[5, 9, 13, 7, 21, 30, 11, 12, 17, 19, 23, 25], [8, 11, 40]]  # padded batch


def make(seed: int = 0, **kw) -> Transformer:
    cfg = model_preset("tiny", vocab_size=64, max_seq_len=64, init_std=0.3, **kw)
    torch.manual_seed(seed)
    return Transformer(cfg).eval()


def ids(model: Transformer) -> dict[str, int]:
    c = model.config
    return dict(mask_id=c.mask_id, pad_id=c.pad_id, eos_id=c.eos_id)


def decode(model: Transformer, config: SampleConfig, *, whole: bool, prompts=PROMPTS,
           **kw) -> tuple[Denoiser, list[list[int]], int]:
    """(run, tokens, head rows) of one run; ``whole``: the head over every column (old loop)."""
    rows: list[int] = []
    hook = model.lm_head.register_forward_hook(
        lambda _m, inp, _o: rows.append(inp[0][..., 0].numel()))
    try:
        run = Denoiser.for_prompts(model, prompts, config, **ids(model), **kw)
        if whole:
            run._head = None
        result = run.run()
    finally:
        hook.remove()
    return run, result.tokens.tolist(), sum(rows)


BASE = dict(gen_length=16, steps=8, block_length=4, seed=3)
CASES = {
    "llada-t0": {},
    "llada-t1": dict(temperature=1.0),
    "llada-one-block": dict(block_length=16, temperature=0.8),
    "threshold": dict(policy="threshold", threshold=0.2, temperature=0.5),
    "factor": dict(policy="factor", factor=1.0),
    "entropy": dict(policy="entropy", entropy_bound=0.5, temperature=0.7),
    "margin": dict(confidence="margin", temperature=0.7),
    "random-remasking": dict(remasking="random", temperature=0.9),
    "cfg": dict(cfg_scale=1.5, temperature=0.6),
    "penalties": dict(repetition_penalty=1.3, presence_penalty=0.5, no_repeat_ngram_size=2,
                      temperature=0.8),
    "forbid-eos": dict(forbid_eos=True, temperature=0.4),
    "prefix": dict(cache="prefix", temperature=0.6),
    "dual": dict(cache="dual", temperature=0.6),
    "dual-cfg": dict(cache="dual", cfg_scale=1.0),
    "skip-empty": dict(steps=4, gen_length=16, block_length=4, skip_empty_steps=True),
}


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_the_head_runs_on_the_block_alone_with_the_same_tokens(case, shift):
    m = make()
    if shift:
        m.config = dataclasses.replace(m.config, logit_shift=True)
    config = SampleConfig(**{**BASE, **CASES[case]})
    run, narrow, n_narrow = decode(m, config, whole=False)
    _, full, n_full = decode(m, config, whole=True)
    assert narrow == full
    # each forward ran the head on at most the block's columns (the rows of both guidance
    # halves), fewer than the whole canvas (a one-block canvas still skips the prompt)
    rows = len(PROMPTS) * (2 if config.cfg_scale > 0 else 1)
    per_step = max(rows * run.block_length, MIN_HEAD_ROWS + rows)  # ``widened``
    assert n_narrow <= run.nfe * per_step and n_narrow < n_full


def test_prompt_masks_are_read_and_filled():
    """A [MASK] inside the prompt is a candidate of every block: the window starts there."""
    m = make(1)
    mask = m.config.mask_id
    prompts = [[5, mask, 13, 7, 21, 30], [8, 11, mask]]
    for extra in ({}, dict(prompt_masks="reference"), dict(cache="dual")):
        config = SampleConfig(**BASE, temperature=0.7, **extra)
        _, narrow, n_narrow = decode(m, config, whole=False, prompts=prompts)
        _, full, n_full = decode(m, config, whole=True, prompts=prompts)
        assert narrow == full and n_narrow < n_full


class ReadsOtherColumns(CanvasConstraint):
    """A constraint whose ban at a column depends on another column's logits (as an infill
    gap's): the loop must give it the whole logits."""

    def apply(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        first = logits[:, 0].argmax(dim=-1)  # (B,) the prompt's first column's best token
        out = logits.clone()
        out[torch.arange(len(first)), :, first] = float("-inf")
        return out

    def violations(self, tokens: torch.Tensor) -> list[tuple[int, int, int]]:
        return []


def test_whole_logits_where_something_reads_other_columns():
    """A constraint that reads the prompt's logits, a registered score, a model whose forward
    gives no hidden states: the head runs over the whole canvas, as before."""
    m = make(2)
    config = SampleConfig(**BASE, temperature=0.5)
    canvas = Canvas.from_prompts(PROMPTS, 16, mask_id=m.config.mask_id, pad_id=m.config.pad_id)
    canvas.constraints.append(ReadsOtherColumns())
    results = []
    for whole in (False, True):
        run = Denoiser(m, canvas, config, eos_id=m.config.eos_id)
        assert run._head is not None and run._narrow_head() is None
        if whole:
            run._head = None
        results.append(run.run().tokens.tolist())
    assert results[0] == results[1]

    class Wrapper(torch.nn.Module):  # a converted model's wrapper: forward(tokens, mask) only
        def __init__(self, inner: Transformer) -> None:
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, tokens, attention_mask=None):
            return self.inner(tokens, attention_mask=attention_mask)

    run = Denoiser.for_prompts(Wrapper(m), PROMPTS, config, **ids(m))
    assert run._head is None
    class Compiled(Wrapper):  # a compiled twin (``OptimizedModule``): its graphs give logits
        def forward(self, tokens, attention_mask=None, **kw):
            return self.inner(tokens, attention_mask=attention_mask, **kw)

    twin = Compiled(m)
    twin._orig_mod, twin.lm_head = m, m.lm_head  # as OptimizedModule, which forwards getattr
    assert Denoiser.for_prompts(twin, PROMPTS, config, **ids(m))._head is None
    timed = make(time_conditioning=True)  # the head's input is modulated by the noise level
    assert Denoiser.for_prompts(timed, PROMPTS, config, **ids(m))._head is None


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("shift", [False, True])
def test_a_widened_window_gives_the_whole_canvas_logits_bit_for_bit(batch, shift):
    """The head on a window of at least ``MIN_HEAD_ROWS`` rows gives the bits of the whole
    canvas' head (a one-row matmul takes another kernel and differs in the last bit)."""
    m = make(4, d_model=64, n_heads=4)
    m.lm_head = torch.nn.Linear(64, 4096, bias=False)  # a vocabulary as wide as the demo's
    x = torch.randint(4, 64, (batch, 48), generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        whole = NoCache().logits(m, x, None, shift=shift)
        for end in (1, 7, 20, 48):
            for lo in range(max(0, end - 6), end):
                window = widened((lo, end), batch)
                if end * batch < MIN_HEAD_ROWS:  # too few columns: whole logits
                    assert window is None
                    continue
                assert window is not None and window[0] <= lo
                assert (end - window[0]) * batch >= MIN_HEAD_ROWS
                part = NoCache().logits(m, x, None, shift=shift, head=m.lm_head, window=window)
                assert torch.equal(part[:, lo:end], whole[:, lo:end])


def test_low_precision_heads_keep_whole_logits():
    m = make(5)
    assert exact_head(m.lm_head) and exact_head(m.double().lm_head)
    assert not exact_head(m.to(torch.bfloat16).lm_head)
