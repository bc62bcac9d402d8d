"""BPE spacing: an unconstrained gap takes in the space before it, and the text keeps it."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from unmask.config import SampleConfig
from unmask.infill import Gap, infill, plan_template, takes_space
from unmask.tokenizer import Tokenizer, byte_tokenizer, train_bpe

BPE = train_bpe(["cat sat. The cat sat on the mat. The dog sat."] * 20, vocab_size=300)
V = BPE.vocab_size


def tid(piece: bytes) -> int:
    return next(i for i in range(V) if BPE.token_bytes(i) == piece)


class Prefers:
    """Every position favours the token ``best``; other space-led tokens next, then the rest.
    Records every canvas it sees."""

    def __init__(self, best: bytes, space_led: float = 4.0, tokenizer=BPE) -> None:
        n = tokenizer.vocab_size
        self.bias = torch.zeros(n)
        for i in range(n):
            b = tokenizer.token_bytes(i)
            if len(b) >= 2 and b.startswith(b" "):
                self.bias[i] = space_led
        self.bias[next(i for i in range(n) if tokenizer.token_bytes(i) == best)] = 10.0
        # Specials never fill a gap, however likely.
        self.bias[[tokenizer.mask_id, tokenizer.pad_id, tokenizer.eos_id]] = 20.0
        self.seen: list[list[int]] = []

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        self.seen.extend(tokens.tolist())
        return self.bias.expand(*tokens.shape, len(self.bias)).clone()  # (B, L, V)


def check_round_trip(r) -> None:
    assert BPE.decode(r.tokens) == r.text
    for g in r.gaps:
        assert r.text[g.start : g.end] == g.text


def test_gap_takes_the_space_and_fills_with_a_space_led_token():
    model = Prefers(b" cat")
    r = infill(model, BPE, "The [MASK] sat", SampleConfig(steps=1))
    assert (
        r.text == "The cat sat" and r.gaps[0].text == "cat" and r.gaps[0].tokens == [tid(b" cat")]
    )
    assert r.tokens == BPE.encode("The") + [tid(b" cat")] + BPE.encode(" sat")
    assert model.seen[0][:2] == BPE.encode("The") + [BPE.mask_id]  # no locked space before the gap
    check_round_trip(r)


def test_space_is_put_back_when_the_fill_has_none():
    r = infill(Prefers(b"cat", space_led=-5.0), BPE, "The [MASK] sat", SampleConfig(steps=1))
    assert r.text == "The cat sat" and r.gaps[0].text == "cat" and r.gaps[0].tokens == [tid(b"cat")]
    assert r.tokens == BPE.encode("The") + BPE.encode(" ") + [tid(b"cat")] + BPE.encode(" sat")
    check_round_trip(r)


def test_escaped_space_stays_locked():
    model = Prefers(b" cat")
    r = infill(model, BPE, r"The\ [MASK] sat", SampleConfig(steps=1))
    # The locked space forces a second space: what the rule avoids.
    assert r.text == "The  cat sat" and r.gaps[0].text == " cat"
    assert model.seen[0][:3] == BPE.encode("The ") + [BPE.mask_id] and len(BPE.encode("The ")) == 2
    check_round_trip(r)
    # The same through the Python API.
    r2 = infill(
        Prefers(b" cat"), BPE, ["The ", Gap(take_space=False), " sat"], SampleConfig(steps=1)
    )
    assert r2.text == "The  cat sat"


def test_only_the_last_space_moves_and_several_gaps_round_trip():
    r = infill(Prefers(b" cat"), BPE, "The  [MASK] on [MASK:2] [MASK].", SampleConfig(steps=4))
    assert r.text == "The  cat on cat cat cat." and [g.text for g in r.gaps] == [
        "cat",
        "cat cat",
        "cat",
    ]
    check_round_trip(r)


def test_variable_length_gap_with_the_space_round_trips():
    r = infill(Prefers(b" cat"), BPE, "The [MASK:1-3] sat", SampleConfig(steps=3))
    assert r.text.startswith("The ") and r.text.endswith(" sat") and r.length_mode == "elbo"
    assert all(c.text.startswith("The c") for c in r.candidates)
    check_round_trip(r)


@pytest.mark.parametrize("gap", [
    Gap(choices=["cat", "dog"]),  # constrained gaps take the space too (issue 16, item 4)
    Gap(regex="[a-z]+"),
    Gap(2, allowed="lowercase"),
    Gap(banned=["x"]),
    Gap(),
])
def test_every_gap_after_a_space_takes_it(gap):
    assert takes_space(gap, "The ", BPE)
    assert not takes_space(gap, "The", BPE)
    assert not takes_space(gap, "The ", byte_tokenizer())  # no space-led tokens: nothing to gain
    assert not takes_space(dataclasses.replace(gap, take_space=False), "The ", BPE)
    plan = plan_template(["The ", gap, " sat"], BPE)
    assert plan.holes[0].space
    assert plan.items[0][1][0] == BPE.encode("The")


# -- constrained gaps after a space: a BPE whose vocabulary has " Rome", " 42", " true" ----------

CITY = train_bpe(["I went to Paris. I went to Rome. We met in Oslo at 12. The cat sat on the mat. "
                  'The dog sat. {"age": 42, "ok": true}'] * 20, vocab_size=330)


def cid(piece: bytes) -> int:
    return next(i for i in range(CITY.vocab_size) if CITY.token_bytes(i) == piece)


def test_the_city_tokenizer_has_space_led_words_only():
    for word in ("Rome", "Paris", "Oslo", "42", "12", "true"):
        assert CITY.encode(" " + word) == [cid(b" " + word.encode())]
    for word in ("Rome", "Paris", "Oslo", "true"):
        assert len(CITY.encode(word)) > 1  # the bare word is no single token


def check_city(r) -> None:
    assert CITY.decode(r.tokens) == r.text
    for g in r.gaps:
        assert r.text[g.start : g.end] == g.text


@pytest.mark.parametrize("gap,text,token", [
    (Gap(1, choices=["Paris", "Rome"]), "Rome", b" Rome"),  # one token: only as " Rome"
    (Gap(1, allowed="digits"), "42", b" 42"),
    (Gap(1, regex=r"\d+"), "12", b" 12"),
    (Gap(1, regex="(Paris|Oslo)"), "Oslo", b" Oslo"),
    (Gap(1, name="city", choices=["Oslo", "Paris"]), "Paris", b" Paris"),
])
def test_constrained_gap_after_a_space_uses_the_space_led_token(gap, text, token):
    model = Prefers(token, tokenizer=CITY)
    r = infill(model, CITY, ["We met at", " ", gap, " today."], SampleConfig(steps=4))
    assert r.gaps[0].text == text and r.gaps[0].tokens == [cid(token)]
    assert r.text == f"We met at {text} today."  # one space: neither doubled nor lost
    assert r.tokens == CITY.encode("We met at") + [cid(token)] + CITY.encode(" today.")
    assert model.seen[0][: len(CITY.encode("We met at")) + 1] == CITY.encode("We met at") + [
        CITY.mask_id
    ]
    check_city(r)


def test_variable_length_choice_after_a_space_renders_one_space():
    r = infill(Prefers(b" Rome", tokenizer=CITY), CITY,
               ["I went to ", Gap(choices=["Paris", "Rome"]), " today."], SampleConfig(steps=4))
    assert r.length_mode == "elbo" and len(r.candidates) > 1
    assert 1 in [c.lengths[0] for c in r.candidates]  # " Rome" as one token was a candidate
    for c in [*r.candidates, r]:
        assert c.text in ("I went to Paris today.", "I went to Rome today.")
    check_city(r)


def test_constrained_gap_without_a_space_before_is_unchanged():
    model = Prefers(b" Rome", tokenizer=CITY)
    r = infill(model, CITY, ["(", Gap(choices=["Paris", "Rome"]), ")"], SampleConfig(steps=4))
    assert r.text in ("(Paris)", "(Rome)") and " " not in r.text
    assert all(CITY.token_bytes(t)[:1] != b" " for t in r.gaps[0].tokens)
    check_city(r)


def test_space_is_put_back_when_a_constrained_fill_has_none():
    model = Prefers(b"Ro", space_led=-20.0, tokenizer=CITY)  # space-led tokens very unlikely
    r = infill(model, CITY, ["I went to ", Gap(2, choices=["Paris", "Rome"]), " today."],
               SampleConfig(steps=2))
    assert r.text == "I went to Rome today." and r.gaps[0].text == "Rome"
    assert r.gaps[0].tokens == [cid(b"Ro"), cid(b"me")]
    assert r.tokens == CITY.encode("I went to") + CITY.encode(" ") + r.gaps[0].tokens + CITY.encode(
        " today.")
    check_city(r)


def test_a_choice_that_starts_with_a_space_keeps_it():
    # " Rome" is a choice of its own: the fill " Rome" is that choice, after the template's space.
    r = infill(Prefers(b" Rome", tokenizer=CITY), CITY, ["to ", Gap(1, choices=[" Rome"]), "."],
               SampleConfig(steps=1))
    assert r.text == "to  Rome." and r.gaps[0].text == " Rome"
    check_city(r)


def test_space_alone_never_fills_a_constrained_gap():
    plan = plan_template(["at ", Gap(1, regex=r"\d*"), "."], CITY)
    automaton = plan.holes[0].automaton
    assert not automaton.accepts(CITY.encode(" "))
    assert automaton.accepts([cid(b" 12")]) and automaton.accepts(CITY.encode("7"))


def test_cli_choices_after_a_space(tmp_path, capsys):
    from unmask.checkpoint import save_checkpoint
    from unmask.cli import main
    from unmask.config import model_preset
    from unmask.model import Transformer

    cfg = model_preset("tiny", vocab_size=CITY.vocab_size, max_seq_len=32, **CITY.special_ids())
    torch.manual_seed(0)
    ckpt = str(save_checkpoint(tmp_path / "run", model=Transformer(cfg).eval(), tokenizer=CITY))
    argv = ["infill", "--model", ckpt, "I went to [MASK:1] today.", "--choices", "1=Paris|Rome",
            "--json", "--no-live"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    city = out["gaps"][0]["text"]
    assert city in ("Paris", "Rome") and out["text"] == f"I went to {city} today."
    assert out["gaps"][0]["tokens"] == [cid(b" " + city.encode())]
    assert CITY.decode(out["tokens"]) == out["text"]


def test_edit_span_after_a_space_uses_space_led_tokens():
    from unmask.infill import edit

    r = edit(
        Prefers(b" dog"),
        BPE,
        "The cat sat on the mat.",
        spans=[(4, 7)],
        config=SampleConfig(steps=1),
    )
    assert r.text == "The dog sat on the mat."
    assert [(c.start, c.end, c.old, c.new) for c in r.changes] == [(4, 7, "cat", "dog")]


# -- forms: a value after ": " takes the space in as well ------------------------------------------


def test_form_values_after_a_space_use_space_led_tokens():
    from unmask.infill import fill_form

    model = Prefers(b" 42", tokenizer=CITY)
    form = {"age": "<int:0..120>", "city": "<choice:Paris|Rome>", "ok": "<bool>"}
    r = fill_form(model, CITY, form, SampleConfig(steps=16))
    assert r.value["age"] == 42 and r.value["city"] in ("Paris", "Rome")
    age, city, ok = r.holes
    assert age.space and ok.space and not city.space  # a string's quote is locked text
    assert age.text == "42" and ok.text in ("true", "false")
    assert r.text.startswith('{"age": 42') and f', "ok": {ok.text}' in r.text.replace("  ", "")
    assert CITY.decode(r.tokens) == r.text
    assert cid(b" 42") in r.tokens
    head = CITY.encode('{"age":')
    assert model.seen[0][: len(head) + 1] == head + [CITY.mask_id]  # no locked space before 42


def test_form_space_is_put_back_when_the_value_has_none():
    from unmask.infill import fill_form

    r = fill_form(Prefers(b"42", space_led=-20.0, tokenizer=CITY), CITY, {"age": "<int:10..99>"},
                  SampleConfig(steps=4))
    assert r.value == {"age": 42} and r.text.startswith('{"age": 42')
    assert CITY.decode(r.tokens) == r.text
    assert r.tokens[: len(CITY.encode('{"age":')) + 2] == CITY.encode('{"age":') + CITY.encode(
        " ") + [cid(b"42")]


def test_unbounded_regex_hole_holds_at_most_16_characters_with_a_bpe():
    from unmask.infill import fill_form

    # Every position wants " went" (5 characters): 17 token positions could hold 80 characters.
    r = fill_form(Prefers(b" went", tokenizer=CITY), CITY, {"s": "<regex:[a-z ]+>"},
                  SampleConfig(steps=17))
    assert 1 <= len(r.value["s"]) <= 16 and "went" in r.value["s"]
    assert CITY.decode(r.tokens) == r.text


def test_choices_are_tried_at_the_lengths_the_tokenizer_gives_them():
    # " Paris" / " Rome" are one token each, "Paris" / "Rome" two: lengths 1 and 2, not 1..7.
    plan = plan_template(["I went to ", Gap(choices=["Paris", "Rome"]), "."], CITY)
    assert plan.holes[0].candidates == [1, 2] and plan.holes[0].feasible[-1] > 2
    plan = plan_template(["(", Gap(choices=["Paris", "Rome"]), ")"], CITY)  # no space to take
    assert plan.holes[0].candidates == [2]
    plan = plan_template(["x ", Gap(choices=["ab", "abc"]), "."], byte_tokenizer())
    assert plan.holes[0].candidates == [2, 3]
    # A length given by the user is searched as before.
    plan = plan_template(["to ", Gap(max_len=3, choices=["Paris", "Rome"]), "."], CITY)
    assert plan.holes[0].candidates == [1, 2, 3]


def test_a_blank_in_a_generate_prompt_takes_the_space_before_it():
    """``unmask.api.encode_prompt``: "the [MASK] sat" leaves the space to the blank, so a
    space-led fill (" cat") reads "the cat sat", not "the  cat sat"."""
    from unmask.api import encode_prompt

    mask = BPE.hf.id_to_token(BPE.mask_id)
    ids = encode_prompt(BPE, f"The {mask} sat on the mat.")
    assert ids == [*BPE.encode("The"), BPE.mask_id, *BPE.encode(" sat on the mat.")]
    filled = [tid(b" cat") if i == BPE.mask_id else i for i in ids]
    assert BPE.decode(filled) == "The cat sat on the mat."
    # a tokenizer without space-led words keeps the text as written
    byte = byte_tokenizer()
    mask = byte.hf.id_to_token(byte.mask_id)
    expected = [*byte.encode("a "), byte.mask_id, *byte.encode("b")]
    assert encode_prompt(byte, f"a {mask}b") == expected


def test_an_edited_word_gets_the_tokens_it_has_in_the_text():
    """A word after a space is re-masked as the tokens it is in the text (" dog", one): its
    bare spelling ("dog") is more tokens, and the extra ones were filled with junk."""
    from unmask.infill import edit

    assert len(BPE.encode("dog")) > len(BPE.encode(" dog")) == 1
    r = edit(Prefers(b" cat"), BPE, "The dog sat on the mat.", spans=[(4, 7)],
             config=SampleConfig(steps=1))  # fmt: skip
    assert r.text == "The cat sat on the mat."


def test_an_edited_span_leaves_the_next_words_space_to_it():
    """A span that ends in a space ("cat ") gives that space back to the next word's
    token (" sat"): re-masked with the span, it came back glued ("dogsat")."""
    from unmask.infill import edit

    r = edit(Prefers(b" dog"), BPE, "The cat sat on the mat.", spans=[(4, 8)],
             config=SampleConfig(steps=1))  # fmt: skip
    assert r.text == "The dog sat on the mat." and r.spans == [(4, 7)]


# -- a gap at offset 0: a virtual space, dropped, and a line break before it (issue 22, 1) ---------

NL = BPE.encode("\n")


def test_a_gap_that_starts_the_text_drops_the_fills_leading_space():
    model = Prefers(b" cat")
    r = infill(model, BPE, "[MASK] sat on the mat.", SampleConfig(steps=1))
    assert r.text == "cat sat on the mat." and r.gaps[0].text == "cat"
    assert (r.gaps[0].start, r.gaps[0].end) == (0, 3) and r.gaps[0].tokens == BPE.encode("cat")
    assert r.tokens == BPE.encode("cat") + BPE.encode(" sat on the mat.")
    check_round_trip(r)
    # the model sees a line break first (START_CONTEXT), then the masks; not part of the output
    assert model.seen[0][: len(NL) + 1] == NL + [BPE.mask_id]
    r = infill(Prefers(b" cat"), BPE, "[MASK:3] on the mat.", SampleConfig(steps=3))
    assert r.text == "cat cat cat on the mat." and r.gaps[0].text == "cat cat cat"
    check_round_trip(r)


def test_a_gap_that_starts_the_text_keeps_a_fill_without_a_space():
    r = infill(Prefers(b"cat", space_led=-5.0), BPE, "[MASK] sat", SampleConfig(steps=1))
    assert r.text == "cat sat" and r.gaps[0].tokens == [tid(b"cat")]
    check_round_trip(r)


def test_a_gap_that_starts_the_text_never_starts_it_with_whitespace():
    # every position wants a space (or a space-led word): the virtual space is dropped, and no
    # second one may follow it
    r = infill(Prefers(b" "), BPE, "[MASK:3] sat", SampleConfig(steps=3))
    assert r.text.endswith(" sat") and r.text[:1].strip() and not r.gaps[0].text[:1].isspace()
    check_round_trip(r)


def test_a_constrained_gap_that_starts_the_text_may_use_the_space_led_token():
    # "Rome" alone is no token, " Rome" is: [MASK:1] at the start was infeasible
    model = Prefers(b" Rome", tokenizer=CITY)
    r = infill(model, CITY, [Gap(1, choices=["Paris", "Rome"]), " is far."], SampleConfig(steps=1))
    assert r.text == "Rome is far." and r.gaps[0].text == "Rome"
    assert r.gaps[0].tokens == CITY.encode("Rome")
    check_city(r)


def test_a_gap_after_a_line_break_drops_the_fills_leading_space():
    # a line starts without a space: "mat.\n cat sat" was kept
    r = infill(Prefers(b" cat"), BPE, "The mat.\n[MASK] sat", SampleConfig(steps=1))
    assert r.text == "The mat.\ncat sat" and r.gaps[0].text == "cat"
    assert r.gaps[0].tokens == BPE.encode("cat")
    check_round_trip(r)
    r = infill(Prefers(b"cat", space_led=-5.0), BPE, "The mat.\n[MASK] sat",
               SampleConfig(steps=1))
    assert r.text == "The mat.\ncat sat" and r.gaps[0].tokens == [tid(b"cat")]
    plan = plan_template("x\n[MASK] y", BPE)  # the line break is given: no start context
    assert [k for k, _ in plan.items] == ["text", "hole", "text"] and plan.holes[0].lead
    assert not plan_template("x\n[MASK] y", byte_tokenizer()).holes[0].lead


def test_a_later_gap_and_a_gap_after_text_get_no_start_context():
    plan = plan_template("x [MASK] y", BPE)
    assert [k for k, _ in plan.items] == ["text", "hole", "text"] and not plan.holes[0].lead
    plan = plan_template("[MASK][MASK] y", BPE)
    assert [k for k, _ in plan.items] == ["context", "hole", "hole", "text"]
    assert plan.holes[0].lead and not plan.holes[1].lead
    # a byte tokenizer joins no spaces to words: nothing changes for it
    plan = plan_template("[MASK] y", byte_tokenizer())
    assert [k for k, _ in plan.items] == ["hole", "text"] and not plan.holes[0].lead


def _sentencepiece(byte_fallback: bool) -> Tokenizer:
    """A SentencePiece-style vocabulary (``▁`` word starts) without a line break: ``"\n"`` is
    ``["▁", "<unk>"]``, or with byte fallback (Llama) ``["▁", "<0x0A>"]``, a stray space."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    from unmask.tokenizer import SPECIAL_TOKENS

    pieces = [*SPECIAL_TOKENS, "<unk>", *(["<0x0A>"] if byte_fallback else []), "▁",
              *"catsmo.", "▁c", "▁ca", "▁cat", "▁s", "▁sa", "▁sat"]
    merges = [("▁", "c"), ("▁c", "a"), ("▁ca", "t"), ("▁", "s"), ("▁s", "a"), ("▁sa", "t")]
    hf = HFTokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=merges,
                                unk_token="<unk>", byte_fallback=byte_fallback))
    hf.pre_tokenizer = pre_tokenizers.Metaspace()
    hf.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    hf.add_special_tokens([*SPECIAL_TOKENS, "<unk>"])
    return Tokenizer(hf, mask_id=0, pad_id=1, eos_id=2, bos_id=3)


