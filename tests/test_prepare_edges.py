"""``unmask prepare`` on a corpus folder that already holds a prepared dataset."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from unmask import data
from unmask.cli import main
from unmask.errors import UserError
from unmask.tokenizer import byte_tokenizer, load_tokenizer


def test_a_dataset_prepared_inside_the_corpus_folder_is_not_read_as_text(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"f{i}.txt").write_text(f"document number {i} with a few words\n")
    args = ["prepare", str(corpus), "--tokenizer", "byte", "--val-fraction", "0"]
    assert main([*args, "-o", str(corpus / "prep")]) == 0
    first = json.loads((corpus / "prep" / "index.json").read_text())
    capsys.readouterr()
    # a second dataset of the same corpus (another vocabulary, say): its shards were read as
    # text ("train-00000.bin: UTF-16LE text ...") and the run refused
    assert main([*args, "-o", str(corpus / "prep2")]) == 0, capsys.readouterr().err
    second = json.loads((corpus / "prep2" / "index.json").read_text())
    assert second["splits"]["train"]["n_tokens"] == first["splits"]["train"]["n_tokens"]
    assert second["n_documents"] == 3
    # a dataset given as the input is told apart from text in one line
    assert main(["prepare", str(corpus / "prep"), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "a dataset written by unmask prepare (token ids), not text" in err
    assert err.count("\n") == 1


def _foreign(tmp_path, name, model):
    hf = HFTokenizer(model)
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / f"{name}.json"
    hf.save(str(path))
    return path


def test_a_foreign_tokenizer_that_cannot_encode_the_text_is_a_one_line_error(tmp_path, capsys):
    text = tmp_path / "a.txt"
    text.write_text("hello world, some text\n")
    # no unknown token for words outside the vocabulary: HF raises a bare Exception
    no_unk = _foreign(tmp_path, "no_unk", models.WordLevel({"hello": 0}, unk_token="[UNK]"))
    tok = load_tokenizer(no_unk)
    assert tok.encode("hello") == [0]
    for encode in (lambda: tok.encode("hello world"), lambda: tok.encode_batch(["world"])):
        with pytest.raises(UserError, match="the tokenizer cannot encode this text"):
            encode()
    with pytest.raises(TypeError):  # a caller's bug is not turned into a user error
        tok.encode(None)  # type: ignore[arg-type]
    args = ["--val-fraction", "0", "--no-progress"]
    assert main(["prepare", str(text), "-o", str(tmp_path / "d"), "--tokenizer", str(no_unk),
                 *args]) == 2
    err = capsys.readouterr().err
    assert "cannot encode this text (WordLevel error" in err and err.count("\n") == 1
    # a model with no pieces at all for the text: a dataset of nothing but EOS was written
    empty = _foreign(tmp_path, "empty", models.BPE())
    assert main(["prepare", str(text), "-o", str(tmp_path / "e"), "--tokenizer", str(empty),
                 *args]) == 2
    err = capsys.readouterr().err
    assert "turns the text of the inputs into no tokens at all" in err
    assert not (tmp_path / "e").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_long_documents_fed_in_pieces_encode_to_the_tokens_of_the_whole_text(
    tmp_path, monkeypatch
):
    rng = np.random.default_rng(0)
    words = ["the", "word", "x1", "(a)", "café", "日本", "--", "it's"]
    gaps = [" ", "  ", "    ", "\n", "\n\n", "\n\n\n", " \n", "\n    ", "\t", "\r\n\r\n"]
    text = "".join(str(rng.choice(words)) + str(rng.choice(gaps)) for _ in range(3000))
    tok = data.train_bpe([text], 400)
    whole = tok.encode(text)
    for size in (40, 97, 300):  # cuts at every kind of whitespace run
        pieces = list(data._split_text(text, size))
        assert "".join(pieces) == text and max(map(len, pieces)) <= size
        assert [i for p in pieces for i in tok.encode(p)] == whole, size  # differed before
    # the same in prepare, plain text and --line-docs (one long line)
    tok.save(tmp_path / "tok")
    (tmp_path / "doc.txt").write_text(text, encoding="utf-8", newline="")
    line = text.replace("\n", " ").replace("\r", " ")
    (tmp_path / "line.txt").write_text(line + "\n", encoding="utf-8")
    monkeypatch.setattr(data, "_CHUNK_CHARS", 97)
    for name, want, line_docs in (("doc.txt", whole, False), ("line.txt", tok.encode(line), True)):
        out = tmp_path / f"out-{name}"
        data.prepare([tmp_path / name], out, tokenizer=str(tmp_path / "tok"), val_fraction=0,
                     line_docs=line_docs, progress=False)
        ds = data.TokenDataset(out, "train")
        assert ds.read(0, ds.n_tokens).tolist() == [*want, tok.eos_id], name


def test_a_tokenizer_that_is_not_there_says_what_tokenizer_takes(tmp_path, capsys):
    text = tmp_path / "a.txt"
    text.write_text("some text\n")
    args = ["prepare", str(text), "-o", str(tmp_path / "d"), "--val-fraction", "0"]
    assert main([*args, "--tokenizer", "gpt2"]) == 2  # a Hub name, or BPE for bpe
    err = capsys.readouterr().err
    assert "--tokenizer gpt2: no such file or folder; give bpe, byte, or the path" in err
    assert err.count("\n") == 1
    # a model folder in the older formats: how to get a tokenizer.json out of it
    old = tmp_path / "gpt2-old"
    old.mkdir()
    (old / "vocab.json").write_text("{}")
    (old / "merges.txt").write_text("")
    with pytest.raises(UserError, match=r"holds vocab.json and merges.txt .*ByteLevelBPE"):
        load_tokenizer(old)
    (tmp_path / "t5").mkdir()
    (tmp_path / "t5" / "spiece.model").write_bytes(b"\x00")
    with pytest.raises(UserError, match="holds a SentencePiece model: save it as tokenizer"):
        load_tokenizer(tmp_path / "t5" / "tokenizer.json")
    with pytest.raises(UserError, match=r"no such tokenizer file$"):
        load_tokenizer(tmp_path / "missing")


def test_prepare_takes_one_path_as_well_as_a_list(tmp_path):
    (tmp_path / "a.txt").write_text("one document of text\n")
    kw = {"tokenizer": "byte", "val_fraction": 0, "progress": False}
    want = data.prepare([tmp_path / "a.txt"], tmp_path / "list", **kw).n_tokens
    # a str was taken character by character ("/: ..." or "a: no such file or directory"),
    # a Path was not iterable (TypeError)
    for one in (str(tmp_path / "a.txt"), tmp_path / "a.txt"):
        out = tmp_path / f"one-{type(one).__name__}"
        assert data.prepare(one, out, **kw).n_tokens == want
        assert json.loads((out / "index.json").read_text())["sources"] == [str(tmp_path / "a.txt")]


def test_json_lines_in_a_json_file_are_documents_and_other_json_gets_a_note(tmp_path):
    recs = [{"id": i, "text": f"record {i}: some words, café 日本"} for i in range(30)]
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
    (tmp_path / "a.jsonl").write_text(lines, encoding="utf-8")
    (tmp_path / "hf.json").write_text("\ufeff" + lines, encoding="utf-8")  # datasets' to_json
    with gzip.open(tmp_path / "b.ndjson.gz", "wt", encoding="utf-8") as f:
        f.write(lines)
    kw = {"tokenizer": "byte", "val_fraction": 0, "progress": False}
    want = data.prepare([tmp_path / "a.jsonl"], tmp_path / "want", **kw)
    stream = data.TokenDataset(tmp_path / "want", "train").read(0, want.n_tokens["train"])
    for name in ("hf.json", "b.ndjson.gz"):  # each was one document of JSON syntax
        info = data.prepare([tmp_path / name], tmp_path / f"o-{name}", **kw)
        assert info.n_documents == 30 and info.notes == (), name
        got = data.TokenDataset(tmp_path / f"o-{name}", "train")
        assert got.read(0, got.n_tokens).tolist() == stream.tolist()
    # a JSON array of records, a config file, records without the field: text, with a note
    (tmp_path / "arr.json").write_text(json.dumps(recs, indent=2))
    (tmp_path / "cfg.json").write_text('{"name": "x"}\n')
    info = data.prepare([tmp_path / "arr.json", tmp_path / "cfg.json"], tmp_path / "o", **kw)
    assert info.n_documents == 2
    assert len(info.notes) == 1 and "arr.json and 1 more .json files read as plain" in info.notes[0]
    info = data.prepare([tmp_path / "hf.json"], tmp_path / "o2", text_field="body", **kw)
    assert info.n_documents == 1 and "no field" not in info.notes[0]


def test_chat_data_given_to_prepare_points_at_sft(tmp_path, capsys):
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    for name, rec in (("chat.jsonl", chat), ("pairs.jsonl", {"prompt": "a", "response": "b"})):
        (tmp_path / name).write_text(json.dumps(rec) + "\n")
        assert main(["prepare", str(tmp_path / name), "-o", str(tmp_path / "d")]) == 2
        err = capsys.readouterr().err
        assert f"{name}:1: no field 'text'" in err and "--objective sft" in err, err
        assert "--text-field" not in err and err.count("\n") == 1  # no field to choose


def test_the_tokenizer_gets_short_pieces_and_their_size_does_not_change_the_data(
    tmp_path, monkeypatch
):
    rng = np.random.default_rng(1)
    words = ["alpha", "beta", "gamma", "δέλτα", "x=1;", "\n", "\n\n", "  "]
    text = " ".join(str(w) for w in rng.choice(words, 12000))
    (tmp_path / "doc.txt").write_text(text, encoding="utf-8")
    (tmp_path / "line.txt").write_text(text.replace("\n", " ") + "\n", encoding="utf-8")
    seen = []
    encode_batch = data.Tokenizer.encode_batch

    def spy(self, texts, **kw):
        seen.extend(map(len, texts))
        return encode_batch(self, texts, **kw)

    monkeypatch.setattr(data.Tokenizer, "encode_batch", spy)
    kw = {"vocab_size": 400, "val_fraction": 0, "progress": False}
    for line_docs in (False, True):
        name = "line.txt" if line_docs else "doc.txt"
        seen.clear()
        data.prepare([tmp_path / name], tmp_path / f"short-{line_docs}", line_docs=line_docs,
                     **kw)
        assert max(seen) <= 4096 and len(seen) > 1  # 64K-character pieces cost more CPU
        with monkeypatch.context() as m:  # pieces as long as before: the same dataset
            m.setattr(data, "_CHUNK_CHARS", 1 << 16)
            data.prepare([tmp_path / name], tmp_path / f"long-{line_docs}", line_docs=line_docs,
                         **kw)
        for f in ("tokenizer.json", "train-00000.bin"):
            a = (tmp_path / f"short-{line_docs}" / f).read_bytes()
            assert a == (tmp_path / f"long-{line_docs}" / f).read_bytes(), (f, line_docs)
    # a tokenizer whose tokens a cut may change (here: no byte-level pre-tokenization) keeps
    # the long pieces, few cuts
    vocab = {w: i for i, w in enumerate(["[UNK]", "alpha", "beta", "gamma", "δέλτα", "x=1;"])}
    other = _foreign(tmp_path, "wl", models.WordLevel(vocab, unk_token="[UNK]"))
    seen.clear()
    data.prepare([tmp_path / "doc.txt"], tmp_path / "other", tokenizer=str(other),
                 val_fraction=0, progress=False)
    assert 4096 < max(seen) <= 1 << 16


def test_a_tokenizer_saved_with_truncation_or_padding_on_encodes_whole_texts(tmp_path):
    hf = HFTokenizer.from_str(byte_tokenizer().hf.to_str())
    hf.enable_truncation(max_length=8)  # as saved by a model's training script
    hf.enable_padding(length=12, pad_id=1, pad_token="[PAD]")
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path)
    text = "a text longer than eight bytes"
    want = [4 + b for b in text.encode()]
    assert tok.encode(text) == want  # was cut to 8 ids and padded with 4 pad ids
    assert tok.encode_batch(["hi", text]) == [[4 + ord("h"), 4 + ord("i")], want]
    (tmp_path / "a.txt").write_text(text)
    info = data.prepare([tmp_path / "a.txt"], tmp_path / "d", tokenizer=str(tmp_path),
                        val_fraction=0, progress=False)
    assert info.n_tokens["train"] == len(want) + 1 and info.notes == ()
    saved = json.loads((tmp_path / "d" / "tokenizer.json").read_text())
    assert saved["truncation"] is None and saved["padding"] is None


def test_an_output_below_a_file_is_refused_up_front_naming_the_file(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("some text\n")
    (tmp_path / "notes").write_text("a file, not a folder\n")
    for out in ("notes/data", "notes/x/data"):  # said "File exists: .../notes"
        args = ["prepare", str(tmp_path / "a.txt"), "-o", str(tmp_path / out)]
        assert main([*args, "--tokenizer", "byte", "--val-fraction", "0"]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / 'notes'} is a file, not a folder" in err and err.count("\n") == 1
    assert (tmp_path / "notes").read_text() == "a file, not a folder\n"


def test_a_text_field_with_no_jsonl_input_gets_a_note(tmp_path):
    (tmp_path / "a.txt").write_text("plain text, no JSON\n")
    (tmp_path / "b.jsonl").write_text('{"body": "a record"}\n')
    kw = {"tokenizer": "byte", "val_fraction": 0, "progress": False, "text_field": "body"}
    info = data.prepare([tmp_path / "a.txt"], tmp_path / "o1", **kw)
    assert info.notes == ("--text-field body (text_field= in Python) was not used: no input is "
                          "JSONL (.jsonl, .ndjson, or JSON Lines in a .json file)",)
    info = data.prepare([tmp_path / "a.txt", tmp_path / "b.jsonl"], tmp_path / "o2", **kw)
    assert info.notes == () and info.n_documents == 2


def test_links_to_folders_inside_a_corpus_folder_are_followed_once(tmp_path):
    corpus, other = tmp_path / "corpus", tmp_path / "other"
    (corpus / "sub").mkdir(parents=True)
    other.mkdir()
    (corpus / "a.txt").write_text("text a\n")
    (corpus / "sub" / "b.txt").write_text("text b\n")
    (other / "c.txt").write_text("text c on another disk\n")
    (corpus / "more").symlink_to(other, target_is_directory=True)  # was skipped silently
    (corpus / "sub" / "up").symlink_to(corpus, target_is_directory=True)  # a loop
    (corpus / "latest").symlink_to(corpus / "sub", target_is_directory=True)  # sub, twice
    got = [p.relative_to(corpus).as_posix() for p in data.resolve_inputs([corpus])]
    assert got == ["a.txt", "more/c.txt", "sub/b.txt"]
    info = data.prepare([corpus], tmp_path / "d", tokenizer="byte", val_fraction=0,
                        progress=False)
    assert info.n_documents == 3
