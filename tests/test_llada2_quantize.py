"""Weight-only int8 / int4 quantisation at load (torchao) and the memory check before loading:
quantised LLaDA 2.x logits stay close to full precision, routers stay exact, what the library
or device cannot do and a model that does not fit are refused with one line, before loading."""

from __future__ import annotations

import json

import pytest
import torch
from convert_helpers import load_error
from llada2_helpers import write_llada2_folder

import unmask
from unmask.errors import UserError

pytest.importorskip("torchao")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("llada2q")
    write_llada2_folder(path)
    return path


@pytest.fixture(scope="module")
def full(folder):
    return unmask.load(folder).model


def _kl_top1(full, model) -> tuple[float, float]:
    tokens = torch.randint(0, 44, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = full(tokens).log_softmax(-1), model(tokens).log_softmax(-1)
    kl = (ref.exp() * (ref - got)).sum(-1).mean().item()
    return kl, (ref.argmax(-1) == got.argmax(-1)).float().mean().item()


def test_quantized_logits_agree_with_full_precision(folder, full) -> None:
    stats = {}
    for scheme in ("int8", "int4"):
        model = unmask.load(folder, quantize=scheme).model
        weight = model.layers[1].attn.q_proj.weight
        assert "torchao" in type(weight).__module__ + type(weight.data).__module__
        router = model.layers[1].mlp.router.weight
        assert type(router.data) is torch.Tensor  # routers stay in full precision
        assert torch.equal(router, full.layers[1].mlp.router.weight)
        stats[scheme] = _kl_top1(full, model)
    (kl8, top8), (kl4, top4) = stats["int8"], stats["int4"]
    assert 0 < kl8 < 0.01 and top8 >= 0.9  # int8: per-row scales, nearly exact
    assert kl8 < kl4 < 0.5 and top4 >= 0.6  # int4 of random (unsmooth) weights: coarser


def test_unknown_scheme_and_device_refused(folder) -> None:
    from unmask.quantize import check_quantize

    with pytest.raises(UserError, match="unknown quantization 'int2'"):
        check_quantize("int2", "cpu")
    with pytest.raises(UserError, match="cpu or cuda, not mps"):
        check_quantize("int8", "mps")


def test_torchao_missing_is_one_line(monkeypatch) -> None:
    import sys

    from unmask.quantize import check_quantize

    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao now raises ImportError
    with pytest.raises(UserError, match=r"needs torchao: pip install 'unmask\[quantize\]'"):
        check_quantize("int4", "cpu")


def test_torchao_import_warnings_are_held_back_only_while_importing(tmp_path) -> None:
    """torchao's import logs warnings about prebuilt kernels that do not match this torch
    ("Failed to load .../_C_mxfp8...so"); a stand-in package that logs the same way shows the
    import is quiet and that the loggers' levels come back afterwards."""
    import subprocess
    import sys

    pkg = tmp_path / "torchao"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import logging\n"
        "logging.getLogger('torchao').warning('Failed to load _C_mxfp8.so')\n"
    )
    (pkg / "quantization.py").write_text(  # its submodules register enums: the pytree note
        "import logging\n"
        "logging.getLogger('torch.utils._pytree').warning('Enum subclass is deprecated')\n"
    )
    code = (
        "import logging, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from unmask.quantize import import_torchao\n"
        "assert import_torchao().__file__.startswith(sys.path[0])\n"
        "logging.getLogger('torchao').warning('a later warning')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Failed to load" not in r.stderr and "Enum subclass" not in r.stderr
    assert "a later warning" in r.stderr  # nothing is muted after the import


def test_estimates_order_and_refusal_names_what_fits(folder, monkeypatch) -> None:
    from unmask.convert import model_config
    from unmask.model import Transformer
    from unmask.quantize import check_fits, estimate_bytes

    _, config, _ = model_config(folder)
    with torch.device("meta"):
        model = Transformer(config).to(torch.bfloat16)
    bf16, int8 = (estimate_bytes(model, torch.bfloat16, q, "cpu") for q in (None, "int8"))
    int4_cpu = estimate_bytes(model, torch.bfloat16, "int4", "cpu")
    # On CPU int4 values sit in int8 storage, plus group scales and zero points; at this tiny
    # shape the block in flight outweighs what int4 saves on bf16 (a larger shape's order:
    # test_the_fit_hint_names_a_bf16_load_and_int4_on_cuda_in_bf16).
    assert bf16 > int8 and int4_cpu > int8
    free = (bf16 + int8) // 2  # int8 fits, bf16 does not
    with pytest.raises(UserError) as e:
        check_fits(model, torch.bfloat16, None, "cpu", source="m", free=free)
    msg = str(e.value)
    assert "\n" not in msg and "bfloat16" in msg and "use --quantize int8" in msg
    with pytest.raises(UserError, match="no setting fits"):
        check_fits(model, torch.bfloat16, "int8", "cpu", source="m", free=1000)
    assert check_fits(model, torch.bfloat16, "int8", "cpu", source="m", free=free) == int8
    monkeypatch.setenv("UNMASK_NO_FIT_CHECK", "1")
    check_fits(model, torch.bfloat16, None, "cpu", source="m", free=1000)


def test_load_refuses_what_does_not_fit_before_materialising(folder, monkeypatch) -> None:
    import unmask.quantize as q

    monkeypatch.setattr(q, "free_bytes", lambda device: 1000)
    msg = load_error(folder)
    assert "needs about" in msg and "free" in msg


def test_bad_folder_refused_before_anything_is_quantised(tmp_path, monkeypatch) -> None:
    import unmask.quantize as q

    write_llada2_folder(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["moe_intermediate_size"] = 32
    (tmp_path / "config.json").write_text(json.dumps(data))
    calls: list[str] = []
    monkeypatch.setattr(q, "quantize_module", lambda *a: calls.append("q"))
    with pytest.raises(UserError, match="shape"):
        unmask.load(tmp_path, quantize="int8")
    assert calls == []  # shapes are all checked before the first block is materialised


def test_cli_quantize_and_fit_refusal(folder, monkeypatch, capsys) -> None:
    import unmask.quantize as q
    from unmask.cli import main

    args = ["generate", "--model", str(folder), "--gen-length", "8", "--device", "cpu",
            "--threshold", "0.9", "--no-live", "--quantize", "int8", "w1 w2"]  # fmt: skip
    assert main(args) == 0
    monkeypatch.setattr(q, "free_bytes", lambda device: 10**6)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--quantize int8" in err and "free" in err


def test_native_checkpoint_quantized_after_loading() -> None:
    """A native checkpoint (the shipped demo model) is quantised once loaded; int8 keeps its
    greedy predictions."""
    from pathlib import Path

    demo = Path(unmask.__file__).parent / "assets" / "demo"
    full = unmask.load(demo).model
    loaded = unmask.load(demo, quantize="int8")
    model = loaded.model
    assert "torchao" in type(model.layers[0].mlp.up_proj.weight).__module__
    from unmask import api

    assert api.weights_dtype(loaded) == "fp32 + quantized"  # what generate's line names
    kl, top1 = _kl_top1(full, model)
    assert kl < 0.01 and top1 >= 0.9


def test_a_tied_head_stays_the_embedding_in_either_path(tmp_path) -> None:
    """One rule for a head tied to the embeddings (the native path quantised it into a second
    copy, the publisher path kept it): it stays the embedding matrix, so the same weights give
    the same quantised logits from a publisher's folder and from its native conversion."""
    from test_convert import make_llada

    from unmask.cli import main

    torch.manual_seed(4)
    make_llada(tmp_path / "pub", n_shards=1, tie=True)
    assert main(["convert", str(tmp_path / "pub"), str(tmp_path / "native")]) == 0
    a = unmask.load(tmp_path / "pub", quantize="int8").model
    b = unmask.load(tmp_path / "native", quantize="int8").model
    for m in (a, b):
        assert m.lm_head.weight is m.embed.weight
    tokens = torch.randint(3, 40, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a(tokens), b(tokens))


def test_a_layer_one_input_wide_stays_in_full_precision(tmp_path) -> None:
    """A shared expert 1 wide (its down projection takes one input) failed int8 with "shape
    '[32, 1]' is invalid"; layers that narrow stay in full precision, the rest is quantised,
    and the logits stay those of the full model."""
    from test_moe import make_llada_moe

    torch.manual_seed(0)
    make_llada_moe(tmp_path / "pub", shared=1)
    full = unmask.load(tmp_path / "pub").model
    model = unmask.load(tmp_path / "pub", quantize="int8").model
    narrow = model.layers[0].mlp.shared_expert.down_proj
    assert narrow.in_features == 1 and type(narrow.weight.data) is torch.Tensor
    assert torch.equal(narrow.weight, full.layers[0].mlp.shared_expert.down_proj.weight)
    assert "torchao" in type(model.layers[0].mlp.shared_expert.up_proj.weight).__module__
    tokens = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = full(tokens).log_softmax(-1), model(tokens).log_softmax(-1)
    assert (ref.exp() * (ref - got)).sum(-1).mean().item() < 0.01
    assert (ref.argmax(-1) == got.argmax(-1)).float().mean().item() >= 0.9


def test_a_native_checkpoint_quantizes_every_linear_layer_it_estimates(tmp_path) -> None:
    """The block-by-block load quantised only the blocks and the head: a native checkpoint's
    other linear layers (the noise-level embedding, the final modulation, embed-diffusion's
    self-conditioning map) stayed in full precision, unlike the whole-model quantisation it
    replaced and the memory estimate (``estimate_bytes``), which counts them quantised."""
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.quantize import _quantizable
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=32, **tok.special_ids())
    cfg.time_conditioning, cfg.sigma_input, cfg.embed_self_condition = (
        True, "masked_fraction", True)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    model = unmask.load(tmp_path / "run", quantize="int8").model
    left = [n for n, m in model.named_modules() if _quantizable(m, n)
            and "torchao" not in type(m.weight).__module__ and n != "lm_head"]
    assert left == []
    assert "torchao" in type(model.self_condition.weight).__module__


def test_int4_on_cuda_refuses_a_native_checkpoint_loading_in_float32(tmp_path,
                                                                     monkeypatch) -> None:
    """A native checkpoint loads in float32 unless told: int4 on CUDA (bf16 only) was let
    through check_quantize (dtype None) into torchao; it is the documented one-line refusal
    before anything is read. CUDA is pretended (load_target), nothing runs on it."""
    import unmask.config
    from unmask.checkpoint import load, save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids())
    save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    monkeypatch.setattr(unmask.config, "load_target", lambda device, dtype: ("cuda", dtype))
    with pytest.raises(UserError, match="int4 on CUDA needs bfloat16 weights.*--dtype bf16"):
        load(tmp_path / "run", quantize="int4")