@pytest.mark.parametrize("byte_fallback", [False, True])
def test_no_start_context_without_a_line_break_token(byte_fallback):
    """The line break before a gap at offset 0 is used only when the tokenizer has one: a
    SentencePiece vocabulary without it filled the gap after ``<unk>`` (or a stray ``"▁"``)."""
    from unmask.infill.template import start_context

    tok = _sentencepiece(byte_fallback)
    assert len(tok.encode("\n")) == 2 and start_context(tok) == []
    plan = plan_template("[MASK] sat", tok)
    assert [k for k, _ in plan.items] == ["hole", "text"] and plan.holes[0].lead
    model = Prefers(b" cat", tokenizer=tok)
    r = infill(model, tok, "[MASK] sat", SampleConfig(steps=1))
    assert r.text == "cat sat" and model.seen[0][0] == tok.mask_id
    assert start_context(BPE) == NL == [tid(b"\n")]


def test_an_edited_span_at_offset_0_does_not_start_the_text_with_a_space():
    from unmask.infill import edit

    r = edit(Prefers(b" dog"), BPE, "cat sat on the mat.", spans=[(0, 3)],
             config=SampleConfig(steps=1))  # fmt: skip
    assert r.text == "dog sat on the mat."
    assert [(c.start, c.end, c.old, c.new) for c in r.changes] == [(0, 3, "cat", "dog")]
    # a text that starts with a space keeps it: the span's own space is refilled as it is
    r = edit(Prefers(b" dog"), BPE, " cat sat.", spans=[(0, 4)], config=SampleConfig(steps=1))
    assert r.text == " dog sat."


