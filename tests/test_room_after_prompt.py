"""``unmask.sampling.blocks.room_after_prompt``: the one answer to "how many new tokens fit
after this prompt" that ``unmask serve`` (``max_tokens_room``), ``unmask demo`` and ``unmask
chat`` (dropping old turns) share: analytic values, and agreement with what the block decoder
itself accepts for both block layouts."""

from __future__ import annotations

import types

import pytest
import torch

from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.sampling.blocks import BlockRun, absolute_blocks, room_after_prompt


@pytest.mark.parametrize(("prompt", "context", "block", "absolute", "room"), [
    (20, None, None, False, None),  # no known context: no limit
    (20, None, 16, False, None),
    (20, 128, None, False, 108),  # a masked-diffusion or causal model: the rest of the context
    (128, 128, None, False, 0),
    (130, 128, None, False, -2),
    (0, 128, 16, False, 128),  # bd3lm: the prompt padded to whole blocks, then whole blocks
    (20, 128, 16, False, 96),  # 20 -> 32 columns, 96 left
    (32, 128, 16, False, 96),
    (33, 128, 16, False, 80),
    (20, 100, 16, False, 64),  # 100 - 32 = 68: four whole blocks (not 80 = 100 - 20 cut)
    (120, 128, 16, False, 0),
    (130, 128, 16, False, -16),
    (20, 128, 32, True, 108),  # LLaDA 2.x: the canvas ends on a block boundary
    (90, 100, 32, True, 6),  # the last boundary of 100 is 96
    (96, 100, 32, True, 0),
    (98, 100, 32, True, -2),
])  # fmt: skip
def test_room_after_prompt_analytic(prompt, context, block, absolute, room) -> None:
    assert room_after_prompt(prompt, context, block_size=block, absolute=absolute) == room


class _Blocks:
    """A block-causal mask predictor of uniform logits (only the lengths matter here)."""

    def __init__(self, context: int, block: int, absolute: bool) -> None:
        self.config = types.SimpleNamespace(
            attention="block-causal", block_size=block, max_seq_len=context,
            block_align="absolute" if absolute else "pad")

    def __call__(self, x: torch.Tensor, **_: object) -> torch.Tensor:
        return torch.zeros(*x.shape, 8)  # (B, L, V)


def _accepted(context: int, block: int, prompt: int, new: int, absolute: bool) -> bool:
    """Whether ``BlockRun`` starts ``new`` tokens after ``prompt`` (steps: one per block)."""
    if absolute:
        first = block - prompt % block
        steps = 1 + -(-max(new - first, 0) // block)
    else:
        steps = new // block
    try:
        BlockRun(_Blocks(context, block, absolute), [[5] * prompt],
                 SampleConfig(gen_length=new, steps=steps), mask_id=0, pad_id=1, eos_id=2)
    except UserError as e:
        assert "max_seq_len" in str(e), e
        return False
    return True


@pytest.mark.parametrize("absolute", [False, True])
def test_the_room_is_the_longest_run_the_block_decoder_accepts(absolute) -> None:
    """For every context (multiples of the block and not), block and prompt length: the
    decoder starts a run of ``room`` new tokens and refuses one step (one block) more."""
    for context in (24, 30, 32, 37):
        for block in (4, 8):
            for prompt in range(1, context + 2):
                room = room_after_prompt(prompt, context, block_size=block, absolute=absolute)
                assert room is not None
                step = 1 if absolute else block
                if room >= step:
                    assert _accepted(context, block, prompt, room, absolute), (context, prompt)
                assert not _accepted(context, block, prompt, max(room, 0) + step, absolute), (
                    context, block, prompt, room)


def test_absolute_blocks_reads_the_model_or_its_config() -> None:
    cfg = types.SimpleNamespace(block_align="absolute")
    assert absolute_blocks(cfg) and absolute_blocks(types.SimpleNamespace(config=cfg))
    assert not absolute_blocks(types.SimpleNamespace(block_align="pad"))
    assert not absolute_blocks(object())  # a test double without the field: bd3lm's layout


# ------------------------------------------------------------------- the three callers

def _bd3lm(max_seq_len: int, block: int = 4, absolute: bool = False):
    """A tiny random block-diffusion checkpoint, loaded (``absolute``: LLaDA 2.x's layout)."""
    import dataclasses

    from server_helpers import loaded, tiny_config

    from unmask.model import Transformer

    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(max_seq_len), attention="block-causal",
                                 block_size=block, objective="bd3lm",
                                 block_align="absolute" if absolute else "pad")
    return loaded(Transformer(config).eval())


