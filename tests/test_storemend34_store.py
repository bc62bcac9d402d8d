"""Session 34 (store follow-ups): export's LFS line, the tied-head check's NaN and
lower-precision heads, ``load(weights=False)`` in eval mode, the reference scorer's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_convert import make_llada

from unmask.checkpoint import load, save_checkpoint
from unmask.config import model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer

LFS_POINTER = ("version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64
               + "\nsize 123\n")


def _native(tmp_path: Path, name: str = "run") -> Path:
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=16, **tok.special_ids())
    return save_checkpoint(tmp_path / name, model=Transformer(cfg), tokenizer=tok)


def test_export_of_a_publisher_folder_whose_config_is_an_lfs_pointer_says_so(
    tmp_path: Path,
) -> None:
    # load said "a Git LFS pointer", export "config.json: not valid JSON"
    from unmask.convert import export

    folder = tmp_path / "llada"
    make_llada(folder)
    (folder / "config.json").write_text(LFS_POINTER)
    with pytest.raises(UserError, match="config.json: a Git LFS pointer"):
        export(folder, tmp_path / "out", family="llada")


def _head_beside(ckpt: Path, head: object) -> None:
    sd = load_file(str(ckpt / "model.safetensors"))
    sd["lm_head.weight"] = head(sd["embed.weight"])  # type: ignore[operator]
    save_file(sd, str(ckpt / "model.safetensors"))


def test_a_tied_head_with_the_embeddings_nan_is_the_nan_error(tmp_path: Path) -> None:
    # torch.equal(NaN, NaN) is False: the head was "of its own", with advice to untie it
    ckpt = _native(tmp_path)
    sd = load_file(str(ckpt / "model.safetensors"))
    sd["embed.weight"][0, 0] = float("nan")
    save_file(sd, str(ckpt / "model.safetensors"))
    _head_beside(ckpt, lambda e: e.clone())
    with pytest.raises(UserError, match="embed.weight holds 1 NaN") as e:
        load(ckpt)
    assert "tie_embeddings" not in str(e.value)
    # a NaN in the head alone is still a head other than the embedding
    _head_beside(ckpt, lambda e: torch.where(e.isnan(), 0.0, e).index_fill(1, torch.tensor([1]),
                                                                           float("nan")))
    with pytest.raises(UserError, match="lm_head.weight.*tie_embeddings"):
        load(ckpt)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_tied_head_stored_as_a_lower_precision_copy_is_the_embedding(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    # a bf16 copy of an fp32 embedding was refused as a head "other than the embedding"
    ckpt = _native(tmp_path)
    _head_beside(ckpt, lambda e: e.to(dtype))
    for weights in (True, False):
        assert load(ckpt, weights=weights).config.tie_embeddings
    # rounded otherwise than the embedding (one value one step off): a head of its own
    def off(e: torch.Tensor) -> torch.Tensor:
        h = e.to(dtype)
        h[0, 0] = torch.nextafter(h[0, 0], torch.tensor(10.0, dtype=dtype))
        return h
    _head_beside(ckpt, off)
    with pytest.raises(UserError, match="lm_head.weight.*tie_embeddings"):
        load(ckpt)


def test_weightless_load_is_in_eval_mode_as_a_full_load(tmp_path: Path) -> None:
    # load's docstring says eval mode; weights=False returned the model training
    folder = tmp_path / "llada"
    make_llada(folder)
    for path in (_native(tmp_path), folder):
        assert not load(path).model.training
        model = load(path, weights=False).model
        assert not any(m.training for m in model.modules())


def test_a_reference_folder_without_config_or_weights_says_which(tmp_path: Path) -> None:
    # an empty folder was "Couldn't instantiate the backend tokenizer from one of:"; config.json
    # without weights "not a causal language model"
    pytest.importorskip("transformers")
    from unmask.scoring import ReferenceScorer

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=r"empty: no config.json, not a Hugging Face model folder$"):
        ReferenceScorer.from_pretrained(empty)
    (empty / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(UserError, match="pass gguf_file='m.gguf'"):
        ReferenceScorer.from_pretrained(empty)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UserError, match="bare: no weights beside config.json"):
        ReferenceScorer.from_pretrained(bare)


def test_a_reference_error_that_opens_a_list_keeps_the_list(tmp_path: Path) -> None:
    # "(Couldn't instantiate the backend tokenizer from one of:)": its first line only
    pytest.importorskip("transformers")
    from unmask.scoring import ReferenceScorer

    folder = tmp_path / "notok"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError) as e:
        ReferenceScorer.from_pretrained(folder)
    said = str(e.value)
    assert "\n" not in said and not said.endswith(":)")


def test_a_key_error_inside_transformers_is_not_called_a_folder_it_cannot_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every KeyError became "not a causal language model": a bug in transformers' own code too
    transformers = pytest.importorskip("transformers")
    from unmask.scoring import ReferenceScorer

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("internal")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", broken)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(KeyError, match="internal"):
        ReferenceScorer.from_pretrained(folder)


def test_same_values_compares_past_its_first_chunk() -> None:
    from unmask.checkpoint import same_values

    a = torch.randn(5 << 20)  # more than one chunk (4 Mi values)
    b = a.to(torch.bfloat16)
    assert same_values(a, b) and same_values(b, a)
    b[-1] = torch.nextafter(b[-1], torch.tensor(10.0, dtype=torch.bfloat16))
    assert not same_values(a, b)
    assert not same_values(a, a[:-1])


def test_a_truncated_reference_weights_file_is_one_line(tmp_path: Path) -> None:
    # an interrupted download: safetensors' SafetensorError ended in a traceback (review rm1)
    pytest.importorskip("transformers")
    from unmask.scoring import ReferenceScorer

    folder = tmp_path / "cut"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="cut: not a causal language model .*header"):
        ReferenceScorer.from_pretrained(folder)
