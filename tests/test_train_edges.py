"""Training at its edges: hyper-parameters changed on resume, non-finite losses, a save
interrupted after a hard kill, the learning-rate schedule when warmup outlasts the run."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from corpus_helpers import word_corpus
from safetensors.torch import load_file

from unmask.config import TrainConfig
from unmask.train import train

WORDS = "in the beginning god created the heaven and the earth and it was good".split()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=400, seed=1)


def cfg(dataset: Path, out: Path, **kw: object) -> TrainConfig:
    base = TrainConfig(
        data=str(dataset), out=str(out), preset="tiny", seq_len=32, batch_size=4, steps=4,
        warmup=1, lr=3e-3, eval_every=0, eval_batches=1, save_every=0, log_every=1, seed=5,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _strict(constant: str) -> None:
    raise AssertionError(f"metrics.jsonl holds a bare {constant}: not JSON for jq or JSON.parse")


def records(run: Path) -> list[dict]:
    """The lines of the run's metrics.jsonl, parsed as strict JSON (no bare NaN/Infinity)."""
    return [json.loads(line, parse_constant=_strict)
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_weight_decay_and_betas_given_on_resume_are_used(dataset, tmp_path):
    runs = {}
    for name, kw in (("same", {}), ("changed", {"weight_decay": 0.5, "beta1": 0.8,
                                                "beta2": 0.9})):
        run = tmp_path / name
        train(cfg(dataset, run, steps=2), progress=False)
        train(cfg(dataset, run, steps=4, **kw), resume=True, progress=False)
        runs[name] = run
    meta = json.loads((runs["changed"] / "checkpoint" / "trainer.json").read_text())
    groups = meta["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.5, 0.0]
    assert all(tuple(g["betas"]) == (0.8, 0.9) for g in groups)
    a = load_file(str(runs["same"] / "checkpoint" / "model.safetensors"))
    b = load_file(str(runs["changed"] / "checkpoint" / "model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the new plan trained differently


def _poisoned(monkeypatch: pytest.MonkeyPatch, bad: set[int]) -> None:
    """Make the loss NaN at the optimizer steps (0-based) in ``bad`` (one micro-batch each)."""
    import unmask.train as train_mod

    spec_of = train_mod.objective_spec
    calls = {"n": 0}

    def spec(name: str):
        s = spec_of(name)

        def loss(*args, **kw):
            parts = s.loss(*args, **kw)
            step, calls["n"] = calls["n"], calls["n"] + 1
            if step in bad:
                parts = replace(parts, loss_sum=parts.loss_sum * float("nan"))
            return parts

        return replace(s, loss=loss)

    monkeypatch.setattr(train_mod, "objective_spec", spec)


def test_a_non_finite_step_is_skipped_and_training_goes_on(dataset, tmp_path, monkeypatch,
                                                          capsys):
    _poisoned(monkeypatch, {1})
    run = train(cfg(dataset, tmp_path / "run", ema=0.5), progress=False)
    recs = [r for r in records(run) if "loss" in r]
    assert [r.get("skipped", False) for r in recs] == [False, True, False, False]
    assert recs[1]["loss"] is None and recs[1]["grad_norm"] is None  # NaN, written as null
    assert all(math.isfinite(r["loss"]) for i, r in enumerate(recs) if i != 1)  # finite again
    from unmask.report import read_metrics, summarize_training  # unmask eval reads it back

    loss = summarize_training(read_metrics(run / "metrics.jsonl")).loss
    assert math.isnan(loss[1]) and all(math.isfinite(v) for i, v in enumerate(loss) if i != 1)
    for name in ("model.safetensors", "trainer.safetensors"):  # EMA, raw weights, moments
        tensors = load_file(str(run / "checkpoint" / name))
        assert all(torch.isfinite(t).all() for t in tensors.values()), name
    assert "step 2: loss nan, gradient norm nan: the step is skipped" in capsys.readouterr().err


def test_a_diverged_run_stops_in_one_line_and_keeps_its_last_checkpoint(dataset, tmp_path,
                                                                         monkeypatch):
    from unmask.errors import UserError
    from unmask.train import NON_FINITE_STOP

    _poisoned(monkeypatch, set(range(2, 100)))
    run = tmp_path / "run"
    with pytest.raises(UserError, match=r"diverged: .* for 5 steps in a row \(steps 3 to 7, "
                       r".*lower --lr .*step 2\) is kept$"):
        train(cfg(dataset, run, steps=20, save_every=2), progress=False)
    assert NON_FINITE_STOP == 5
    # the periodic saves at steps 4 and 6 (inside the streak) did not replace step 2's
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["step"] == 2
    weights = load_file(str(run / "checkpoint" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_a_run_resumed_inside_a_nan_streak_stops_where_the_uninterrupted_run_stops(
        dataset, tmp_path, monkeypatch):
    """The steps skipped in a row are saved with a checkpoint taken inside the streak (the end
    of a plan, a signal) and counted on after --resume: the count restarted at 0, so a resumed
    run went on where the uninterrupted one stops as diverged."""
    from unmask.errors import UserError

    _poisoned(monkeypatch, set(range(2, 100)))
    run = tmp_path / "run"
    train(cfg(dataset, run, steps=5), progress=False)  # steps 3-5 skipped: 3 in a row
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["skipped_in_a_row"] == 3
    with pytest.raises(UserError, match=r"for 5 steps in a row \(steps 3 to 7,"):
        train(cfg(dataset, run, steps=20), resume=True, progress=False)


def test_every_skipped_step_has_its_metrics_line(dataset, tmp_path, monkeypatch):
    """A skipped step is marked in metrics.jsonl whatever --log-every (lines came every 10
    steps, so a skipped step between them left no trace there)."""
    _poisoned(monkeypatch, {1})
    run = train(cfg(dataset, tmp_path / "run", log_every=10), progress=False)
    steps = [(r["step"], r.get("skipped", False)) for r in records(run) if "loss" in r]
    assert steps == [(2, True), (4, False)]


def test_a_nan_validation_is_never_the_best(dataset, tmp_path, monkeypatch):
    import unmask.train as train_mod

    evaluate_loss = train_mod.evaluate_loss
    calls = {"n": 0}

    def evaluate(*args, **kw):
        res = evaluate_loss(*args, **kw)
        calls["n"] += 1
        if calls["n"] == 2:  # the validation at step 2
            res = replace(res, loss=float("nan"), ppl=float("nan"), bpb=float("nan"))
        return res

    monkeypatch.setattr(train_mod, "evaluate_loss", evaluate)
    run = train(cfg(dataset, tmp_path / "run", eval_every=1, keep_best=True), progress=False)
    vals = {r["step"]: r["val_bpb"] for r in records(run) if "val_bpb" in r}
    assert vals[2] is None  # NaN, written as null
    best = [r for r in records(run) if r.get("event") == "best"]
    assert 2 not in [r["step"] for r in best]
    low = min(v for v in vals.values() if v is not None)
    assert best[-1]["value"] == low  # later validations still compared with a real number


def test_a_save_after_a_kill_between_the_renames_keeps_the_only_checkpoint(dataset, tmp_path,
                                                                           monkeypatch):
    import unmask.checkpoint as ckpt_mod
    from unmask.train_guards import saved_progress

    run = tmp_path / "run"
    train(cfg(dataset, run, steps=2), progress=False)
    # a hard kill between save_checkpoint's two renames: only .checkpoint.old is whole
    (run / "checkpoint").rename(run / ".checkpoint.old")
    replace_file = ckpt_mod.os.replace

    def killed_swapping_in(src, dst):  # the next save is killed as it swaps its folder in
        if Path(src).name.startswith(ckpt_mod.TMP_PREFIX):
            raise KeyboardInterrupt
        return replace_file(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", killed_swapping_in)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(dataset, run, steps=4), resume=True, progress=False)
    monkeypatch.undo()
    # the step-2 checkpoint survived (before, it was deleted before the new one was in)
    assert saved_progress(ckpt_mod.checkpoint_dir(run)).step == 2
    train(cfg(dataset, run, steps=4), resume=True, progress=False)
    assert saved_progress(run / "checkpoint").step == 4


def test_a_warmup_as_long_as_the_run_gets_a_note(dataset, tmp_path, capsys):
    from unmask.cli import main

    args = ["train", "--data", str(dataset), "--preset", "tiny", "--seq-len", "32",
            "--batch-size", "4", "--eval-every", "0", "--steps", "4", "--log-every", "1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0  # the default warmup is 100
    err = capsys.readouterr().err
    assert ("note: --warmup 100 is longer than --steps 4: the learning rate only rises, "
            "to 0.04 of --lr 0.001 at the last step, and never decays") in err
    lrs = [r["lr"] for r in records(tmp_path / "a") if "lr" in r]
    assert lrs == pytest.approx([1e-5, 2e-5, 3e-5, 4e-5])
    for warmup in ("4", "3"):  # the peak at the last step or before
        assert main([*args, "--out", str(tmp_path / warmup), "--warmup", warmup]) == 0
        assert "note:" not in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
    assert "note:" not in capsys.readouterr().err  # --no-progress: nothing but errors


def test_a_refused_resume_is_one_line_without_a_resuming_line(dataset, tmp_path, capsys):
    from unmask.cli import main

    run = tmp_path / "run"
    train(cfg(dataset, run, steps=2), progress=False)
    capsys.readouterr()
    args = ["train", "--resume", "--out", str(run), "--steps", "4", "--no-progress"]
    for extra, says in [(["--draft-block", "4"], "--draft-block applies to objective"),
                        (["--seq-len", "40000"], "exceeds the model's"),
                        (["--batch-size", "3", "--grad-accum", "2"], "not divisible")]:
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err and "resuming" not in err, err
    assert main(args) == 0
    assert "resuming at step 2 of 2; --steps 4 given" in capsys.readouterr().err


def test_latent_len_cannot_change_on_resume(dataset, tmp_path, capsys):
    """The autoencoder's latent slots are its model: a resume kept them but announced and
    saved the new --latent-len (train_config.json then disagreed with the checkpoint)."""
    from unmask.cli import main

    run = tmp_path / "ae"
    train(cfg(dataset, run, objective="latent-ae", latent_len=8, steps=2), progress=False)
    capsys.readouterr()
    plan = (run / "train_config.json").read_bytes()
    assert main(["train", "--resume", "--out", str(run), "--steps", "3", "--latent-len", "4",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--latent-len=4 differs from the run's 8" in err and err.count("\n") == 1, err
    assert (run / "train_config.json").read_bytes() == plan


@pytest.mark.parametrize(("extra", "says"), [
    ([], "--seq-len=1: objective 'ar' predicts each token from the ones before it"),
    (["--fim-rate", "0.5", "--seq-len", "4"],
     "--seq-len=4: fill-in-the-middle needs rows of at least 5 tokens"),
])
def test_ar_rows_too_short_are_refused_up_front(dataset, tmp_path, capsys, extra, says):
    from unmask.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", str(dataset), "--out", str(out), "--objective", "ar",
                 "--preset", "tiny", "--batch-size", "4", "--steps", "2", "--seq-len", "1",
                 "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_signal_during_a_periodic_save_does_not_save_that_step_again(dataset, tmp_path,
                                                                      monkeypatch):
    import os
    import signal

    import unmask.train as train_mod
    from unmask.train_guards import TrainingStopped, saved_progress

    save = train_mod.save_checkpoint
    steps = []

    def save_and_get_a_signal(run, **kw):  # Ctrl-C lands while the step-2 save is written
        steps.append(kw["trainer_state"]["step"])
        out = save(run, **kw)
        if len(steps) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(train_mod, "save_checkpoint", save_and_get_a_signal)
    run = tmp_path / "run"
    with pytest.raises(TrainingStopped) as e:
        train(cfg(dataset, run, steps=6, save_every=2), progress=False)
    assert e.value.step == 2 and steps == [2]  # (it was written twice: [2, 2])
    monkeypatch.undo()
    assert saved_progress(run / "checkpoint").step == 2
    train(cfg(dataset, run, steps=6, save_every=2), resume=True, progress=False)
    assert saved_progress(run / "checkpoint").step == 6


def test_draft_block_cannot_change_on_resume():
    """A hybrid's draft block is part of its model (its attention layout and the block its
    checkpoint declares): --draft-block on a (distill) resume silently rewrote it mid-run."""
    from unmask.errors import UserError
    from unmask.train_guards import resume_plan

    saved = TrainConfig(data="d", out="o", objective="hybrid", draft_block=2)
    assert resume_plan(saved, replace(saved, steps=saved.steps + 10)) == {
        "steps": saved.steps + 10}
    with pytest.raises(UserError, match="draft_block=4 differs from the run's 2"):
        resume_plan(saved, replace(saved, draft_block=4))


def test_a_huge_model_is_refused_without_building_one(dataset, tmp_path, capsys, monkeypatch):
    """``_parallel_kind`` counted parameters on a meta-device copy of the model: at
    ``--model-set n_layers=100000`` about two minutes before the one-line memory refusal. It
    reads ``ModelConfig.num_params`` now (equal to the built model's count, tests/test_config)."""
    import unmask.model
    import unmask.train
    from unmask.cli import main

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the refusal")

    monkeypatch.setattr(unmask.model, "meta_model", no_model)
    monkeypatch.setattr(unmask.model, "Transformer", no_model)
    monkeypatch.setattr(unmask.train, "meta_model", no_model, raising=False)
    monkeypatch.setattr(unmask.train, "Transformer", no_model)
    out = tmp_path / "run"
    assert main(["train", "--data", str(dataset), "--out", str(out), "--preset", "tiny",
                 "--batch-size", "4", "--steps", "2", "--seq-len", "16", "--no-progress",
                 "--model-set", "n_layers=100000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "memory" in err, err
    assert not out.exists()


@pytest.mark.parametrize("objective, extra, n_times", [
    ("mdlm", {}, 8),  # one row per micro-batch: 8 times a step
    ("bd3lm", {"block_size": 8}, 8 * 4),  # and 4 blocks a row, each its own time
])
def test_the_micro_batches_of_a_step_share_one_antithetic_grid(dataset, tmp_path, monkeypatch,
                                                               objective, extra, n_times):
    """The noise times of a step are drawn once for the whole batch (one offset plus i/n over
    all its rows) and split across micro-batches: each micro-batch drew its own, so with one
    row per micro-batch the grid was lost (plain i.i.d. times). The union of the times the
    loss used over a step's micro-batches is the antithetic set; a second run uses the same."""
    import unmask.schedules
    from unmask.objectives import OBJECTIVES

    spec = OBJECTIVES[objective]
    real_loss, real_sample_t = spec.loss, unmask.schedules.Schedule.sample_t
    inside: list[int] = []
    used: list[torch.Tensor] = []

    def sample_t(self, batch, generator, *, antithetic=True):
        out = real_sample_t(self, batch, generator, antithetic=antithetic)
        if inside:  # drawn by the loss itself
            used.append(out.reshape(-1))
        return out

    def spy(model, config, x0, *, t=None, **kw):
        if not model.training:  # the validation at the end, not a training step
            return real_loss(model, config, x0, t=t, **kw)
        inside.append(1)
        try:
            if t is not None:  # given by the training loop
                used.append(t.reshape(-1))
            return real_loss(model, config, x0, t=t, **kw)
        finally:
            inside.pop()

    monkeypatch.setattr(unmask.schedules.Schedule, "sample_t", sample_t)
    monkeypatch.setitem(OBJECTIVES, objective, replace(spec, loss=spy))
    runs = []
    for name in ("a", "b"):
        used.clear()
        train(cfg(dataset, tmp_path / name, objective=objective, batch_size=8, grad_accum=8,
                  steps=2, **extra))
        runs.append(torch.cat(used))
    for times in runs:
        assert times.shape == (2 * n_times,)
        for step in times.view(2, n_times):
            grid = torch.sort((step - step[0]) % 1.0).values  # the offset taken out
            assert torch.allclose(grid, torch.arange(n_times) / n_times, atol=1e-6), step
    assert torch.equal(runs[0], runs[1])