def test_int4_that_would_quantise_no_layer_is_refused(tmp_path) -> None:
    """int4 groups 32 inputs on CPU: a model 48 wide (72-wide MLP) has no layer it takes, and
    loaded in full precision as if quantised, without a word; int8 (per row) quantises it."""
    from unmask.checkpoint import load, save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, **tok.special_ids(), d_model=48,
                       n_heads=4, n_kv_heads=2, ffn_hidden=72)
    save_checkpoint(tmp_path / "run", model=Transformer(cfg), tokenizer=tok)
    with pytest.raises(UserError, match=r"--quantize int4 would quantise no layer.*int8"):
        load(tmp_path / "run", quantize="int4")
    loaded = load(tmp_path / "run", quantize="int8")
    assert any(type(p).__module__.startswith("torchao") for p in loaded.model.parameters())


def test_quantizing_a_quantized_model_again_is_one_line(folder, full) -> None:
    """A model loaded with quantize= cannot be quantised again (torchao's error was about its
    tensor's missing aten.view); the model is left as it was."""
    from unmask.quantize import quantize_model, quantized_layer

    assert quantized_layer(full) is None
    odd = torch.nn.Module()
    odd.weight = 3.0  # a "weight" that is no tensor (an AttributeError on .data)
    assert quantized_layer(odd) is None
    model = unmask.load(folder, quantize="int8").model
    assert quantized_layer(model) == "layers.0.attn.q_proj"
    before = {n: type(p) for n, p in model.named_parameters()}
    for scheme in ("int8", "int4"):
        with pytest.raises(UserError) as e:
            quantize_model(model, scheme, "cpu")
        msg = str(e.value)
        assert "already quantised" in msg and "layers.0.attn.q_proj" in msg, msg
        assert "\n" not in msg and "dispatch" not in msg
    assert {n: type(p) for n, p in model.named_parameters()} == before


