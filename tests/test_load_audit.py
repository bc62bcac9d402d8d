"""Loading a user's own checkpoints (``unmask.load``, ``unmask convert``): one block-by-block
walk for native checkpoints and publisher folders, one map of dtype names, ``--dtype auto``
read straight into its dtype, and the silent outcomes that became one-line errors (a config
without its sizes, an unknown ``torch_dtype``, NaN weights, a killed convert's staging folder).
Tiny models built here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from convert_helpers import load_error
from safetensors.torch import load_file, save_file
from test_convert import make_llada

import unmask
from unmask import api
from unmask.errors import UserError


def _native(path: Path, **overrides) -> Path:
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    torch.manual_seed(0)
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids(), **overrides)
    return save_checkpoint(path, model=Transformer(cfg), tokenizer=tok)


def _edit_weights(path: Path, key: str, edit) -> None:
    tensors = load_file(str(path))
    tensors[key] = edit(tensors[key].clone())
    save_file(tensors, str(path))


# -- one walk -------------------------------------------------------------------------------


def test_native_and_publisher_folders_load_through_one_walk(tmp_path, monkeypatch) -> None:
    """``checkpoint._stream_weights`` and ``convert.load.load_weights_lazily`` (and the eager
    ``load_weights``) were three copies of the same walk; a fix to one (the tied head, the
    quantised groups, the shape check) missed the others."""
    from unmask.convert import stream

    calls: list[torch.dtype] = []
    real = stream.stream_weights

    def spy(model, *args, **kwargs):
        calls.append(next(model.parameters()).dtype)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(stream, "stream_weights", spy)
    native = unmask.load(_native(tmp_path / "run"))
    make_llada(tmp_path / "llada", n_shards=2)
    llada = unmask.load(tmp_path / "llada", dtype="bf16")
    assert calls == [torch.float32, torch.bfloat16]
    for loaded in (native, llada):  # every parameter filled, none left on the meta device
        assert not any(p.is_meta for p in loaded.model.parameters())


def test_a_folder_that_fails_the_checks_allocates_nothing(tmp_path, monkeypatch) -> None:
    """A publisher folder without ``--quantize`` was materialised whole before its tensors'
    names were checked."""
    from unmask import model as model_module

    made: list[object] = []
    real = model_module.materialise
    monkeypatch.setattr(model_module, "materialise", lambda m, d: (made.append(m), real(m, d)))
    make_llada(tmp_path / "llada", n_shards=1)
    _edit_weights(tmp_path / "llada" / "model.safetensors", "model.transformer.ln_f.weight",
                  lambda t: torch.cat([t, t]))
    assert "has shape" in load_error(tmp_path / "llada")
    assert made == []


def test_the_walk_checks_a_stored_rotary_table_when_quantising_too(tmp_path) -> None:
    """The quantised path skipped the check of stored buffers that the eager one made."""
    from test_dit import make_mdlm

    pytest.importorskip("torchao")
    make_mdlm(tmp_path / "mdlm")
    path = tmp_path / "mdlm" / "model.safetensors"
    key = next(k for k in load_file(str(path)) if k.endswith("inv_freq"))
    _edit_weights(path, key, lambda t: t * 3)
    for quantize in (None, "int8"):
        with pytest.raises(UserError, match=f"tensor {key} differs from what config.json"):
            unmask.load(tmp_path / "mdlm", quantize=quantize)


# -- dtype names ------------------------------------------------------------------------------


def test_one_map_of_dtype_names() -> None:
    from unmask.config import dtype_name, torch_dtype
    from unmask.convert import parse_dtype

    for name, want in [("bf16", torch.bfloat16), ("bfloat16", torch.bfloat16),
                       ("torch.float16", torch.float16), ("half", torch.float16),
                       ("fp32", torch.float32), ("float", torch.float32)]:
        assert torch_dtype(name) is want, name
        assert parse_dtype(name) is want, name
        assert unmask.config.load_target("cpu", name)[1] is want, name
    assert [dtype_name(d) for d in (torch.float32, torch.bfloat16, torch.float16, torch.float64)] \
        == ["fp32", "bf16", "fp16", "float64"]
    with pytest.raises(UserError, match="^dtype 'int4': choose fp32, bf16 or fp16"):
        torch_dtype("int4")


def test_auto_reads_the_weights_straight_into_bf16_on_a_bf16_cpu(tmp_path, monkeypatch) -> None:
    """``--dtype auto`` on a CPU with AMX loaded float32 and then cast: twice the weights in
    memory for a moment, for a result ``--dtype bf16`` reads directly."""
    import unmask.checkpoint

    mdlm, ar = _native(tmp_path / "mdlm"), _native(tmp_path / "ar", attention="causal",
                                                   objective="ar")
    asked: list[object] = []
    real = unmask.checkpoint.load

    def spy(path, **kwargs):
        asked.append(kwargs.get("dtype"))
        return real(path, **kwargs)

    monkeypatch.setattr(unmask.checkpoint, "load", spy)
    monkeypatch.setattr(api, "cpu_has_bf16_matmul", lambda: True)
    loaded = api.load_for_decoding(mdlm, dtype="auto")
    assert asked == [torch.bfloat16]
    assert next(loaded.model.parameters()).dtype is torch.bfloat16
    assert next(api.load_for_decoding(ar, dtype="auto").model.parameters()).dtype is torch.float32
    with pytest.raises(UserError, match="not a checkpoint"):  # the load's own error, unchanged
        api.load_for_decoding(tmp_path, dtype="auto")
    monkeypatch.setattr(api, "cpu_has_bf16_matmul", lambda: False)
    assert next(api.load_for_decoding(mdlm).model.parameters()).dtype is torch.float32


# -- silent outcomes ----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["vocab_size", "n_layers"])
def test_a_native_config_without_its_sizes_is_refused(tmp_path, field) -> None:
    """The defaults of the tiny preset were taken silently; the weights then did not fit."""
    ckpt = _native(tmp_path / "run")
    data = json.loads((ckpt / "config.json").read_text())
    del data[field]
    (ckpt / "config.json").write_text(json.dumps(data))
    assert load_error(ckpt) == f"{ckpt / 'config.json'}: missing {field} (a checkpoint's " \
                               "config.json names its model's sizes)"


def test_a_native_config_without_a_newer_field_still_loads(tmp_path) -> None:
    ckpt = _native(tmp_path / "run")
    data = json.loads((ckpt / "config.json").read_text())
    del data["qk_norm"], data["sample_defaults"]  # fields a checkpoint may predate
    (ckpt / "config.json").write_text(json.dumps(data))
    assert unmask.load(ckpt).config.qk_norm is False


@pytest.mark.parametrize("value", ["bfloat15", "auto", 16])
def test_an_unknown_torch_dtype_is_refused_unless_a_dtype_is_given(tmp_path, value) -> None:
    """It meant float32 silently (twice a bfloat16 model's memory)."""
    make_llada(tmp_path / "llada", n_shards=1)
    cfg = tmp_path / "llada" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "torch_dtype": value}))
    msg = load_error(tmp_path / "llada")
    assert msg.startswith(f"{cfg}: torch_dtype={value!r} is not a dtype")
    assert next(unmask.load(tmp_path / "llada", dtype="fp16").model.parameters()).dtype \
        is torch.float16