class FirstWordAfterALineBreak:
    """Predicts ``truth`` at every position, but the first token only after a line break (as
    a model trained on chunks of running text does): alone, it predicts " mat" there."""

    def __init__(self, truth: str) -> None:
        self.truth = BPE.encode(truth)

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        B, L = tokens.shape
        logits = torch.zeros(B, L, V)
        for b in range(B):
            off = len(NL) if tokens[b, : len(NL)].tolist() == NL else 0
            if off == 0:
                logits[b, 0, tid(b" mat")] = 8.0
            for i, t in enumerate(self.truth[off == 0 :], start=off + (off == 0)):
                if i < L:
                    logits[b, i, t] = 8.0
        return logits


def test_lowest_scores_the_first_token_after_a_line_break():
    from unmask.infill import edit, token_confidence

    text, typo = "The cat sat on the mat.", "The dog sat on the mat."
    assert len(BPE.encode(text)) == len(BPE.encode(typo))
    model = FirstWordAfterALineBreak(text)
    alone = token_confidence(model, BPE.encode(typo), mask_id=BPE.mask_id)
    ctx = token_confidence(model, BPE.encode(typo), mask_id=BPE.mask_id, context=NL)
    assert alone.shape == ctx.shape == (len(BPE.encode(typo)),)
    assert int(alone.argmin()) == 0 and alone[0] < 0.01 < ctx[0] and int(ctx.argmin()) == 1
    r = edit(model, BPE, typo, lowest=1, config=SampleConfig(steps=2))
    assert r.text == text and r.spans[0][0] > 0  # the typo, not "The"


