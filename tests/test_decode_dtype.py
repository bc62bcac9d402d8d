"""``--dtype`` of the decoding commands (``api.decode_dtype``, ``api.load_for_decoding``): the
rule of ``auto``, explicit dtypes, CLI = API in each, and every decoder in 16 bits."""

import json

import pytest
import torch
from test_decoders import KINDS as DECODER_KINDS
from test_decoders import TOK, tiny

from unmask import api
from unmask.checkpoint import load, save_checkpoint
from unmask.cli import main
from unmask.config import SampleConfig
from unmask.errors import UserError
from unmask.model import Transformer

KINDS = {**DECODER_KINDS,  # the kinds of tests/test_decoders.py, and the one-model hybrid
         "hybrid": dict(attention="causal", draft_block=4, objective="hybrid")}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("dtype")
    paths = {}
    for i, (kind, overrides) in enumerate(KINDS.items()):
        torch.manual_seed(i)
        paths[kind] = str(save_checkpoint(
            root / kind, model=Transformer(tiny(**overrides)), tokenizer=TOK
        ))
    return paths


@pytest.fixture
def amx(monkeypatch):
    """``set(flag)``: pretend this CPU does (or does not) multiply bfloat16 in hardware."""

    def set_(flag: bool) -> None:
        monkeypatch.setattr(api, "cpu_has_bf16_matmul", lambda: flag)

    return set_


def test_auto_is_bf16_only_for_masked_diffusion_on_a_bf16_cpu(amx):
    amx(True)
    assert api.decode_dtype("auto", "cpu", tiny()) is torch.bfloat16
    assert api.decode_dtype("auto", "cpu", tiny(objective="sft")) is torch.bfloat16
    for kind in ("bd3lm", "sedd", "ar", "hybrid"):  # a few positions a forward, or not measured
        assert api.decode_dtype("auto", "cpu", tiny(**KINDS[kind])) is None, kind
    assert api.decode_dtype("auto", "cpu", None) is None  # a drafter: no config to go by
    amx(False)
    assert api.decode_dtype("auto", "cpu", tiny()) is None


def test_named_dtypes_aliases_and_bad_names():
    assert api.decode_dtype("fp32", "cpu", tiny()) is torch.float32
    assert api.decode_dtype("bfloat16", "cpu", tiny(attention="causal")) is torch.bfloat16
    assert api.decode_dtype("half", "cpu", None) is torch.float16
    with pytest.raises(UserError, match=r"^dtype 'int8': choose one of auto, fp32, bf16, fp16"):
        api.decode_dtype("int8", "cpu", tiny())


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU, without bf16
    with pytest.raises(UserError, match="^dtype bf16: this GPU has no bfloat16; use fp16$"):
        api.decode_dtype("bf16", "cuda", tiny())
    assert api.decode_dtype("fp16", "cuda", tiny()) is torch.float16


def test_load_for_decoding(checkpoints, amx):
    def dtype(path, name):
        return next(api.load_for_decoding(path, dtype=name).model.parameters()).dtype

    amx(True)
    assert dtype(checkpoints["mdlm"], "auto") is torch.bfloat16
    assert dtype(checkpoints["ar"], "auto") is torch.float32
    assert dtype(checkpoints["ar"], "fp16") is torch.float16
    amx(False)
    assert dtype(checkpoints["mdlm"], "auto") is torch.float32
    assert dtype(checkpoints["mdlm"], "bf16") is torch.bfloat16
    # unmask.load keeps what is stored: the Python API does not change numerics by itself
    assert next(load(checkpoints["mdlm"]).model.parameters()).dtype is torch.float32


