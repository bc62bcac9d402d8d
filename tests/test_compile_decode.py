"""``SampleConfig.compile``: decoding through the model compiled once per loaded model.

The compiled twin (backend ``aot_eager``: traced by dynamo and AOTAutograd, no kernels
generated, so the check is fast) must decode the same greedy tokens as the eager model
through ``unmask.api.start``, the path of every command and the server; it is made once and
kept; combinations that cannot run are refused in one line before any model call.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unmask import api
from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.loaded import Loaded
from unmask.model import Transformer
from unmask.parallel import compile_for_decoding


def tiny(attention: str, objective: str) -> Loaded:
    cfg = model_preset(
        "tiny",
        vocab_size=48,
        max_seq_len=32,
        d_model=32,
        n_layers=1,
        n_heads=2,
        attention=attention,
        objective=objective,
        init_std=0.3,
    )
    torch.manual_seed(0)
    return Loaded(model=Transformer(cfg).eval(), tokenizer=None, config=cfg, path=Path("x"))


def decode(loaded: Loaded, config: SampleConfig) -> list[list[int]]:
    with torch.no_grad():
        return api.start(loaded, [[5, 9, 17, 30]], config).run().gen_ids


def test_compiled_ar_decoding_equals_eager_and_compiles_once():
    torch._dynamo.reset()
    loaded = tiny("causal", "ar")
    keys = list(loaded.model.state_dict())
    config = SampleConfig(decoder="ar", gen_length=6)
    eager = decode(loaded, config)
    compiled = SampleConfig(decoder="ar", gen_length=6, compile="aot_eager")
    assert decode(loaded, compiled) == eager
    assert len(set(eager[0])) > 1  # a sequence that could differ, not one repeated token
    twin = compile_for_decoding(loaded.model, "aot_eager")
    assert twin is not loaded.model and compile_for_decoding(loaded.model, "aot_eager") is twin
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert decode(loaded, compiled) == eager  # a second run: the graphs are reused
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames
    assert list(loaded.model.state_dict()) == keys  # the twin is no submodule
    assert compile_for_decoding(loaded.model, "off") is loaded.model


def test_compiled_llada_prefix_cache_equals_eager():
    loaded = tiny("bidirectional", "mdlm")
    options = dict(decoder="llada", gen_length=8, steps=8, block_length=4, cache="prefix")
    eager = decode(loaded, SampleConfig(**options))
    assert decode(loaded, SampleConfig(**options, compile="aot_eager")) == eager


def test_compiled_speculative_decoding_equals_eager():
    """The verifier's cached forward with an explicit mask and positions traced by dynamo: a
    valid (1, 1, 1, 1) mask was refused (``in`` on symbolic sizes)."""
    torch._dynamo.reset()
    verifier, drafter = tiny("causal", "ar"), tiny("bidirectional", "mdlm")
    config = SampleConfig(gen_length=6, draft_length=2)
    with torch.no_grad():
        eager = api.start(verifier, [[5, 9, 17, 30]], config, draft=drafter).run().gen_ids
        compiled = api.start(verifier, [[5, 9, 17, 30]], SampleConfig(
            gen_length=6, draft_length=2, compile="aot_eager"), draft=drafter).run().gen_ids
    assert compiled == eager


def test_bad_compile_options_are_refused_in_one_line():
    with pytest.raises(UserError, match="unknown compile 'fast'; choose one of off, inductor"):
        SampleConfig(compile="fast")
    loaded = tiny("causal", "ar")
    with pytest.raises(UserError, match="'cuda-graphs' needs a CUDA GPU; the model is on cpu"):
        api.start(loaded, [[5, 9]], SampleConfig(decoder="ar", compile="cuda-graphs"))
    with pytest.raises(UserError, match="needs a torch module"):
        compile_for_decoding(object(), "inductor")  # type: ignore[arg-type]
    assert "_unmask_decode_compiled" not in loaded.model.__dict__  # nothing made on refusal


def test_cli_compile_flag_refuses_an_unknown_mode(capsys):
    from unmask.cli import main

    with pytest.raises(SystemExit) as e:  # argparse: one usage line, exit status 2
        main(["generate", "--model", "x", "--compile", "fast", "hello"])
    assert e.value.code == 2
    assert "argument --compile: invalid choice: 'fast'" in capsys.readouterr().err


def test_serve_compile_refuses_cuda_graphs_on_a_cpu_before_serving(capsys):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from importlib import resources

    from unmask.cli import main

    demo = str(resources.files("unmask") / "assets" / "demo")
    assert main(["serve", "--model", demo, "--compile", "cuda-graphs", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "unmask serve: error: --compile='cuda-graphs' needs a CUDA GPU; the model is on cpu"
    ]