def test_lowest_leaves_the_closing_full_stop_alone():
    from unmask.infill import edit

    class EndsMidSentence(FirstWordAfterALineBreak):
        def __call__(self, tokens, attention_mask=None):
            logits = super().__call__(tokens, attention_mask)
            logits[:, -1] = 0.0
            logits[:, -1, tid(b" the")] = 8.0  # a chunk goes on after its last token
            return logits

    text = "The cat sat on the mat."
    r = edit(EndsMidSentence(text), BPE, text, lowest=1, config=SampleConfig(steps=1))
    assert r.text == text and r.spans != [(len(text) - 1, len(text))]


def test_demo_lowest_does_not_always_pick_the_first_word():
    from unmask.checkpoint import load
    from unmask.files import asset_path
    from unmask.infill import edit

    if not (asset_path("demo") / "model.safetensors").is_file():
        pytest.skip("demo checkpoint not bundled")
    m = load(asset_path("demo"))
    for text in ("In him was life, and the life was the light of men.",
                 "So Solomon built the house and finished it.",
                 "Therefore say, ‘Behold, I give to him my covenant of peace."):
        r = edit(m.model, m.tokenizer, text, lowest=2, config=SampleConfig(steps=2))
        assert min(s for s, _ in r.spans) > 0, (text, r.spans)
        assert r.text[:1] == text[:1] and r.text.endswith(".")


