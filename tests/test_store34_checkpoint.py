"""Session 34 (store): ``unmask.checkpoint.load(weights=False)``, the one place that knows how a
checkpoint folder is read without its weights (distill's ``--student`` check reads it so)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from test_convert import make_llada

from unmask.checkpoint import load, save_checkpoint
from unmask.config import model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.tokenizer import byte_tokenizer


def _native(tmp_path: Path) -> Path:
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=16, **tok.special_ids())
    return save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)


def test_weightless_load_of_a_native_checkpoint_reads_no_weight(tmp_path: Path) -> None:
    ckpt = _native(tmp_path)
    full = load(ckpt)
    got = load(ckpt, weights=False)
    assert got.config == full.config and got.tokenizer.vocab_size == full.tokenizer.vocab_size
    assert {p.device.type for p in got.model.parameters()} == {"meta"}
    with pytest.raises(UserError, match="unknown quantization"):  # not ignored
        load(ckpt, weights=False, quantize="int3")
    # the headers are checked as load checks them: a tensor of another shape is refused
    sd = {k: v.clone() for k, v in full.model.state_dict().items() if k != "lm_head.weight"}
    sd["embed.weight"] = sd["embed.weight"][:-1].contiguous()
    save_file(sd, str(ckpt / "model.safetensors"))
    with pytest.raises(UserError, match="embed"):
        load(ckpt, weights=False)


def test_weightless_load_of_a_publisher_folder(tmp_path: Path) -> None:
    folder = tmp_path / "llada"
    make_llada(folder)
    full = load(folder)
    got = load(folder, weights=False)
    assert got.config == full.config and got.family == full.family == "llada"
    assert {p.device.type for p in got.model.parameters()} == {"meta"}
    assert got.model.embed.weight.dtype == full.model.embed.weight.dtype
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(UserError, match="missing"):
        load(folder, weights=False)


def test_llada_without_mlp_hidden_size_is_mlp_ratio_4_as_llada_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LLaDA's block is mlp_hidden_size, else mlp_ratio · d_model with mlp_ratio 4 by default;
    # unmask took its own SwiGLU width and refused the weights as the wrong shape
    import test_convert

    monkeypatch.setattr(test_convert, "D", 64)  # unmask's own width for it: 192
    monkeypatch.setattr(test_convert, "FFN", 4 * 64)
    folder = tmp_path / "llada"
    make_llada(folder)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["mlp_hidden_size"]
    (folder / "config.json").write_text(json.dumps(cfg))
    assert load(folder).config.ffn_hidden == 4 * 64
    cfg["mlp_ratio"] = 3  # named: as it says (then the weights' width does not match)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="shape"):
        load(folder)


def test_a_special_id_beyond_any_tokenizer_is_one_line(tmp_path: Path) -> None:
    # an id over 2**32 (a typo) was tokenizers' OverflowError traceback
    folder = tmp_path / "llada"
    make_llada(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["mask_token_id"] = 10**12
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="mask_token_id"):
        load(folder)


@pytest.mark.parametrize("key", ["vocab_size", "ffn_hidden", "d_model"])
def test_a_size_past_what_a_tensor_holds_is_one_line(tmp_path: Path, key: str) -> None:
    # 10**30 (past 2**63) overflowed torch's size unpacking: a TypeError traceback, not the
    # "no model of this shape" line a size too large for storage gets
    ckpt = _native(tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg[key] = 10**30
    (ckpt / "config.json").write_text(json.dumps(cfg))
    for weights in (True, False):
        with pytest.raises(UserError, match="no model of this shape"):
            load(ckpt, weights=weights)


LFS_POINTER = ("version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64
               + "\nsize 123\n")


@pytest.mark.parametrize("name", ["tokenizer.json", "config.json"])
def test_a_native_file_left_a_git_lfs_pointer_says_so(tmp_path: Path, name: str) -> None:
    # a checkpoint cloned without git-lfs: the tokenizer and config are read before the weights
    # (whose pointer was already named so), and were "not a valid tokenizer.json" / "not JSON"
    ckpt = _native(tmp_path)
    (ckpt / name).write_text(LFS_POINTER)
    for weights in (True, False):
        with pytest.raises(UserError, match=f"{name}: a Git LFS pointer"):
            load(ckpt, weights=weights)


def test_a_reference_folder_transformers_cannot_load_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # an empty folder, and an unmask export (a masked LM whose config.json names its own code):
    # transformers' ValueError tracebacks, the second after asking "run the custom code? [y/N]"
    pytest.importorskip("transformers")
    from unmask.convert import export
    from unmask.scoring import ReferenceScorer

    (tmp_path / "empty").mkdir()
    hf = export(_native(tmp_path), tmp_path / "hf", family="transformers")
    for folder, says in ((tmp_path / "empty", "no config.json"),
                         (hf, "not a causal language model")):
        with pytest.raises(UserError, match=says) as e:
            ReferenceScorer.from_pretrained(folder)
        assert "\n" not in str(e.value)
    assert "[y/N]" not in capsys.readouterr().out


def test_a_publisher_config_left_a_git_lfs_pointer_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "llada"
    make_llada(folder)  # shards: a publisher folder whatever config.json holds
    (folder / "config.json").write_text(LFS_POINTER)
    for weights in (True, False):
        with pytest.raises(UserError, match="config.json: a Git LFS pointer"):
            load(folder, weights=weights)


def test_a_float64_export_loads_back(tmp_path: Path) -> None:
    # export(dtype=torch.float64) wrote torch_dtype "float64", which the import refused
    # ("not a dtype unmask loads") unless given dtype= again
    import torch

    from unmask.convert import export

    ckpt = _native(tmp_path)
    out = export(ckpt, tmp_path / "f64", family="llada", dtype=torch.float64)
    got = load(out)
    assert got.model.embed.weight.dtype == torch.float64
    cfg = json.loads((out / "config.json").read_text())
    cfg["torch_dtype"] = "float8"  # still refused by name
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="torch_dtype='float8' is not a dtype unmask loads"):
        load(out)


def test_a_head_of_its_own_under_a_config_that_ties_it_is_refused(tmp_path: Path) -> None:
    # config.json edited to tie_embeddings true over an untied model: the trained head was
    # skipped silently and the embedding decoded in its place (a publisher folder said so)
    from unmask.convert import convert

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=16, tie_embeddings=False,
                       **tok.special_ids())
    ckpt = save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    data = json.loads((ckpt / "config.json").read_text())
    data["tie_embeddings"] = True
    (ckpt / "config.json").write_text(json.dumps(data))
    for weights in (True, False):
        with pytest.raises(UserError, match="lm_head.weight.*tie_embeddings"):
            load(ckpt, weights=weights)
    with pytest.raises(UserError, match="lm_head.weight"):
        convert(ckpt, tmp_path / "out")
    # a head stored anyway that is the embedding (a file made elsewhere) still loads
    sd = load_file(str(ckpt / "model.safetensors"))
    sd["lm_head.weight"] = sd["embed.weight"].clone()
    save_file(sd, str(ckpt / "model.safetensors"))
    assert load(ckpt).config.tie_embeddings


def test_the_training_side_loader_refuses_a_head_of_its_own_under_a_tied_config(
    tmp_path: Path,
) -> None:
    # resume / --keep-best rescoring read weights through _load_weights, which dropped such a
    # head silently where load refused it (review rm1)
    from unmask.checkpoint import load_inference_weights

    tok = byte_tokenizer()
    kw = dict(vocab_size=tok.vocab_size, max_seq_len=16, **tok.special_ids())
    ckpt = save_checkpoint(tmp_path / "run", tokenizer=tok,
                           model=Transformer(model_preset("tiny", tie_embeddings=False, **kw)))
    tied = Transformer(model_preset("tiny", tie_embeddings=True, **kw))
    with pytest.raises(UserError, match="lm_head.weight.*tie_embeddings"):
        load_inference_weights(ckpt, tied)
    sd = load_file(str(ckpt / "model.safetensors"))
    sd["lm_head.weight"] = sd["embed.weight"].clone()  # the embedding: skipped, as before
    save_file(sd, str(ckpt / "model.safetensors"))
    load_inference_weights(ckpt, tied)
