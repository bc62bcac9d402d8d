"""``unmask.load`` and ``unmask convert`` on a user's own mistakes: a device or dtype it cannot
take, a publisher ``config.json`` value of the wrong JSON type, a disk that fills up while a
folder is written. Each is one line (``UserError``; exit 2 on the CLI), never torch's
traceback from deep inside the load, and nothing half-written is left behind."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from convert_helpers import load_error
from test_convert import make_llada

import unmask
from unmask.cli import main
from unmask.errors import UserError


def _native(path: Path) -> Path:
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    torch.manual_seed(0)
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids())
    return save_checkpoint(path, model=Transformer(cfg), tokenizer=tok)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("load")
    torch.manual_seed(1)
    make_llada(root / "llada", n_shards=1)
    return {"native": _native(root / "run"), "llada": root / "llada"}


@pytest.mark.parametrize("kind", ["native", "llada"])
@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(device="tpu"), "unknown device 'tpu'; use auto, cpu or cuda[:i]"),
    (dict(device="mps"), "device 'mps' is not supported; use auto, cpu or cuda[:i]"),
    (dict(dtype=torch.int8), "dtype torch.int8: the weights load as one of torch.float32"),
    (dict(dtype="int8"), "dtype 'int8': choose fp32, bf16, fp16 or float64"),
    (dict(dtype=torch.float8_e4m3fn), "dtype torch.float8_e4m3fn: the weights load as one of"),
    (dict(dtype="auto"), "dtype 'auto' is unmask.api.load_for_decoding's (--dtype auto); "
                         "unmask.load takes None (as stored), fp32, bf16, fp16 or float64"),
])
def test_a_device_or_dtype_load_cannot_take_is_one_line(folders, kind, kwargs, message) -> None:
    """They were torch's RuntimeError / TypeError (``to() received an invalid combination of
    arguments``) from inside the load, after the folder had been read."""
    with pytest.raises(UserError) as e:
        unmask.load(folders[kind], **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("kind", ["native", "llada"])
def test_cuda_without_cuda_is_one_line(folders, kind) -> None:
    """It was ``AssertionError: Torch not compiled with CUDA enabled``."""
    for device in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(UserError, match="torch sees no CUDA device"):
            unmask.load(folders[kind], device=device)


@pytest.mark.parametrize("kind", ["native", "llada"])
def test_dtype_by_name_and_device_object_load(folders, kind) -> None:
    """``dtype="bf16"`` (the names ``--dtype`` takes) and a ``torch.device`` are accepted; the
    name was a TypeError."""
    for name, want in (("bf16", torch.bfloat16), ("half", torch.float16),
                       ("float32", torch.float32), (torch.float16, torch.float16)):
        m = unmask.load(folders[kind], dtype=name, device=torch.device("cpu"))
        assert {p.dtype for p in m.model.parameters()} == {want}, name


@pytest.mark.parametrize(("key", "value", "message"), [
    ("weight_tying", "yes", "weight_tying='yes' should be bool (unmask's tie_embeddings)"),
    ("n_heads", "4", "n_heads='4' should be int"),
    ("rms_norm_eps", "1e-5", "rms_norm_eps='1e-5' should be float (unmask's norm_eps)"),
    ("max_sequence_length", "64", "max_sequence_length='64' should be int (unmask's max_seq_len)"),
    ("n_layers", [2], "n_layers=[2] should be int"),
    ("embedding_size", "x", "embedding_size='x' should be int (unmask's vocab_size)"),
    ("architectures", 5, "architectures=5 should be a list of names"),
])
def test_a_publisher_config_value_of_the_wrong_type_names_its_key(
    tmp_path: Path, key: str, value: object, message: str
) -> None:
    """``"weight_tying": "yes"`` was taken as true, and the folder then refused for an
    "unexpected tensor model.transformer.ff_out.weight"; a list was "must be a whole number"
    under unmask's field name, not the key the user has to edit; ``embedding_size`` "x" and
    ``architectures`` 5 were a ValueError / TypeError traceback."""
    torch.manual_seed(2)
    make_llada(tmp_path / "f", n_shards=1)
    cfg_path = tmp_path / "f" / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), key: value}))
    assert load_error(tmp_path / "f") == f"{cfg_path}: {message}"


@pytest.mark.parametrize("extra", [[], ["--to", "llada"]])
def test_a_disk_that_fills_up_during_convert_names_the_folder_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    extra: list[str],
) -> None:
    """A full disk said ``No space left on device`` without a path (a write's OSError names no
    file); the staging folder is removed and an empty destination stays empty."""
    import unmask.convert.write as write

    src = _native(tmp_path / "run")
    real = write.write_safetensors

    def full(tensors, path, *, like=None, **kw):
        first = dict(list(tensors.items())[:1])  # part of the file, then no space
        real(first, path, like=like and {k: like[k] for k in first}, **kw)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(write, "write_safetensors", full)
    out = tmp_path / "out"
    for exists in (False, True):
        if exists:
            out.mkdir()
        assert main(["convert", str(src), str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert err == f"unmask convert: error: No space left on device: {out}\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == (["out", "run"] if exists
                                                               else ["run"])
        assert not exists or not any(out.iterdir())


def test_a_native_checkpoint_is_fit_checked_in_the_dtype_and_quantisation_it_loads_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The native loader built the model in float32 on the CPU (and read the whole file into
    RAM beside it) whatever ``dtype`` was asked, so its fit check counted float32: a
    checkpoint that fits in bfloat16, or with ``--quantize int8``, was refused, with the hint
    to use ``--quantize int8`` given to a user who had. It now streams the file into the model
    in its dtype, block by block, as a publisher folder, and checks what that needs."""
    import unmask.quantize as q
    from unmask.config import ModelConfig, load_json
    from unmask.model import meta_model

    src = _native(tmp_path / "run")
    full = unmask.load(src)
    config = load_json(ModelConfig, src / "config.json")

    def need(dtype: torch.dtype, quantize: str | None) -> int:
        return q.estimate_bytes(meta_model(config).to(dtype), dtype, quantize, "cpu")

    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, config.vocab_size, (1, 10), generator=gen)
    for dtype, quantize, below in ((torch.bfloat16, None, need(torch.float32, None)),
                                   (torch.float32, "int8", need(torch.float32, None))):
        free = (need(dtype, quantize) + below) // 2
        monkeypatch.setattr(q, "free_bytes", lambda device, free=free: free)
        m = unmask.load(src, dtype=dtype, quantize=quantize)
        assert {p.dtype for p in m.model.parameters()} == {dtype}
        with torch.no_grad():
            got, want = m.model(tokens).float(), full.model(tokens)
        assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.9
        with pytest.raises(UserError, match="needs about .* with float32, .* free"):
            unmask.load(src)


