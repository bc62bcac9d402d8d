"""--precision, --activation-checkpointing, --compile and the throughput/memory reporting
(``unmask.parallel``), on CPU with tiny models."""

import functools
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from corpus_helpers import word_corpus
from safetensors.torch import load_file

import unmask.train as train_mod
from unmask.checkpoint import load
from unmask.cli import main
from unmask.config import TrainConfig, model_preset
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.parallel import (
    CPU_AUTO_PRECISION,
    choose_parallel,
    compile_blocks,
    device_peak_flops,
    flops_per_token,
    resolve_precision,
)
from unmask.train import train
from unmask.train_guards import estimate_memory

WORDS = "and god said let there be light and there was light and god saw the light".split()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=600, seed=2)


def cfg(dataset: Path, out: Path, **kw: object) -> TrainConfig:
    base = TrainConfig(
        data=str(dataset), out=str(out), preset="tiny", seq_len=32, batch_size=8, steps=4,
        warmup=1, lr=3e-3, eval_every=0, eval_batches=1, save_every=0, log_every=1, seed=3,
        random_length_frac=0.0, precision="fp32",
    )  # fmt: skip
    return replace(base, **kw)


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in records(run) if "loss" in r]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoint" / "model.safetensors"))


def test_bf16_training_on_cpu_learns_and_saves_fp32(dataset, tmp_path):
    run = train(cfg(dataset, tmp_path / "bf16", precision="bf16", steps=16), progress=False)
    ls = losses(run)
    assert sum(ls[-4:]) / 4 < sum(ls[:4]) / 4 - 0.3  # it learns under autocast
    assert records(run)[0]["precision"] == "bf16"
    fp32 = train(cfg(dataset, tmp_path / "fp32", steps=16), progress=False)
    assert losses(fp32) != ls  # autocast really ran in bf16
    loaded = load(run)  # fp32 master weights are what the checkpoint holds
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    assert {t.dtype for t in weights(run).values()} == {torch.float32}


def test_activation_checkpointing_matches_plain_training(dataset, tmp_path):
    """Recomputing activations in backward changes memory, not the gradients."""
    plain = train(cfg(dataset, tmp_path / "plain"), progress=False)
    ckpt = train(cfg(dataset, tmp_path / "ac", activation_checkpointing=True), progress=False)
    assert losses(ckpt) == pytest.approx(losses(plain), rel=1e-6)
    wa, wb = weights(plain), weights(ckpt)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_compiled_training_matches_eager(dataset, tmp_path, monkeypatch):
    """``--compile`` traces every block (dynamo + AOT autograd); the compiled steps train the
    weights the eager ones do. ``aot_eager`` keeps this test fast; the next test runs the real
    code generator."""
    eager = train(cfg(dataset, tmp_path / "eager", steps=3), progress=False)
    monkeypatch.setattr(
        train_mod, "compile_blocks", functools.partial(compile_blocks, backend="aot_eager")
    )
    torch._dynamo.reset()
    compiled = train(cfg(dataset, tmp_path / "compiled", steps=3, compile=True), progress=False)
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-5)
    for k, v in weights(eager).items():
        torch.testing.assert_close(weights(compiled)[k], v, rtol=1e-4, atol=1e-6)
    assert load(compiled).model is not None  # compiled blocks save the native keys


NO_CC = shutil.which("gcc") is None and shutil.which("cc") is None


