"""``benchmarks/data_constrained.py``: the crossover and best-epoch summary, and a whole study
on a tiny corpus that a second run continues instead of retraining."""

import json

import pytest

WORDS = "and the lord spoke unto moses saying speak to the children of israel".split()


@pytest.fixture
def bench(benchmark):
    return benchmark("data_constrained")


def _curve(values, spe=10):
    return [{"epoch": (i + 1), "step": (i + 1) * spe, "val_bpb": v} for i, v in enumerate(values)]


def test_crossover_is_where_diffusion_stays_below_ar(bench):
    ar = _curve([2.2, 2.3, 2.6, 2.9, 3.1])
    assert bench.crossover(ar, _curve([2.9, 2.5, 2.4, 2.3, 2.2])) == 3
    # below once, above again, then below for good: the later epoch counts
    assert bench.crossover(ar, _curve([2.1, 2.4, 2.5, 2.8, 3.0])) == 3
    assert bench.crossover(ar, _curve([2.9, 2.8, 2.7, 2.95, 3.2])) is None
    summary = bench.summarise({"ar": ar, "mdlm": _curve([2.9, 2.5, 2.4, 2.3, 2.2])})
    assert summary["best"]["ar"]["epoch"] == 1 and summary["best"]["mdlm"]["epoch"] == 5
    assert summary["best_ratio_to_ar"]["mdlm"] == pytest.approx(1.0)
    assert summary["crossover_epoch"] == {"mdlm": 3}


@pytest.mark.parametrize("preset", ["tiny", "bench"])
def test_a_study_runs_and_a_second_run_continues_it(word_corpus, tmp_path, preset, bench):
    corpus = word_corpus("dc", WORDS)
    out = tmp_path / "dc.json"
    argv = ["--data", str(corpus), "--tokens", "512", "--epochs", "2", "--eval-epochs", "1",
            "--objectives", "ar,mdlm", "--preset", preset, "--seq-len", "16", "--batch-size", "8",
            "--warmup", "1", "--eval-batches", "1", "--work", str(tmp_path / "work"),
            "--json", str(out), "--plot", str(tmp_path / "dc.png")]  # fmt: skip
    assert bench.main(argv) == 0
    first = json.loads(out.read_text())
    assert first["steps_per_epoch"] == 4 and first["complete"]
    for name in ("ar", "mdlm"):
        assert [r["step"] for r in first["curves"][name]] == [4, 8]
    assert set(first["crossover_epoch"]) == {"mdlm"}
    assert first["command"].endswith(" ".join(argv))
    assert bench.main(argv) == 0  # finished runs are kept, not trained again
    assert json.loads(out.read_text())["curves"] == first["curves"]
    lines = (tmp_path / "work" / "ar" / "metrics.jsonl").read_text().splitlines()
    assert sum(json.loads(line).get("event") == "start" for line in lines) == 1
