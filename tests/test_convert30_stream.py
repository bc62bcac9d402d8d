"""``unmask convert`` of a publisher folder writes each tensor as it reads it: its memory is one
tensor and the mapped pages of one shard, not the whole model (docs/models.md), and what it
writes is what a load of the folder holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from llada2_helpers import write_llada2_folder
from safetensors.torch import load_file, save_file
from test_convert import make_dream, make_llada
from test_dit import make_mdlm, make_sedd
from test_moe import make_llada_moe

import unmask
import unmask.convert
from unmask.checkpoint import _state_for_save
from unmask.convert import convert
from unmask.errors import UserError

SRC = Path(__file__).resolve().parents[1] / "src"


def _big_llada(folder: Path, d: int = 512, layers: int = 12, vocab: int = 2048) -> int:
    """A LLaDA folder of ``layers`` blocks of width ``d`` in bfloat16, one shard per block
    (as the publishers shard); returns the bytes of its weights."""
    make_llada(folder, n_shards=1)  # the tokenizer and the config keys of a LLaDA folder
    (folder / "model.safetensors").unlink()
    config = json.loads((folder / "config.json").read_text())
    config |= {"d_model": d, "n_heads": 8, "n_kv_heads": 8, "n_layers": layers,
               "mlp_hidden_size": 4 * d, "embedding_size": vocab, "vocab_size": vocab,
               "torch_dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(config))

    def full(*shape: int) -> torch.Tensor:
        return torch.full(shape, 0.01, dtype=torch.bfloat16)

    shards = {"model-embed.safetensors": {"model.transformer.wte.weight": full(vocab, d)}}
    for i in range(layers):
        b = f"model.transformer.blocks.{i}."
        shards[f"model-{i:05d}.safetensors"] = {
            b + "attn_norm.weight": full(d), b + "ff_norm.weight": full(d),
            **{b + n + ".weight": full(d, d) for n in ("q_proj", "k_proj", "v_proj", "attn_out")},
            b + "ff_proj.weight": full(4 * d, d), b + "up_proj.weight": full(4 * d, d),
            b + "ff_out.weight": full(d, 4 * d),
        }
    shards["model-final.safetensors"] = {"model.transformer.ln_f.weight": full(d),
                                         "model.transformer.ff_out.weight": full(vocab, d)}
    weight_map = {}
    for name, tensors in shards.items():
        save_file(tensors, str(folder / name))
        weight_map |= dict.fromkeys(tensors, name)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return sum(t.numel() * 2 for part in shards.values() for t in part.values())


OPS = {  # the call, and the bound on its growth as a fraction of the folder's bf16 weights
    "convert": ("unmask.convert.convert(src, out)", 0.5),  # a publisher folder
    # its tensors cast to float32 (twice the folder): the old code grew by about twice the
    # size, the streamed one by 25 to 40 % of it
    "convert-native": ("unmask.convert.convert(src, out, dtype='fp32')", 1.0),
    "export": ("unmask.convert.export(src, out, family='llada')", 0.5),
}


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("op", OPS)
def test_convert_holds_one_tensor_not_the_model(tmp_path, op) -> None:
    """convert and export built the whole model in memory before writing it: for a 400 MiB
    bf16 LLaDA folder in 14 shards, peak RSS +431 MiB to convert it, +823 MiB to convert its
    native checkpoint to fp32, +431 MiB to export that; each tensor is read as it is written
    now (+53, +121, +53 MiB). Measured in a fresh process (this one's peak is the suite's)."""
    size = _big_llada(tmp_path / "src")
    src = tmp_path / "src"
    if op != "convert":  # a native checkpoint of the same model, bf16 (float32 in 'convert')
        src = convert(src, tmp_path / "native")
    script = (  # VmHWM: this process's peak (ru_maxrss starts at the forking pytest's)
        "import re, sys, torch, unmask.convert, unmask.checkpoint\n"
        "def peak(): return int(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status')"
        ".read()).group(1))\n"
        "src, out = sys.argv[1:]\n"
        "base = peak()\n"
        f"{OPS[op][0]}\n"
        "print(peak() - base)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(src), str(tmp_path / "out")],
        capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    grew = int(done.stdout.split()[-1]) * 1024  # kB
    assert grew < size * OPS[op][1], (grew, size)  # was more than the model's size


FAMILIES = {
    "llada": lambda f: make_llada(f, n_shards=3, tie=True),  # a tied head: stored once
    "dream": make_dream,
    "llada-moe": lambda f: make_llada_moe(f, shared=1, n_shards=2),
    "llada2": write_llada2_folder,  # a fused query_key_value, split into q, k, v
    "mdlm": make_mdlm,  # fused attn_qkv, a stored rotary buffer
    "sedd": make_sedd,
}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_streamed_convert_writes_what_a_load_holds(tmp_path, family) -> None:
    """Every tensor of the converted folder is the loaded model's, in the folder's dtype or
    the one asked for, as a native save of the loaded model writes them."""
    torch.manual_seed(0)
    FAMILIES[family](tmp_path / "src")
    for dtype in (None, torch.bfloat16):
        out = convert(tmp_path / "src", tmp_path / f"out-{dtype}", dtype=dtype)
        want = _state_for_save(unmask.load(tmp_path / "src", dtype=dtype).model)
        got = load_file(str(out / "model.safetensors"))
        assert sorted(got) == sorted(want)
        for name, t in want.items():
            assert torch.equal(got[name], t), name
        assert unmask.load(out).family == "unmask"
        assert json.loads(load_metadata(out))["source"] == family


def load_metadata(folder: Path) -> str:
    """The converted file's safetensors metadata, as JSON."""
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return json.dumps(f.metadata())


