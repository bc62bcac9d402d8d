"""Tokenizer: exact round trips (non-ASCII too), special ids, save/load, foreign tokenizer.json."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

from unmask.errors import UserError
from unmask.tokenizer import Tokenizer, byte_tokenizer, load_tokenizer, train_bpe

HARD = [
    "",
    "plain ascii",
    " leading space",
    "trailing space ",
    "multiple   spaces\tand\ttabs",
    "\n\nnewlines\n\n\nblank lines\n",
    "windows\r\nline\r\nends",
    "café naïve résumé",
    "日本語のテキスト",
    "emoji 🎉🧪 and ZWJ 👩‍💻",
    "God’s “curly” quotes — dash",
    "literal [MASK] and [EOS] in text",
    "\x00 control \x7f bytes",
]


def corpus() -> list[str]:
    rng = random.Random(0)
    words = "the a of and diffusion mask token model café 日本 God’s noise text".split()
    return [" ".join(rng.choice(words) for _ in range(60)) + "\n" for _ in range(80)]


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return train_bpe(corpus(), 320)


def test_byte_tokenizer_layout_and_round_trip() -> None:
    tok = byte_tokenizer()
    assert tok.vocab_size == 260
    assert tok.special_ids() == {"mask_id": 0, "pad_id": 1, "eos_id": 2, "bos_id": 3}
    for s in HARD:
        ids = tok.encode(s)
        assert ids == [4 + b for b in s.encode("utf-8")]
        assert tok.decode(ids) == s
        assert b"".join(tok.token_bytes(i) for i in ids) == s.encode("utf-8")
    assert all(tok.token_bytes(i) == b"" for i in range(4))
    assert tok.token_bytes(4 + 0xE6) == b"\xe6"  # part of a multi-byte character


def test_specials_are_text_unless_allowed() -> None:
    tok = byte_tokenizer()
    assert tok.mask_id not in tok.encode("[MASK]")
    assert tok.encode("a[MASK]b", allow_special=True) == [4 + ord("a"), tok.mask_id, 4 + ord("b")]


def test_decode_skip_special() -> None:
    tok = byte_tokenizer()
    ids = [tok.bos_id, *tok.encode("hi "), tok.mask_id, tok.mask_id, tok.eos_id, tok.pad_id]
    assert tok.decode(ids) == "hi "
    assert tok.decode(ids, skip_special=False) == "[BOS]hi [MASK][MASK][EOS][PAD]"


def test_bpe_round_trip_and_layout(bpe: Tokenizer) -> None:
    assert bpe.special_ids() == {"mask_id": 0, "pad_id": 1, "eos_id": 2, "bos_id": 3}
    assert 260 < bpe.vocab_size <= 320
    merged = bpe.encode("the diffusion model")
    assert len(merged) < len("the diffusion model")  # merges were learned
    for s in HARD + corpus()[:3]:
        ids = bpe.encode(s)
        assert all(i >= 4 for i in ids)
        assert bpe.decode(ids) == s
        assert b"".join(bpe.token_bytes(i) for i in ids) == s.encode("utf-8")
    lengths = bpe.token_byte_lengths()
    assert lengths.shape == (bpe.vocab_size,) and lengths[:4].tolist() == [0, 0, 0, 0]
    assert bpe.encode_batch(["a b", "日本"]) == [bpe.encode("a b"), bpe.encode("日本")]


def test_bpe_vocab_too_small() -> None:
    with pytest.raises(UserError, match="too small"):
        train_bpe(["abc"], 100)


def test_save_load_round_trip(tmp_path: Path, bpe: Tokenizer) -> None:
    path = bpe.save(tmp_path / "tok")
    assert path == tmp_path / "tok" / "tokenizer.json"
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokenizer.json"]  # no temp left
    for loaded in (load_tokenizer(path), load_tokenizer(path.parent)):
        assert loaded.special_ids() == bpe.special_ids()
        assert loaded.vocab_size == bpe.vocab_size
        for s in HARD:
            assert loaded.encode(s) == bpe.encode(s)
            assert loaded.decode(loaded.encode(s)) == s
    bpe.save(tmp_path / "tok")  # overwriting is fine
    assert load_tokenizer(path).vocab_size == bpe.vocab_size


def _foreign_gpt2_like(tmp_path: Path) -> Path:
    """A byte-level BPE tokenizer.json with only <|endoftext|>, like GPT-2's."""
    from unmask.tokenizer import bytes_to_unicode

    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    vocab["Ġt"] = 256
    vocab["<|endoftext|>"] = 257
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "t")]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens(["<|endoftext|>"])
    path = tmp_path / "gpt2" / "tokenizer.json"
    path.parent.mkdir()
    hf.save(str(path))
    return path


