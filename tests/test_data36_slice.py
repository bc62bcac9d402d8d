"""``prepare_slice`` (the corpus of ``benchmarks/data_constrained.py``): its index counts the
documents it holds, and it copies the slice a piece at a time."""

import numpy as np
import pytest

import unmask.data as data_mod
from unmask.data import TokenDataset, prepare, prepare_slice


@pytest.fixture
def lines_corpus(tmp_path):
    """A byte-level dataset of 400 one-line documents (about 16K tokens, 2 validation blocks)."""
    text = "".join(f"line {i} of the corpus, with a few words in it\n" for i in range(400))
    (tmp_path / "a.txt").write_text(text)
    prepare([tmp_path / "a.txt"], tmp_path / "data", tokenizer="byte", line_docs=True,
            val_fraction=0.1, min_val_tokens=0, progress=False)
    return tmp_path / "data"


def _ends(ds: TokenDataset) -> int:
    return int(np.count_nonzero(ds.read(0, ds.n_tokens) == ds.special_ids["eos_id"]))


def test_a_slice_counts_its_own_documents(lines_corpus, tmp_path):
    """The slice's n_documents was the whole corpus' (400 here, 37,481 for a 5,000-token slice
    of the bible): it counts the document ends it holds."""
    info = prepare_slice(lines_corpus, tmp_path / "s", train_tokens=1000)
    train, val = TokenDataset(tmp_path / "s", "train"), TokenDataset(tmp_path / "s", "val")
    assert train.read(999, 1)[0] != train.special_ids["eos_id"]  # a line cut off at the end
    held = _ends(train) + _ends(val) + 1
    assert held < 400
    assert info.n_documents == held
    assert train.index["n_documents"] == held


def test_a_slice_of_one_long_document_holds_one(tmp_path):
    """Within one long document the slice has no document end, and still one document."""
    (tmp_path / "a.txt").write_text("word " * 4000)
    prepare([tmp_path / "a.txt"], tmp_path / "data", tokenizer="byte", val_fraction=0.1,
            min_val_tokens=0, progress=False)
    assert prepare_slice(tmp_path / "data", tmp_path / "s", train_tokens=100).n_documents == 1


def test_a_slice_is_copied_a_piece_at_a_time(lines_corpus, tmp_path, monkeypatch):
    """The whole slice was read into memory at once (8 bytes a token); the same tokens now come
    in pieces of ``_SLICE_TOKENS``."""
    monkeypatch.setattr(data_mod, "_SLICE_TOKENS", 1000, raising=False)
    longest = []
    read = TokenDataset.read

    def spy(self, start, length):
        longest.append(length)
        return read(self, start, length)

    monkeypatch.setattr(TokenDataset, "read", spy)
    prepare_slice(lines_corpus, tmp_path / "s", train_tokens=2500)
    assert max(longest) <= 1000
    monkeypatch.setattr(TokenDataset, "read", read)
    src, got = TokenDataset(lines_corpus, "train"), TokenDataset(tmp_path / "s", "train")
    assert got.n_tokens == 2500
    assert (got.read(0, 2500) == src.read(0, 2500)).all()
    src_val, got_val = TokenDataset(lines_corpus, "val"), TokenDataset(tmp_path / "s", "val")
    assert (got_val.read(0, got_val.n_tokens) == src_val.read(0, src_val.n_tokens)).all()
    assert got_val.n_bytes == src_val.n_bytes