@pytest.mark.parametrize("name", ["auto", "fp32", "bf16"])
def test_cli_writes_what_the_api_writes_in_each_dtype(checkpoints, amx, capsys, name):
    amx(True)  # auto means bf16 here, on any machine
    path = checkpoints["mdlm"]
    rc = main(["generate", "--model", path, "--gen-length", "12", "--steps", "12", "--json",
               "--dtype", name, "hello"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    loaded = api.load_for_decoding(path, dtype=name)
    config = api.sample_config(loaded, {"gen_length": 12, "steps": 12})
    want = api.generate(loaded, "hello", config=config)
    assert data["results"][0]["tokens"] == want.ids[0]
    assert data["dtype"] == {"auto": "bf16"}.get(name, name)


def test_every_decoder_runs_in_16_bits(checkpoints):
    for kind, path in checkpoints.items():
        for name in ("bf16", "fp16"):
            loaded = api.load_for_decoding(path, dtype=name)
            config = api.sample_config(loaded, {"gen_length": 8, "steps": 8})
            out = api.generate(loaded, "hi", config=config)
            assert 1 <= len(out.ids[0]) <= 8, (kind, name)  # bd3lm stops at an EOS block
            assert all(0 <= t < TOK.vocab_size for t in out.ids[0]), (kind, name)


def test_vectors_given_to_a_16_bit_model_take_its_dtype():
    """A continuous decoder hands the model float32 vectors (``inputs_embeds``)."""
    torch.manual_seed(0)
    model = Transformer(tiny()).eval()
    tokens = torch.randint(4, 40, (2, 10))
    vectors = torch.randn(2, 10, model.config.d_model)
    want = model(tokens, inputs_embeds=vectors, return_hidden=True)
    got = model.to(torch.bfloat16)(tokens, inputs_embeds=vectors, return_hidden=True)
    assert got.dtype is torch.bfloat16
    assert torch.allclose(got.float(), want, atol=0.1)


def test_dtype_flag_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--model", "demo", "--dtype", "int8", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "dtype 'int8': choose one of auto, fp32, bf16, fp16" in err and err.count("\n") == 1


def test_the_sample_config_is_the_same_in_every_dtype(checkpoints):
    """Only the weights change: the recommended options come from the checkpoint's config."""
    configs = {n: api.sample_config(api.load_for_decoding(checkpoints["mdlm"], dtype=n), {})
               for n in ("fp32", "bf16")}
    assert configs["fp32"] == configs["bf16"] != SampleConfig(steps=1)


def test_the_precision_benchmark_compares_dtypes_side_by_side(checkpoints, benchmark, tmp_path,
                                                              capsys):
    bench = benchmark("precision")
    out = tmp_path / "p.json"
    assert bench.main(["--models", checkpoints["mdlm"], checkpoints["ar"], "--prompts", "2",
                       "--prompt-words", "3", "--gen-lengths", "6", "--repeats", "1",
                       "--no-score", "--prompt-source", "corpus-tail",  # no data/ in a clone
                       "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["decoder"], r["dtype"]) for r in rows] == [
        ("llada", "fp32"), ("llada", "bf16"), ("ar", "fp32"), ("ar", "bf16")]
    for r in rows:
        assert r["tok_s"] > 0 and 0 <= r["token_agreement"] <= 1
        if r["dtype"] == "fp32":
            assert r["speedup"] == 1.0 and r["token_agreement"] == 1.0
    assert "| dtype |" in capsys.readouterr().out


def test_the_server_names_the_dtype_it_serves(checkpoints):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unmask.server import create_app

    for name in ("fp32", "bf16"):
        with TestClient(create_app(api.load_for_decoding(checkpoints["mdlm"], dtype=name))) as c:
            assert c.get("/v1/models").json()["data"][0]["dtype"] == name
            r = c.post("/v1/completions", json={"prompt": "hi", "max_tokens": 4})
            assert r.status_code == 200, r.text


def test_a_cuda_device_without_cuda_is_one_line_in_python(checkpoints, monkeypatch):
    """The dtype's check ran first and blamed bf16; fp16 then hit torch's AssertionError."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("bf16", "fp16", "auto"):
        with pytest.raises(UserError, match="torch sees no CUDA device"):
            api.load_for_decoding(checkpoints["mdlm"], device="cuda", dtype=name)
