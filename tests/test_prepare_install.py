"""How ``unmask prepare`` puts a dataset in place: the token stream is split without being
mapped into memory, and replacing a dataset (``--overwrite``) leaves the old one or the new one
in the output folder, whole, when it is interrupted at any point."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from unmask import data
from unmask.data import SPLIT_BLOCK, TokenDataset, prepare

KW = {"tokenizer": "byte", "progress": False}


def _corpus(tmp_path: Path, n_bytes: int = 5 * SPLIT_BLOCK + 123, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    text = " ".join("".join(rng.choice(list("abcdefgh"), 5)) for _ in range(n_bytes // 6))
    p = tmp_path / "corpus.txt"
    p.write_text(text[:n_bytes], encoding="utf-8")
    return p


def _stream(out: Path) -> np.ndarray:
    parts = []
    for split in ("train", "val"):
        ds = TokenDataset(out, split)
        parts.append(ds.read(0, ds.n_tokens))
    return np.concatenate(parts)


def test_the_token_stream_is_split_from_the_file_not_a_memory_map(tmp_path, monkeypatch):
    """The whole token stream was memory-mapped to split it, and every page read stayed in the
    process's resident memory: a 200 MB corpus peaked at 725 MB RSS with ``--tokenizer byte``
    (400 MB of it the stream), growing with the corpus although prepare promises streaming.
    Blocks are now read one at a time; the shards hold the same tokens."""
    src = _corpus(tmp_path)
    want = np.array([b + 4 for b in src.read_bytes()] + [2])  # bytes + 4, then EOS

    def no_map(*args: object, **kwargs: object) -> None:
        raise AssertionError("prepare memory-mapped a file")

    monkeypatch.setattr(np, "memmap", no_map)
    info = prepare(src, tmp_path / "ds", val_fraction=0.3, min_val_tokens=0, **KW)
    monkeypatch.undo()
    assert info.n_tokens["val"] == 2 * SPLIT_BLOCK
    assert sum(info.n_tokens.values()) == len(want)
    assert sorted(_stream(tmp_path / "ds").tolist()) == sorted(want.tolist())
    train = TokenDataset(tmp_path / "ds", "train")
    assert train.read(train.n_tokens - 5, 5).tolist() == want[-5:].tolist()  # the tail trains


def _old_dataset(tmp_path: Path) -> tuple[Path, Path, dict]:
    src = _corpus(tmp_path)
    out = tmp_path / "ds"
    prepare(src, out, val_fraction=0, seed=1, **KW)
    return src, out, json.loads((out / "index.json").read_text())


def _beside(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}"))


def test_an_overwrite_interrupted_between_its_renames_keeps_the_old_dataset(
    tmp_path, monkeypatch
):
    """Where the folders cannot be swapped in one step, the old dataset is renamed aside and
    the new one into place. Ctrl-C between the two left no dataset at ``-o`` at all, the old
    one hidden as ``.ds.old-PID`` and never cleaned up; now it is put back."""
    src, out, index = _old_dataset(tmp_path)
    monkeypatch.setattr(data, "_exchange", lambda a, b: False, raising=False)
    real = os.replace
    into_out = []

    def interrupted(a: os.PathLike[str], b: os.PathLike[str]) -> None:
        if Path(b) == out and ".tmp-" in Path(a).name:
            into_out.append(a)
            if len(into_out) == 1:  # the new dataset going into place (then the old back)
                raise KeyboardInterrupt
        real(a, b)

    monkeypatch.setattr(data.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, out, val_fraction=0, seed=2, overwrite=True, **KW)
    monkeypatch.undo()
    assert json.loads((out / "index.json").read_text()) == index
    assert TokenDataset(out, "train").n_tokens == index["splits"]["train"]["n_tokens"]
    assert _beside(out) == []
    prepare(src, out, val_fraction=0, seed=2, overwrite=True, **KW)  # and it can be redone
    assert json.loads((out / "index.json").read_text())["seed"] == 2


@pytest.mark.parametrize("exchange", [True, False])
def test_an_overwrite_interrupted_after_the_swap_leaves_the_new_dataset_and_no_old_one(
    tmp_path, monkeypatch, exchange
):
    """Ctrl-C while the old dataset is being deleted: the new one is in place, whole, and
    nothing of the old one is left beside it (it was left hidden as ``.ds.old-PID``), also
    where the folders are not swapped in one step but renamed one after the other."""
    src, out, _ = _old_dataset(tmp_path)
    if not exchange:
        monkeypatch.setattr(data, "_exchange", lambda a, b: False)
    real = shutil.rmtree
    calls = []

    def interrupted(path: os.PathLike[str], *args: object, **kwargs: object) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt
        real(path, *args, **kwargs)

    monkeypatch.setattr(data.shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, out, val_fraction=0, seed=2, overwrite=True, **KW)
    monkeypatch.undo()
    assert len(calls) >= 1
    assert json.loads((out / "index.json").read_text())["seed"] == 2
    assert len(TokenDataset(out, "train")) == len(src.read_bytes()) + 1
    assert _beside(out) == []


_KILLED = """
import os, sys
from pathlib import Path
from unmask import data
out = Path(sys.argv[2])
data._exchange = lambda a, b: False  # a file system without renameat2(RENAME_EXCHANGE)
real = os.replace
def replace(a, b):
    if sys.argv[3] == "between" and Path(b) == out:  # the new dataset going into place
        os.kill(os.getpid(), 9)
    real(a, b)
