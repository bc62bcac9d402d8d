"""A stop sequence ends a segmented run (``segment_length``) too, not only its text: a row
whose text, earlier segments included, is sure to be cut at a stop ends as after EOS, inside
a segment and at a segment's end. Before, every segment of ``gen_length`` ran and the text
was cut afterwards. The text and the tokens counted are what the run to the end gives."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from unmask import api
from unmask.chat import cut_text
from unmask.config import SampleConfig, model_preset
from unmask.loaded import Loaded
from unmask.model import Transformer
from unmask.sampling.stops import StopRows, TextEnd, tokens_ended
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
CONTEXT = 32
EOS = TOK.special_ids()["eos_id"]


def tiny(attention: str = "bidirectional", dtype: torch.dtype = torch.float64,
         **extra) -> Loaded:
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=CONTEXT,
                       attention=attention, init_std=0.3, **TOK.special_ids(), **extra)
    torch.manual_seed(0)
    m = Transformer(cfg).to(dtype).eval()
    return Loaded(model=m, tokenizer=TOK, config=m.config, path=Path("runs/x"))


def stop_from(text: str, lo: int, others: tuple[str, ...] = ()) -> str:
    """A 3-character stop first found in ``text`` at character ``lo`` or later (whole
    characters, in none of ``others``)."""
    for p in range(lo, len(text) - 2):
        s = text[p : p + 3]
        if text.find(s) == p and "\ufffd" not in s and not any(s in o for o in others):
            return s
    raise AssertionError(f"no stop in {text!r} from {lo}")


class Alphabet(nn.Module):
    """A mask predictor sure, at a [MASK] right after a letter, of the next letter of the
    alphabet (z: a); unsure elsewhere. The commit loop writes the alphabet on from the prompt's
    last letter, one letter a step, whatever the window."""

    def __init__(self) -> None:
        super().__init__()
        self.config = tiny().config
        self.calls = 0

    def forward(self, tokens: torch.Tensor, attention_mask=None) -> torch.Tensor:
        self.calls += 1
        B, L = tokens.shape
        logits = torch.zeros(B, L, TOK.vocab_size, dtype=torch.float64)  # (B, L, V)
        prev = tokens[:, :-1] - 4 - ord("a")  # (B, L - 1): letter index of each predecessor
        letter = (prev >= 0) & (prev < 26) & (tokens[:, 1:] == TOK.mask_id)
        b, j = letter.nonzero(as_tuple=True)
        logits[b, j + 1, 4 + ord("a") + (prev[b, j] + 1) % 26] = 20.0
        return logits


def test_a_stop_across_a_segment_boundary_ends_the_run():
    m = Alphabet()
    ld = Loaded(model=m, tokenizer=TOK, config=m.config, path=Path("runs/x"))
    config = SampleConfig(gen_length=24, steps=24, segment_length=8, block_length=4)
    full = api.generate(ld, "a", config=config)
    assert full.texts == ["bcdefghijklmnopqrstuvwxy"] and full.nfe == 24
    early = api.generate(ld, "a", config=config, stop="ij")  # "i" ends segment 1, "j" opens 2
    assert early.texts == ["bcdefgh"] and early.n_tokens == 9
    assert early.nfe == 12 == m.calls - 24  # segment 2's first block; 24 before


@pytest.mark.parametrize("kind", ["ar", "llada", "bd3lm"])
def test_a_stopped_row_ends_its_segments_with_the_same_text(kind):
    ld = {"ar": tiny("causal", objective="ar"), "llada": tiny(),
          "bd3lm": tiny("block-causal", block_size=4)}[kind]
    config = SampleConfig(gen_length=48, steps=48, segment_length=16,
                          block_length=4 if kind == "llada" else None)
    if kind == "ar":
        config = dataclasses.replace(config, decoder="ar")
    full = api.generate(ld, "hello", config=config)
    text = full.texts[0]
    stop = stop_from(text, 10)
    early = api.generate(ld, "hello", config=config, stop=stop)
    assert early.texts == [cut_text(text, [stop])]
    rule = TextEnd((stop,), frozenset({EOS}))
    assert early.n_tokens == tokens_ended(TOK, full.ids[0], rule)
    assert full.nfe == 48 and early.nfe <= 32  # at least the last segment is not run


def test_seeded_rows_leave_the_later_segments_at_their_stop():
    """Rows with a generator each (``generate``'s seeds when the run draws): a row that met
    its stop runs no more segments; the others write what they write without it."""
    ld = tiny()
    config = SampleConfig(gen_length=48, steps=48, segment_length=16, temperature=0.9,
                          seed=5, block_length=4)
    prompts = ["ab", "hello", "xyz"]
    full = api.generate(ld, prompts, config=config)
    stop = stop_from(full.texts[0], 3, tuple(full.texts[1:]))
    early = api.generate(ld, prompts, config=config, stop=stop)
    assert early.texts == [cut_text(t, [stop]) for t in full.texts]
    assert early.texts[1:] == full.texts[1:]
    k = (tokens_ended(TOK, full.ids[0], TextEnd((stop,), frozenset({EOS}))) - 1) // 16
    assert k < 2  # row 0 ends in segment k: the later ones run the other two rows
    assert [p.tokens.shape[0] for p in early.result.segments] == [3] * (k + 1) + [2] * (2 - k)


def test_rows_of_one_shared_generator_stop_only_together():
    """One generator for the batch (``start`` with ``seed``, no ``seeds``): a row leaving the
    batch would move the others' draws, so a row that met its stop stays until every row's
    text has ended; then the run stops."""
    ld = tiny()
    config = SampleConfig(gen_length=48, steps=48, segment_length=16, temperature=0.9,
                          seed=3, block_length=4)
    rows = [TOK.encode("ab"), TOK.encode("hello")]
    full = api.start(ld, rows, config).run()
    texts = full.texts(TOK)
    one = TextEnd((stop_from(texts[0], 3, (texts[1],)),), frozenset({EOS}))
    alone = api.start(ld, rows, config, stop=[one, None]).run()
    assert alone.gen_ids[1] == full.gen_ids[1]  # the other row's draws did not move
    assert [p.tokens.shape[0] for p in alone.segments] == [2, 2, 2]
    both = [TextEnd((stop_from(t, 3),), frozenset({EOS})) for t in texts]
    early = api.start(ld, rows, config, stop=both).run()
    for ids_full, ids_early, rule in zip(full.gen_ids, early.gen_ids, both, strict=True):
        n = tokens_ended(TOK, ids_full, rule)
        assert n < 16 and ids_early[:n] == ids_full[:n]
    assert early.nfe < full.nfe == 48 and len(early.segments) == 1


@pytest.mark.parametrize("seeds", [None, [1, 2, 3]])
def test_in_bfloat16_a_stopped_row_stays_in_the_later_segments(seeds):
    """In bfloat16 a row's logits depend on its batch (its size, the left padding the longest
    row sets): a row leaving the later segments at its stop would change the other rows'
    text. So the segments' batches stay whole until every row has ended; in float64 the
    stopped row leaves them."""
    config = SampleConfig(gen_length=48, steps=48, segment_length=16, decoder="ar",
                          forbid_eos=True, temperature=0.0 if seeds is None else 0.9)
    rows = [TOK.encode(p) for p in ["hello there", "ab", "xyz"]]
    sizes = {}
    for dtype in (torch.bfloat16, torch.float64):
        ld = tiny("causal", dtype=dtype, objective="ar")
        full = api.start(ld, rows, config, seeds=seeds).run()
        texts = full.texts(TOK)
        rule = TextEnd((stop_from(texts[0], 2, tuple(texts[1:])),), frozenset({EOS}))
        assert tokens_ended(TOK, full.gen_ids[0], rule) <= 16  # row 0 stops in segment 0
        early = api.start(ld, rows, config, seeds=seeds, stop=[rule, None, None]).run()
        assert early.gen_ids[1:] == full.gen_ids[1:]
        sizes[dtype] = [p.tokens.shape[0] for p in early.segments]
    assert sizes == {torch.bfloat16: [3, 3, 3], torch.float64: [3, 2, 2]}


def test_a_stop_rule_of_its_own_sees_the_whole_rows_of_a_segmented_run():
    """A ``run.stop`` that is not a ``StopRows`` is handed the whole rows so far (the earlier
    segments and the current one), as a plain run's view: it stops the run as ``StopRows``
    does."""
    ld = tiny("causal", objective="ar")
    config = SampleConfig(gen_length=48, steps=48, segment_length=16, decoder="ar")
    rows = [TOK.encode("hello"), TOK.encode("ab")]
    full = api.start(ld, rows, config).run()
    stops = [TextEnd((stop_from(t, 20),), frozenset({EOS})) for t in full.texts(TOK)]
    early = api.start(ld, rows, config, stop=stops).run()
    widths: list[int] = []

    def own(view: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        widths.append(view.shape[1])
        return rule(view, active)

    run = api.start(ld, rows, config)
    rule = StopRows(TOK.decode, stops, run.mask_id)  # a fresh one: it keeps what it has read
    run.stop = own
    mine = run.run()
    assert mine.gen_ids == early.gen_ids and mine.nfe == early.nfe < full.nfe
    assert max(widths) > 16  # the whole rows, past the first segment


def test_the_server_stops_a_segmented_completion_at_its_stop():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    ld = tiny("causal", objective="ar")
    config = {"gen_length": 48, "segment_length": 16}
    full = api.generate(ld, "hello", config=config)
    stop = stop_from(full.texts[0], 20)
    want = cut_text(full.texts[0], [stop])
    with TestClient(create_app(ld)) as client:
        body = {"prompt": "hello", "max_tokens": 48, "segment_length": 16, "stop": stop}
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["choices"][0]["text"] == want
        assert out["choices"][0]["finish_reason"] == "stop"
        assert out["nfe"] < 48
        rule = TextEnd((stop,), frozenset({EOS}))
        assert out["usage"]["completion_tokens"] == tokens_ended(TOK, full.ids[0], rule)
        r = client.post("/v1/completions", json={**body, "stream": True})
        data = [ln[len("data: "):] for ln in r.text.splitlines() if ln.startswith("data: ")]
        chunks = [json.loads(d)["choices"] for d in data[:-1]]
        assert "".join(c[0]["text"] for c in chunks if c) == want
        assert [c[0]["finish_reason"] for c in chunks if c][-1] == "stop"