# -- a gap that took the space: a word follows it, not closing punctuation (issue 22, 2) ----------


def test_a_gap_after_a_space_does_not_start_with_closing_punctuation():
    # the model wants "." everywhere: put back after the space it read "The . sat"
    r = infill(Prefers(b"."), BPE, "The [MASK] sat", SampleConfig(steps=1))
    assert r.text.startswith("The ") and r.text[4] not in " .,", r.text
    check_round_trip(r)
    automaton = plan_template("The [MASK:2] sat", BPE).holes[0].automaton
    for bad in (".", " .", "  ", " \n"):
        assert not automaton.accepts_text(bad + "cat", BPE), bad
    for good in (" cat", "cat", " cat."):
        assert automaton.accepts_text(good, BPE), good
    # constrained gaps are the user's language: a choice may start with punctuation
    plan = plan_template(["The ", Gap(choices=[".", "cat"]), " sat"], BPE)
    assert plan.holes[0].automaton.accepts_text(".", BPE)


def test_demo_fill_after_a_space_is_a_word():
    from unmask.checkpoint import load
    from unmask.files import asset_path

    if not (asset_path("demo") / "model.safetensors").is_file():
        pytest.skip("demo checkpoint not bundled")
    m = load(asset_path("demo"))
    for seed in range(4):  # each wrote "king ’s ..." before
        r = infill(m.model, m.tokenizer, "And the king [MASK:4] went up to Jerusalem.",
                   SampleConfig(temperature=1.0, seed=seed))
        first = r.gaps[0].text[:1]
        assert first.isalnum() or first in "“‘(", r.text
        assert r.text.startswith("And the king ") and "  " not in r.text