def test_the_fit_hint_names_a_bf16_load_and_int4_on_cuda_in_bf16() -> None:
    """A float32 load (a native checkpoint's default) that does not fit is pointed at
    ``--dtype bf16``, which loses less than int8, and at int8 in bf16 where int8 in float32
    does not fit (it said "no setting fits"); int4 on CUDA is suggested with the bf16 its
    kernel needs (alone, it was refused on loading)."""
    from unmask.config import ModelConfig
    from unmask.model import meta_model
    from unmask.quantize import check_fits, estimate_bytes

    model = meta_model(ModelConfig(d_model=512, n_layers=8, n_heads=4, vocab_size=4096))
    f32, bf16 = torch.float32, torch.bfloat16

    def size(dtype: torch.dtype, q: str | None, device: str = "cpu") -> int:
        return estimate_bytes(model, dtype, q, device)

    def hint(dtype: torch.dtype, q: str | None, device: str, free: int) -> str:
        with pytest.raises(UserError) as e:
            check_fits(model, dtype, q, device, source="m", free=free)
        return str(e.value).split(" free: ")[1]

    assert size(f32, None) > size(bf16, None) > size(f32, "int8") > size(bf16, "int8")
    assert size(bf16, None) > size(bf16, "int4") > size(bf16, "int8")  # CPU int4: int8 storage
    assert size(bf16, "int4", "cuda") < size(bf16, "int8", "cuda")
    between = (size(f32, None) + size(bf16, None)) // 2  # bf16 fits, float32 does not
    assert hint(f32, None, "cpu", between).startswith("use --dtype bf16 (")
    between = (size(f32, "int8") + size(bf16, "int8")) // 2  # int8 fits only in bf16
    assert hint(f32, None, "cpu", between).startswith("use --dtype bf16 --quantize int8 (")
    assert hint(f32, "int8", "cpu", between).startswith("use --dtype bf16 (")
    between = (size(bf16, "int8", "cuda") + size(bf16, "int4", "cuda")) // 2
    assert hint(f32, None, "cuda", between).startswith("use --dtype bf16 --quantize int4 (")
    assert hint(bf16, None, "cuda", between).startswith("use --quantize int4 (")
    assert hint(bf16, "int8", "cpu", 1000).startswith("no setting fits")