def test_a_config_too_large_for_any_setting_is_refused_before_the_model_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``n_layers`` 1000000000 in a config.json (a typo) built a billion layers on the meta
    device for the fit check, for minutes and gigabytes; the parameter count refuses it first,
    for a publisher folder and a native checkpoint alike."""
    import unmask.model

    def never(config):
        raise AssertionError("the model was built")

    torch.manual_seed(3)
    make_llada(tmp_path / "pub", n_shards=1)
    native = _native(tmp_path / "run")
    for cfg_path, key in ((tmp_path / "pub" / "config.json", "n_layers"),
                          (native / "config.json", "n_layers")):
        cfg = json.loads(cfg_path.read_text())
        cfg_path.write_text(json.dumps({**cfg, key: 10**9}))
        monkeypatch.setattr(unmask.model, "meta_model", never)
        msg = load_error(cfg_path.parent)
        assert "parameters need at least" in msg and "no setting fits this device" in msg, msg
        monkeypatch.setenv("UNMASK_NO_FIT_CHECK", "1")  # the escape hatch skips it too
        with pytest.raises(AssertionError, match="the model was built"):
            unmask.load(cfg_path.parent)
        monkeypatch.delenv("UNMASK_NO_FIT_CHECK")


def _mdlm(p: Path) -> None:
    from test_dit import make_mdlm

    make_mdlm(p)


def _moe(p: Path) -> None:
    from test_moe import make_llada_moe

    make_llada_moe(p)


def _llada2(p: Path) -> None:
    from llada2_helpers import write_llada2_folder

    write_llada2_folder(p)


@pytest.mark.parametrize(("build", "key", "value", "message"), [
    (_mdlm, "hidden_dim", 10**9, "no model of this shape can be built (Storage size"),
    (_moe, "num_experts", 0, "num_experts=0 is not supported for llada-moe (needs at least 1"),
    (_llada2, "num_attention_heads", 0,
     "num_attention_heads=0 should be a whole number of at least 1 (unmask's n_heads)"),
])
def test_an_impossible_size_in_a_publisher_config_is_one_line(
    tmp_path: Path, build, key: str, value: int, message: str
) -> None:
    """Tracebacks before: torch's overflow building a 10**9-wide DiT on the meta device, the
    importer's own RuntimeError ("weight map has no source") for a MoE of no experts, a
    ZeroDivisionError in LLaDA 2's derive for 0 heads."""
    torch.manual_seed(5)
    build(tmp_path / "f")
    cfg_path = tmp_path / "f" / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), key: value}))
    msg = load_error(tmp_path / "f")
    assert msg.startswith(f"{cfg_path}: ") and message in msg, msg


