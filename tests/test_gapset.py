"""Gap sets (``unmask.gapset``): drawing, writing, reading, and infill exact match."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from unmask.config import model_preset
from unmask.errors import UserError
from unmask.gapset import (
    GapSample,
    infill_exact_match,
    make_gap_set,
    read_gap_set,
    write_gap_set,
)
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
V = TOK.vocab_size
TEXT = "In the beginning God created the heaven and the earth. And the earth was without form."


class Oracle:
    """Predicts the token of ``TEXT`` at every position, whatever the canvas holds."""

    config = SimpleNamespace(attention="bidirectional", max_seq_len=128)

    def __init__(self, text: str, wrong: set[int] = frozenset()) -> None:
        self.truth = torch.tensor(TOK.encode(text))
        self.wrong = wrong  # positions predicted as "#" instead

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        B, L = tokens.shape
        logits = torch.zeros(B, L, V)  # (B, L, V)
        n = min(L, len(self.truth))
        logits[:, torch.arange(n), self.truth[:n]] = 8.0
        for i in self.wrong:
            logits[:, i, TOK.encode("#")[0]] = 16.0
        return logits


def _gap(text: str, start: int, length: int) -> GapSample:
    ids = TOK.encode(text)
    return GapSample(ids, start, length, length, length)


def test_a_perfect_predictor_fills_every_gap_exactly():
    gaps = [_gap(TEXT, 3, 5), _gap(TEXT, 20, 1), _gap(TEXT, 40, 12)]
    s = infill_exact_match(Oracle(TEXT), TOK, gaps)
    assert (s.exact, s.token_acc, s.n, s.method) == (1.0, 1.0, 3, "diffusion")
    assert s.nfe == pytest.approx((5 + 1 + 12) / 3)  # one token per step by default
    assert s.examples[0]["fill"] == s.examples[0]["middle"] == TEXT[3:8]


def test_exact_match_and_token_accuracy_count_wrong_tokens():
    """Two wrong positions inside the first gap, none in the second: exact 1/2, tokens 15/17."""
    gaps = [_gap(TEXT, 3, 5), _gap(TEXT, 40, 12)]
    s = infill_exact_match(Oracle(TEXT, wrong={4, 6}), TOK, gaps)
    assert s.exact == 0.5 and s.token_acc == pytest.approx(15 / 17)
    assert s.examples[0]["fill"] == "t#e#b"


def test_a_gap_over_the_context_is_refused_before_any_work_naming_it():
    """A hand-written gap with a long prefix failed, after the gaps before it were filled,
    with "template needs at least 806 tokens": a template the user never wrote, no gap named."""
    long = _gap(TEXT * 2, 100, 5)  # 172 tokens, the context 128
    calls = []
    oracle = Oracle(TEXT)

    def counting(tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        calls.append(1)
        return oracle(tokens, attention_mask)

    counting.config = Oracle.config
    with pytest.raises(UserError) as e:
        infill_exact_match(counting, TOK, [_gap(TEXT, 3, 5), long])
    assert str(e.value) == ("gap 2 of the set has 172 tokens (prefix, middle and suffix), more "
                            "than the model's context (max_seq_len 128); give it a shorter "
                            "prefix and suffix")
    assert calls == []


@pytest.fixture(scope="module")
def val(tmp_path_factory):
    from unmask.data import TokenDataset, prepare

    root = tmp_path_factory.mktemp("gaps")
    (root / "a.txt").write_text("naïve café, the lord said unto moses. " * 450)
    prepare([root / "a.txt"], root / "data", tokenizer="byte", val_fraction=0.5, progress=False)
    return TokenDataset(root / "data", "val")


def test_drawn_gaps_round_trip_through_a_file(val, tmp_path):
    drawn = make_gap_set(val, TOK, window=40, spans=(1, 4), n=5, seed=3)
    again = make_gap_set(val, TOK, window=40, spans=(1, 4), n=5, seed=3)
    assert drawn == again and [len(v) for v in drawn.values()] == [5, 5]
    flat = [x for b in drawn.values() for x in b]
    for x in flat:  # never half a character, a special token, or an empty side
        assert x.start >= 1 and x.suffix and not any(TOK.is_special(t) for t in x.truth)
        assert TOK.decode(x.truth).encode("utf-8") == b"".join(map(TOK.token_bytes, x.truth))
        assert x.lo <= x.length <= x.hi
    path = write_gap_set(tmp_path / "gaps.jsonl", flat, TOK)
    assert read_gap_set(path, TOK) == flat
    line = json.loads(path.read_text().splitlines()[0])
    assert line["prefix"] + line["middle"] + line["suffix"] == TOK.decode(flat[0].window)


def test_text_lines_are_encoded_and_foreign_ids_refused(tmp_path):
    p = tmp_path / "g.jsonl"
    p.write_text(json.dumps({"prefix": "In the ", "middle": "beginning", "suffix": " God"}) + "\n")
    (x,) = read_gap_set(p, TOK)
    assert TOK.decode(x.truth) == "beginning" and TOK.decode(x.prefix) == "In the "
    assert x.lo == x.hi == x.length == len(TOK.encode("beginning"))
    foreign = {
        "prefix": "a",
        "middle": "b",
        "suffix": "c",
        "ids": {"prefix": [1], "middle": [7, 7], "suffix": [3]},
    }
    p.write_text(json.dumps(foreign) + "\n")
    with pytest.raises(UserError, match=r"g.jsonl:1: .*another tokenizer"):
        read_gap_set(p, TOK)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json\n", r"g.jsonl:1: not a JSON object"),
        ('\n{"prefix": "a", "suffix": "c"}\n', r"g.jsonl:2: missing field 'middle'"),
        ('{"prefix": "a", "middle": "", "suffix": "c"}\n', r"g.jsonl:1: the middle is empty"),
        ("\n\n", r"no gaps"),
    ],
)
def test_bad_gap_sets_are_one_line_errors(tmp_path, content, message):
    p = tmp_path / "g.jsonl"
    p.write_text(content)
    with pytest.raises(UserError, match=message):
        read_gap_set(p, TOK)


def test_a_causal_model_without_fim_is_refused():
    cfg = model_preset(
        "tiny", vocab_size=V, max_seq_len=64, attention="causal", **TOK.special_ids()
    )
    with pytest.raises(UserError, match="not trained for fill-in-the-middle"):
        infill_exact_match(Transformer(cfg).eval(), TOK, [_gap(TEXT, 3, 5)])


def test_a_gap_after_a_bpe_prefix_is_filled_as_it_stands():
    """A gap set's gap sits between exact ids, never at the start of a text: its fill keeps
    its leading space, and the model sees the window as it is (no start context)."""
    from unmask.tokenizer import train_bpe

    bpe = train_bpe(["The cat sat on the mat. The dog sat."] * 20, vocab_size=300)
    text = "The cat sat on the mat."
    ids = bpe.encode(text)
    assert bpe.token_bytes(ids[1]).startswith(b" ")

    class BpeOracle(Oracle):
        def __init__(self) -> None:
            self.truth, self.wrong = torch.tensor(ids), frozenset()

        def __call__(self, tokens, attention_mask=None):
            B, L = tokens.shape
            logits = torch.zeros(B, L, bpe.vocab_size)
            logits[:, torch.arange(min(L, len(ids))), self.truth[: min(L, len(ids))]] = 8.0
            return logits

    s = infill_exact_match(BpeOracle(), bpe, [GapSample(ids, 1, 2, 2, 2)])
    assert s.exact == 1.0 and s.examples[0]["fill"] == bpe.decode(ids[1:3])


def test_a_fim_gap_over_the_context_counts_the_sentinels_and_is_refused_first():
    """On a causal model the FIM prompt adds 3 sentinels to prefix, middle and suffix: a gap
    whose window fits the context by 2 tokens passed the check, the gaps before it were
    filled, and it then failed unnamed ("prefix (...) + suffix (...) + 3 sentinels ...")."""
    cfg = model_preset("tiny", vocab_size=V + 3, max_seq_len=32, attention="causal",
                       fim_prefix_id=V, fim_suffix_id=V + 1, fim_middle_id=V + 2,
                       **TOK.special_ids())
    model = Transformer(cfg).eval()
    fits, over = _gap(TEXT[:16], 3, 5), _gap(TEXT[:30], 10, 5)  # windows of 16 and 30 tokens
    with pytest.raises(UserError) as e:
        infill_exact_match(model, TOK, [fits, over])
    assert str(e.value).startswith("gap 2 of the set has 33 tokens (prefix, suffix, FIM "
                                   "sentinels and middle), more than the model's context")
    assert infill_exact_match(model, TOK, [fits]).n == 1


@pytest.mark.parametrize(
    ("ids", "extra", "message"),
    [
        # ids past the vocabulary failed in the embedding after the gaps before were filled
        ({"prefix": [99999], "middle": [102], "suffix": [103]}, {},
         r"g.jsonl:1: ids.prefix holds 99999, outside the tokenizer's 260 ids"),
        ({"prefix": [-5], "middle": [102], "suffix": [103]}, {}, r"ids.prefix holds -5"),
        # only the middle was compared: a prefix of other ids was read
        ({"prefix": [101, 101], "middle": [102], "suffix": [103]}, {},
         r"g.jsonl:1: its token ids do not decode to its prefix"),
        ({"prefix": [101], "middle": [102], "suffix": [104]}, {},
         r"its token ids do not decode to its suffix"),
        # a mask id decodes to nothing: a middle of [MASK] passed as an empty text
        ({"prefix": [101], "middle": [0], "suffix": [103]}, {"middle": ""},
         r"ids.middle holds the mask id 0"),
        ({"prefix": [101, 0], "middle": [102], "suffix": [103]}, {},
         r"ids.prefix holds the mask id 0"),
        ({"prefix": [101], "middle": [102, 2], "suffix": [103]}, {},
         r"ids.middle holds a special token"),
        ({"prefix": [101], "middle": [True], "suffix": [103]}, {},
         r"ids.middle must be a list of token ids"),
    ],
)
def test_gap_ids_of_another_tokenizer_or_special_are_one_line_errors(tmp_path, ids, extra,
                                                                      message):
    p = tmp_path / "g.jsonl"
    p.write_text(json.dumps({"prefix": "a", "middle": "b", "suffix": "c", "ids": ids,
                             **extra}) + "\n")
    with pytest.raises(UserError, match=message):
        read_gap_set(p, TOK)


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ({"lo": "x"}, r"g.jsonl:1: lo must be a whole number of tokens, got 'x'"),  # ValueError
        ({"hi": None}, r"hi must be a whole number of tokens, got None"),  # was a TypeError
        ({"lo": 5, "hi": 9}, r"lo=5, hi=9: a variable gap's bounds hold the middle's length"),
        ({"lo": 0, "hi": 1}, r"lo=0, hi=1"),
        ({"lo": 1, "hi": 0}, r"lo=1, hi=0"),
    ],
)
def test_bad_gap_bounds_are_one_line_errors(tmp_path, bounds, message):
    p = tmp_path / "g.jsonl"
    p.write_text(json.dumps({"prefix": "a", "middle": "b", "suffix": "c", **bounds}) + "\n")
    with pytest.raises(UserError, match=message):
        read_gap_set(p, TOK)
    p.write_text(json.dumps({"prefix": "a", "middle": "bcd", "suffix": "c", "lo": 2, "hi": 6}))
    assert [(x.lo, x.length, x.hi) for x in read_gap_set(p, TOK)] == [(2, 3, 6)]


def test_a_gap_set_saved_with_a_utf8_byte_order_mark_is_read(tmp_path):
    """Notepad's UTF-8 starts with a BOM, which json.loads refuses: line 1 was "not a JSON
    object"."""
    p = tmp_path / "g.jsonl"
    line = json.dumps({"prefix": "In the ", "middle": "beginning", "suffix": " God"})
    p.write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\n")
    (x,) = read_gap_set(p, TOK)
    assert TOK.decode(x.prefix) == "In the "


def test_a_window_longer_than_the_split_block_is_refused(val):
    """Such windows were drawn anywhere in the split, silently: across the blocks that
    ``prepare`` deals to training and validation."""
    with pytest.raises(UserError, match=r"a window of 40 tokens is longer than the split's "
                                        r"blocks \(16 tokens\)"):
        make_gap_set(val, TOK, window=40, spans=(1,), n=2, seed=0, block=16)
    assert len(make_gap_set(val, TOK, window=16, spans=(1,), n=2, seed=0, block=16)[1]) == 2


@pytest.mark.parametrize("spans, n, message", [
    ((0,), 2, r"spans=0:"), ((4, -3), 2, r"spans=-3:"), ((2.5,), 2, r"spans=2.5:"),
    ((2,), 0, r"n=0:"),
])
def test_spans_and_counts_below_one_are_refused(val, spans, n, message):
    """Span 0 or -3 drew gaps with empty middles (length 0 or -3) that ``write_gap_set``
    wrote and ``read_gap_set`` then refused; n=0 gave no gaps at all, silently."""
    with pytest.raises(UserError, match=message):
        make_gap_set(val, TOK, window=40, spans=spans, n=n, seed=0)
