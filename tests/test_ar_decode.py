"""Autoregressive decoding with a KV cache (causal models): equal to recomputing everything."""

from __future__ import annotations

import json

import pytest
import torch

from unmask.config import model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.sampling import filter_logits, generate_ar, sample_token
from unmask.sampling.ar import ARRun
from unmask.sampling.penalties import banned_ids


def make(attention: str = "causal", seed: int = 0, std: float = 0.3) -> Transformer:
    cfg = model_preset("tiny", vocab_size=48, max_seq_len=64, attention=attention, init_std=std)
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


def naive_greedy(model: Transformer, prompt: list[int], n: int) -> list[int]:
    """Recompute the whole sequence for every new token, no cache; like every decoder, it
    never proposes the mask id nor another special token but EOS (``banned_ids``: a random
    model may rank them first)."""
    x = torch.tensor([prompt])
    banned = [model.config.mask_id, *banned_ids(model.config)]
    with torch.no_grad():
        for _ in range(n):
            logits = model(x)[0, -1]
            logits[banned] = float("-inf")
            nxt = logits.argmax()
            x = torch.cat([x, nxt.view(1, 1)], dim=1)
    return x[0, len(prompt) :].tolist()


class Counting(Transformer):
    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.widths: list[int] = []

    def forward(self, tokens, attention_mask=None, *, cache=None, start=0):
        self.widths.append(tokens.shape[1])
        return super().forward(tokens, attention_mask, cache=cache, start=start)


@pytest.mark.parametrize("seed", [0, 1])
def test_cached_greedy_equals_naive_greedy(seed):
    model = make(seed=seed)
    prompt = [5, 9, 17, 30, 4]
    r = generate_ar(model, prompt, max_new_tokens=20, eos_id=None)
    assert r.gen_ids == [naive_greedy(model, prompt, 20)]
    assert r.nfe == 20 and r.steps == 20 and r.region == (5, 25)
    assert r.tokens[0, :5].tolist() == prompt


def test_each_new_token_is_one_position():
    cfg = model_preset("tiny", vocab_size=48, max_seq_len=64, attention="causal")
    torch.manual_seed(0)
    model = Counting(cfg).eval()
    r = generate_ar(model, [[5, 6, 7], [8]], max_new_tokens=6, eos_id=None)
    assert model.widths == [3, 1, 1, 1, 1, 1] and r.nfe == 6


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_prompts_head_runs_on_its_last_column_only(temperature):
    """The prompt's forward reads only its last column's logits: the head runs on that one
    (one row per prompt), with the same tokens as the model's whole logits; a wrapper whose
    forward takes no ``return_hidden`` keeps the whole logits."""
    model = make(seed=2)
    rows: list[int] = []
    hook = model.lm_head.register_forward_hook(lambda _m, inp, _o: rows.append(
        inp[0][..., 0].numel()))  # fmt: skip
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12]]
    try:
        runs = []
        for whole in (False, True):
            rows.clear()
            run = ARRun(model, prompts, max_new_tokens=5, eos_id=None, temperature=temperature,
                        generator=torch.Generator().manual_seed(1))  # fmt: skip
            if whole:
                run._head = None
            runs.append((run.run(), list(rows)))
    finally:
        hook.remove()
    (cut, n_cut), (full, n_full) = runs
    assert cut.tokens.tolist() == full.tokens.tolist()
    assert n_cut == [2] * 5 and n_full == [2 * 6] + [2] * 4
    cfg = model_preset("tiny", vocab_size=48, max_seq_len=64, attention="causal")
    assert ARRun(Counting(cfg), [5, 6], max_new_tokens=2, eos_id=None).run().nfe == 2


def test_padded_batch_equals_rows_alone():
    model = make(seed=2)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    batch = generate_ar(model, prompts, max_new_tokens=12, eos_id=None)
    assert (
        batch.attention_mask is not None
        and batch.tokens[1, :4].tolist() == [model.config.pad_id] * 4
    )
    for i, p in enumerate(prompts):
        alone = generate_ar(model, p, max_new_tokens=12, eos_id=None)
        assert batch.gen_ids[i] == alone.gen_ids[0] == naive_greedy(model, p, 12)


def test_eos_stops_rows_and_pads_after():
    model = make(seed=1)
    prompts = [[5, 9, 17], [20, 21]]
    free = generate_ar(model, prompts, max_new_tokens=10, eos_id=None)
    eos = free.gen_ids[0][2]  # call a token row 0 emits EOS
    r = generate_ar(model, prompts, max_new_tokens=10, eos_id=eos)
    pad = model.config.pad_id
    stops = [g.index(eos) + 1 if eos in g else 10 for g in free.gen_ids]
    for i, g in enumerate(free.gen_ids):
        assert r.gen_ids[i] == g[: stops[i]] + [pad] * (10 - stops[i])
    assert r.steps == max(stops) and r.nfe == max(stops)
    assert stops[0] <= 3
    assert r.texts(_Tok()) == [str(g[: g.index(eos)] if eos in g else g) for g in free.gen_ids]


