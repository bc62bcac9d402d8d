"""Spaces and word starts on SentencePiece-style tokenizers (review of session 29).

``edit(lowest=...)`` on a text whose first character has no word-start token of its own (a
digit, a byte, a CJK character: ``"2 cat"`` is ``"▁", "2", ...``) kept the lone ``"▁"`` and
refilled after it, so the edited text began with a space (``" dog cat sat"``).

A Llama-style tokenizer (a ``Prepend("▁")`` normalizer, no pre-tokenizer) spells ``" "`` alone
as two word starts (``"▁", "▁"``): the space a fill did not take, put back, made ``tokens``
decode to two spaces where ``text`` has one, and a choice after a space counted a token too
many.
"""

from __future__ import annotations

from test_infillaudit_sentencepiece import Prefers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers

from unmask.config import SampleConfig
from unmask.infill import Gap, edit, infill, plan_template
from unmask.tokenizer import SPECIAL_TOKENS, Tokenizer


def _bpe() -> HFTokenizer:
    """Word starts and a few words; byte fallback for the rest ("2" is "<0x32>")."""
    pieces = [*SPECIAL_TOKENS, "<unk>", "<0x0A>", "<0x32>", "▁", *"catsmodg.", "▁c", "▁ca",
              "▁cat", "▁s", "▁sa", "▁sat", "▁d", "▁do", "▁dog"]
    merges = [("▁", "c"), ("▁c", "a"), ("▁ca", "t"), ("▁", "s"), ("▁s", "a"), ("▁sa", "t"),
              ("▁", "d"), ("▁d", "o"), ("▁do", "g")]
    return HFTokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=merges,
                                  unk_token="<unk>", byte_fallback=True))


def metaspace_of(hf: HFTokenizer) -> Tokenizer:
    """``hf`` (a BPE over "▁" word starts) with a Metaspace pre-tokenizer: a word start on
    every text it encodes."""
    hf.pre_tokenizer = pre_tokenizers.Metaspace()
    hf.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    hf.add_special_tokens([*SPECIAL_TOKENS, "<unk>"])
    return Tokenizer(hf, mask_id=0, pad_id=1, eos_id=2, bos_id=3)


def llama_of(hf: HFTokenizer) -> Tokenizer:
    """``hf`` Llama-2 style: the normalizer prepends "▁" and turns spaces into "▁"; no
    pre-tokenizer."""
    hf.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                          normalizers.Replace(" ", "▁")])
    hf.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                    decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    hf.add_special_tokens([*SPECIAL_TOKENS, "<unk>"])
    return Tokenizer(hf, mask_id=0, pad_id=1, eos_id=2, bos_id=3)


def _metaspace() -> Tokenizer:
    return metaspace_of(_bpe())


def _llama() -> Tokenizer:
    return llama_of(_bpe())


SP = _metaspace()
LLAMA = _llama()


def _pieces(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.id_to_token(i) for i in ids]


def test_a_lowest_edit_after_a_lone_word_start_starts_the_text():
    assert _pieces(SP, SP.encode("2 cat sat"))[:2] == ["▁", "<0x32>"]
    r = edit(Prefers("▁dog", SP), SP, "2 cat sat", lowest=1, config=SampleConfig(steps=1))
    assert r.spans == [(0, 1)] and r.changes[0].old == "2"
    assert not r.text.startswith(" ") and r.text.endswith(" cat sat")
    assert r.text == r.changes[0].new + " cat sat"
    # as a span over the same character: the text encoded on its own, its word start included
    s = edit(Prefers("▁dog", SP), SP, "2 cat sat", spans=[(0, 1)], config=SampleConfig(steps=1))
    assert r.text == s.text


def test_a_lowest_edit_after_a_lone_word_start_refills_it_with_the_run():
    model = Prefers("▁dog", SP)
    edit(model, SP, "2 cat sat", lowest=1, config=SampleConfig(steps=1))
    # the refill's canvas: the word start and "2" masked (as a span over "2" has it), not the
    # word start kept before a masked "2"
    assert model.seen[-1] == [SP.mask_id, SP.mask_id, *SP.encode("2 cat sat")[2:]]


def test_llama_style_tokens_decode_to_the_text_where_a_space_is_put_back():
    assert _pieces(LLAMA, LLAMA.encode(" ")) == ["▁", "▁"]
    r = infill(Prefers("d", LLAMA), LLAMA, "cat [MASK:2]", SampleConfig(steps=1))
    assert r.text == "cat dd"
    assert LLAMA.decode(r.tokens) == r.text
    assert _pieces(LLAMA, r.tokens) == ["▁cat", "▁", "d", "d"]


def test_llama_style_choice_after_a_space_counts_its_tokens_in_running_text():
    plan = plan_template(["the ", Gap(choices=["cat", "dog"])], LLAMA)
    hole = plan.holes[0]
    assert hole.space
    # "cat" on its own is "▁cat" (1 token); " cat" in running text is "▁cat" too, not
    # "▁", "▁cat" (2: the word start of a text encoded alone)
    assert hole.candidates == [1]


def test_a_lowest_edit_after_a_lone_word_start_inside_the_text_keeps_one_space():
    # "2" has no word-start token of its own: "dog ▁ 2 dog"; the model likes every token but
    # "2", so "2" alone is the lowest
    assert _pieces(SP, SP.encode("dog 2 dog")) == ["▁dog", "▁", "<0x32>", "▁dog"]
    model = Prefers("▁dog", SP)
    model.bias[SP.token_to_id("▁")] = 9.0
    r = edit(model, SP, "dog 2 dog", lowest=1, config=SampleConfig(steps=1))
    assert r.spans == [(4, 5)] and [c.old for c in r.changes] == ["2"]
    assert "  " not in r.text  # the lone "▁" kept and the fill's "▁dog": "dog  dog dog"
    assert r.text.startswith("dog ") and r.text.endswith(" dog")
    c = r.changes[0]
    assert r.text[: c.start] == "dog " and r.text[c.end :] == " dog"
