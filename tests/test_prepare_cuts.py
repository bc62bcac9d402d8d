"""Where ``prepare`` cuts long documents into pieces for the tokenizer: in linear time, at
whitespace even past the piece size, never where an added token could lose its match; and
which ``.json`` files it reads as JSON Lines."""

from __future__ import annotations

import io
import json
import random
import re

import pytest
from tokenizers import AddedToken
from tokenizers import Tokenizer as HFTokenizer

from unmask import data
from unmask.errors import UserError
from unmask.tokenizer import load_tokenizer

_OLD_WORD_END = re.compile(
    r"\S(?=[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])"
)


def _old_split(text, size):
    """The pieces as the code before this change cut them (copying the rest at every cut)."""
    while len(text) > size:
        c = text.rfind(" ", 1, size)
        while c > 0 and text[c - 1].isspace():
            c = text.rfind(" ", 1, c)
        if c <= 0:
            ends = [m.end() for m in _OLD_WORD_END.finditer(text, 0, size)]
            c = ends[-1] if ends else size
        yield text[:c]
        text = text[c:]
    yield text


def _random_text(rng, n, longest_word=20, gaps=(" ", "  ", "\n", "\n\n", " \n ", "\t", "\r\n",
                                                "\u3000", "\x1c")):
    return "".join(
        "".join(rng.choice("abcé日本x-") for _ in range(rng.randint(1, longest_word)))
        + rng.choice(gaps) for _ in range(n)
    )


def _spy_cut(monkeypatch):
    """The distinct strings ``_cut`` is handed (kept alive, so ``id`` tells them apart)."""
    seen = []
    cut = data._cut

    def spy(text, *args):
        seen.append(text)
        return cut(text, *args)

    monkeypatch.setattr(data, "_cut", spy)
    return lambda: {id(t): len(t) for t in seen}


def test_pieces_are_those_of_before_and_the_rest_of_the_text_is_not_copied_at_every_cut(
    tmp_path, monkeypatch
):
    rng = random.Random(0)
    for trial in range(30):
        # whitespace within every piece's length (U+001C is none to the tokenizers' regex)
        text = _random_text(rng, rng.randint(0, 400), gaps=(" ", "  ", "\n", "\n\n", " \n ",
                                                            "\t", "\r\n", "\u3000"))
        size = rng.choice([45, 57, 100, 333])
        assert list(data._split_text(text, size)) == list(_old_split(text, size)), trial
    # one document, its text handed to _cut once (it was copied, less a piece, at every cut:
    # quadratic, 66 s of CPU for a 40 MB JSONL record in 4K pieces against 17 s in 64K ones)
    text = _random_text(rng, 3000)
    distinct = _spy_cut(monkeypatch)
    pieces = list(data._split_text(text, 50))
    assert len(pieces) > 500 and "".join(pieces) == text
    assert list(distinct().values()) == [len(text)]
    # the same for the buffer of plain text and of --line-docs, read 64K bytes at a time:
    # each read's buffer is cut without copying it again
    monkeypatch.setattr(data, "_CHUNK_CHARS", 50)
    line = text.replace("\n", " ").replace("\r", " ")
    (tmp_path / "doc.txt").write_text(line + "\n", encoding="utf-8")
    for line_docs in (False, True):
        distinct = _spy_cut(monkeypatch)
        data.prepare([tmp_path / "doc.txt"], tmp_path / f"o-{line_docs}", tokenizer="byte",
                     val_fraction=0, line_docs=line_docs, progress=False)
        assert sum(distinct().values()) < 4 * len(line), line_docs


def _stream(fn, text, chunk):
    class Src:  # what _plain_pieces and _line_pieces read from
        path = "x.txt"

        def __init__(self):
            self.f = io.BytesIO(text.encode("utf-8"))

        def readline(self, limit=-1):
            return self.f.readline(limit)

    return list(fn(Src(), "strict", chunk))


@pytest.mark.parametrize("fn", [data._plain_pieces, data._line_pieces])
def test_streamed_pieces_are_those_of_the_whole_text(fn, monkeypatch):
    monkeypatch.setattr(data, "_READ_BYTES", 97)
    monkeypatch.setattr(data, "_CHUNK_CHARS_OTHER", 300)  # how far a cut looks ahead
    rng = random.Random(1)
    for trial in range(20):
        text = _random_text(rng, 300, longest_word=rng.choice([20, 80, 400]))
        if fn is data._line_pieces:
            text = re.sub(r"[\r\n]", " ", text) + "\n"
        got = _stream(fn, text, 50)
        want = list(data._split_text(text.rstrip("\n") if fn is data._line_pieces else text, 50))
        assert [p for p, _ in got] == want, trial
        assert [end for _, end in got] == [False] * (len(want) - 1) + [True]


