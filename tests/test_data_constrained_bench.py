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


def test_a_continued_study_refuses_other_settings_or_another_corpus(word_corpus, tmp_path,
                                                                    bench, monkeypatch):
    """A second command with the same --work continued (or took as done) the runs with their
    own settings and reported them under the new ones (``--lr 0.05`` in the JSON, 0.001
    trained), and reused the slice of another --data: both are refused in one line, while
    --epochs, --threads and the --work folder named another way still continue the study."""
    from unmask.errors import UserError

    corpus, other = word_corpus("dc1", WORDS), word_corpus("dc2", WORDS[::-1])
    work = tmp_path / "work"
    argv = ["--data", str(corpus), "--tokens", "256", "--epochs", "1", "--objectives", "ar",
            "--preset", "tiny", "--seq-len", "16", "--batch-size", "8", "--warmup", "1",
            "--eval-batches", "1", "--work", str(work), "--json", str(tmp_path / "dc.json"),
            "--plot", ""]
    assert bench.main(argv) == 0
    with pytest.raises(UserError, match=r"a run of other settings \(lr 0.001 \(now 0.05\)\)"):
        bench.main([*argv, "--lr", "0.05"])
    with pytest.raises(UserError, match="slice-256: a slice of .*dc1.*, not of --data .*dc2"):
        bench.main([*argv, "--data", str(other)])
    monkeypatch.chdir(tmp_path)  # the same folder, relative and with a "." in it
    same = [*argv, "--work", "./work", "--epochs", "2", "--threads", "2"]
    assert bench.main(same) == 0


def test_the_summary_line_names_its_objective_without_an_ar_curve(word_corpus, tmp_path,
                                                                    bench, monkeypatch, capsys):
    """With no AR point to compare (its run stopped before its first evaluation), the line of
    mdlm said only "none in this range", not whose."""
    monkeypatch.setattr(bench, "run_one", lambda cfg: None)
    monkeypatch.setattr(bench, "curve", lambda run, spe: [] if run.name == "ar" else _curve([2]))
    argv = ["--data", str(word_corpus("dc3", WORDS)), "--tokens", "256", "--objectives",
            "ar,mdlm", "--work", str(tmp_path / "work"), "--json", str(tmp_path / "dc.json"),
            "--plot", ""]
    assert bench.main(argv) == 0
    assert "mdlm below ar from: none in this range\n" in capsys.readouterr().out