def test_torch_dtype_as_torch_spells_it_and_newer_dtype_key(tmp_path) -> None:
    make_llada(tmp_path / "llada", n_shards=1)
    cfg = tmp_path / "llada" / "config.json"
    data = json.loads(cfg.read_text())
    del data["torch_dtype"]
    cfg.write_text(json.dumps({**data, "dtype": "bfloat16"}))
    assert next(unmask.load(tmp_path / "llada").model.parameters()).dtype is torch.bfloat16


@pytest.mark.parametrize("kind", ["native", "llada"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_weights_are_refused_naming_the_tensor(tmp_path, kind, bad) -> None:
    """A diverged run's checkpoint loaded silently and answered every prompt with NaN."""
    if kind == "native":
        folder, key = _native(tmp_path / "run"), "layers.1.mlp.down_proj.weight"
    else:
        make_llada(tmp_path / "llada", n_shards=1)
        folder, key = tmp_path / "llada", "model.transformer.blocks.1.ff_out.weight"
    weights = folder / "model.safetensors"

    def poison(t):
        t.view(-1)[[3, 7]] = bad
        return t

    _edit_weights(weights, key, poison)
    assert load_error(folder) == (
        f"{weights}: tensor {key} holds 2 NaN or infinite value(s) (a training run that "
        "diverged?); every output of this model would be NaN"
    )


def test_weights_beyond_fp16_say_to_load_wider(tmp_path) -> None:
    ckpt = _native(tmp_path / "run")
    key = "layers.0.attn.q_proj.weight"
    _edit_weights(ckpt / "model.safetensors", key, lambda t: t.index_fill_(0, torch.tensor([0]),
                                                                          1e6))
    with pytest.raises(UserError, match=rf"tensor {key} has \d+ value\(s\) beyond the range of "
                                        r"float16; load it in a wider dtype"):
        unmask.load(ckpt, dtype="fp16")
    assert unmask.load(ckpt, dtype="bf16") is not None


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_converts_staging_folder_is_removed_by_the_next(tmp_path) -> None:
    """A convert killed by SIGKILL (or the OOM killer) left a hidden folder as big as the model
    beside the destination, found by nobody."""
    from unmask.convert.write import convert
    from unmask.files import staging_prefix as _staging_prefix

    src, dst = _native(tmp_path / "run"), tmp_path / "out"
    dead = tmp_path / f"{_staging_prefix(dst, _dead_pid())}abc"
    live = tmp_path / f"{_staging_prefix(dst, os.getpid())}def"
    other = tmp_path / ".out2.tmp-x-1-abc"  # another destination's: not ours to touch
    # a dead pid here, but another machine's or another container's process: not ours to judge
    elsewhere = [tmp_path / f"{_staging_prefix(dst, _dead_pid(), host='elsewhere')}ghi",
                 tmp_path / f"{_staging_prefix(dst, _dead_pid(), space='12345')}jkl"]
    for folder in (dead, live, other, *elsewhere):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
    convert(src, dst)
    assert not dead.exists() and live.exists() and other.exists()
    assert all(folder.exists() for folder in elsewhere)
    assert (dst / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir()
                if p.name.startswith(".out.tmp") and p not in (live, *elsewhere)]


# -- a user's own folders -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [5000, 50, 0])
@pytest.mark.parametrize("kind", ["native", "llada"])
def test_a_weights_file_cut_short_is_named_so(tmp_path, kind, size) -> None:
    """It was safetensors' "incomplete metadata, file not fully covered" / "invalid header
    length"."""
    if kind == "native":
        folder = _native(tmp_path / "run")
    else:
        make_llada(tmp_path / "llada", n_shards=2)
        folder = tmp_path / "llada"
    path = sorted(folder.glob("*.safetensors"))[0]
    full = path.stat().st_size
    os.truncate(path, size)
    msg = load_error(folder)
    assert msg.startswith(f"{path}: cut short ({size:,} ")
    if size == 0:  # an empty file was safetensors' "header too small"
        assert msg.startswith(f"{path}: cut short (0 bytes: ")
    else:
        assert (f"of {full:,} bytes" in msg) if size == 5000 else ("its header alone" in msg)
    assert msg.endswith("copy or download it again")


def test_resuming_from_a_damaged_trainer_state_is_one_line(tmp_path) -> None:
    """A cut-short trainer.safetensors or a broken trainer.json raised safetensors' or json's
    exception from inside the resume."""
    from unmask.checkpoint import load_train_state, save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    model = Transformer(model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids()))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    ckpt = save_checkpoint(tmp_path / "run", model=model, tokenizer=tok, optimizer=opt,
                           trainer_state={"step": 1})
    assert load_train_state(ckpt, model=model, optimizer=opt, ema_model=None)["step"] == 1
    os.truncate(ckpt / "trainer.safetensors", 9000)
    with pytest.raises(UserError, match=r"trainer\.safetensors: cut short \(9,000 of "):
        load_train_state(ckpt, model=model, optimizer=opt, ema_model=None)
    (ckpt / "trainer.json").write_text('{"step": 1,}')
    with pytest.raises(UserError, match=r"trainer\.json: not valid JSON \(a comma after the last"):
        load_train_state(ckpt, model=model, optimizer=opt, ema_model=None)


def test_a_trailing_comma_in_config_json_is_named(tmp_path) -> None:
    """Python's message pointed at the line after it ("Expecting property name enclosed in
    double quotes at line 57")."""
    ckpt = _native(tmp_path / "run")
    lines = (ckpt / "config.json").read_text().rstrip().splitlines()
    lines[-2] += ","
    (ckpt / "config.json").write_text("\n".join(lines) + "\n")
    assert load_error(tmp_path / "run") == (
        f"{ckpt / 'config.json'}: not valid JSON (a comma after the last entry, "
        f"line {len(lines) - 1})"
    )


def test_an_empty_config_json_is_named(tmp_path) -> None:
    ckpt = _native(tmp_path / "run")
    (ckpt / "config.json").write_text("\n")
    assert load_error(ckpt) == f"{ckpt / 'config.json'}: not valid JSON (the file is empty)"


def test_paths_a_user_gives_for_a_run(tmp_path) -> None:
    """RUN, RUN/checkpoint, RUN/best, a link to either load; a run with only best/, a file inside
    a checkpoint, and a link whose target is gone say what to pass."""
    import shutil

    ckpt = _native(tmp_path / "run")
    shutil.copytree(ckpt, tmp_path / "run" / "best" / "checkpoint")
    (tmp_path / "link").symlink_to(tmp_path / "run")
    for path in ("run", "run/checkpoint", "run/best", "run/best/checkpoint", "link"):
        assert unmask.load(tmp_path / path).model is not None, path
    shutil.rmtree(ckpt)
    assert load_error(tmp_path / "run") == (
        f"{tmp_path / 'run'}: no latest checkpoint (checkpoint/), only the best one: "
        f"--model {tmp_path / 'run' / 'best'}"
    )
    best = tmp_path / "run" / "best" / "checkpoint"
    assert load_error(best / "model.safetensors").endswith(
        f"; pass the folder that holds it, {best}")
    (tmp_path / "gone").symlink_to(tmp_path / "moved")
    assert load_error(tmp_path / "gone") == (
        f"{tmp_path / 'gone'}: no such folder (a link to {tmp_path / 'moved'}, which does not "
        "exist)"
    )


def test_a_read_only_model_folder_loads_and_converts(tmp_path) -> None:
    """Nothing is written into the model's folder on load or convert (a shared, read-only model
    store)."""
    from unmask.convert import convert

    ckpt = _native(tmp_path / "run")
    before = sorted(p.name for p in ckpt.iterdir())
    for p in (ckpt, tmp_path / "run"):
        p.chmod(0o555)
    try:
        assert unmask.load(ckpt).model is not None
        convert(ckpt, tmp_path / "out")
    finally:
        for p in (ckpt, tmp_path / "run"):
            p.chmod(0o755)
    assert sorted(p.name for p in ckpt.iterdir()) == before
    assert unmask.load(tmp_path / "out").model is not None


def test_convert_onto_a_file_says_it_is_a_file(tmp_path) -> None:
    """An empty file was reported as "already exists and is not empty"."""
    (tmp_path / "out").touch()
    with pytest.raises(UserError, match=r"out: is a file; give the path of a new folder$"):
        unmask.convert.convert(_native(tmp_path / "run"), tmp_path / "out")


def test_every_config_file_names_a_trailing_comma(tmp_path):
    """A run's train_config.json (``config.load_json``: resume, report, distill) reads through
    the same JSON reader as a checkpoint's config.json: a comma after the last entry is named
    at its line (it was Python's "Expecting property name ... at line 3"), a missing file and
    a list are one line too."""
    from unmask.config import TrainConfig, load_json

    path = tmp_path / "train_config.json"
    path.write_text('{\n  "steps": 3,\n}\n')
    with pytest.raises(UserError, match=r"not valid JSON \(a comma after the last entry, line 2\)"):
        load_json(TrainConfig, path)
    path.write_text("[1, 2]\n")
    with pytest.raises(UserError, match="expected a JSON object"):
        load_json(TrainConfig, path)
    with pytest.raises(UserError, match="no such file"):
        load_json(TrainConfig, tmp_path / "none.json")
