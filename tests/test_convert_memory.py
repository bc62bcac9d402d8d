"""What a streamed load or ``unmask convert`` holds at once (docs/large-models.md: "memory holds
the model so far plus one block"), measured by what the walk has open, not by the clock: a
``safe_open`` handle maps its file, and every page read through it counts in the process's
memory until the handle is closed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors
import torch
from safetensors.torch import load_file, save_file
from test_convert import LAYERS, make_llada

import unmask
from unmask.convert import convert


def _shard_per_block(folder: Path) -> dict[str, int]:
    """Rewrite a one-file LLaDA folder the way the publishers and ``benchmarks/large_shape.py``
    shard: one file per block, one for the embedding, one for the final norm and head, with
    ``model.safetensors.index.json``. Returns file name -> size in bytes."""
    single = folder / "model.safetensors"
    tensors = load_file(str(single))
    single.unlink()
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        if ".blocks." in key:
            group = f"block{int(key.split('.blocks.')[1].split('.')[0])}"
        else:
            group = "embed" if ".wte." in key else "final"
        groups.setdefault(group, {})[key] = t
    weight_map, sizes = {}, {}
    for n, (_, part) in enumerate(sorted(groups.items())):
        name = f"model-{n + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file(part, str(folder / name))
        weight_map |= {k: name for k in part}
        sizes[name] = (folder / name).stat().st_size
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    return sizes


class _Spy:
    """Wraps ``safetensors.safe_open``: which files are open (mapped) whenever a tensor is read."""

    def __init__(self, real) -> None:
        self.real = real
        self.open: dict[str, int] = {}  # path -> size, while its handle is open
        self.reads: list[tuple[str, int]] = []  # (tensor, bytes of the files open then)

    def __call__(self, path: str, *args, **kwargs):
        spy, handle = self, self.real(path, *args, **kwargs)

        class Handle:
            def __enter__(self):
                self.f = handle.__enter__()
                spy.open[path] = Path(path).stat().st_size
                return self

            def __exit__(self, *exc):
                spy.open.pop(path, None)
                return handle.__exit__(*exc)

            def keys(self):
                return self.f.keys()

            def get_slice(self, key):
                return self.f.get_slice(key)

            def get_tensor(self, key):
                spy.reads.append((key, sum(spy.open.values())))
                return self.f.get_tensor(key)

        return Handle()


@pytest.mark.parametrize("how", ["load", "convert"])
def test_a_sharded_load_maps_one_blocks_shard_at_a_time(tmp_path, monkeypatch, how) -> None:
    """Every shard stayed open (mapped) from the first block to the last: a CPU load or a
    convert of a 318 MB LLaDA folder in 6 shards peaked at +647 MB of RSS (model + the whole
    checkpoint's pages, the 2x of a loader that reads the state dict first), against +393 MB
    (1.24x) once each block opens only the files that hold it."""
    torch.manual_seed(0)
    make_llada(tmp_path / "src", n_shards=1)
    sizes = _shard_per_block(tmp_path / "src")
    assert len(sizes) == LAYERS + 2
    spy = _Spy(safetensors.safe_open)
    monkeypatch.setattr(safetensors, "safe_open", spy)
    if how == "load":
        loaded = unmask.load(tmp_path / "src")
    else:
        out = convert(tmp_path / "src", tmp_path / "out")
    monkeypatch.undo()
    if how == "convert":  # a native checkpoint is one file: read back with the spy gone
        loaded = unmask.load(out)
    reference = unmask.load(tmp_path / "src")
    x = torch.tensor([[3, 17, 5, 9]])
    torch.testing.assert_close(loaded.model(x), reference.model(x), rtol=0, atol=0)
    assert len(spy.reads) == sum(len(load_file(str(tmp_path / "src" / f))) for f in sizes)
    peak = max(mapped for _, mapped in spy.reads)
    assert peak <= max(sizes.values()), (peak, sizes)  # was the sum of every shard
    assert not spy.open  # every handle closed at the end