def test_foreign_tokenizer_gets_mask_appended(tmp_path: Path) -> None:
    tok = load_tokenizer(_foreign_gpt2_like(tmp_path))
    assert tok.eos_id == tok.pad_id == tok.bos_id == 257
    assert tok.mask_id == 258 and tok.vocab_size == 259
    assert tok.id_to_token(tok.mask_id) == "[MASK]"
    s = "God’s tea time 日本"
    ids = tok.encode(s)
    assert 256 in ids and tok.decode(ids) == s
    assert tok.token_bytes(256) == b" t"
    assert tok.decode([*ids, tok.mask_id]) == s
    assert tok.decode([tok.mask_id], skip_special=False) == "[MASK]"
    # Saving keeps the appended mask, so reloading gives the same ids.
    again = load_tokenizer(tok.save(tmp_path / "saved"))
    assert again.special_ids() == tok.special_ids() and again.vocab_size == 259


def test_foreign_tokenizer_found_by_name_and_overrides(tmp_path: Path) -> None:
    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2, "<mask>": 3, "<unk>": 4, "hello": 5, "world": 6}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    tok = load_tokenizer(path)
    assert tok.special_ids() == {"mask_id": 3, "pad_id": 2, "eos_id": 1, "bos_id": 0}
    assert tok.vocab_size == 7
    assert tok.encode("hello world") == [5, 6]
    assert tok.decode([0, 5, 3, 6, 1, 2]) == "hello world"  # specials skipped
    tok2 = load_tokenizer(path, mask_token="<unk>", eos_token="<pad>")
    assert tok2.mask_id == 4 and tok2.eos_id == 2
    with pytest.raises(UserError, match="not in the tokenizer"):
        load_tokenizer(path, mask_token="<|nope|>")
    # an ordinary character as a special token would vanish from every text that holds it
    gpt2 = train_bpe(["Hi there! Hi again!"] * 4, 270)
    gpt2.save(tmp_path / "bpe.json")
    with pytest.raises(UserError, match="pad token '!' is an ordinary character"):
        load_tokenizer(tmp_path / "bpe.json", pad_token="!")


def test_foreign_tokenizer_without_any_specials(tmp_path: Path) -> None:
    hf = HFTokenizer(models.WordLevel({"a": 0, "b": 1, "?": 2}, unk_token="?"))
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    tok = load_tokenizer(path)
    assert (tok.mask_id, tok.pad_id, tok.eos_id) == (3, 4, 5)
    assert tok.bos_id == tok.eos_id and tok.vocab_size == 6


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such tokenizer file") as e:
        load_tokenizer(tmp_path / "missing.json")
    assert "missing.json" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="no such tokenizer file"):
        load_tokenizer(tmp_path)  # a directory without tokenizer.json
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="bad.json: not a valid tokenizer.json") as e:
        load_tokenizer(bad)
    assert "\n" not in str(e.value)
    (tmp_path / "wrong.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(UserError, match="wrong.json"):
        load_tokenizer(tmp_path / "wrong.json")


def test_first_difference_names_the_first_id_that_differs():
    """Equal tokenizers, or one with tokens appended, agree (None); another BPE differs at
    the first id whose token is not the same."""
    from unmask.tokenizer import byte_tokenizer, first_difference, train_bpe, with_fim_tokens

    base = byte_tokenizer()
    assert first_difference(base, base) is None
    assert first_difference(base, with_fim_tokens(base)) is None
    other = train_bpe(["alpha beta gamma delta\n"] * 100, vocab_size=300)
    i = first_difference(base, other)
    assert i is not None and base.id_to_token(i) != other.id_to_token(i)
    assert all(base.id_to_token(j) == other.id_to_token(j) for j in range(i))


def test_bpe_training_feeds_long_runs_without_whitespace_in_pieces() -> None:
    """A run of more than TRAIN_RUN_CHARS non-space characters reaches the trainer in pieces
    of at most that many (its merge is quadratic in a word's length: a 1 MB one-line ACGT
    file took 22.6 s to train, 3.1 s so); shorter text is passed through unchanged, so
    tokenizers of ordinary text are the same; the result round-trips as ever."""
    import random

    from unmask.tokenizer import TRAIN_RUN_CHARS, _short_runs

    n = TRAIN_RUN_CHARS
    rng = random.Random(0)
    run = "".join(rng.choices("ACGT", k=2 * n + 5))
    text = f"head {run} tail\n"
    pieces = list(_short_runs([text, "plain text\n"]))
    assert "".join(pieces) == text + "plain text\n"
    assert pieces[-1] == "plain text\n" and pieces[0] == "head "
    assert [len(p) for p in pieces[1:4]] == [n, n, 5] and pieces[4] == " tail\n"
    assert max(len(w) for p in pieces for w in p.split()) <= n
    tok = train_bpe([text] * 4, 300)
    assert tok.decode(tok.encode(text)) == text
