"""Corpus → shards: inputs, document boundaries, the split, byte counts, reading back, errors."""

from __future__ import annotations

import gzip
import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from unmask.cli import main
from unmask.data import MIN_VAL_TOKENS, SPLIT_BLOCK, TokenDataset, prepare, resolve_inputs
from unmask.errors import UserError
from unmask.tokenizer import byte_tokenizer

WORDS = "the a of and mask token model café 日本語 God’s noise 🎉 text denoise step".split()


def sentences(n: int, seed: int = 0) -> str:
    """``n`` short random sentences, one paragraph per 5, with non-ASCII words."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + ".")
        out.append("\n\n" if i % 5 == 4 else " ")
    return "".join(out)


@pytest.fixture
def docs(tmp_path: Path) -> list[Path]:
    """Two text documents, ~24 KB in all (≥ 5 split blocks with the byte tokenizer)."""
    paths = []
    for i, n in enumerate((250, 120)):
        p = tmp_path / "corpus" / f"doc{i}.txt"
        p.parent.mkdir(exist_ok=True)
        p.write_text(sentences(n, seed=i), encoding="utf-8")
        paths.append(p)
    return paths


def split_tokens(out: Path, split: str) -> np.ndarray:
    ds = TokenDataset(out, split)
    return ds.read(0, ds.n_tokens)


def byte_stream(texts: list[str]) -> np.ndarray:
    """The token stream the byte tokenizer must produce: bytes + 4, EOS (2) after each doc."""
    parts = []
    for t in texts:
        parts.extend(b + 4 for b in t.encode("utf-8"))
        parts.append(2)
    return np.array(parts, dtype=np.int64)


def assert_block_partition(stream: np.ndarray, train: np.ndarray, val: np.ndarray) -> None:
    """train and val are the stream's SPLIT_BLOCK blocks (last one merged with the tail), in
    order."""
    n_blocks = len(stream) // SPLIT_BLOCK
    ti = vi = 0
    for i in range(n_blocks):
        lo = i * SPLIT_BLOCK
        hi = len(stream) if i == n_blocks - 1 else lo + SPLIT_BLOCK
        block = stream[lo:hi]
        if np.array_equal(train[ti : ti + len(block)], block):
            ti += len(block)
        else:
            assert np.array_equal(val[vi : vi + len(block)], block), f"block {i} lost"
            vi += len(block)
    assert (ti, vi) == (len(train), len(val))


def test_prepare_byte_text_files(tmp_path: Path, docs: list[Path]) -> None:
    texts = [p.read_text(encoding="utf-8") for p in docs]
    out = tmp_path / "data"
    info = prepare(docs, out, tokenizer="byte", val_fraction=0.2, progress=False)
    index = json.loads((out / "index.json").read_text())
    assert index["version"] == 1 and index["dtype"] == "uint16" and index["vocab_size"] == 260
    assert index["special_ids"] == {"mask_id": 0, "pad_id": 1, "eos_id": 2, "bos_id": 3}
    assert index["n_documents"] == info.n_documents == 2
    assert index["created_by"] == "unmask prepare" and index["tokenizer"] == "tokenizer.json"
    assert index["sources"] == [str(p) for p in docs]
    assert (out / "tokenizer.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "data"]  # no temp dir left

    stream = byte_stream(texts)
    train, val = split_tokens(out, "train"), split_tokens(out, "val")
    assert len(train) >= SPLIT_BLOCK and len(val) >= SPLIT_BLOCK
    assert_block_partition(stream, train, val)
    # Bits-per-byte denominators: text bytes only, EOS counts 0.
    splits = index["splits"]
    assert splits["train"]["n_bytes"] + splits["val"]["n_bytes"] == sum(
        len(t.encode("utf-8")) for t in texts
    )
    for s, toks in (("train", train), ("val", val)):
        assert splits[s]["n_tokens"] == info.n_tokens[s] == len(toks)
        assert splits[s]["n_bytes"] == info.n_bytes[s] == int((toks != 2).sum())
    assert info.bytes_per_token == pytest.approx(len(stream[stream != 2]) / len(stream))


def test_prepare_is_deterministic_and_seeded(tmp_path: Path, docs: list[Path]) -> None:
    kw = dict(tokenizer="bpe", vocab_size=270, val_fraction=0.3, progress=False)
    a = prepare(docs, tmp_path / "a", **kw).out
    b = prepare(docs, tmp_path / "b", **kw).out
    c = prepare(docs, tmp_path / "c", seed=5, **kw).out
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for p in a.iterdir():
        assert p.read_bytes() == (b / p.name).read_bytes(), p.name
    assert not np.array_equal(split_tokens(a, "val"), split_tokens(c, "val"))
    # A different seed moves blocks between splits but loses nothing.
    assert len(split_tokens(a, "train")) + len(split_tokens(a, "val")) == len(
        split_tokens(c, "train")
    ) + len(split_tokens(c, "val"))


def test_bpe_documents_decode_back(tmp_path: Path, docs: list[Path]) -> None:
    texts = [p.read_text(encoding="utf-8") for p in docs]
    info = prepare(docs, tmp_path / "d", vocab_size=300, val_fraction=0.0, progress=False)
    assert info.n_tokens["val"] == 0 and info.vocab_size <= 300
    ds = TokenDataset(tmp_path / "d", "train")
    tok = ds.tokenizer()
    ids = ds.read(0, ds.n_tokens).tolist()
    assert tok.decode(ids, skip_special=False).split("[EOS]") == [*texts, ""]
    assert ds.n_bytes == sum(len(t.encode("utf-8")) for t in texts)
    assert ds.bytes_per_token > 1.0


def test_jsonl_gz_and_directory_inputs(tmp_path: Path) -> None:
    rows = [{"body": sentences(8, seed=i), "id": i} for i in range(60)]
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / ".hidden").mkdir()
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    (src / "a.jsonl").write_text("\n".join(lines[:30]) + "\n\n", encoding="utf-8")  # blank line ok
    with gzip.open(src / "sub" / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines[30:]) + "\n")
    (src / ".secret.txt").write_text("hidden")
    (src / ".hidden" / "x.txt").write_text("hidden too")
    assert resolve_inputs([src]) == [src / "a.jsonl", src / "sub" / "b.jsonl.gz"]

    out = tmp_path / "data"
    info = prepare([src], out, tokenizer="byte", text_field="body", progress=False)
    assert info.n_documents == 60
    texts = [r["body"] for r in rows]
    stream = byte_stream(texts)
    assert_block_partition(stream, split_tokens(out, "train"), split_tokens(out, "val"))
    assert sum(info.n_bytes.values()) == sum(len(t.encode("utf-8")) for t in texts)


def test_gzip_text_equals_plain(tmp_path: Path, docs: list[Path]) -> None:
    gz = tmp_path / "doc0.txt.gz"
    gz.write_bytes(gzip.compress(docs[0].read_bytes()))
    a = prepare([docs[0]], tmp_path / "plain", tokenizer="byte", val_fraction=0, progress=False)
    b = prepare([gz], tmp_path / "gz", tokenizer="byte", val_fraction=0, progress=False)
    assert a.n_documents == b.n_documents == 1
    assert np.array_equal(split_tokens(a.out, "train"), split_tokens(b.out, "train"))


def test_long_single_line_document_is_chunked_exactly(tmp_path: Path) -> None:
    # 150K characters without a newline, multi-byte characters straddling read boundaries.
    text = ("é日" * 25_000) + " " + ("word " * 15_000)
    p = tmp_path / "one.txt"
    p.write_text(text, encoding="utf-8")
    info = prepare([p], tmp_path / "d", tokenizer="byte", progress=False)
    stream = byte_stream([text])
    assert_block_partition(stream, split_tokens(info.out, "train"), split_tokens(info.out, "val"))
    assert info.n_tokens["val"] >= SPLIT_BLOCK  # one huge document still gets a validation split


def test_existing_tokenizer_path(tmp_path: Path, docs: list[Path]) -> None:
    byte_tokenizer().save(tmp_path / "tok")
    info = prepare(docs, tmp_path / "d", tokenizer=str(tmp_path / "tok"), progress=False)
    assert info.vocab_size == 260 and info.n_documents == 2


def test_dataset_sample_windows_and_shards(tmp_path: Path, docs: list[Path]) -> None:
    out = prepare(
        docs, tmp_path / "d", tokenizer="byte", val_fraction=0.2, shard_tokens=1000, progress=False
    ).out
    ds = TokenDataset(out, "train")
    assert len(ds.index["splits"]["train"]["shards"]) > 2  # windows cross shard boundaries
    raw = np.concatenate(
        [
            np.fromfile(out / name, dtype="<u2").astype(np.int64)
            for name in ds.index["splits"]["train"]["shards"]
        ]
    )
    assert np.array_equal(ds.read(0, ds.n_tokens), raw)
    assert ds.vocab_size == 260 and ds.special_ids["eos_id"] == 2

    x = ds.sample(8, 64, torch.Generator().manual_seed(3))
    y = ds.sample(8, 64, torch.Generator().manual_seed(3))
    z = ds.sample(8, 64, torch.Generator().manual_seed(4))
    assert x.shape == (8, 64) and x.dtype == torch.int64
    assert torch.equal(x, y) and not torch.equal(x, z)
    starts = torch.randint(
        0, ds.n_tokens - 64 + 1, (8,), generator=torch.Generator().manual_seed(3)
    )
    for row, s in zip(x, starts.tolist(), strict=True):
        assert np.array_equal(row.numpy(), raw[s : s + 64])

    n = ds.num_windows(100)
    assert n == ds.n_tokens // 100
    wins = list(ds.windows(100))
    assert len(wins) == n and all(w.shape == (100,) for w in wins)
    assert np.array_equal(torch.cat(wins).numpy(), raw[: n * 100])
    batched = list(ds.windows(100, batch_size=7))
    assert [b.shape[0] for b in batched] == [7] * (n // 7) + ([n % 7] if n % 7 else [])
    assert torch.equal(torch.cat(batched).reshape(-1), torch.cat(wins))

    with pytest.raises(UserError, match="fewer than seq_len"):
        ds.sample(1, ds.n_tokens + 1, torch.Generator())
    with pytest.raises(UserError, match="no split 'test'"):
        TokenDataset(out, "test")


# ----------------------------------------------------------------------------- line docs, split


def test_line_docs(tmp_path: Path) -> None:
    """--line-docs: every non-blank line is one document, its line end left out."""
    long_line = "é日 " * 30_000  # 90K characters: read and tokenized in pieces, still one document
    body = f"first line\n\n   \nsecond, with CRLF\r\n{long_line}\n  indented  \nno newline at end"
    p = tmp_path / "lines.txt"
    p.write_bytes(("\ufeff" + body).encode("utf-8"))
    gz = tmp_path / "lines.txt.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    docs = ["first line", "second, with CRLF", long_line, "  indented  ", "no newline at end"]
    for src in (p, gz):
        info = prepare([src], tmp_path / src.name.replace(".", "_"), tokenizer="byte",
                       val_fraction=0, line_docs=True, progress=False)
        assert info.n_documents == 5
        assert np.array_equal(split_tokens(info.out, "train"), byte_stream(docs))
        assert json.loads((info.out / "index.json").read_text())["line_docs"] is True
    # Without it the file is one document; JSONL files are one document per line either way.
    whole = prepare([p], tmp_path / "whole", tokenizer="byte", val_fraction=0, progress=False)
    assert whole.n_documents == 1
    j = tmp_path / "a.jsonl"
    j.write_text('{"text": "x\\ny"}\n{"text": "z"}\n')
    info = prepare([j], tmp_path / "j", tokenizer="byte", val_fraction=0, line_docs=True,
                   progress=False)
    assert np.array_equal(split_tokens(info.out, "train"), byte_stream(["x\ny", "z"]))


@pytest.fixture
def big_corpus(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """~20 split blocks of text (byte tokenizer) and the token stream it must give."""
    text = sentences(1800, seed=3)
    p = tmp_path / "big.txt"
    p.write_text(text, encoding="utf-8")
    stream = byte_stream([text])
    assert 18 * SPLIT_BLOCK < len(stream) < 24 * SPLIT_BLOCK
    return p, stream


def test_val_split_sized_by_fraction(tmp_path: Path, big_corpus: tuple[Path, np.ndarray]) -> None:
    p, stream = big_corpus
    for frac in (0.05, 0.25, 0.5):
        info = prepare([p], tmp_path / f"f{frac}", tokenizer="byte", val_fraction=frac,
                       min_val_tokens=0, progress=False)
        # rounded up to whole blocks, but never past half the corpus
        k = min(math.ceil(frac * len(stream) / SPLIT_BLOCK), len(stream) // (2 * SPLIT_BLOCK))
        assert info.n_tokens["val"] == k * SPLIT_BLOCK, frac
        assert_block_partition(stream, split_tokens(info.out, "train"),
                               split_tokens(info.out, "val"))
        assert info.notes == ()
    # The minimum wins over a small fraction: 32,768 tokens (8 blocks), not 1 block.
    info = prepare([p], tmp_path / "min", tokenizer="byte", val_fraction=0.01, progress=False)
    assert MIN_VAL_TOKENS == 8 * SPLIT_BLOCK
    assert info.n_tokens["val"] == MIN_VAL_TOKENS
    index = json.loads((info.out / "index.json").read_text())
    assert index["min_val_tokens"] == MIN_VAL_TOKENS and index["val_fraction"] == 0.01
    # Deterministic, and the seed picks other blocks of the same total.
    again = prepare([p], tmp_path / "again", tokenizer="byte", val_fraction=0.01, progress=False)
    assert np.array_equal(split_tokens(info.out, "val"), split_tokens(again.out, "val"))
    other = prepare([p], tmp_path / "other", tokenizer="byte", val_fraction=0.01, seed=9,
                    progress=False)
    assert not np.array_equal(split_tokens(info.out, "val"), split_tokens(other.out, "val"))
    assert sum(other.n_tokens.values()) == len(stream)


def test_small_corpus_gets_fraction_and_a_note(
    tmp_path: Path, big_corpus: tuple[Path, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    p, stream = big_corpus
    # 20 blocks cannot spare a 12-block minimum: validation gets its fraction, and a note.
    info = prepare([p], tmp_path / "d", tokenizer="byte", val_fraction=0.1,
                   min_val_tokens=12 * SPLIT_BLOCK, progress=False)
    k = math.ceil(0.1 * len(stream) / SPLIT_BLOCK)
    assert info.n_tokens["val"] == k * SPLIT_BLOCK
    assert len(info.notes) == 1
    pct = 100 * k * SPLIT_BLOCK / len(stream)
    assert info.notes[0].startswith(f"validation gets {k * SPLIT_BLOCK:,} tokens ({pct:.1f}%), "
                                    "below the minimum of 49,152")
    rc = main(["prepare", str(p), "-o", str(tmp_path / "cli"), "--tokenizer", "byte",
               "--val-fraction", "0.1", "--min-val-tokens", str(12 * SPLIT_BLOCK), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0
    val = info.n_tokens["val"]
    assert f"val tokens       {val:,} ({100 * val / len(stream):.1f}%)" in out
    assert f"train tokens     {len(stream) - val:,}" in out
    assert err.startswith("unmask prepare: note: validation gets") and err.count("\n") == 1
    with pytest.raises(UserError, match="min_val_tokens=-1"):
        prepare([p], tmp_path / "e", min_val_tokens=-1, progress=False)


def test_small_corpus_never_gives_validation_more_than_training(tmp_path: Path) -> None:
    """2 blocks and a long tail (~11,900 tokens, like a few hundred lines): the tail joins the
    last block, which must never be drawn for validation, whatever the seed; validation gets
    one block, and the note gives its real size. A fraction over one half is capped too."""
    text = sentences(300, seed=5)
    text = text[: text.index(" ", 10_300)]
    p = tmp_path / "small.txt"
    p.write_text(text, encoding="utf-8")
    stream = byte_stream([text])
    assert 2 * SPLIT_BLOCK + 3700 <= len(stream) < 3 * SPLIT_BLOCK
    pct = f"{100 * SPLIT_BLOCK / len(stream):.1f}%"
    for seed in range(6):  # the old draw took the 7,800-token last block for some of these
        info = prepare([p], tmp_path / f"s{seed}", tokenizer="byte", seed=seed, progress=False)
        assert info.n_tokens == {"train": len(stream) - SPLIT_BLOCK, "val": SPLIT_BLOCK}, seed
        assert_block_partition(stream, split_tokens(info.out, "train"),
                               split_tokens(info.out, "val"))
        assert info.notes == (f"validation gets {SPLIT_BLOCK:,} tokens ({pct}), below the "
                              f"minimum of {MIN_VAL_TOKENS:,}: the corpus ({len(stream):,} "
                              "tokens) is too small for both; add text for stable validation "
                              "numbers",)
    info = prepare([p], tmp_path / "most", tokenizer="byte", val_fraction=0.9, progress=False)
    assert info.n_tokens["val"] == SPLIT_BLOCK
    assert info.notes[0].startswith(f"validation gets {SPLIT_BLOCK:,} tokens ({pct}), not its "
                                    "fraction (0.9): validation is never larger than training")


def test_progress_bars_only_on_a_terminal(
    tmp_path: Path, docs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """progress=True draws no bars into a log (stderr not a terminal): no "0%" lines."""
    prepare(docs, tmp_path / "d", vocab_size=300, val_fraction=0, progress=True)
    assert capsys.readouterr().err == ""


def test_cli_constant_matches_library() -> None:
    from unmask.commands import prepare as cmd

    assert cmd.MIN_VAL_TOKENS == MIN_VAL_TOKENS


def test_old_dataset_dirs_still_load(tmp_path: Path, docs: list[Path]) -> None:
    """Data prepared before the fraction-sized split (no min_val_tokens / line_docs in its
    index.json, blocks drawn one by one) reads as before."""
    out = prepare(docs, tmp_path / "d", tokenizer="byte", val_fraction=0.2, progress=False).out
    index = json.loads((out / "index.json").read_text())
    for key in ("min_val_tokens", "line_docs"):
        del index[key]
    (out / "index.json").write_text(json.dumps(index))
    ds = TokenDataset(out, "val")
    assert ds.n_tokens == index["splits"]["val"]["n_tokens"] > 0
    assert ds.read(0, 10).shape == (10,)


# ----------------------------------------------------------------------------- errors


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope.txt: no such file or directory"):
        prepare([tmp_path / "nope.txt"], tmp_path / "d", progress=False)


def test_empty_corpus(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.txt").write_text("")
    (tmp_path / "in" / "empty.jsonl").write_text('{"text": ""}\n\n')
    for tok in ("byte", "bpe"):
        with pytest.raises(UserError, match="empty corpus"):
            prepare([tmp_path / "in"], tmp_path / "d", tokenizer=tok, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_undecodable_bytes(tmp_path: Path, docs: list[Path]) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nsecond line\nthird \xff\xfe line\n" + b"more text " * 1000)
    with pytest.raises(UserError, match=r"bad\.txt:3: invalid UTF-8.*--errors replace"):
        prepare([*docs, bad], tmp_path / "d", tokenizer="byte", progress=False)
    assert not (tmp_path / "d").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left
    info = prepare([bad], tmp_path / "d", tokenizer="byte", errors="replace", progress=False)
    text = bad.read_bytes().decode("utf-8", "replace")
    assert sum(info.n_bytes.values()) == len(text.encode("utf-8"))


def test_jsonl_errors(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    for body, pattern in [
        ('{"text": "ok"}\n{"text": "bad\n', r"x\.jsonl:2: not valid JSON"),
        (
            '{"text": "ok"}\n\n{"body": "no text"}\n',
            r"x\.jsonl:3: no field 'text' \(fields: body\)",
        ),
        ('{"text": 5}\n', r"x\.jsonl:1: field 'text' is a number \(5\), not a string"),
        ('{"text": "ok"}\n[1, 2]\n', r"x\.jsonl:2: expected a JSON object, got an array"),
        ('{"text": "lone \\ud800 surrogate"}\n', r"x\.jsonl:1: .*surrogates"),
        ('{"text": "ok"}\n' + "[" * 100_000 + "\n", r"x\.jsonl:2: not valid JSON \(nested too"),
    ]:
        p.write_text(body)
        with pytest.raises(UserError, match=pattern):
            prepare([p], tmp_path / "d", tokenizer="byte", progress=False)
    p.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(UserError, match=r"x\.jsonl:2: invalid UTF-8.*--errors replace"):
        prepare([p], tmp_path / "d", tokenizer="byte", progress=False)
    # SFT data and task files have no --errors: the hint is to fix the file, not that flag
    from unmask.sft import read_sft_jsonl

    p.write_bytes(b'{"prompt": "a", "response": "\xff"}\n')
    with pytest.raises(UserError, match=r"x\.jsonl:1: invalid UTF-8 \(byte 0xff\); save the file "
                       r"as UTF-8$"):
        read_sft_jsonl(p)


def test_out_dir_rules(tmp_path: Path, docs: list[Path]) -> None:
    out = tmp_path / "d"
    prepare(docs, out, tokenizer="byte", progress=False)
    before = (out / "index.json").read_bytes()
    with pytest.raises(UserError, match="--overwrite"):
        prepare(docs, out, tokenizer="byte", progress=False)
    assert (out / "index.json").read_bytes() == before
    prepare(docs, out, tokenizer="byte", seed=1, overwrite=True, progress=False)
    assert json.loads((out / "index.json").read_text())["seed"] == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(UserError, match=r"not a prepared dataset \(no index.json\); refusing"):
        prepare(docs, other, tokenizer="byte", overwrite=True, progress=False)
    assert (other / "keep.txt").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare(docs, empty, tokenizer="byte", progress=False)  # an empty directory is fine


def test_too_small_to_split(tmp_path: Path) -> None:
    p = tmp_path / "small.txt"
    p.write_text("hello world\n" * 100)
    with pytest.raises(UserError, match="too small to split.*--val-fraction 0"):
        prepare([p], tmp_path / "d", tokenizer="byte", progress=False)
    info = prepare([p], tmp_path / "d", tokenizer="byte", val_fraction=0, progress=False)
    assert info.n_tokens == {"train": 1201, "val": 0}


def test_bad_options(tmp_path: Path, docs: list[Path]) -> None:
    with pytest.raises(UserError, match="val_fraction"):
        prepare(docs, tmp_path / "d", val_fraction=1.0, progress=False)
    with pytest.raises(UserError, match="errors="):
        prepare(docs, tmp_path / "d", errors="ignore", progress=False)
    with pytest.raises(UserError, match="too small"):
        prepare(docs, tmp_path / "d", vocab_size=100, progress=False)
    with pytest.raises(UserError, match="larger than any BPE vocabulary needs"):
        prepare(docs, tmp_path / "d", vocab_size=5_000_000_000, progress=False)  # aborted
    assert not (tmp_path / "d").exists()


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="run `unmask prepare` first"):
        TokenDataset(tmp_path / "missing", "train")
    with pytest.raises(UserError, match="run `unmask prepare` first"):
        TokenDataset(tmp_path, "train")


# ----------------------------------------------------------------------------- CLI


def test_cli_prepare(tmp_path: Path, docs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d"
    args = ["prepare", str(docs[0].parent), "-o", str(out), "--tokenizer", "byte"]
    rc = main([*args, "--val-fraction", "0.2", "--seed", "1", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "documents" in printed and "bytes per token" in printed
    assert TokenDataset(out, "val").n_tokens > 0

    assert main([*args, "--no-progress"]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--no-progress", "--overwrite"]) == 0
    capsys.readouterr()  # a note: this corpus is too small for the validation minimum

    rc = main(["prepare", str(tmp_path / "nope"), "-o", str(tmp_path / "e"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("unmask prepare: error:") and "nope" in err and err.count("\n") == 1


def test_bpe_training_runs_beside_the_waiting_thread_and_reports_its_errors() -> None:
    """The BPE merges run on a worker thread so Ctrl-C reaches the main one at once (the
    trainer's native loop does not look at signals); its result and its errors come back."""
    from unmask.tokenizer import _interruptible, train_bpe

    tok = train_bpe(["the cat sat on the mat"] * 50, 270)
    assert tok.decode(tok.encode("the cat")) == "the cat"
    with pytest.raises(ValueError, match="boom"):
        _interruptible(lambda: (_ for _ in ()).throw(ValueError("boom")))


def test_out_without_a_name_of_its_own_is_refused_up_front(
    tmp_path: Path, docs: list[Path], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """-o . (or .., or the current folder by its path) is refused in one line before the
    tokenizer pass; it was a ValueError traceback after it."""
    import unmask.data as data_mod

    here = tmp_path / "empty" / "sub"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)

    def no_pass(*a: object, **k: object) -> None:
        raise AssertionError("tokenized before refusing")

    monkeypatch.setattr(data_mod, "_make_tokenizer", no_pass)
    for out in (".", "..", str(here), "/"):
        assert main(["prepare", str(docs[0]), "-o", out, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "give the dataset a folder of its own" in err and err.count("\n") == 1, err
    assert here.is_dir() and not any(here.iterdir()) and list(here.parent.iterdir()) == [here]


def test_prepare_notes_and_refusals_of_its_options(
    tmp_path: Path, docs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A BPE vocabulary smaller than asked gets a note; --vocab-size with another tokenizer is
    refused; --tokenizer takes a run directory (its checkpoint's tokenizer); a file given
    twice (or with its folder) is refused, since its text could land in train and val."""
    info = prepare(docs, tmp_path / "big", vocab_size=100_000, val_fraction=0, progress=False)
    assert info.vocab_size < 100_000
    assert any(f"only {info.vocab_size:,} tokens" in n for n in info.notes)
    args = ["--no-progress", "--val-fraction", "0", str(docs[0])]
    assert main(["prepare", *args, "-o", str(tmp_path / "b"), "--tokenizer", "byte",
                 "--vocab-size", "300"]) == 2
    err = capsys.readouterr().err
    assert "--vocab-size trains a BPE tokenizer" in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists()
    for twice in ([str(docs[0])], [str(docs[0].parent)]):
        assert main(["prepare", *args, *twice, "-o", str(tmp_path / "t")]) == 2
        err = capsys.readouterr().err
        assert f"{docs[0]}: given" in err and err.count("\n") == 1, err
    from unmask.checkpoint import save_checkpoint
    from unmask.config import ModelConfig
    from unmask.model import Transformer

    tok = byte_tokenizer()
    save_checkpoint(tmp_path / "run", model=Transformer(ModelConfig(vocab_size=tok.vocab_size)),
                    tokenizer=tok)
    assert main(["prepare", *args, "-o", str(tmp_path / "r"), "--tokenizer",
                 str(tmp_path / "run")]) == 0
    assert TokenDataset(tmp_path / "r", "train").vocab_size == tok.vocab_size


# ----------------------------------------------------------------------------- audit fixes


def test_overwrite_replaces_only_what_prepare_wrote(tmp_path: Path, docs: list[Path]) -> None:
    """--overwrite took any folder holding a file named index.json for a dataset and deleted
    it whole; now the index must be one unmask wrote and the folder hold only its files."""
    site = tmp_path / "site"
    (site / "img").mkdir(parents=True)
    (site / "index.json").write_text('{"pages": ["home"]}')
    (site / "thesis.tex").write_text("my work")
    with pytest.raises(UserError, match=r"not a prepared dataset \(its index.json is not"):
        prepare(docs, site, tokenizer="byte", overwrite=True, progress=False)
    ds = prepare(docs, tmp_path / "ds", tokenizer="byte", progress=False).out
    (ds / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"\(it also holds notes.txt\); refusing"):
        prepare(docs, ds, tokenizer="byte", overwrite=True, progress=False)
    assert (site / "thesis.tex").is_file() and (site / "img").is_dir()
    assert (ds / "notes.txt").is_file() and (ds / "train-00000.bin").is_file()
    (ds / "notes.txt").unlink()
    prepare(docs, ds, tokenizer="byte", overwrite=True, seed=3, progress=False)
    assert json.loads((ds / "index.json").read_text())["seed"] == 3


def test_cut_off_shards_and_edited_index_fields_are_one_line_errors(
    tmp_path: Path, docs: list[Path]
) -> None:
    """A shard of odd byte length or of 0 bytes (an interrupted copy) was a numpy ValueError
    from np.memmap; a hand-edited index.json field of the wrong type or missing was a
    KeyError / ValueError / TypeError."""
    import shutil

    good = prepare(docs, tmp_path / "good", tokenizer="byte", val_fraction=0.2,
                   progress=False).out
    cases: list[tuple[str, str]] = [("odd", r"train-00000.bin: shard holds 1 bytes, not a whole "
                                     r"number of uint16 tokens \(incomplete copy\?\)"),
                                    ("zero", r"val-00000.bin: shard is empty \(incomplete")]
    for name, pattern in cases:
        d = tmp_path / name
        shutil.copytree(good, d)
        shard = d / ("train-00000.bin" if name == "odd" else "val-00000.bin")
        shard.write_bytes(b"x" if name == "odd" else b"")
        with pytest.raises(UserError, match=pattern):
            TokenDataset(d, "train" if name == "odd" else "val")
    edits = [
        (("splits", "train", "n_tokens"), "abc", r"field splits.train.n_tokens is str 'abc'"),
        (("splits", "train", "n_tokens"), None, r"field splits.train.n_tokens is missing"),
        (("splits", "val", "n_bytes"), None, r"field splits.val.n_bytes is missing"),
        (("special_ids",), None, r"field special_ids is missing"),
        (("special_ids", "eos_id"), True, r"field special_ids.eos_id is bool"),
        (("dtype",), "float32", r"field dtype is str 'float32', expected 'uint16' or"),
        (("dtype",), "nonsense", r"field dtype is str 'nonsense'"),
        (("splits",), ["train"], r"field splits is list"),
        (("splits", "train", "shards"), "train-00000.bin", r"field splits.train.shards is str"),
    ]
    text = (good / "index.json").read_text()
    for keys, value, pattern in edits:
        index = json.loads(text)
        node = index
        for k in keys[:-1]:
            node = node[k]
        if value is None:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
        (good / "index.json").write_text(json.dumps(index))
        with pytest.raises(UserError, match=r"index.json: " + pattern):
            TokenDataset(good, "train")


def _foreign_with_specials_in_vocab(kind: str, path: Path) -> Path:
    """A SentencePiece-style tokenizer.json whose <unk>, <s>, </s> sit in the model's own
    vocabulary (ids 0-2; Unigram at the best score, BPE reachable by merges), like T5's or
    Llama's."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    chars = sorted(set("abcdefghijklmnopqrstuvwxyz<>/ .,") - {" "})
    specials = ["<unk>", "<s>", "</s>"]
    if kind == "unigram":
        vocab = [(t, 0.0) for t in specials] + [("▁", -2.0)] + [(c, -3.0) for c in chars]
        vocab += [("▁" + c, -2.5) for c in chars]
        hf = HFTokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
        hf.pre_tokenizer = pre_tokenizers.Metaspace()
        hf.decoder = decoders.Metaspace()
    else:
        pieces = [*specials, "▁", *chars, "</", "</s", "<s"]
        merges = [("<", "/"), ("</", "s"), ("</s", ">"), ("<", "s"), ("<s", ">")]
        hf = HFTokenizer(models.BPE({t: i for i, t in enumerate(pieces)}, merges,
                                    unk_token="<unk>"))
        hf.pre_tokenizer = pre_tokenizers.Metaspace()
        hf.decoder = decoders.Metaspace()
    hf.add_special_tokens(specials)
    path.mkdir(parents=True, exist_ok=True)
    hf.save(str(path / "tokenizer.json"))
    return path


@pytest.mark.parametrize("kind", ["unigram", "bpe"])
def test_literal_special_strings_stay_text_with_a_sentencepiece_vocabulary(
    tmp_path: Path, kind: str
) -> None:
    """A Unigram or BPE model holding </s> in its own vocabulary turned a literal "</s>" in a
    document into the EOS id (a false document boundary): encode_special_tokens stopped only
    the added-token matcher."""
    from unmask.tokenizer import load_tokenizer

    tok = load_tokenizer(_foreign_with_specials_in_vocab(kind, tmp_path / "tok"))
    assert (tok.eos_id, tok.bos_id) == (2, 1)
    text = "a </s> b <s> c <unk> end."
    ids = tok.encode(text)
    assert not [i for i in ids if tok.is_special(i)], ids
    assert tok.decode(ids) == text
    assert tok.encode(text, allow_special=True).count(2) == 1  # chat templates still parse it
    plain = "a quiet one."
    assert tok.encode(plain) == tok.hf.encode(plain, add_special_tokens=False).ids
    src = tmp_path / "d.jsonl"
    src.write_text('{"text": "one </s> two <s> three"}\n{"text": "four"}\n')
    info = prepare([src], tmp_path / "ds", tokenizer=str(tmp_path / "tok"), val_fraction=0,
                   progress=False)
    stream = split_tokens(info.out, "train")
    assert (stream == tok.eos_id).sum() == info.n_documents == 2
    assert (stream == tok.bos_id).sum() == 0


def test_archives_other_encodings_and_binary_files_are_told_apart_from_text(
    tmp_path: Path, docs: list[Path]
) -> None:
    """A .tar.gz and UTF-16 without a BOM were read as NUL-filled "text"; zip, zstd, UTF-16
    with a BOM got "invalid UTF-8 ...; pass --errors replace", which then trained on the
    compressed bytes. Now gzip, xz and bzip2 are decompressed by their magic bytes (any name),
    and the rest is refused by name before any pass, even with errors='replace'."""
    import bz2
    import io
    import lzma
    import tarfile
    import zipfile

    text = docs[0].read_text(encoding="utf-8")
    raw = text.encode("utf-8")
    want = byte_stream([text])
    for name, data in (("a.txt.xz", lzma.compress(raw)), ("a.txt.bz2", bz2.compress(raw)),
                       ("a.dat", gzip.compress(raw)), ("a.jsonl.xz", None)):
        if data is None:
            data = lzma.compress((json.dumps({"text": text}) + "\n").encode())
        (tmp_path / name).write_bytes(data)
        out = prepare([tmp_path / name], tmp_path / name.replace(".", "_"), tokenizer="byte",
                      val_fraction=0, progress=False).out
        assert np.array_equal(split_tokens(out, "train"), want), name

    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w:gz") as tf:
        tf.add(docs[0], arcname="a.txt")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("a.txt", text)
    ascii_text = "plain words of a document\n" * 40
    cases = {
        "c.tar.gz": (tar.getvalue(), r"a tar archive \(gzip-compressed\), not text; unpack"),
        "c.zip": (zbuf.getvalue(), r"a zip archive, not text; unpack it first \(unzip\)"),
        "c.zst": (b"\x28\xb5\x2f\xfd" + bytes(200), r"zstd-compressed data, not text"),
        "u16.txt": (ascii_text.encode("utf-16"),
                    r"UTF-16 text: convert it to UTF-8 \(iconv -f UTF-16 -t UTF-8\)"),
        "u16le.txt": (ascii_text.encode("utf-16-le"), r"UTF-16LE text \(no byte-order mark\)"),
        "u16be.txt": (ascii_text.encode("utf-16-be"), r"iconv -f UTF-16BE -t UTF-8"),
        "u32le.txt": (ascii_text.encode("utf-32-le"), r"iconv -f UTF-32LE -t UTF-8"),
        "u32.txt": (ascii_text.encode("utf-32"), r"UTF-32 text: convert it to UTF-8"),
        "blob.bin": (random.Random(0).randbytes(5000),
                     r"binary data, not text"),
        "zeros.txt": (bytes(3000) + b"\x01\x02" * 500, r"binary data \(NUL bytes\), not text"),
        "plain.gz": (raw, r"not a valid gzip file \(no gzip header\)"),
    }
    for name, (data, pattern) in cases.items():
        (tmp_path / name).write_bytes(data)
        for errors in ("strict", "replace"):
            with pytest.raises(UserError, match=re.escape(name) + ": .*" + pattern) as e:
                prepare([docs[0], tmp_path / name], tmp_path / "o", tokenizer="bpe",
                        errors=errors, progress=False)
            assert "--errors" not in str(e.value)
    assert not (tmp_path / "o").exists()
    # text that merely looks like a magic number is text; so is Latin-1 with control
    # characters under --errors replace (refused as binary data before)
    lookalikes = {
        "mustard.txt": ("x" * 256 + " mustard and more words\n" * 20).encode(),
        "pdf.txt": b"%PDF-1.4 is the version this note is about\n" * 20,
        "par.txt": b"PAR1 of the report: words\n" * 20,
    }
    for name, data in lookalikes.items():
        (tmp_path / name).write_bytes(data)
        prepare([tmp_path / name], tmp_path / name.replace(".", "_"), tokenizer="byte",
                val_fraction=0, progress=False)
    latin = ("caf\xe9 na\xefve \x01\x02 words\n" * 40).encode("latin-1")
    (tmp_path / "latin.txt").write_bytes(latin)
    with pytest.raises(UserError, match="binary data, not text"):
        prepare([tmp_path / "latin.txt"], tmp_path / "l1", tokenizer="byte", progress=False)
    prepare([tmp_path / "latin.txt"], tmp_path / "l2", tokenizer="byte", errors="replace",
            val_fraction=0, progress=False)


def test_out_as_a_symlink_and_inputs_inside_out(
    tmp_path: Path, docs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """-o naming a link to a folder failed with "Not a directory" after all the work, and with
    --overwrite swapped the link for a folder and left a stale link; now the dataset goes into
    the folder the link names. An input inside the -o folder was deleted by --overwrite; now
    it is refused before any work."""
    import unmask.data as data_mod

    disk = tmp_path / "disk"
    (disk / "empty").mkdir(parents=True)
    (tmp_path / "data").symlink_to(disk / "empty")
    info = prepare(docs, tmp_path / "data", tokenizer="byte", progress=False)
    assert info.out == tmp_path / "data" and (disk / "empty" / "index.json").is_file()
    prepare(docs, tmp_path / "data", tokenizer="byte", overwrite=True, seed=4, progress=False)
    assert (tmp_path / "data").is_symlink()
    assert json.loads((disk / "empty" / "index.json").read_text())["seed"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "data", "disk"]
    assert sorted(p.name for p in disk.iterdir()) == ["empty"]

    def no_pass(*a: object, **k: object) -> None:
        raise AssertionError("tokenized before refusing")

    monkeypatch.setattr(data_mod, "_make_tokenizer", no_pass)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"dangling: a symbolic link to a missing path"):
        prepare(docs, tmp_path / "dangling", tokenizer="byte", progress=False)
    inside = disk / "empty" / "more.txt"
    inside.write_text("more text")
    for out in (tmp_path / "data", disk / "empty"):
        with pytest.raises(UserError, match=r"more.txt: an input inside the output folder"):
            prepare([inside], out, tokenizer="byte", overwrite=True, progress=False)
    assert inside.read_text() == "more text"


def test_lone_cr_line_ends_and_error_offsets_in_long_lines(tmp_path: Path) -> None:
    """--line-docs read a file with old-Mac lone-CR line ends as one document; an invalid byte
    deep in a long line (or a CR-only file) was reported at line 1 with no way to find it."""
    lines = [f"line {i} of a file with cr ends" for i in range(200)]
    cr = tmp_path / "cr.txt"
    cr.write_text("\r".join(lines) + "\r", encoding="utf-8", newline="")
    info = prepare([cr], tmp_path / "a", tokenizer="byte", val_fraction=0, line_docs=True,
                   progress=False)
    assert info.n_documents == 200
    assert np.array_equal(split_tokens(info.out, "train"), byte_stream(lines))
    # a \r\n split across the 64 KiB read boundary is one line end, not two
    from unmask.data import _READ_BYTES

    first = "x" * (_READ_BYTES - 1)
    mixed = tmp_path / "mixed.txt"
    mixed.write_bytes(first.encode() + b"\r\nnext\rlast\n\n")
    info = prepare([mixed], tmp_path / "b", tokenizer="byte", val_fraction=0, line_docs=True,
                   progress=False)
    assert np.array_equal(split_tokens(info.out, "train"), byte_stream([first, "next", "last"]))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"short\n" + b"word " * 3000 + b"\xff tail\n")
    for line_docs in (False, True):
        with pytest.raises(UserError, match=r"bad\.txt:2: invalid UTF-8 \(byte 0xff at byte "
                           r"offset 15006\); pass --errors"):
            prepare([bad], tmp_path / "c", tokenizer="byte", line_docs=line_docs, progress=False)
    bad.write_bytes(b"short\n\xff\n")  # near its line's start the line number says it all
    with pytest.raises(UserError, match=r"bad\.txt:2: invalid UTF-8 \(byte 0xff\); pass"):
        prepare([bad], tmp_path / "c", tokenizer="byte", progress=False)


def test_a_lossy_foreign_tokenizer_gets_a_note(tmp_path: Path, docs: list[Path]) -> None:
    """A WordPiece tokenizer that lowercases and strips accents (or maps words to [UNK]) was
    accepted without a word, and n_bytes (the bits-per-byte denominator) counted its tokens,
    not the text."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    hf = HFTokenizer(models.WordPiece(unk_token="[UNK]"))
    hf.normalizer = normalizers.BertNormalizer(lowercase=True)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.decoder = decoders.WordPiece()
    hf.train_from_iterator([sentences(50)], trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[MASK]"]))
    (tmp_path / "bert").mkdir()
    hf.save(str(tmp_path / "bert" / "tokenizer.json"))
    src = tmp_path / "t.txt"
    src.write_text("The Café in Ünïcödé town.\n" + sentences(20), encoding="utf-8")
    info = prepare([src], tmp_path / "a", tokenizer=str(tmp_path / "bert"), val_fraction=0,
                   progress=False)
    lossy = [n for n in info.notes if "does not give back the text" in n]
    assert len(lossy) == 1 and "'The Café" in lossy[0] and "'the cafe" in lossy[0], info.notes
    for tok in ("byte", "bpe"):
        info = prepare(docs, tmp_path / tok, tokenizer=tok, val_fraction=0, progress=False)
        assert not [n for n in info.notes if "does not give back" in n], info.notes
    _foreign_with_specials_in_vocab("unigram", tmp_path / "uni")
    src.write_text("a quiet one </s> end.\n", encoding="utf-8")
    info = prepare([src], tmp_path / "u", tokenizer=str(tmp_path / "uni"), val_fraction=0,
                   progress=False)
    assert not [n for n in info.notes if "does not give back" in n], info.notes


UDHR = {  # article 1 of the Universal Declaration of Human Rights, in several scripts
    "zh": "人人生而自由，在尊严和权利上一律平等。他们赋有理性和良心，并应以兄弟关系的精神相对待。",
    "ja": "すべての人間は、生まれながらにして自由であり、かつ、尊厳と権利とについて平等である。",
    "ko": "모든 인간은 태어날 때부터 자유로우며 그 존엄과 권리에 있어 동등하다.",
    "ru": "Все люди рождаются свободными и равными в своем достоинстве и правах.",
    "el": "Όλοι οι άνθρωποι γεννιούνται ελεύθεροι και ίσοι στην αξιοπρέπεια.",
    "ar": "يولد جميع الناس أحرارًا متساوين في الكرامة والحقوق.",
    "hi": "सभी मनुष्यों को गौरव और अधिकारों के मामले में जन्मजात स्वतन्त्रता प्राप्त है।",
    "mixed": "第1条 All human beings 人人生而自由 are born free 😀, 在尊严和权利上一律平等.",
    "en": "All human beings are born free and equal in dignity and rights.",
}


def test_utf16_without_a_bom_is_told_in_any_script_and_nothing_else_is(tmp_path: Path) -> None:
    """UTF-16 without a byte-order mark was recognised only when mostly ASCII (by its NUL
    bytes): CJK, Cyrillic or Greek text in it got "binary data, not text" (or was read as
    text: Cyrillic UTF-16 is valid UTF-8). Now every script is told as UTF-16LE/BE with the
    iconv line; UTF-8 text in those scripts, Latin-1 text and binary data are not."""
    from unmask.sniff import not_text

    for name, line in UDHR.items():
        for n in (3, 40):
            text = "\n".join([line] * n)
            for enc, told in (("utf-16-le", "UTF-16LE"), ("utf-16-be", "UTF-16BE")):
                head = text.encode(enc)[:4096]
                assert not_text(head) == (f"{told} text (no byte-order mark): convert it to "
                                          f"UTF-8 (iconv -f {told} -t UTF-8)"), (name, n, enc)
            assert not_text(text.encode("utf-8")[:4096]) is None, (name, n)
    gen = np.random.default_rng(0)
    latin = ("caf\xe9 na\xefve r\xe9sum\xe9 fa\xe7ade \xfcber \u201cquoted\u201d words\n" * 60)
    for data in (
        latin.encode("cp1252"),
        gen.standard_normal(2048).astype("<f2").tobytes(),  # fp16 weights
        gen.standard_normal(1024).astype("<f4").tobytes(),
        gen.integers(0, 50_000, 2048).astype("<u2").tobytes(),  # 16-bit token ids
        gen.integers(0, 50_000, 2048).astype(">u2").tobytes(),
        random.Random(0).randbytes(4096),
    ):
        assert "UTF-16" not in str(not_text(data, errors="replace")), data[:16]
    (tmp_path / "zh.txt").write_bytes("\n".join([UDHR["zh"]] * 20).encode("utf-16-le"))
    with pytest.raises(UserError, match=r"zh.txt: UTF-16LE text \(no byte-order mark\): "
                                        r"convert it to UTF-8 \(iconv -f UTF-16LE -t UTF-8\)"):
        prepare([tmp_path / "zh.txt"], tmp_path / "o", tokenizer="byte", progress=False)
    (tmp_path / "zh8.txt").write_text("\n".join(UDHR.values()), encoding="utf-8")
    prepare([tmp_path / "zh8.txt"], tmp_path / "o8", tokenizer="byte", val_fraction=0,
            progress=False)