def _stored_bytes(t: torch.Tensor) -> int:
    """Bytes of a tensor, a torchao subclass by its inner tensors (qdata, scale, zero_point)."""
    names = t.__tensor_flatten__()[0] if hasattr(t, "__tensor_flatten__") else []
    if not names:
        return t.numel() * t.element_size()
    return sum(_stored_bytes(getattr(t, n)) for n in names if getattr(t, n) is not None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_bytes_per_weight_is_what_torchao_stores_on_cpu(scheme, dtype) -> None:
    """The fit check's bytes a weight are the quantised layer's storage: int4 on CPU keeps an
    int8 zero point beside each group's scale, in the load's dtype (1.09 bytes a weight in
    bf16, 1.16 in float32; it counted 1.06 whatever the dtype)."""
    from torch import nn

    from unmask.quantize import bytes_per_weight, quantize_module

    layer = nn.Linear(2048, 64, bias=False).to(dtype)
    quantize_module(layer, scheme, "cpu")
    stored = _stored_bytes(layer.weight) / layer.weight.numel()
    assert "torchao" in type(layer.weight).__module__
    assert bytes_per_weight(scheme, "cpu", dtype) == pytest.approx(stored, rel=1e-3)


def test_free_ram_is_capped_by_a_containers_memory_limit(tmp_path, monkeypatch) -> None:
    """Inside a container ``MemAvailable`` is the host's: the fit check passed a model that
    the container's limit then killed. Its cgroup (v2 or v1) limit less its use (dropable file
    cache aside) caps what is free; no limit leaves ``MemAvailable``."""
    import unmask.quantize as q

    v2, v1, none = tmp_path / "v2", tmp_path / "v1" / "memory", tmp_path / "none"
    for d in (v2, v1, none):
        d.mkdir(parents=True)
    (v2 / "memory.max").write_text("4000000000\n")
    (v2 / "memory.current").write_text("1500000000\n")
    (v2 / "memory.stat").write_text(
        "anon 1000000000\nactive_file 200000000\ninactive_file 300000000\n")
    (v1 / "memory.limit_in_bytes").write_text("3000000000\n")
    (v1 / "memory.usage_in_bytes").write_text("1000000000\n")
    (v1 / "memory.stat").write_text(
        "cache 10\ntotal_active_file 50000000\ntotal_inactive_file 200000000\n")
    (none / "memory.max").write_text("max\n")
    (none / "memory.current").write_text("1500000000\n")
    assert q.cgroup_free_bytes(str(v2)) == 4_000_000_000 - 1_000_000_000
    assert q.cgroup_free_bytes(str(tmp_path / "v1")) == 3_000_000_000 - 750_000_000
    assert q.cgroup_free_bytes(str(none)) is None
    read_int = q._read_int  # one host reading, so the two calls below see the same number
    monkeypatch.setattr(q, "_read_int", lambda path, key=None: (
        8_000_000 if path == "/proc/meminfo" else read_int(path, key)))
    monkeypatch.setattr(q, "CGROUP_ROOT", str(none))
    assert q.free_bytes("cpu") == 8_000_000 * 1024
    monkeypatch.setattr(q, "CGROUP_ROOT", str(v2))
    assert q.free_bytes("cpu") == 3_000_000_000


def test_the_container_cap_reads_this_process_cgroup_and_those_above(
    tmp_path, monkeypatch
) -> None:
    """A limit set on the process's own cgroup, or on one above it (a Slurm job's, a
    ``systemd-run -p MemoryMax`` unit's), binds: the least free of them is the answer; only
    the mount's top was read."""
    import unmask.quantize as q

    job = tmp_path / "slurm" / "job_7"
    job.mkdir(parents=True)
    (tmp_path / "slurm" / "memory.max").write_text("2000000000\n")
    (tmp_path / "slurm" / "memory.current").write_text("500000000\n")
    (job / "memory.max").write_text("max\n")
    (job / "memory.current").write_text("400000000\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/slurm/job_7\n")
    monkeypatch.setattr(q, "PROC_SELF_CGROUP", str(proc))
    assert q.cgroup_free_bytes(str(tmp_path)) == 1_500_000_000
    (job / "memory.max").write_text("1000000000\n")
    assert q.cgroup_free_bytes(str(tmp_path)) == 600_000_000


def test_the_estimate_counts_a_head_larger_than_a_block_in_flight() -> None:
    """A quantised load holds one module group in the load dtype while quantising it; a dense
    model's output head (LLaDA-8B's: 518M weights, a block 218M) is the largest, and the
    estimate counted only the largest block."""
    from unmask.config import ModelConfig
    from unmask.model import meta_model
    from unmask.quantize import OVERHEAD, OVERHEAD_BYTES, bytes_per_weight, estimate_bytes

    model = meta_model(
        ModelConfig(d_model=256, n_layers=2, n_heads=4, ffn_hidden=512, vocab_size=32768,
                    tie_embeddings=False)
    ).to(torch.bfloat16)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    rest = sum(p.numel() for p in model.parameters()) - linear
    resident = (rest * 2 + linear * bytes_per_weight("int8", "cpu", torch.bfloat16)) * OVERHEAD
    in_flight = estimate_bytes(model, torch.bfloat16, "int8", "cpu") - resident - OVERHEAD_BYTES
    head = model.lm_head.weight.numel() * 2
    assert head > 4 * sum(p.numel() for p in model.layers[0].parameters()) * 2
    assert in_flight == pytest.approx(head, abs=2)


def test_quantize_model_refuses_what_load_refuses(full) -> None:
    """The Python ``quantize_model`` quantised "int3", "INT8" and None as int4, and on "mps"
    as on CPU; it refuses them as ``unmask.load(quantize=...)`` does (None quantises nothing),
    and a model with no layer wide enough."""
    import copy

    from torch import nn

    from unmask.quantize import quantize_model, quantized_layer

    model = copy.deepcopy(full)
    for name, device, words in [("int3", "cpu", "unknown quantization 'int3'"),
                                ("INT8", "cpu", "unknown quantization 'INT8'"),
                                ("int8", "mps", "cpu or cuda, not mps")]:  # fmt: skip
        with pytest.raises(UserError, match=words):
            quantize_model(model, name, device)
        assert quantized_layer(model) is None
    assert quantize_model(model, None, "cpu") is model and quantized_layer(model) is None
    with pytest.raises(UserError, match="would quantise no layer") as e:
        quantize_model(nn.Sequential(nn.Linear(4, 4)), "int8", "cpu")
    # int4 (groups of 32) takes no 4-wide layer either: it was offered as the way out
    assert "int4" not in str(e.value) and "load it without --quantize" in str(e.value)
    quantize_model(model, "int8", "cpu")
    assert quantized_layer(model) == "layers.0.attn.q_proj"


def test_an_old_torchao_is_one_line(monkeypatch) -> None:
    """An older torchao installed beside unmask (not through its extra) imports, and was used
    with configs written for 0.18 (``int4_packing_format``...) in the first block."""
    import types

    import unmask.quantize as q

    monkeypatch.setattr(q, "import_torchao", lambda: types.SimpleNamespace(__version__="0.12.0"))
    with pytest.raises(UserError, match=r"needs torchao >= 0\.18, found 0\.12\.0: pip install -U"):
        q.check_quantize("int8", "cpu")
    monkeypatch.setattr(q, "import_torchao", lambda: types.SimpleNamespace(__version__="1.2+cu1"))
    q.check_quantize("int8", "cpu")