def test_a_nan_found_while_writing_leaves_nothing(tmp_path) -> None:
    """A weight holding NaN is only seen when it is read, midway through the write: one line
    naming it, and no folder (nor staging folder) left behind."""
    torch.manual_seed(0)
    make_llada(tmp_path / "src", n_shards=2)
    shard = tmp_path / "src" / "model-00002-of-00002.safetensors"
    tensors = load_file(str(shard))
    key = sorted(tensors)[-1]
    tensors[key].view(-1)[0] = float("nan")
    save_file(tensors, str(shard))
    with pytest.raises(UserError, match=f"tensor {key} holds 1 NaN"):
        convert(tmp_path / "src", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_ctrl_c_midway_through_a_streamed_write_leaves_nothing(tmp_path, monkeypatch) -> None:
    """Ctrl-C while tensors are being read and written: no folder, no staging folder, and the
    shard being read is closed."""
    from unmask.convert.stream import StreamedWeights

    torch.manual_seed(0)
    make_llada(tmp_path / "src", n_shards=2)
    read = StreamedWeights.__getitem__
    calls = []

    def interrupted(self, name):
        calls.append(self)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return read(self, name)

    monkeypatch.setattr(StreamedWeights, "__getitem__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(tmp_path / "src", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    assert not calls[0]._stack._exit_callbacks  # the open shard was closed


def _cut_short(file: Path) -> None:
    """Drop the last bytes of ``file``: its weights can no longer be read."""
    file.write_bytes(file.read_bytes()[:-64])


def test_export_refuses_a_publisher_folder_before_reading_its_weights(tmp_path) -> None:
    """`convert LLADA_FOLDER OUT --to transformers` loaded the whole model before saying that
    export takes a native checkpoint (minutes for 8B, or a refusal about its weights)."""
    from unmask.convert import export

    torch.manual_seed(0)
    make_llada(tmp_path / "src", n_shards=2)
    _cut_short(tmp_path / "src" / "model-00002-of-00002.safetensors")
    with pytest.raises(UserError, match=r"already a publisher folder \(llada\); export takes"):
        export(tmp_path / "src", tmp_path / "out", family="transformers")


def test_export_refuses_a_family_that_cannot_hold_the_model_before_reading_it(tmp_path) -> None:
    """A refused layout (llada2 is import only) was found after the whole model was loaded."""
    from unmask.convert import export

    torch.manual_seed(0)
    make_llada(tmp_path / "src", n_shards=2)
    native = convert(tmp_path / "src", tmp_path / "native")
    _cut_short(native / "model.safetensors")
    with pytest.raises(UserError, match="cannot export as llada2: the family is import only"):
        export(native, tmp_path / "out", family="llada2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["native", "src"]


@pytest.mark.parametrize(("family", "to"), [("llada", "llada"), ("llada", "transformers"),
                                            ("dream", "dream"), ("llada-moe", "llada-moe"),
                                            ("mdlm", "transformers")])
def test_convert_export_convert_round_trip_is_exact(tmp_path, family, to) -> None:
    """A publisher folder converted, exported (both streamed) and converted back gives the same
    tensors, config and logits."""
    torch.manual_seed(0)
    FAMILIES[family](tmp_path / "src")
    first = convert(tmp_path / "src", tmp_path / "first")
    exported = unmask.convert.export(first, tmp_path / "exported", family=to)
    again = convert(exported, tmp_path / "again")
    a, b = (load_file(str(f / "model.safetensors")) for f in (first, again))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((first / "config.json").read_text()) == \
        json.loads((again / "config.json").read_text())
    x = torch.tensor([[3, 17, 5, 9]])
    torch.testing.assert_close(unmask.load(again).model(x), unmask.load(first).model(x),
                               rtol=0, atol=0)


def test_a_stale_index_beside_model_safetensors_is_ignored_as_transformers_does(tmp_path) -> None:
    """transformers' save_pretrained of an unsharded model into a folder that held shards
    deletes the shards and leaves model.safetensors.index.json: transformers loads
    model.safetensors, unmask said "shard listed in model.safetensors.index.json is missing"."""
    torch.manual_seed(0)
    make_llada(tmp_path / "src", n_shards=1)
    stale = {"weight_map": {"model.transformer.wte.weight": "model-00001-of-00002.safetensors"}}
    (tmp_path / "src" / "model.safetensors.index.json").write_text(json.dumps(stale))
    out = convert(tmp_path / "src", tmp_path / "out")
    x = torch.tensor([[3, 17, 5, 9]])
    assert unmask.load(tmp_path / "src").model(x).isfinite().all()
    assert torch.equal(unmask.load(out).model(x), unmask.load(tmp_path / "src").model(x))
