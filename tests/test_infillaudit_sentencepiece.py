"""Templates and edits on a SentencePiece-style tokenizer, which marks the start of every text
it encodes with a word start (``"▁"``, a space that is not in the text).

A template's text after a gap, encoded on its own, got that mark (``"sat"`` as ``"▁sat"``): the
model read a space the template does not have, and ``decode(result.tokens)`` was not the
result's text. ``edit(lowest=...)`` rebuilt the text it keeps from its tokens' bytes, so the
edited text gained a space at its start (``"cat sat mo."`` came back ``" cat sat ..."``).
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

from unmask.config import SampleConfig
from unmask.infill import edit, infill, plan_template
from unmask.tokenizer import SPECIAL_TOKENS, Tokenizer, byte_tokenizer, train_bpe


def _sentencepiece() -> Tokenizer:
    """Word starts (``▁``) on every text, byte fallback for the rest (Llama-style)."""
    pieces = [*SPECIAL_TOKENS, "<unk>", "<0x0A>", "▁", *"catsmodg.", "▁c", "▁ca", "▁cat",
              "▁s", "▁sa", "▁sat", "▁d", "▁do", "▁dog"]
    merges = [("▁", "c"), ("▁c", "a"), ("▁ca", "t"), ("▁", "s"), ("▁s", "a"), ("▁sa", "t"),
              ("▁", "d"), ("▁d", "o"), ("▁do", "g")]
    hf = HFTokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=merges,
                                unk_token="<unk>", byte_fallback=True))
    hf.pre_tokenizer = pre_tokenizers.Metaspace()
    hf.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    hf.add_special_tokens([*SPECIAL_TOKENS, "<unk>"])
    return Tokenizer(hf, mask_id=0, pad_id=1, eos_id=2, bos_id=3)


SP = _sentencepiece()


def _id(piece: str) -> int:
    return SP.token_to_id(piece)


class Prefers:
    """Every position favours the token ``best``; records every canvas it sees."""

    def __init__(self, best: str, tokenizer: Tokenizer = SP) -> None:
        self.bias = torch.zeros(tokenizer.vocab_size)
        self.bias[tokenizer.token_to_id(best)] = 10.0
        self.seen: list[list[int]] = []

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        self.seen.extend(tokens.tolist())
        return self.bias.expand(*tokens.shape, len(self.bias)).clone()  # (B, L, V)


def test_the_tokenizer_marks_every_text_it_encodes():
    assert [SP.id_to_token(i) for i in SP.encode("sat")] == ["▁sat"]
    assert SP.decode(SP.encode("cat sat")) == "cat sat"


def test_text_after_a_gap_is_encoded_without_a_word_start_of_its_own():
    model = Prefers("▁cat")
    r = infill(model, SP, "mo[MASK]sat", SampleConfig(steps=1))
    # the model sees "sat" glued to the gap, as the template has it (it saw "▁sat": " sat")
    assert model.seen[0] == SP.encode("mo") + [SP.mask_id] + [_id("s"), _id("a"), _id("t")]
    assert r.text == "mo catsat" and SP.decode(r.tokens) == r.text
    # the first text of a template is a text's start: its word start is the model's to see
    plan = plan_template("cat [MASK] sat", SP)
    assert plan.items[0][1] == (SP.encode("cat"), "cat")


def test_text_after_a_gap_keeps_its_own_leading_space():
    r = infill(Prefers("▁cat"), SP, "mo\\ [MASK] sat", SampleConfig(steps=1))
    assert r.text == "mo  cat sat" and SP.decode(r.tokens) == r.text


def test_a_lowest_edit_keeps_the_text_around_its_spans_exactly():
    for text in ("cat sat mo.", "dog cat sat"):
        r = edit(Prefers("▁dog"), SP, text, lowest=1, config=SampleConfig(steps=1))
        kept = r.text
        for c in reversed(r.changes):
            kept = kept[: c.start] + c.old + kept[c.end :]
        assert kept == text, (text, r.text, r.changes)
        assert not r.text.startswith(" ")
        for (s, e), c in zip(r.spans, r.changes, strict=False):
            assert text[s:e] == c.old


def test_a_lowest_edit_of_the_first_word_is_read_from_the_text():
    model = Prefers("▁dog")
    r = edit(model, SP, "cat sat", lowest=2, config=SampleConfig(steps=1))
    assert r.spans == [(0, 7)]
    assert [(c.old, c.new) for c in r.changes] == [("cat sat", "dog dog")]
    assert r.text == "dog dog"


def test_byte_level_tokenizers_encode_as_before():
    bpe = train_bpe(["cat sat. The cat sat on the mat."] * 20, vocab_size=300)
    for tok in (bpe, byte_tokenizer()):
        plan = plan_template("The [MASK] sat.\nmat[MASK]on", tok)
        texts = [v for k, v in plan.items if k == "text"]
        assert texts and all(ids == tok.encode(t) for ids, t in texts)


def test_fill_in_the_middle_reads_the_suffix_as_text_that_continues(monkeypatch):
    """The suffix after an AR-FIM middle continues the text: no word start of its own, and the
    middle after a prefix keeps the space its first word start stands for."""
    from types import SimpleNamespace

    import unmask.infill.fim as fim

    seen = {}

    def fake(model, prefix_ids, suffix_ids, **kw):
        seen["prefix"], seen["suffix"] = list(prefix_ids), list(suffix_ids)
        return fim.FimResult(tokens=[_id("▁cat")], ended=True, nfe=1)

    monkeypatch.setattr(fim, "fill_middle_ids", fake)
    model = SimpleNamespace(config=SimpleNamespace(fim_prefix_id=90, fim_suffix_id=91,
                                                   fim_middle_id=92))  # only fake reads it
    r = fim.fill_middle(model, SP, "mo", "sat", max_new_tokens=1)
    assert seen["prefix"] == SP.encode("mo")
    assert seen["suffix"] == [_id("s"), _id("a"), _id("t")]
    assert r.middle == " cat" and r.text == "mo catsat"
    r = fim.fill_middle(model, SP, "", "sat", max_new_tokens=1)  # the text's first word
    assert r.middle == "cat"


def test_a_span_inside_a_word_is_refilled_with_the_tokens_it_has_there():
    """``"sat"`` inside ``"mosat"`` is three tokens; encoded alone it was one (``"▁sat"``), so the
    span was refilled with one token."""
    r = edit(Prefers("s"), SP, "mosat", spans=[(2, 5)], config=SampleConfig(steps=3))
    assert r.text == "mosss"
    assert [(c.start, c.end, c.old, c.new) for c in r.changes] == [(2, 5, "sat", "sss")]