def rmtree(path, *args, **kwargs):  # deleting the old dataset, set aside
    os.kill(os.getpid(), 9)
data.os.replace, data.shutil.rmtree = replace, rmtree
data.prepare(sys.argv[1], out, val_fraction=0, seed=2, overwrite=True, tokenizer="byte",
             progress=False)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a process with SIGKILL")
@pytest.mark.parametrize("when", ["between", "deleting"])
def test_a_kill_during_an_overwrite_without_the_exchange_leaves_nothing_behind(tmp_path, when):
    """Where the folders cannot be swapped in one step, the old dataset was renamed aside to
    ``.ds.old-PID``: a kill -9 between the two renames or while it was being deleted left
    that folder forever (no later prepare looked for it). It is now set aside under a
    staging folder's name, which the next prepare removes once its process is gone."""
    import subprocess
    import sys

    src, out, index = _old_dataset(tmp_path)
    r = subprocess.run([sys.executable, "-c", _KILLED, str(src), str(out), when],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr
    left = _beside(out)  # the old dataset, whole or in part (and the new one, not in place)
    assert len(left) == (2 if when == "between" else 1)
    assert all(".tmp-" in name for name in left)
    if when == "between":
        assert not out.exists()
    else:
        assert json.loads((out / "index.json").read_text())["seed"] == 2
    info = prepare(src, out, val_fraction=0, seed=3, overwrite=True, **KW)
    assert _beside(out) == []
    assert all(any(name in note for note in info.notes) for name in left)
    assert json.loads((out / "index.json").read_text())["seed"] == 3


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names fsynced files by /proc")
def test_every_file_is_on_disk_before_the_dataset_is_renamed_into_place(tmp_path, monkeypatch):
    """The shards, index.json and tokenizer.json were written without fsync and the folder
    renamed over the old dataset at once: after a power loss the rename could stand with
    empty or cut-off files under it, and the old dataset gone. Each is now fsynced in the
    staging folder, and the folders' entries after them."""
    src = _corpus(tmp_path)
    synced: list[str] = []
    real = os.fsync

    def recorded(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", recorded)
    out = tmp_path / "ds"
    prepare(src, out, val_fraction=0.3, min_val_tokens=0, shard_tokens=SPLIT_BLOCK, **KW)
    monkeypatch.undo()
    files = sorted(p.name for p in out.iterdir())
    assert "train-00001.bin" in files and "val-00000.bin" in files
    staged = {Path(p).name for p in synced if ".tmp-" in Path(p).parent.name}
    assert staged >= {*files} - {"tokenizer.json"} | {"index.json"}
    assert any(Path(p).name.startswith(".tokenizer.json.") for p in synced)  # its temp file
    assert str(tmp_path) in synced  # the rename


def test_the_validation_draw_keeps_no_list_of_every_block():
    """The validation blocks were the first ``n_val`` of all blocks sorted by rank: a list of
    every block and its rank in memory (a 40 GB corpus: 2.5M blocks, +250 MB). The same
    blocks now come from a heap of ``n_val`` ranks."""
    import tracemalloc

    n_blocks, n_val = 20_000, 4

    class Zeros:  # a token stream of n_blocks blocks, read but never held
        name = "stream"
        reads = 0

        def read(self, n: int) -> bytes:
            self.reads += 1
            return bytes(n)

    stream = Zeros()

    class Count:
        def __init__(self, keep: bool) -> None:
            self.n_tokens, self.keep, self.blocks = 0, keep, []

        def write(self, block: np.ndarray) -> None:
            self.n_tokens += len(block)
            if self.keep:
                self.blocks.append(stream.reads - 1)

    writers = {"train": Count(False), "val": Count(True)}
    tracemalloc.start()
    data._split_stream(stream, n_blocks * SPLIT_BLOCK, np.dtype("<u2"), writers, seed=5,
                       n_val=n_val)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    ranked = sorted(range(n_blocks), key=lambda i: data._block_rank(5, i))[:n_val]
    assert writers["val"].blocks == sorted(ranked)  # the same blocks as sorting all of them
    assert writers["train"].n_tokens == (n_blocks - n_val) * SPLIT_BLOCK
    assert peak < 3 * SPLIT_BLOCK * 2 + 200_000  # a block read or two, not 20,000 ranks


def test_training_windows_are_read_from_the_shards_not_a_memory_map(tmp_path, monkeypatch):
    """``TokenDataset`` memory-mapped its shards, and every page a random training window
    touched stayed resident: over a run the process grew by the whole split (104 MB split,
    3,000 batches of 32x128: RSS +103 MB). Windows are now read from the files: the same
    tokens, across shard ends too, and the dataset still pickles (DataLoader workers)."""
    import pickle

    import torch

    src = _corpus(tmp_path)
    prepare(src, tmp_path / "ds", val_fraction=0, shard_tokens=1000, **KW)
    want = np.array([b + 4 for b in src.read_bytes()] + [2])

    def no_map(*args: object, **kwargs: object) -> None:
        raise AssertionError("TokenDataset memory-mapped a shard")

    monkeypatch.setattr(np, "memmap", no_map)
    ds = pickle.loads(pickle.dumps(TokenDataset(tmp_path / "ds", "train")))
    assert ds.read(0, len(want)).tolist() == want.tolist()
    assert ds.read(995, 10).tolist() == want[995:1005].tolist()  # across a shard end
    g = torch.Generator().manual_seed(0)
    batch = ds.sample(4, 1500, g)
    starts = torch.randint(0, len(want) - 1500 + 1, (4,), generator=torch.Generator()
                           .manual_seed(0)).tolist()
    assert batch.tolist() == [want[s : s + 1500].tolist() for s in starts]
    (tmp_path / "ds" / "train-00003.bin").write_bytes(b"\0\0")  # cut off after opening
    with pytest.raises(data.UserError, match="shard ended early"):
        ds.read(2990, 20)


def test_a_dataset_replaced_under_a_reader_keeps_its_tokens_and_files_are_opened_once(
    tmp_path, monkeypatch
):
    """``TokenDataset`` opened a shard by path for every window read (~10 us each), so a
    ``prepare --overwrite`` of the dataset a run was reading switched the run to the new
    tokens mid-run, with the old shard sizes. Shards are now opened once and read by
    ``pread``: a shard read before the overwrite keeps its tokens (its old file), one first
    read after it is a one-line error, and each shard is opened once, however many windows,
    at most ``MAX_OPEN_SHARDS`` at a time."""
    import pickle

    src = _corpus(tmp_path, n_bytes=6000)
    out = tmp_path / "ds"
    prepare(src, out, val_fraction=0, shard_tokens=1000, **KW)
    want = np.array([b + 4 for b in src.read_bytes()] + [2])
    opened: list[str] = []
    real = os.open

    def counted(path: os.PathLike[str], *args: object) -> int:
        opened.append(Path(path).name)
        return real(path, *args)

    monkeypatch.setattr(data.os, "open", counted)
    ds = TokenDataset(out, "train")
    monkeypatch.setattr(ds, "MAX_OPEN_SHARDS", 3, raising=False)
    for _ in range(3):
        for s in range(0, 2971, 7):  # shards 0-2
            assert ds.read(s, 30).tolist() == want[s : s + 30].tolist()  # across shard ends
    assert opened == ["train-00000.bin", "train-00001.bin", "train-00002.bin"]
    assert ds.read(4995, 10).tolist() == want[4995:5005].tolist()  # shards 4, 5; 0, 1 closed
    assert len(opened) == 5 and sorted(ds._fds) == [2, 4, 5]

    other = tmp_path / "other.txt"
    other.write_text("z" * 6000, encoding="utf-8")
    prepare(other, out, val_fraction=0, shard_tokens=1000, overwrite=True, **KW)
    assert ds.read(4995, 10).tolist() == want[4995:5005].tolist()  # the run's own tokens
    with pytest.raises(data.UserError, match="train-00000.bin: shard changed or replaced"):
        ds.read(0, 10)  # its handle was closed: the file there now is another one
    fresh = pickle.loads(pickle.dumps(TokenDataset(out, "train")))  # no handles pickled
    assert fresh._fds == {} and fresh.read(0, 3).tolist() == [ord("z") + 4] * 3
    ds.close()
    assert ds._fds == {}
