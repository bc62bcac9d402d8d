"""The decoders' own canvas callbacks (``step_callback(step, canvas)``: forms, ordered fill,
infill's path) are not shown a NaN step's canvas: ``ARRun``, ``BlockRun`` and ``SEDDRun``
check the run (``check_finite``) before they call it, as the LLaDA loop does
(tests/test_modelmend34_nonfinite.py). Without the check the first allowed id everywhere
reached the callback (a form's stream) before the error.

The models here are healthy but for one token's embedding (``BAD``): a row holding it goes
NaN from the first forward.
"""

from __future__ import annotations

import pytest
import torch

from unmask.canvas import Canvas
from unmask.config import SampleConfig, model_preset
from unmask.model import NonFiniteOutput, Transformer
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
BAD = TOK.bos_id


def _model(**kwargs: object) -> Transformer:
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, **kwargs,
                       **TOK.special_ids())
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.embed.weight[BAD] = float("nan")
    return model


def _seen_until_error(start) -> list:
    seen: list = []
    with pytest.raises(NonFiniteOutput, match="in 1 forward pass"):
        start(lambda step, x: seen.append(x.tolist()))
    return seen


def test_the_ar_callback_sees_no_garbage():
    from unmask.sampling.ar import generate_ar

    model = _model(objective="ar", attention="causal")
    assert _seen_until_error(lambda cb: generate_ar(
        model, [[BAD, *TOK.encode("a")]], max_new_tokens=4, eos_id=None,
        step_callback=cb)) == []


def test_the_block_callback_sees_no_garbage():
    from unmask.sampling.blocks import sample_blocks

    model = _model(objective="bd3lm", attention="block-causal", block_size=4)
    assert _seen_until_error(lambda cb: sample_blocks(
        model, [[BAD, *TOK.encode("abc")]], SampleConfig(gen_length=4, steps=4),
        mask_id=TOK.mask_id, pad_id=TOK.pad_id, eos_id=None, step_callback=cb)) == []


def test_the_sedd_callback_sees_no_garbage():
    from unmask.sampling.sedd import model_score_fn, sample_sedd
    from unmask.sedd import AbsorbingGraph

    model = _model()
    graph = AbsorbingGraph(TOK.vocab_size, TOK.mask_id)
    canvas = Canvas.from_prompts([[BAD, *TOK.encode("a")]], 4, mask_id=TOK.mask_id,
                                 pad_id=TOK.pad_id)
    assert _seen_until_error(lambda cb: sample_sedd(
        model_score_fn(model, graph=graph), canvas, SampleConfig(gen_length=4, steps=4),
        graph=graph, step_callback=cb)) == []