# -- <text> holes and plain schema strings: a word, its leading space dropped (issue 22, 3) --------


class OneWord:
    """A JSON value writer: a quote after ":", " cat" after a quote, a quote after " cat",
    spaces elsewhere (by the token before each position, as the canvas holds it)."""

    def __init__(self, word: bytes = b" cat") -> None:
        self.word = tid(word)
        self.quote = tid(b'"')

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        B, L = tokens.shape
        logits = torch.zeros(B, L, V)
        logits[:, :, tid(b" ")] = 2.0
        for b in range(B):
            for i in range(1, L):
                prev = BPE.token_bytes(int(tokens[b, i - 1]))
                if prev.endswith(b":"):
                    logits[b, i, self.quote] = 9.0
                elif prev.endswith(b'"'):
                    logits[b, i, self.word] = 10.0
                elif int(tokens[b, i - 1]) == self.word:
                    logits[b, i, tid(b'"')] = 9.0
        return logits


def test_a_text_hole_drops_the_space_of_a_space_led_word():
    from unmask.infill import fill_form

    r = fill_form(OneWord(), BPE, {"a": "<text:2-8>", "n": "<text>"}, SampleConfig(steps=16))
    assert r.value == {"a": "cat", "n": "cat"}, r.value  # " cat" before
    assert r.text.startswith('{"a": "cat"') and BPE.decode(r.tokens) == r.text
    assert [h.text for h in r.holes] == ['"cat"', '"cat"'] and all(h.inner_space for h in r.holes)