def test_convert_refuses_a_destination_inside_the_model_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A conversion written inside a run's checkpoint/ folder was deleted, without a word, by
    the run's next save (which replaces that folder whole); inside a publisher folder it mixed
    the output into the download. Beside the checkpoint, in the run directory, is fine."""
    from unmask.checkpoint import save_checkpoint

    ckpt = _native(tmp_path / "run")
    torch.manual_seed(6)
    make_llada(tmp_path / "pub", n_shards=1)
    for src, dst, extra in ((tmp_path / "run", ckpt / "native", []),
                            (ckpt, ckpt / "a" / "b", ["--to", "llada"]),
                            (tmp_path / "pub", tmp_path / "pub" / "native", [])):
        assert main(["convert", str(src), str(dst), *extra]) == 2
        err = capsys.readouterr().err
        assert err == (f"unmask convert: error: {dst}: inside the model folder "
                       f"{dst.parent if dst.parent != ckpt / 'a' else ckpt}; write it elsewhere\n")
        assert not dst.exists() and not dst.parent.joinpath("a").exists()
    assert main(["convert", str(tmp_path / "run"), str(tmp_path / "run" / "native")]) == 0
    loaded = unmask.load(tmp_path / "run")
    save_checkpoint(tmp_path / "run", model=loaded.model, tokenizer=loaded.tokenizer)
    assert unmask.load(tmp_path / "run" / "native").family == "unmask"


def test_a_tied_head_with_its_own_bias_loads_block_by_block(tmp_path: Path) -> None:
    """An output head tied to the embedding but with a bias of its own (``head_bias``): the
    block-by-block loads skipped the whole head, so its bias stayed on the meta device ("Tensor
    on device meta is not on the expected device cpu" at the first forward), natively and, with
    ``--quantize``, from a ``--to transformers`` export."""
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    torch.manual_seed(7)
    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids(),
                       tie_embeddings=True, head_bias=True)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.lm_head.bias.normal_()
    ckpt = save_checkpoint(tmp_path / "run", model=model, tokenizer=tok)
    assert main(["convert", str(ckpt), str(tmp_path / "hf"), "--to", "transformers"]) == 0
    tokens = torch.randint(4, tok.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(tokens)
        for src in (ckpt, tmp_path / "hf"):
            for quantize in (None, "int8"):
                m = unmask.load(src, quantize=quantize, dtype=torch.float32).model
                assert m.lm_head.weight is m.embed.weight
                assert torch.equal(m.lm_head.bias, model.lm_head.bias)
                got = m(tokens)
                if quantize is None:
                    assert torch.equal(got, want), src
                else:
                    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.9