@pytest.mark.skipif(NO_CC, reason="torch.compile's inductor needs a C compiler on CPU (none found)")
@pytest.mark.skipif(
    os.environ.get("UNMASK_SLOW") != "1",
    reason="a cold inductor compile takes ~150 s on 2 cores; set UNMASK_SLOW=1",
)
def test_inductor_block_step_matches_eager():
    """The inductor-generated kernels of one block give eager's output and gradients (one
    block, fixed shape: a single compile)."""
    torch._dynamo.reset()
    cfg_ = model_preset("tiny", vocab_size=40, max_seq_len=16, n_layers=1, d_model=16)
    torch.manual_seed(0)
    eager = Transformer(cfg_)
    compiled = Transformer(cfg_)
    compiled.load_state_dict(eager.state_dict())
    compile_blocks(compiled, dynamic=False)
    x = torch.randint(0, 40, (2, 16), generator=torch.Generator().manual_seed(1))
    for m in (eager, compiled):
        m(x).float().logsumexp(-1).mean().backward()
    torch.testing.assert_close(compiled(x), eager(x), rtol=1e-4, atol=1e-5)
    for (name, pe), pc in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(pc.grad, pe.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_metrics_report_throughput_and_memory(dataset, tmp_path):
    run = train(cfg(dataset, tmp_path / "m", steps=2), progress=False)
    steps = [r for r in records(run) if "loss" in r]
    assert all(r["tokens_per_s"] > 0 and r["peak_mem_gib"] > 0.01 for r in steps)
    assert all("mfu" not in r for r in steps)  # no peak known for a CPU: no MFU


def test_precision_choices():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).name == CPU_AUTO_PRECISION
    assert resolve_precision("bf16", cpu).autocast is torch.bfloat16
    assert resolve_precision("fp32", cpu).autocast is None
    assert resolve_precision("bf16", cpu).scaler("cpu") is None
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(UserError, match="precision='fp8'"):
        TrainConfig(precision="fp8")
    with pytest.raises(UserError, match="parallel='zero3'"):
        TrainConfig(parallel="zero3")


def test_cli_refuses_fp16_on_cpu(dataset, tmp_path, capsys):
    code = main(["train", "--data", str(dataset), "--out", str(tmp_path / "x"), "--steps", "1",
                 "--precision", "fp16", "--device", "cpu", "--no-progress"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fp16 needs a CUDA GPU" in err[0]


def test_parallel_choice_by_size():
    gib = 2**30
    assert choose_parallel("fsdp", world=1, n_params=10**9, memory=gib) == "none"
    assert choose_parallel("ddp", world=2, n_params=10**9, memory=gib) == "ddp"
    # 16 bytes a parameter against a quarter of the memory: 10M params = 160 MB
    assert choose_parallel("auto", world=2, n_params=10**7, memory=gib) == "ddp"
    assert choose_parallel("auto", world=2, n_params=10**8, memory=gib) == "fsdp"
    assert choose_parallel("auto", world=2, n_params=10**8, memory=None) == "ddp"


def test_fsdp_memory_estimate_divides_the_state():
    model_cfg = model_preset("tiny", vocab_size=64)
    tc = TrainConfig(seq_len=32, batch_size=4)
    one = estimate_memory(model_cfg, tc, rows=4, cuda=False)
    two = estimate_memory(model_cfg, tc, rows=4, cuda=False, shards=2)
    assert two.state == one.state // 2 and two.activations == one.activations
    ac = estimate_memory(model_cfg, replace(tc, activation_checkpointing=True), rows=4, cuda=False)
    assert ac.activations < one.activations


def test_flops_and_peaks():
    """6 x the matmul weights a token goes through (PaLM): the tiny preset (d 32, 2 layers,
    4 heads of 8, 2 KV heads, SwiGLU 128) at vocabulary 64 has per layer q, o 32x32, k, v
    32x16, three 32x128 MLP matrices and two norms, a final norm and the 64x32 head. A tied
    head (the default) is the embedding matrix: its matmul was left out (6·64·32 per token)."""
    per_layer = 2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 128 + 2 * 32
    matmul = 2 * per_layer + 32 + 64 * 32  # the head included, the input lookup not
    attention = 12 * 2 * 32 * 32
    for tied in (True, False):
        c = model_preset("tiny", vocab_size=64, max_seq_len=32, tie_embeddings=tied)
        n = sum(p.numel() for p in Transformer(c).parameters())
        assert n == matmul + (0 if tied else 64 * 32)
        assert flops_per_token(c, n, 32) == 6 * matmul + attention
    assert device_peak_flops("NVIDIA H200", "bf16") == 989e12
    assert device_peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert device_peak_flops("NVIDIA A100-SXM4-80GB", "fp32") == 19.5e12
    assert device_peak_flops("NVIDIA L40S", "bf16") == 362e12
    assert device_peak_flops("cpu", "bf16") is None