class _Tok:
    def decode(self, ids):
        return str(list(ids))


def test_sampling_is_seeded_and_filters_apply():
    model = make(seed=3, std=0.05)  # flat: sampling matters
    prompt = [5, 6, 7]
    kw = dict(max_new_tokens=12, eos_id=None, temperature=1.0)
    a = generate_ar(model, prompt, **kw, generator=torch.Generator().manual_seed(1))
    b = generate_ar(model, prompt, **kw, generator=torch.Generator().manual_seed(1))
    assert a.gen_ids == b.gen_ids
    outs = {
        tuple(
            generate_ar(model, prompt, **kw, generator=torch.Generator().manual_seed(s)).gen_ids[0]
        )
        for s in range(4)
    }
    assert len(outs) > 1
    greedy = generate_ar(model, prompt, max_new_tokens=12, eos_id=None).gen_ids
    assert (
        generate_ar(
            model, prompt, **kw, top_k=1, generator=torch.Generator().manual_seed(1)
        ).gen_ids
        == greedy
    )
    assert (
        generate_ar(
            model, prompt, **kw, top_p=1e-6, generator=torch.Generator().manual_seed(1)
        ).gen_ids
        == greedy
    )


def test_filter_logits_and_sample_token():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.8)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.81)).tolist() == [[False, False, False, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.1)).tolist() == [[False, True, True, True]]
    g = torch.Generator().manual_seed(0)
    draws = sample_token(logits.expand(20000, -1), temperature=1.0, generator=g)
    freq = torch.bincount(draws, minlength=4).double() / 20000
    torch.testing.assert_close(
        freq, torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64), atol=0.015, rtol=0
    )
    draws = sample_token(logits.expand(5000, -1), temperature=1.0, top_k=2, generator=g)
    assert set(draws.tolist()) == {0, 1}
    assert sample_token(logits, temperature=0.0).tolist() == [0]


def test_errors():
    with pytest.raises(UserError, match="causal model"):
        generate_ar(make("bidirectional"), [5], max_new_tokens=4, eos_id=2)
    model = make()
    with pytest.raises(UserError, match="top_p"):
        generate_ar(model, [5], max_new_tokens=4, eos_id=2, top_p=0.0)
    with pytest.raises(UserError, match="top_k"):
        generate_ar(model, [5], max_new_tokens=4, eos_id=2, top_k=0)
    with pytest.raises(UserError, match="max_seq_len"):
        generate_ar(model, [5] * 10, max_new_tokens=60, eos_id=2)
    with pytest.raises(UserError, match="max_new_tokens"):
        generate_ar(model, [5], max_new_tokens=0, eos_id=2)
    r = generate_ar(
        model, [[], [5, 6]], max_new_tokens=3, eos_id=None, start_id=3
    )  # empty prompt: start token
    assert r.tokens[0, :2].tolist() == [model.config.pad_id, 3]


def test_cli_generate_uses_ar_for_causal_checkpoints(tmp_path, capsys):
    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset(
        "tiny", vocab_size=tok.vocab_size, max_seq_len=32, attention="causal", **tok.special_ids()
    )
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    args = ["generate", "--model", str(tmp_path / "run"), "--gen-length", "6", "--json"]
    assert (
        main(
            [
                *args,
                "--temperature",
                "0.8",
                "--top-k",
                "5",
                "--top-p",
                "0.9",
                "--seed",
                "1",
                "ab",
                "c",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert len(data["results"]) == 2 and all(len(r["tokens"]) == 6 for r in data["results"])
    assert main([*args, "ab"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["nfe"] == data["steps"] <= 6
    assert main([*args, "--cfg-scale", "1.0", "ab"]) == 2
    assert "autoregressive" in capsys.readouterr().err
    # top-k on a diffusion checkpoint is a user error
    dcfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32, **tok.special_ids())
    save_checkpoint(tmp_path / "diff", model=Transformer(dcfg), tokenizer=tok)
    assert (
        main(
            [
                "generate",
                "--model",
                str(tmp_path / "diff"),
                "--gen-length",
                "4",
                "--steps",
                "4",
                "--top-k",
                "3",
                "x",
            ]
        )
        == 2
    )
    assert "--top-k applies to autoregressive" in capsys.readouterr().err