def test_a_cut_looks_past_the_piece_size_for_whitespace_before_cutting_hard(
    tmp_path, monkeypatch
):
    rng = random.Random(2)
    chars = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着"
    paras = ["".join(rng.choice(chars) for _ in range(300)) for _ in range(20)]
    text = "\n".join(paras)
    pieces = list(data._split_text(text, 97))
    assert "".join(pieces) == text and all(p.startswith("\n") for p in pieces[1:])
    assert [len(p) for p in pieces] == [300] + [301] * 19  # a paragraph each, none cut
    # no whitespace within reach (64K characters, the pieces of other tokenizers): a hard cut
    blob = "x" * 150_000 + " tail"
    assert [len(p) for p in data._split_text(blob, 4096)] == [65536, 65536, 150_000 - 131072, 5]
    assert list(data._split_text("x" * 5000, 4096)) == ["x" * 5000]  # one piece, no "" after
    # CJK paragraphs longer than a piece: the tokens of the whole text (a hard cut every
    # 4K characters changed them)
    tok = data.train_bpe([text], 600)
    assert data._cuts_exactly(tok)
    tok.save(tmp_path / "tok")
    (tmp_path / "zh.txt").write_text(text, encoding="utf-8")
    monkeypatch.setattr(data, "_CHUNK_CHARS", 97)
    for line_docs in (False, True):
        out = tmp_path / f"out-{line_docs}"
        data.prepare([tmp_path / "zh.txt"], out, tokenizer=str(tmp_path / "tok"),
                     val_fraction=0, line_docs=line_docs, progress=False)
        ds = data.TokenDataset(out, "train")
        docs = paras if line_docs else [text]
        want = [i for d in docs for i in [*tok.encode(d), tok.eos_id]]
        assert ds.read(0, ds.n_tokens).tolist() == want, line_docs


def _with_added(tmp_path, tok, name, added):
    hf = HFTokenizer.from_str(tok.hf.to_str())
    hf.add_tokens([added])
    hf.save(str(tmp_path / f"{name}.json"))
    return load_tokenizer(tmp_path / f"{name}.json")


def test_a_tokenizer_with_added_tokens_that_take_in_whitespace_does_not_get_short_pieces(
    tmp_path,
):
    tok = data.train_bpe(["some words to call on, and more words " * 50], 300)
    assert data._cuts_exactly(_with_added(tmp_path, tok, "plain", AddedToken("<|tool|>")))
    for name, added in (("rstrip", AddedToken("<|tool|>", rstrip=True)),
                        ("lstrip", AddedToken("<|tool|>", lstrip=True)),
                        ("space", AddedToken("call me"))):
        assert not data._cuts_exactly(_with_added(tmp_path, tok, name, added)), name
    # cut before " call" (4K characters in), the rstrip token lost the space it takes in
    rstrip = tmp_path / "rstrip.json"
    text = "a" * 4088 + "<|tool|>" + " call me"
    (tmp_path / "doc.txt").write_text(text)
    data.prepare([tmp_path / "doc.txt"], tmp_path / "out", tokenizer=str(rstrip),
                 val_fraction=0, progress=False)
    ds = data.TokenDataset(tmp_path / "out", "train")
    tok = load_tokenizer(rstrip)
    assert ds.read(0, ds.n_tokens).tolist() == [*tok.encode(text), tok.eos_id]


def test_chat_data_in_a_json_file_points_at_sft_and_other_objects_name_their_fields(tmp_path):
    kw = {"tokenizer": "byte", "val_fraction": 0, "progress": False}
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    for name, rec in (("chat.json", chat), ("pairs.json", {"prompt": "a", "response": "b"})):
        (tmp_path / name).write_text((json.dumps(rec) + "\n") * 3)  # datasets' to_json
        with pytest.raises(UserError, match=rf"{name}:1: no field 'text' .*--objective sft"):
            data.prepare([tmp_path / name], tmp_path / f"o-{name}", **kw)
    # records without the text field: text, with a note naming their fields (not jq)
    (tmp_path / "recs.json").write_text('{"body": "one", "id": 1}\n{"body": "two", "id": 2}\n')
    info = data.prepare([tmp_path / "recs.json"], tmp_path / "o-recs", **kw)
    assert info.n_documents == 1 and "fields: body, id" in info.notes[0]
    assert "--text-field" in info.notes[0] and "jq" not in info.notes[0]
    # a one-line config whose "text" is no string: plain text with the note, as before
    (tmp_path / "cfg.json").write_text('{"text": {"nested": 1}, "config": 2}')
    info = data.prepare([tmp_path / "cfg.json"], tmp_path / "o-cfg", **kw)
    assert info.n_documents == 1 and "fields: text, config" in info.notes[0]
    ds = data.TokenDataset(tmp_path / "o-cfg", "train")
    assert ds.tokenizer().decode(ds.read(0, ds.n_tokens).tolist()) == (
        tmp_path / "cfg.json").read_text()
    # JSON Lines whose first record's text is null: read as JSON Lines, refused with its line
    # (it was trained on as JSON syntax, with a note saying the field was missing)
    (tmp_path / "null.json").write_text('{"text": null}\n{"text": "hello world"}\n')
    with pytest.raises(UserError, match=r"null.json:1: field 'text' is null, not a string"):
        data.prepare([tmp_path / "null.json"], tmp_path / "o-null", **kw)
    # a JSON array: the jq note
    (tmp_path / "arr.json").write_text(json.dumps([{"text": "a"}, {"text": "b"}], indent=1))
    info = data.prepare([tmp_path / "arr.json"], tmp_path / "o-arr", **kw)
    assert "jq -c" in info.notes[0]


def test_a_run_of_whitespace_longer_than_a_piece_is_not_cut_inside():
    # blank lines or indentation longer than a piece: the window holds nothing but
    # whitespace, and the cut goes on to the end of the next word (a hard cut, or a cut at
    # the next whitespace, split the run, and the tokens of a run of spaces or newlines)
    text = "word" + "\n" * 200 + "more text" + " " * 300 + "\tend\n" + "\r\n" * 120 + "x"
    tok = data.train_bpe([text * 3], 400)
    assert data._cuts_exactly(tok)
    for size in (1, 7, 50, 97):
        pieces = list(data._split_text(text, size))
        assert "".join(pieces) == text and len(pieces) > 3
        assert all(not p[-1].isspace() for p in pieces[:-1]), size  # each cut ends a word
        assert [i for p in pieces for i in tok.encode(p)] == tok.encode(text), size