def test_a_text_hole_starts_with_a_letter_or_digit_and_ends_without_a_space():
    from unmask.infill import fill_form

    for best in (b":", b".", b" "):  # ":" and "." were whole values before
        r = fill_form(Prefers(best), BPE, {"a": "<text:1-6>"}, SampleConfig(steps=8))
        v = r.value["a"]
        assert v[:1].isalnum() and v == v.strip(), (best, v)
        assert BPE.decode(r.tokens) == r.text


def test_a_plain_schema_string_is_filled_as_a_text_hole():
    import jsonschema

    from unmask.infill.schema import fill_schema

    schema = {"type": "object", "properties": {"name": {"type": "string", "minLength": 2},
                                               "code": {"type": "string", "pattern": "^ ?[a-z]+$"}},
              "required": ["name", "code"]}
    r = fill_schema(OneWord(), BPE, schema, SampleConfig(steps=32))
    assert r.value["name"] == "cat"  # " cat" before
    assert r.value["code"] in ("cat", " cat")  # a pattern is the user's language: kept
    jsonschema.validate(r.value, schema)
    assert BPE.decode(r.tokens) == r.text
    r = fill_schema(Prefers(b":"), BPE, {"type": "string", "maxLength": 4}, SampleConfig(steps=8))
    assert r.value == "" or r.value[:1].isalnum(), r.value


def test_a_streamed_schema_string_is_written_without_its_leading_space():
    from types import SimpleNamespace

    from unmask.infill.schema import constraint_form
    from unmask.server.routes.guided import AnswerSoFar

    state = SimpleNamespace(tok=BPE, cfg=SimpleNamespace(mask_id=BPE.mask_id))
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6}}}
    form, parse = constraint_form(BPE, json_schema=schema, max_tokens=8)
    so_far = AnswerSoFar(state, form, parse, 0, "guided_json")
    row = [BPE.mask_id] * so_far.pieces[-1][1]
    for start, end, piece in so_far.pieces:
        if isinstance(piece, str):
            row[start:end] = BPE.encode(piece)
        else:
            ids = BPE.encode(' "') + [tid(b" cat")] + BPE.encode('"')
            row[start:end] = ids + BPE.encode(" ") * (end - start - len(ids))
    assert so_far.text(row) == '{"name": "cat"}'


def test_demo_form_text_values_are_words_without_spaces_at_the_ends():
    from unmask.checkpoint import load
    from unmask.files import asset_path
    from unmask.infill import fill_form

    if not (asset_path("demo") / "model.safetensors").is_file():
        pytest.skip("demo checkpoint not bundled")
    m = load(asset_path("demo"))
    form = {"name": "<text:2-8>", "city": "<text>", "tribe": "<text:3-12>", "who": "<text:5>"}
    r = fill_form(m.model, m.tokenizer, form, SampleConfig(steps=16))
    for v in r.value.values():  # " 1", ":", " of", " John" before
        assert v == v.strip() and v[:1].isalnum(), r.value
    assert m.tokenizer.decode(r.tokens) == r.text


# -- [MASK:0-n] after a space: it may stay empty, and then leaves one space ---------------------


