"""A decoding run whose model gives NaN or infinite outputs ends in one line
(``unmask.model.NonFiniteOutput``, a ``UserError``: exit 2 on the CLI), not in garbage text.

Before, every decoder took NaN logits quietly: the commit loop committed the first allowed id
at every position, a causal run its first allowed token, and the user got an empty or
nonsense text without a word. The model counts such forwards on the device
(``Transformer.nonfinite_forwards``, no device read per step) and every run reads the count
once, when its result is taken (``DecoderRun.result``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unmask import api
from unmask.checkpoint import save_checkpoint
from unmask.cli import main
from unmask.config import SampleConfig, model_preset
from unmask.errors import UserError
from unmask.loaded import Loaded
from unmask.model import Transformer
from unmask.sampling.loop import Denoiser
from unmask.sampling.protocol import step_together
from unmask.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
NONFINITE = "NaN or infinite outputs"

PATHS = {  # decoder path: (objective, attention, extra config)
    "llada": ("mdlm", "bidirectional", {}),
    "bd3lm": ("bd3lm", "block-causal", {"block_size": 4}),
    "ar": ("ar", "causal", {}),
    "sedd": ("sedd", "bidirectional", {"sedd_graph": "absorbing"}),
    "hybrid": ("hybrid", "causal", {"draft_block": 4}),
    "embed-diffusion": ("embed-diffusion", "bidirectional", {}),
}


def _loaded(path: str) -> Loaded:
    objective, attention, extra = PATHS[path]
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, init_std=0.3,
                       objective=objective, attention=attention, **TOK.special_ids(), **extra)
    torch.manual_seed(0)
    return Loaded(model=Transformer(cfg).eval(), tokenizer=TOK, config=cfg, path=Path("x"))


def _poison(model: torch.nn.Module) -> None:
    with torch.no_grad():
        model.layers[-1].attn.o_proj.weight.fill_(float("nan"))


@pytest.mark.parametrize("path", sorted(PATHS))
def test_nan_outputs_end_the_run_in_one_line(path):
    loaded = _loaded(path)
    config = {"gen_length": 8}
    api.generate(loaded, "hello", config=config)  # a healthy model: no complaint
    _poison(loaded.model)
    with pytest.raises(UserError, match=NONFINITE) as e:
        api.generate(loaded, "hello", config=config)
    assert "\n" not in str(e.value) and "garbage" in str(e.value)


def test_a_run_answers_only_for_its_own_forwards():
    """The count is compared with where it stood when the run started: a model that gave
    NaN in an earlier run (a request's fp16 overflow) does not fail the runs after it."""
    loaded = _loaded("llada")
    good = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    _poison(loaded.model)
    with pytest.raises(UserError, match=NONFINITE):
        api.generate(loaded, "hello", config={"gen_length": 8})
    loaded.model.load_state_dict(good)
    assert api.generate(loaded, "hello", config={"gen_length": 8}).texts


def test_runs_stepped_together_check_their_result():
    """The server's path: runs stepped by ``step_together`` (one shared forward), then
    ``result()``."""
    loaded = _loaded("llada")
    _poison(loaded.model)
    config = SampleConfig(gen_length=4, steps=4)
    runs = [api.start(loaded, [[5, 6, 7]], config) for _ in range(2)]
    assert all(isinstance(r, Denoiser) and r.shares_forward for r in runs)
    while not all(r.done for r in runs):
        step_together(runs)
    for r in runs:
        with pytest.raises(UserError, match=NONFINITE):
            r.result()


def test_infill_checks_too():
    loaded = _loaded("llada")
    _poison(loaded.model)
    with pytest.raises(UserError, match=NONFINITE):
        api.infill(loaded, "ab[MASK]cd")


def test_a_compiled_model_is_checked_without_a_second_compile():
    """The count lives on the model, made before compiling (``full_rope_tables``): made by the
    first compiled forward, it was a recompile of every graph at the second run."""
    torch._dynamo.reset()
    loaded = _loaded("ar")
    config = SampleConfig(decoder="ar", gen_length=4, compile="aot_eager")
    api.start(loaded, [[5, 6, 7]], config).run()
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    api.start(loaded, [[5, 6, 7]], config).run()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    _poison(loaded.model)
    with pytest.raises(UserError, match=NONFINITE):
        api.start(loaded, [[5, 6, 7]], config).run()


def test_cli_float16_overflow_is_one_line_exit_2(tmp_path, capsys):
    """Finite weights (the load check passes) whose activations overflow float16: the CLI
    says so in one line, exit 2, and names the way out; fp32 decodes."""
    cfg = model_preset("tiny", vocab_size=TOK.vocab_size, max_seq_len=64, **TOK.special_ids())
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for proj in ("gate_proj", "up_proj", "down_proj"):
            getattr(model.layers[0].mlp, proj).weight.fill_(30.0)
    ckpt = str(save_checkpoint(tmp_path, model=model, tokenizer=TOK))
    argv = ["generate", "--model", ckpt, "hello", "--gen-length", "8"]
    assert main([*argv, "--dtype", "fp32"]) == 0
    capsys.readouterr()
    assert main([*argv, "--dtype", "fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert NONFINITE in err and "bf16" in err and len(err.splitlines()) == 1


def test_training_forwards_are_not_counted():
    loaded = _loaded("llada")
    model = loaded.model.train()
    _poison(model)
    model(torch.tensor([[5, 6, 7]]))
    assert model.nonfinite_forwards is None
    model.eval()(torch.tensor([[5, 6, 7]]))
    assert int(model.nonfinite_forwards) == 1


def test_inference_mode_before_and_after():
    """A count made under ``torch.inference_mode`` was an inference tensor: the next run
    outside it failed with "Inplace update to inference tensor outside InferenceMode"."""
    loaded = _loaded("llada")
    with torch.inference_mode():
        api.generate(loaded, "hello", config={"gen_length": 4})
    api.generate(loaded, "hello", config={"gen_length": 4})
    _poison(loaded.model)
    with torch.inference_mode(), pytest.raises(UserError, match=NONFINITE):
        api.generate(loaded, "hello", config={"gen_length": 4})
    with pytest.raises(UserError, match=NONFINITE):
        api.generate(loaded, "hello", config={"gen_length": 4})
