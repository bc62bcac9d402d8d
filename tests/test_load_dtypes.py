"""A checkpoint whose weights are integers or booleans (corrupt, or another program's format)
is refused in one line naming the tensor, before anything loads; stored weights are always
floating point (``--quantize`` quantises at load), so every float dtype still loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from convert_helpers import load_error
from safetensors.torch import load_file, save_file
from test_convert import make_llada

import unmask


def _native(path: Path) -> Path:
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    torch.manual_seed(0)
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids())
    return save_checkpoint(path, model=Transformer(cfg), tokenizer=tok)


def _retype(path: Path, key: str, dtype: torch.dtype) -> None:
    tensors = load_file(path)
    tensors[key] = tensors[key].to(dtype)
    save_file(tensors, path, metadata={"format": "pt"})


@pytest.mark.parametrize("kind", ["native", "llada"])
@pytest.mark.parametrize(("dtype", "name"), [(torch.int64, "I64"), (torch.int8, "I8"),
                                             (torch.uint8, "U8"), (torch.bool, "BOOL")])
def test_integer_weights_are_refused_naming_the_tensor(tmp_path, kind, dtype, name) -> None:
    if kind == "native":
        folder, key = _native(tmp_path / "run"), "layers.1.mlp.down_proj.weight"
    else:
        make_llada(tmp_path / "llada", n_shards=1)
        folder, key = tmp_path / "llada", "model.transformer.blocks.1.ff_out.weight"
    weights = folder / "model.safetensors"
    _retype(weights, key, dtype)
    assert load_error(folder) == (
        f"{weights}: tensor {key} holds {name} values, not floating-point weights (a corrupt "
        "or foreign checkpoint?)"
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_every_float_dtype_still_loads(tmp_path, dtype) -> None:
    folder = _native(tmp_path / "run")
    key = "layers.0.attn.q_proj.weight"
    before = load_file(folder / "model.safetensors")[key].float()
    _retype(folder / "model.safetensors", key, dtype)
    loaded = unmask.load(folder)
    got = dict(loaded.model.named_parameters())[key]
    assert torch.allclose(got.float(), before.to(dtype).float())


def test_a_quantised_load_of_a_float_checkpoint_still_loads(tmp_path) -> None:
    pytest.importorskip("torchao")
    folder = _native(tmp_path / "run")
    assert unmask.load(folder, quantize="int8") is not None