def test_the_server_offers_a_max_tokens_the_block_decoder_takes() -> None:
    """A bd3lm checkpoint whose context (30) is not whole blocks of 4: after a prompt of 5
    tokens (8 columns padded) 20 new tokens fit. The 400 offered ``max_tokens <= 24`` (30 - 5,
    cut to blocks), which the decoder then refused."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    client = TestClient(create_app(_bd3lm(30)))
    prompt = "abcde"  # 5 bytes: 5 tokens
    r = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 40})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    assert "use max_tokens <= 20, or segment_length" in r.json()["error"]["message"], r.text
    ok = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 20, "steps": 5})
    assert ok.status_code == 200, ok.text


def test_chat_drops_turns_until_the_block_decoder_takes_the_reply() -> None:
    """``unmask chat`` on a bd3lm checkpoint whose context (50) is not whole blocks of 4: a
    prompt of 41 or 42 tokens left 8 or 9, enough for a reply of 8 unpadded, so no turn was
    dropped and the decoder refused the padded canvas (44 + 8 > 50); now the oldest exchange
    goes, and every reply is written."""
    from unmask import api
    from unmask.commands.chat import ChatSession

    m = _bd3lm(50)
    config = SampleConfig(gen_length=8, steps=2, temperature=0.0)
    template = api.chat_template(m, "plain")
    history = [{"role": "user", "content": "h"}, {"role": "assistant", "content": "i"}]
    whole = set()
    for n in range(1, 7):
        session = ChatSession(m, template, config, turns=list(history))
        full = template.prompt(m.tokenizer, session.messages([*history, {
            "role": "user", "content": "x" * n}]))[1]
        whole.add(len(full))
        prepared = session.prepare("x" * n)
        assert prepared.dropped == (len(full) > 40), (n, len(full))
        session.complete(prepared)  # refused with the old fitting (prompt 41 or 42)
        assert len(session.turns) == len(prepared.turns) + 1
    assert {41, 42} <= whole, whole  # the case was met


@pytest.mark.parametrize(("absolute", "gen"), [(True, 48), (False, 40)])
def test_the_demo_keeps_a_gen_length_that_fits(absolute, gen) -> None:
    """``unmask demo --gen-length 48`` on a LLaDA 2.x block model (blocks of 32) with room:
    its layout writes any length (its blocks count from the prompt), so 48 is kept; the demo
    cut the room to whole blocks counted from the canvas start and refused it ("use
    --gen-length <= 32"). A bd3lm model keeps a length of whole blocks (40, blocks of 4)."""
    import argparse

    from unmask.commands import demo

    m = _bd3lm(128, block=32 if absolute else 4, absolute=absolute)
    args = argparse.Namespace(gen_length=gen, steps=None, temperature=None, block_length=None,
                              repetition_penalty=None, no_repeat_ngram_size=None, seed=0)
    _, configs, _ = demo._prepare(m, args, "m")
    assert {c.gen_length for c in configs} == {gen}


def test_the_demo_names_the_block_size_for_a_gen_length_not_whole_blocks() -> None:
    """``--gen-length 10`` on a bd3lm model with blocks of 4 and room to spare: the decoder's
    refusal (whole blocks), not "this model's rows hold 128 tokens ...; use --gen-length <= 8"
    (the room the demo had cut the 10 down to)."""
    import argparse

    from unmask.commands import demo

    args = argparse.Namespace(gen_length=10, steps=None, temperature=None, block_length=None,
                              repetition_penalty=None, no_repeat_ngram_size=None, seed=0)
    with pytest.raises(UserError, match=r"gen_length \(10\) must be a multiple of the model's "
                                        r"block_size \(4\); try gen_length 8 or 12"):
        demo._prepare(_bd3lm(128), args, "m")


def test_the_demo_default_is_whole_blocks_and_at_least_one() -> None:
    """Without --gen-length: the demo's 48 tokens, whole blocks of a bd3lm model (32 with
    blocks of 32), one block where a block is longer than 48 (it said "no room")."""
    import argparse

    from unmask.commands import demo

    args = argparse.Namespace(gen_length=None, steps=None, temperature=None, block_length=None,
                              repetition_penalty=None, no_repeat_ngram_size=None, seed=0)
    for block, absolute, want in ((4, False, 48), (32, False, 32), (64, False, 64),
                                  (32, True, 48)):
        _, configs, _ = demo._prepare(_bd3lm(256, block, absolute), args, "m")
        assert {c.gen_length for c in configs} == {want}, (block, absolute)


def test_with_a_drafter_the_room_is_in_the_shorter_context() -> None:
    """Speculative decoding (``--draft``): ``api.context_limit`` gives the drafter's context
    where it is shorter, and the server's room is counted in it (a causal target: no blocks);
    a bd3lm drafter's blocks do not cut the target's room (the target writes token by
    token)."""
    import dataclasses

    from server_helpers import loaded, tiny_config

    from unmask import api
    from unmask.model import Transformer
    from unmask.server.plumbing import max_tokens_room

    torch.manual_seed(0)
    target = loaded(Transformer(dataclasses.replace(tiny_config(64), attention="causal",
                                                    objective="ar")).eval())
    for drafter, context in ((loaded(Transformer(tiny_config(30)).eval()), 30),
                             (_bd3lm(30), 30), (loaded(Transformer(tiny_config(96)).eval()), 64)):
        limit = api.context_limit(target, drafter)
        assert limit == (context, "drafter" if context < 64 else "model")
        state = types.SimpleNamespace(context=limit, loaded=target, cfg=target.config)
        assert max_tokens_room(state, 7) == context - 7


@pytest.mark.parametrize(("absolute", "fits"), [(False, 56), (True, 59)])
def test_the_python_api_offers_a_gen_length_the_block_decoder_takes(absolute, fits) -> None:
    """``unmask.api.start`` on a block-diffusion model with a 64-token context, blocks of 4
    and a 5-token prompt: the refusal of a too-long run offers the room in whole blocks (it
    offered ``gen_length <= 59`` for bd3lm, which the decoder then refused), and that
    length starts."""
    from unmask import api

    m = _bd3lm(64, 4, absolute)
    with pytest.raises(UserError, match=rf"use gen_length <= {fits}, "):
        api.start(m, [[5] * 5], {"gen_length": 64, "steps": 16})
    steps = 15 if absolute else 14  # one per block the new tokens span
    api.start(m, [[5] * 5], {"gen_length": fits, "steps": steps})


def test_a_continuous_model_is_not_offered_segments() -> None:
    """An embed-diffusion model writes one fixed canvas and refuses ``segment_length``: its
    too-long run is not told to use it (it was, and then refused it)."""
    import dataclasses

    from server_helpers import loaded, tiny_config

    from unmask import api
    from unmask.model import Transformer

    torch.manual_seed(0)
    m = loaded(Transformer(dataclasses.replace(tiny_config(32),
                                               objective="embed-diffusion")).eval())
    with pytest.raises(UserError) as e:
        api.start(m, [[5] * 5], {"gen_length": 40})
    assert str(e.value).endswith("use gen_length <= 27 or a shorter prompt")


def test_unmask_eval_offers_the_room_of_the_llada2_layout() -> None:
    """``unmask eval``'s generative-perplexity length after ``--prompt-tokens``: a LLaDA 2.x
    layout (blocks counted from the first prompt token), context 96, blocks of 32, a 33-token
    prompt: 63 new tokens fit (the decoder takes them). Eval padded the prompt to whole blocks
    as bd3lm does and refused 63, offering 32."""
    from unmask import api
    from unmask.commands.eval import _fit_gen_length

    m = _bd3lm(96, 32, absolute=True)
    facts = api.facts_of(m)
    config = api.sample_config(m, {"gen_length": 63})
    assert _fit_gen_length(m, facts, config, {"gen_length": 63}, 33).gen_length == 63
    with pytest.raises(UserError, match="use --gen-length 63 or less"):
        _fit_gen_length(m, facts, api.sample_config(m, {"gen_length": 64}),
                        {"gen_length": 64}, 33)


def test_a_latent_diffusion_model_offers_the_text_rows_of_its_context() -> None:
    """A latent-diffusion denoiser adds its latent slots (twice, self-conditioned) and a time
    row after the text: a model of max_seq_len 33 (seq_len 24, 4 slots) takes 24 text rows.
    Any gen_length from 25 to 33 passed the length check and failed deep in the run with
    a ValueError traceback; 40 was offered gen_length <= 33."""
    from server_helpers import loaded

    from unmask import api
    from unmask.config import TrainConfig, model_preset
    from unmask.model import Transformer
    from unmask.objectives import objective_spec

    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=260, max_seq_len=24)
    spec = objective_spec("latent-diffusion")
    m = loaded(Transformer(spec.configure(cfg, TrainConfig(seq_len=24, latent_len=4))).eval())
    assert m.config.max_seq_len == 33 and api.facts_of(m).max_seq_len == 24
    for g in (30, 40):
        with pytest.raises(UserError, match=r"max_seq_len \(24\); use gen_length <= 24$"):
            api.generate(m, "", config={"gen_length": g, "steps": 2})
    api.generate(m, "", config={"gen_length": 24, "steps": 2})


def test_the_server_sizes_a_latent_diffusion_model_by_its_text_rows() -> None:
    """``/v1/models`` said max_seq_len 33 for a latent-diffusion model of 24 text rows, and a
    request sized by it was refused with a way out (segment_length) the model refuses too."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient
    from server_helpers import loaded

    from unmask.config import TrainConfig, model_preset
    from unmask.model import Transformer
    from unmask.objectives import objective_spec
    from unmask.server import create_app

    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=260, max_seq_len=24)
    spec = objective_spec("latent-diffusion")
    m = loaded(Transformer(spec.configure(cfg, TrainConfig(seq_len=24, latent_len=4))).eval())
    client = TestClient(create_app(m))
    assert client.get("/v1/models").json()["data"][0]["max_seq_len"] == 24
    r = client.post("/v1/completions", json={"prompt": "", "max_tokens": 33, "steps": 2})
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "context_length_exceeded"
    assert err["message"].endswith("use max_tokens <= 24"), err
    r = client.post("/v1/completions", json={"prompt": "", "max_tokens": 24, "steps": 2})
    assert r.status_code == 200, r.text
