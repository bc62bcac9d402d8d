"""Session 32 checks of the causal decoders (``ar``, ``speculative``, ``hybrid``) through the
decoder registry, the entry the API, CLI and server share."""

from __future__ import annotations

import pytest
import torch

from unmask.config import SampleConfig, model_preset
from unmask.facts import ModelFacts
from unmask.model import Transformer
from unmask.sampling import choose_decoder
from unmask.sampling.registry import Target

SPECIAL = dict(mask_id=0, pad_id=1, eos_id=2, bos_id=3)


def _model(attention: str = "causal", seed: int = 0, **kw) -> Transformer:
    ids = {**SPECIAL, **kw}
    draft = dict(draft_block=3) if attention == "causal" else {}
    cfg = model_preset("tiny", vocab_size=16, max_seq_len=64, attention=attention,
                       init_std=0.3, **draft, **ids)  # fmt: skip
    torch.manual_seed(seed)
    return Transformer(cfg).double().eval()


def _decode(model: Transformer, decoder: str, prompts, *, drafter=None, **options):
    facts = ModelFacts.of(model)
    config = SampleConfig(decoder=decoder, gen_length=12, temperature=0.0, **options)
    aux = {} if drafter is None else {"drafter": drafter}
    run = choose_decoder(facts, config).start(Target(model, facts, aux), prompts, config)
    return run.run()


@pytest.mark.parametrize("decoder", ["hybrid", "speculative"])
def test_an_empty_prompt_starts_from_the_models_start_token_as_ar_does(decoder):
    """``ModelFacts.start_id`` (a published model's BOS, else the EOS) starts an empty prompt
    under every causal decoder; hybrid and speculative started from the EOS, the BOS
    ignored, so the same empty prompt wrote another text than under ``ar``."""
    model = _model(prompt_bos_id=3)
    drafter = _model("bidirectional", 1, prompt_bos_id=3) if decoder == "speculative" else None
    start = ModelFacts.of(model).start_id
    want = _decode(model, "ar", [[]])
    got = _decode(model, decoder, [[]], drafter=drafter)
    assert int(got.tokens[0, 0]) == start == int(want.tokens[0, 0])
    assert got.gen_ids == want.gen_ids


def test_speculative_batch_rows_are_medians_of_warm_round_robin_runs(benchmark, monkeypatch,
                                                                     capsys):
    """benchmarks/speculative_batch.py timed one warm call per row, back to back: a slow
    moment of the shared machine fell on whichever row ran then. Now each row is the median
    of --repeats runs taken round-robin, after an untimed one: a first run of 10 s (one-time
    costs) and one slow repeat of 5 s move no row."""
    import json
    import sys
    import types

    bench = benchmark("speculative_batch")
    now = [0.0]
    monkeypatch.setattr(sys.modules["_common"], "time",
                        types.SimpleNamespace(perf_counter=lambda: now[0]))  # fmt: skip
    calls: dict[str, int] = {}

    def spend(name: str, cost: float):
        calls[name] = calls.get(name, 0) + 1
        now[0] += {1: 10.0, 2: 5.0}.get(calls[name], cost)  # warm-up, then one slow repeat
        return types.SimpleNamespace(gen_ids=[[5]], nfe=1, steps=1)

    def generate_ar(model, ids, max_new_tokens, eos_id):
        return spend(model, 1.0)

    class Run:
        def __init__(self, model, *args, predraft="spec", **kw):
            self.name = f"{model}-{predraft}"

        def run(self):
            return spend(self.name, 0.5)

    def load(path, device):
        model = types.SimpleNamespace(eval=lambda: None, name=path)
        tok = types.SimpleNamespace(encode=lambda text: [5])
        return types.SimpleNamespace(model=model, tokenizer=tok,
                                     config=types.SimpleNamespace(eos_id=0))  # fmt: skip

    monkeypatch.setattr(bench, "load", load)
    monkeypatch.setattr(bench, "shared_vocabulary", lambda a, b: 10)
    monkeypatch.setattr(bench, "generate_ar", lambda m, *a, **kw: generate_ar(m.name, *a, **kw))
    monkeypatch.setattr(bench, "SpeculativeRun", lambda m, *a, **kw: Run(m.name, *a, **kw))
    monkeypatch.setattr(bench, "HybridRun", lambda m, *a, **kw: Run(m.name, *a, **kw))
    bench.main(["--ar-model", "ar", "--hybrid", "hy", "--drafter", "dr", "--repeats", "3"])
    out = json.loads(capsys.readouterr().out)
    assert set(calls.values()) == {4}  # a warm-up and three timed runs of each row
    assert [out[k]["s"] for k in ("ar", "ar_hybrid")] == [1.0, 1.0]
    for k in ("spec", "hybrid_all", "hybrid_ends"):
        assert out[k]["s"] == 0.5 and out[k]["vs_ar"] == 2.0 and out[k]["identical"], out[k]


def test_every_decoder_starts_an_empty_prompt_with_the_one_helper():
    """The ``ar``, ``hybrid`` and ``speculative`` runs each had their own copy of the start
    block beside ``start_empty_prompts``; now they share it: the same start token and, on a
    model with neither a start token nor an EOS (and no pad fallback: a causal decoder pads
    nothing into its text), the same one-line refusal."""
    from unmask.errors import UserError
    from unmask.sampling import ar, loop
    from unmask.sampling.hybrid import HybridRun
    from unmask.sampling.speculative import SpeculativeRun

    assert loop.start_empty_prompts is ar.start_empty_prompts
    model, drafter = _model(), _model("bidirectional", 1)
    runs = {"ar": lambda p, **kw: ar.ARRun(model, p, max_new_tokens=4, **kw),
            "hybrid": lambda p, **kw: HybridRun(model, p, max_new_tokens=4, **kw),
            "speculative": lambda p, **kw: SpeculativeRun(model, drafter, p, max_new_tokens=4,
                                                          draft_length=2, **kw)}  # fmt: skip
    for name, start in runs.items():
        with pytest.raises(UserError, match=r"^an empty prompt needs a start token"):
            start([[5], []], eos_id=None)
        got = start([[5], []], eos_id=2, start_id=7).run()
        assert got.tokens[1, 0] == 7 and got.tokens[0, 0] == 5, name
    assert ar.start_empty_prompts([[5], []], eos_id=None, pad_id=1) == ([[5], [1]], [False, True])