@pytest.mark.parametrize(("template", "empty"), [
    ("The [MASK:0-2] sat", "The sat"),
    ("The cat [MASK:0-2]", "The cat"),
    ("The [MASK:0-1] [MASK:0-1] sat", "The sat"),
    ("The [MASK:0-2]sat", "The sat"),
    ("[MASK:0-2] The cat", "The cat"),
    ("[MASK:0-1] [MASK:0-1] The cat", "The cat"),
    ("The [MASK:0-2], sat", "The, sat"),
    ("The cat [MASK:0-2].", "The cat."),
])
def test_a_gap_that_may_be_empty_can_be_empty_after_a_space(template, empty):
    """A gap after a space never had length 0 among its candidates (its language, a word
    after the space, had no empty text), so ``[MASK:0-2]`` silently meant 1-2; glued to the
    word before it, 0 was tried. Left empty it reads as the model read it: one space
    between the words, not two (nor a trailing one)."""
    r = infill(Prefers(b" cat"), BPE, template, SampleConfig(steps=2))
    assert all(0 in c.lengths for c in r.candidates[:1]) and r.candidates, r.candidates
    rows = {c.lengths: c for c in r.candidates}
    nothing = rows[tuple(0 for _ in r.gaps)]
    assert nothing.text == empty and all(g.text == "" for g in nothing.gaps), nothing
    for c in r.candidates:
        assert "  " not in c.text and c.text.strip() == c.text, c.text
        assert all(c.text[g.start : g.end] == g.text for g in c.gaps)
    check_round_trip(r)


def test_closing_characters_are_the_ones_a_fill_after_a_space_cannot_start_with():
    """``CLOSING`` (no space before it, for an empty fill) and ``AFTER_SPACE_TEXT`` (no fill
    after a taken space starts with it) name one set of characters."""
    import re

    from unmask.infill.template import AFTER_SPACE_TEXT, CLOSING

    for ch in CLOSING:
        assert re.fullmatch(AFTER_SPACE_TEXT, " " + ch + "x") is None, ch
    for ch in "a(-«\"1":
        assert re.fullmatch(AFTER_SPACE_TEXT, " " + ch + "x") is not None, ch


class LowAfterALineBreak:
    """Every token likely (logit 5) but ``low`` (-5), so ``--lowest 1`` picks it; ``best``
    (10) fills."""

    def __init__(self, best: bytes, low: bytes = b"The") -> None:
        self.bias = torch.full((V,), 5.0)
        self.bias[tid(low)] = -5.0
        self.bias[tid(best)] = 10.0

    def __call__(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        return self.bias.expand(*tokens.shape, V).clone()  # (B, L, V)


def test_lowest_drops_the_leading_space_of_a_refill_at_the_start_of_any_line():
    """``--lowest`` refilled a line's first token with " dog" and kept the space ("\\n dog"):
    only offset 0 took the virtual space. Now every line start does, as in templates."""
    from unmask.infill import edit

    text = "cat sat.\nThe cat sat."
    r = edit(LowAfterALineBreak(b" dog"), BPE, text, lowest=1, config=SampleConfig(steps=1))
    assert r.text == "cat sat.\ndog cat sat."
    assert [(c.start, c.end, c.old, c.new) for c in r.changes] == [(9, 12, "The", "dog")]
    assert r.spans == [(9, 12)] and text[9:12] == "The"
    # a line that starts with a space of its own keeps it: the refill is taken as written
    r = edit(LowAfterALineBreak(b" dog", low=b" The"), BPE, "cat sat.\n The cat sat.",
             lowest=1, config=SampleConfig(steps=1))
    assert r.text == "cat sat.\n dog cat sat."


def test_the_context_score_leaves_out_the_hidden_line_break_before_a_first_gap():
    """``length_score="context"`` scores the given text only: the line break a gap at offset
    0 is filled after (``START_CONTEXT``) is not the template's, so a template with no given
    text scores 0 for every candidate and the shortest wins (docs/infill.md); it scored the
    line break (the demo: 5.34, 4.91, 5.99 nats for `[MASK:2-4]`, the 3-token fill won)."""
    from unmask.infill import InfillOptions

    r = infill(Prefers(b" cat"), BPE, "[MASK:2-4]", SampleConfig(steps=4),
               options=InfillOptions(length_score="context", elbo_samples=4))
    assert [c.lengths for c in r.candidates] == [(2,), (3,), (4,)]
    assert all(c.context == 0.0 for c in r.candidates)
    assert next(c for c in r.candidates if c.text == r.text).lengths == (2,)  # the shortest
    assert all(c.nll > 0 for c in r.candidates)  # the whole bound still scores every token
    r = infill(Prefers(b" cat"), BPE, "[MASK:1-2] sat", SampleConfig(steps=2),
               options=InfillOptions(length_score="context", elbo_samples=4))
    assert all(c.context > 0 for c in r.candidates)  # " sat" is given text: scored
