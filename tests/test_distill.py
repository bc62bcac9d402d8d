"""Certainty-forcing trajectory distillation (issue 14): trajectories are the teacher's own
replayable outputs, the student's loss falls and its confidence rises, resume = uninterrupted,
bd3lm teachers work, bad input is one line with exit 2."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from corpus_helpers import word_corpus

import unmask.train as train_mod
from unmask.checkpoint import load
from unmask.cli import main
from unmask.config import TrainConfig
from unmask.data import TokenDataset
from unmask.distill import (
    DISTILL_DEFAULTS,
    TrajectoryConfig,
    default_cache,
    make_trajectories,
    refresh_trajectories,
    replay,
)
from unmask.errors import UserError
from unmask.objectives import objective_spec
from unmask.objectives.distill import Trajectories, distill, trajectory_states, window_states
from unmask.objectives.spec import ObjectiveOptions
from unmask.sampling.penalties import special_ids
from unmask.train import train
from unmask.train_guards import TrainingStopped

WORDS = "the lord said unto moses go down and speak to the people of israel".split()
TRAJ = TrajectoryConfig(
    trajectories=6,
    prompt_length=8,
    gen_length=8,
    traj_batch=3,
    traj_temperature=0.8,
    traj_block_length=4,
    traj_repetition_penalty=1.0,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=300, seed=0)


def _teacher(corpus: Path, out: Path, **kw: object) -> Path:
    cfg = TrainConfig(
        data=str(corpus), out=str(out), preset="tiny", seq_len=32, batch_size=8, steps=30,
        warmup=2, lr=3e-3, eval_every=0, eval_batches=1, save_every=0, log_every=5, seed=1,
    )  # fmt: skip
    return train(replace(cfg, **kw), progress=False)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def teacher(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _teacher(corpus, tmp_path_factory.mktemp("teacher") / "run")


@pytest.fixture(scope="module")
def cache(teacher: Path, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("traj") / "t.safetensors"
    return refresh_trajectories(str(teacher), str(corpus), path, TRAJ, progress=False)


def _distill_cfg(cache: Path, teacher: Path, out: Path, **kw: object) -> TrainConfig:
    base = replace(
        DISTILL_DEFAULTS, init=str(teacher), data=str(cache), out=str(out), seq_len=16,
        batch_size=8, steps=6, warmup=1, lr=1e-3, save_every=0, log_every=1, seed=2,
    )  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- trajectories


def test_trajectories_are_the_teachers_replayable_outputs(teacher, corpus, cache):
    """Every row is a corpus prompt then what the teacher's one-token-per-step sampler made:
    each generated position has its own step 0..G-1, the prompt -1, and decoding a row's
    batch again with its seed gives the same tokens and steps; another seed does not."""
    traj = Trajectories.load(cache)
    loaded = load(teacher)
    P, G = TRAJ.prompt_length, TRAJ.gen_length
    assert traj.tokens.shape == (6, P + G) and len(set(traj.seed.tolist())) == 2
    assert (traj.commit_step[:, :P] == -1).all()
    for row in traj.commit_step[:, P:]:
        assert sorted(row.tolist()) == list(range(G))  # one token per step
    for i in (0, 4):
        tokens, steps = replay(loaded, traj, i)
        assert torch.equal(tokens, traj.tokens[i]) and torch.equal(steps, traj.commit_step[i])
    other = Trajectories(traj.tokens, traj.commit_step, traj.seed + 1, traj.meta)
    assert any(not torch.equal(replay(loaded, other, i)[0], traj.tokens[i]) for i in range(3))


def test_a_row_of_a_cut_last_batch_is_replayed_exactly(teacher, corpus, tmp_path):
    """4 rows in batches of 3: the second batch was decoded whole (3 prompts) and cut to one
    row; replaying that row decodes the whole batch again (the sampler's noise depends on the
    batch), so it gives the stored row; a corpus changed since is refused in one line."""
    loaded = load(teacher)
    traj = make_trajectories(loaded, str(corpus), replace(TRAJ, trajectories=4), progress=False)
    assert traj.seed.tolist().count(int(traj.seed[3])) == 1
    tokens, steps = replay(loaded, traj, 3)
    assert torch.equal(tokens, traj.tokens[3]) and torch.equal(steps, traj.commit_step[3])
    other = word_corpus(tmp_path, list(reversed(WORDS)), lines=300, seed=5)
    moved = Trajectories(traj.tokens, traj.commit_step, traj.seed,
                         {**traj.meta, "data": str(other)})
    with pytest.raises(UserError, match="corpus changed"):
        replay(loaded, moved, 3)

def test_a_shipped_teacher_by_name_is_recorded_by_its_folder(tmp_path, monkeypatch, capsys):
    """`--teacher demo` (a shipped model's name, no such path here): the file records the
    folder the teacher was loaded from, not `CWD/demo`, so the same run from another folder
    reuses the file instead of decoding it again as made by another teacher."""
    from unmask.data import prepare

    demo = load("demo")
    (tmp_path / "a.txt").write_text(" ".join(WORDS * 40) + "\n")
    data = tmp_path / "data"
    prepare([tmp_path / "a.txt"], data, tokenizer=str(demo.path / "tokenizer.json"),
            val_fraction=0, progress=False)
    cfg = TrajectoryConfig(trajectories=1, prompt_length=4, gen_length=4, traj_batch=1,
                           traj_temperature=0)
    path = tmp_path / "t.safetensors"
    for here in ("one", "two"):
        (tmp_path / here).mkdir()
        monkeypatch.chdir(tmp_path / here)
        refresh_trajectories("demo", str(data), path, cfg, progress=False)
    assert Trajectories.load(path).meta["teacher"] == str(Path(demo.path).resolve())
    assert "reusing its 1 trajectories" in capsys.readouterr().err

def test_cache_is_reused_extended_and_refreshed(teacher, corpus, cache, tmp_path, capsys):
    """Same settings: the file is reused as is; more trajectories: the first rows stay and new
    batches are appended; other settings: decoded again, said on stderr."""
    path = tmp_path / "c.safetensors"
    path.write_bytes(cache.read_bytes())
    stamp = path.stat().st_mtime_ns
    refresh_trajectories(str(teacher), str(corpus), path, TRAJ, progress=False)
    assert path.stat().st_mtime_ns == stamp
    more = replace(TRAJ, trajectories=8)
    refresh_trajectories(str(teacher), str(corpus), path, more, progress=False)
    old, new = Trajectories.load(cache), Trajectories.load(path)
    assert len(new) == 8 and torch.equal(new.tokens[:6], old.tokens)
    # 8 rows end in a batch cut short (2 of 3): extending decodes that batch whole, so the
    # file equals a fresh one (it repeated the cut batch's seed and prompts in new rows)
    refresh_trajectories(str(teacher), str(corpus), path, replace(TRAJ, trajectories=9),
                         progress=False)
    fresh = Trajectories.load(refresh_trajectories(
        str(teacher), str(corpus), tmp_path / "f.safetensors", replace(TRAJ, trajectories=9),
        progress=False))
    extended = Trajectories.load(path)
    assert torch.equal(extended.tokens, fresh.tokens) and torch.equal(extended.seed, fresh.seed)
    refresh_trajectories(
        str(teacher), str(corpus), path, replace(TRAJ, traj_seed=5), progress=False
    )
    assert "other settings" in capsys.readouterr().err
    assert not torch.equal(Trajectories.load(path).tokens, old.tokens)


def test_a_cache_that_cannot_be_written_is_refused_before_decoding(teacher, corpus, tmp_path):
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(UserError, match=r"dir\.safetensors: is a folder; --trajectory-file "
                       "names a file"):
        refresh_trajectories(str(teacher), str(corpus), tmp_path / "dir.safetensors", TRAJ,
                             progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="file is not a writable folder"):
        refresh_trajectories(str(teacher), str(corpus), tmp_path / "file" / "t.safetensors",
                             TRAJ, progress=False)


def test_a_file_made_before_a_sampling_option_existed_is_reused(teacher, corpus, tmp_path,
                                                                capsys):
    """A trajectory file whose settings predate a ``SampleConfig`` field (here: without
    ``no_repeat_ngram_size``) was made with that field's default: reused when that is what is
    asked for, decoded again when it is not."""
    path = tmp_path / "c.safetensors"
    plain = replace(TRAJ, trajectories=3, traj_no_repeat_ngram_size=0)  # the default, 0
    refresh_trajectories(str(teacher), str(corpus), path, plain, progress=False)
    old = Trajectories.load(path)
    sample = {k: v for k, v in old.meta["sample"].items() if k != "no_repeat_ngram_size"}
    assert sample != old.meta["sample"]
    Trajectories(old.tokens, old.commit_step, old.seed, {**old.meta, "sample": sample}).save(path)
    stamp = path.stat().st_mtime_ns
    refresh_trajectories(str(teacher), str(corpus), path, plain, progress=False)
    assert path.stat().st_mtime_ns == stamp and "other settings" not in capsys.readouterr().err
    banned = replace(plain, traj_no_repeat_ngram_size=3)  # a value it was not made with
    refresh_trajectories(str(teacher), str(corpus), path, banned, progress=False)
    assert "other settings" in capsys.readouterr().err


def test_teacher_cache_option_is_used_and_recorded(teacher, corpus, tmp_path):
    """``traj_cache`` decodes the trajectories with that KV cache: still one token per step,
    replayable, recorded in the settings (so a cache made without it is not reused)."""
    cfg = replace(TRAJ, trajectories=3, traj_block_length=2, traj_cache="dual")
    path = refresh_trajectories(
        str(teacher), str(corpus), tmp_path / "dual.safetensors", cfg, progress=False
    )
    traj = Trajectories.load(path)
    assert traj.meta["sample"]["cache"] == "dual"
    for row in traj.commit_step[:, TRAJ.prompt_length :]:
        assert sorted(row.tolist()) == list(range(TRAJ.gen_length))
    tokens, steps = replay(load(teacher), traj, 1)
    assert torch.equal(tokens, traj.tokens[1]) and torch.equal(steps, traj.commit_step[1])
    plain = Trajectories.load(
        refresh_trajectories(
            str(teacher), str(corpus), tmp_path / "none.safetensors",
            replace(cfg, traj_cache="none"), progress=False,
        )
    )  # fmt: skip
    assert plain.meta["sample"]["cache"] == "none" and plain.meta != traj.meta


def test_trajectories_print_plain_lines_when_stderr_is_not_a_terminal(teacher, corpus, capsys):
    """No bar in a log: a start line and one line per batch at most every 30 s (the first
    and the last always); progress=False prints nothing."""
    traj = make_trajectories(load(teacher), str(corpus), TRAJ, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "trajectories: decoding 6 with the teacher in batches of 3 (8 prompt + 8 " \
                       "tokens)"
    assert [ln.split(" ETA ")[0] for ln in lines[1:]] == ["trajectories 3/6", "trajectories 6/6"]
    assert make_trajectories(load(teacher), str(corpus), TRAJ, progress=False).tokens.equal(
        traj.tokens)
    assert capsys.readouterr().err == ""


def test_trajectory_states_follow_the_commit_order():
    """k of n generated positions kept = the first k committed; u = 0 masks all of them, u
    just below 1 only the last committed; the prompt is never masked; bd3lm blocks draw
    their own states."""
    steps = torch.tensor([[-1, -1, 2, 0, 3, 1]])  # prompt of 2, then committed 2,0,3,1
    g = torch.Generator()
    all_masked = trajectory_states(steps, 6, g, u=torch.zeros(1, 1))
    assert all_masked.tolist() == [[False, False, True, True, True, True]]
    last = trajectory_states(steps, 6, g, u=torch.full((1, 1), 0.99))
    assert last.tolist() == [[False, False, False, False, True, False]]
    half = trajectory_states(steps, 6, g, u=torch.full((1, 1), 0.5))  # k = 2: steps 0, 1 kept
    assert half.tolist() == [[False, False, True, False, True, False]]
    blocks = torch.tensor([[1, 0, 3, 2]])  # two blocks of 2
    assert trajectory_states(blocks, 2, g, u=torch.tensor([[0.6, 0.0]])).tolist() == [
        [True, False, True, True]
    ]


# ------------------------------------------------------------------------- training


def _confidence(model_dir: Path, cache: Path) -> float:
    """Mean top-1 probability on the masked positions of fixed trajectory states."""
    loaded = load(model_dir)
    traj = Trajectories.load(cache)
    u = torch.linspace(0.05, 0.95, len(traj))[:, None]  # (N, 1): early to late states
    masked = trajectory_states(traj.commit_step, traj.tokens.shape[1], torch.Generator(), u)
    xt = torch.where(masked, torch.full_like(traj.tokens, loaded.config.mask_id), traj.tokens)
    with torch.no_grad():
        probs = loaded.model(xt).float().softmax(-1)  # (N, L, V)
    return float(probs.max(-1).values[masked].mean())


def test_loss_falls_and_confidence_rises(teacher, cache, tmp_path):
    """Distilling for a few steps lowers the loss and raises the student's confidence on masked
    positions of the teacher's states; the student stays an mdlm model (its own decoder)."""
    run = train(_distill_cfg(cache, teacher, tmp_path / "s", steps=25, lr=3e-3), progress=False)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in lines if "loss" in r]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert _confidence(run, cache) > _confidence(teacher, cache) + 0.05
    student = load(run)
    assert student.config.objective == "mdlm"
    assert student.config.sample_defaults == load(teacher).config.sample_defaults


def test_entropy_term_is_what_raises_confidence(teacher, cache, tmp_path):
    """With the same steps, the certainty-forcing term makes the student more confident than
    cross-entropy alone."""
    plain = train(
        _distill_cfg(cache, teacher, tmp_path / "a", distill_entropy_weight=0.0), progress=False
    )
    forced = train(
        _distill_cfg(cache, teacher, tmp_path / "b", distill_entropy_weight=4.0), progress=False
    )
    assert _confidence(forced, cache) > _confidence(plain, cache)


def _stopped_at_step_3(config: TrainConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``config`` until a SIGINT during step 2 stops it (a resume continues at step 3)."""
    orig = train_mod.lr_at

    def lr(step: int, c: TrainConfig) -> float:
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return orig(step, c)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "lr_at", lr)
        with pytest.raises(TrainingStopped):
            train(config, progress=False)


def test_distill_stopped_by_its_time_limit_exits_75_and_resumes(teacher, cache, tmp_path,
                                                                 monkeypatch, capsys):
    """`unmask distill --resume` of a run its --time-limit stopped: another session as long,
    and exit 75 while the limit stops it short of its steps (0 once it is done)."""
    import types

    now = [0.0]

    def perf_counter() -> float:  # each reading of the loop's clock 7 s after the last
        now[0] += 7.0
        return now[0]

    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(perf_counter=perf_counter))
    run = train(_distill_cfg(cache, teacher, tmp_path / "part", steps=40, time_limit=1.0),
                progress=False)
    first = json.loads((run / "checkpoint" / "trainer.json").read_text())
    assert first["stopped"] == "time_limit" and first["step"] < 40
    capsys.readouterr()
    assert main(["distill", "--resume", "--out", str(run), "--no-progress"]) == 75
    err = capsys.readouterr().err
    assert "this session trains up to 1 min more" in err
    assert "unmask distill: stopped by its time limit" in err
    assert "with: unmask distill --resume --out" in err
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["step"] > first["step"]


def test_resume_equals_uninterrupted(teacher, cache, tmp_path, monkeypatch, capsys):
    """A distillation stopped by SIGINT at step 3 and resumed with `unmask distill --resume`
    ends with exactly the weights of the uninterrupted run."""
    full = train(_distill_cfg(cache, teacher, tmp_path / "full"), progress=False)
    _stopped_at_step_3(_distill_cfg(cache, teacher, tmp_path / "part"), monkeypatch)
    assert main(["distill", "--resume", "--out", str(tmp_path / "part"), "--no-progress"]) == 0
    assert "resuming at step 3 of 6" in capsys.readouterr().err
    a, b = load(full).model.state_dict(), load(tmp_path / "part").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_end_to_end(teacher, corpus, tmp_path, capsys):
    """`unmask distill` makes the cache next to the run, trains, and the student generates."""
    out = tmp_path / "student"
    code = main(
        [
            "distill",
            "--teacher",
            str(teacher),
            "--data",
            str(corpus),
            "--out",
            str(out),
            "--trajectories",
            "3",
            "--prompt-length",
            "8",
            "--gen-length",
            "8",
            "--traj-batch",
            "3",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert len(Trajectories.load(default_cache(out))) == 3
    assert (out / "checkpoint" / "model.safetensors").is_file()
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["objective"] == "distill" and saved["seq_len"] == 16
    # the plan keeps the corpus and the teacher's window length: eval measures the student as
    # the model it is (mdlm) on the corpus' held-out split as it measures the teacher
    assert saved["heldout_data"] == str(corpus) and saved["heldout_seq_len"] == 32
    capsys.readouterr()
    evaluate = ["--no-score", "--no-plot", "--json"]
    assert main(["eval", str(out), *evaluate]) == 0
    heldout = json.loads(capsys.readouterr().out)["heldout"]
    assert heldout is not None and heldout["bpb"] > 0 and heldout["seq_len"] == 32
    assert main(["eval", str(teacher), *evaluate]) == 0
    assert json.loads(capsys.readouterr().out)["heldout"]["seq_len"] == 32
    assert main(["eval", str(out), "--data", str(corpus), "--seq-len", "32", *evaluate]) == 0
    assert json.loads(capsys.readouterr().out)["heldout"] == heldout
    # a run without them (unmask train on trajectories) says why there is no bound
    # (trajectories have no validation split), not that a file is gone
    del saved["heldout_data"], saved["heldout_seq_len"]
    (out / "train_config.json").write_text(json.dumps(saved))
    assert main(["eval", str(out), *evaluate]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert any("pairs or trajectories" in n for n in notes), notes


def test_bd3lm_teacher(corpus, tmp_path):
    """A block-diffusion teacher: its trajectories replay, commits run block by block, and
    the student trains (one state per block) and stays block-causal."""
    t = _teacher(corpus, tmp_path / "bd", objective="bd3lm", block_size=4, steps=10)
    cfg = replace(TRAJ, trajectories=2, traj_batch=2, traj_block_length=None)
    loaded = load(t)
    traj = make_trajectories(loaded, str(corpus), cfg, progress=False)
    gen = traj.commit_step[:, 8:]  # (2, 8): block 1 commits steps 0-3, block 2 steps 4-7
    assert (gen[:, :4].max(1).values < gen[:, 4:].min(1).values).all()
    tokens, steps = replay(loaded, traj, 1)
    assert torch.equal(tokens, traj.tokens[1]) and torch.equal(steps, traj.commit_step[1])
    path = tmp_path / "bd.safetensors"
    traj.save(path)
    run = train(_distill_cfg(path, t, tmp_path / "s", steps=2), progress=False)
    assert load(run).config.attention == "block-causal"


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("problem", ["causal", "sedd", "window", "empty", "short corpus"])
def test_bad_input_is_one_line_exit_2(problem, teacher, corpus, tmp_path, capsys):
    args = [
        "--teacher",
        str(teacher),
        "--data",
        str(corpus),
        "--prompt-length",
        "8",
        "--gen-length",
        "8",
        "--no-progress",
    ]
    if problem == "causal":
        ar = _teacher(corpus, tmp_path / "ar", objective="ar", steps=1)
        args[1] = str(ar)
        want = "an autoregressive teacher teaches a drafter: give the diffusion checkpoint"
    elif problem == "sedd":
        args[1] = str(_teacher(corpus, tmp_path / "sedd", objective="sedd", steps=1))
        want = "a distillation teacher is a masked-diffusion model (mdlm, sft, bd3lm) or, with"
    elif problem == "window":
        args += ["--distill-window", "4"]
        want = "--distill-window trains a drafter on an autoregressive teacher's trajectories"
    elif problem == "empty":
        args += ["--trajectories", "0"]
        want = "the prompt set is empty"
    else:
        args += ["--prompt-length", "100000", "--gen-length", "8"]
        want = "exceeds the teacher's max_seq_len"
    capsys.readouterr()
    assert main(["distill", *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert want in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_empty_train_split_is_refused(teacher, tmp_path):
    from unmask.data import prepare

    (tmp_path / "a.txt").write_text("tiny\n")
    data = tmp_path / "p"
    prepare([tmp_path / "a.txt"], data, tokenizer="byte", val_fraction=0, progress=False)
    with pytest.raises(UserError, match="the prompt set is empty"):
        make_trajectories(load(teacher), str(data), TRAJ, progress=False)


def test_distill_options_belong_to_distill():
    """The loss weights are refused on other objectives and checked on distill."""
    with pytest.raises(UserError, match="applies to objective 'distill', not 'mdlm'"):
        objective_spec("mdlm").validate(TrainConfig(distill_entropy_weight=1.0))
    with pytest.raises(UserError, match="distill_temperature must be > 0"):
        objective_spec("distill").validate(TrainConfig(distill_temperature=0.0))


# ------------------------------------------------------------------------- drafters


@pytest.fixture(scope="module")
def ar_teacher(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _teacher(corpus, tmp_path_factory.mktemp("ar") / "run", objective="ar", steps=40)


def _greedy_reference(model: torch.nn.Module, prompt: torch.Tensor, n: int, r: float = 1.0,
                      ngram: int = 0, exempt: tuple[int, ...] = ()) -> list[int]:
    """Left-to-right argmax without a cache, one full forward per token; with repetition
    penalty ``r`` on every token of the text so far but the ``exempt`` ids and the ``ngram``
    ban (``tests.test_penalties.reference``)."""
    from tests.test_penalties import reference

    x = prompt[None]
    with torch.no_grad():
        for _ in range(n):
            logits = model(x)[0, -1]
            logits = reference(logits, x[0].tolist(), [], r=r, n=ngram, exempt=exempt)
            x = torch.cat([x, logits.argmax()[None, None]], dim=1)
    return x[0, prompt.shape[0] :].tolist()


def test_ar_teacher_trajectories_are_its_greedy_continuations(ar_teacher, corpus):
    """An autoregressive teacher's trajectory is its greedy continuation (with the repetition
    penalty it recommends) committed left to right (step i at generated position i), up to its
    first EOS: greedy even when told a temperature only by its checkpoint (what its students
    draft for is greedy verification)."""
    from unmask.distill import trajectory_sample_config

    loaded = load(ar_teacher)
    assert loaded.config.sample_defaults == {"temperature": 0.0, "repetition_penalty": 1.15,
                                             "no_repeat_ngram_size": 4}
    cfg = replace(TRAJ, traj_temperature=None, traj_block_length=None,
                  traj_repetition_penalty=None, gen_length=12)  # fmt: skip
    assert trajectory_sample_config(loaded, cfg, seed=0).temperature == 0.0
    assert trajectory_sample_config(loaded, cfg, seed=0).repetition_penalty == 1.15
    off = replace(cfg, traj_repetition_penalty=1.0)
    assert trajectory_sample_config(loaded, off, seed=0).repetition_penalty == 1.0
    told = replace(cfg, traj_temperature=0.7)
    assert trajectory_sample_config(loaded, told, seed=0).temperature == 0.7
    traj = make_trajectories(loaded, str(corpus), cfg, progress=False)
    P, G = cfg.prompt_length, cfg.gen_length
    eos = loaded.config.eos_id
    for i in range(len(traj)):
        want = _greedy_reference(loaded.model, traj.tokens[i, :P], G, r=1.15, ngram=4,
                                 exempt=special_ids(loaded.config))
        n = want.index(eos) + 1 if eos in want else G
        assert traj.tokens[i, P : P + n].tolist() == want[:n]
        assert traj.commit_step[i, P : P + n].tolist() == list(range(n))


def test_cut_at_ids_the_student_lacks(ar_teacher, corpus):
    """With ``vocab`` (a student's smaller vocabulary), a row stops at its first id beyond it:
    EOS from there on, never committed."""
    from unmask.distill import decode_batch, trajectory_sample_config

    loaded = load(ar_teacher)
    cfg = replace(TRAJ, traj_temperature=0.0, traj_block_length=None)
    prompts = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])
    config = trajectory_sample_config(loaded, cfg, seed=0)
    tokens, steps = decode_batch(loaded, prompts, config)
    first = int(tokens[0, 8])
    cut, cut_steps = decode_batch(loaded, prompts, config, vocab=first)  # the 1st id is beyond
    assert (cut[0, 8:] == loaded.config.eos_id).all() and (cut_steps[0, 8:] == 8).all()
    assert torch.equal(cut[0, :8], tokens[0, :8])


def test_window_states_are_a_prefix_then_the_window():
    """k of n generated positions kept (the first k, left to right), the next ``window``
    masked, the rest cut off; the prompt always visible; a row decoded in another order is
    refused."""
    steps = torch.tensor([[-1, -1, 0, 1, 2, 3, 4, 5]])  # a prompt of 2, then 6 left to right
    g = torch.Generator()
    masked, visible = window_states(steps, 2, g, u=torch.zeros(1))
    assert masked.tolist() == [[False, False, True, True, False, False, False, False]]
    assert visible.tolist() == [[True, True, True, True, False, False, False, False]]
    masked, visible = window_states(steps, 2, g, u=torch.full((1,), 0.5))  # k = 3
    assert masked.tolist() == [[False, False, False, False, False, True, True, False]]
    assert visible.tolist() == [[True] * 7 + [False]]
    masked, visible = window_states(steps, 4, g, u=torch.full((1,), 0.9))  # k = 5: one left
    assert masked.tolist() == [[False] * 7 + [True]] and visible.all()
    with pytest.raises(UserError, match="left-to-right trajectories"):
        window_states(torch.tensor([[-1, 1, 0, 2]]), 2, g)


def test_window_loss_does_not_see_past_the_window(teacher):
    """The drafter's loss is a function of the prefix and the window alone: tokens after the
    window do not change it (they are cut off, not merely masked)."""
    loaded = load(teacher)
    steps = torch.tensor([[-1] * 4 + list(range(12))])  # (1, 16)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(4, loaded.config.vocab_size, (1, 16), generator=g)
    other = x0.clone()
    other[0, 11:] = (other[0, 11:] + 1) % loaded.config.vocab_size  # after k=4 + window 3
    u = torch.full((1,), 4 / 12)
    opts = ObjectiveOptions(schedule=None, distill_window=3)  # type: ignore[arg-type]

    def loss(x: torch.Tensor) -> torch.Tensor:
        parts = distill(loaded.model, loaded.config, x, attention_mask=None,
                        generator=torch.Generator(), options=opts, commit_step=steps, u=u)
        return parts.loss_sum / parts.n_tokens

    with torch.no_grad():
        a, b = loss(x0), loss(other)
    assert torch.allclose(a, b, atol=1e-6)
    changed = x0.clone()
    changed[0, 9] = (changed[0, 9] + 1) % loaded.config.vocab_size  # inside the window
    with torch.no_grad():
        assert not torch.allclose(loss(changed), a)


def _acceptance(ar: Path, drafter: Path, corpus: Path) -> float:
    from unmask.api import start
    from unmask.config import SampleConfig
    from unmask.data import TokenDataset

    prompts = TokenDataset(str(corpus), "val").sample(8, 8, torch.Generator().manual_seed(3))
    config = SampleConfig(gen_length=16, temperature=0.0, draft_length=4)
    run = start(load(ar), prompts.tolist(), config, draft=load(drafter))
    return float(run.run().acceptance_rate)


def test_drafter_distillation_raises_acceptance(ar_teacher, corpus, tmp_path, capsys):
    """`unmask distill --teacher AR --student MDLM --distill-window 4`: the student (still an
    mdlm model) learns the AR model's continuations, so as its drafter it gets more of its
    4-token drafts accepted than the barely trained model it started from."""
    start = _teacher(corpus, tmp_path / "start", steps=1)
    out = tmp_path / "drafter"
    code = main([
        "distill", "--teacher", str(ar_teacher), "--student", str(start), "--data",
        str(corpus), "--out", str(out), "--trajectories", "48", "--prompt-length", "8",
        "--gen-length", "16", "--traj-batch", "48", "--traj-temperature", "0",
        "--distill-window", "4", "--steps", "40", "--batch-size", "16", "--lr", "3e-3",
        "--no-progress", "--threads", "1",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert load(out).config.objective == "mdlm"
    before, after = _acceptance(ar_teacher, start, corpus), _acceptance(ar_teacher, out, corpus)
    assert after > before + 0.3, (before, after)


@pytest.mark.parametrize("problem", ["causal student with a window", "other tokenizer",
                                     "negative window", "causal student, diffusion teacher",
                                     "causal student, other tokenizer", "draft block 0",
                                     "sedd student", "window longer than the rows"])
def test_drafter_bad_input_is_one_line_exit_2(problem, ar_teacher, teacher, corpus, tmp_path,
                                              capsys):
    student, extra, who = str(teacher), [], str(ar_teacher)
    if problem == "causal student with a window":
        student, extra = str(ar_teacher), ["--distill-window", "4"]
        want = "not --distill-window"
    elif problem == "causal student, diffusion teacher":
        student, who = str(ar_teacher), str(teacher)
        want = "this teacher is not autoregressive"
    elif problem == "draft block 0":
        student, extra = str(ar_teacher), ["--draft-block", "0"]
        want = "--draft-block=0 must be >= 1"
    elif problem == "window longer than the rows":  # every state held fewer masks
        extra = ["--distill-window", "9"]
        want = "--distill-window=9 exceeds --gen-length=8: the drafter learns to fill"
    elif problem == "sedd student":  # it was called a teacher ("needs a ... teacher")
        student = str(_teacher(corpus, tmp_path / "sedd", objective="sedd", steps=1))
        extra = ["--distill-window", "4"]
        want = (f"--student {student}: objective 'distill' needs a masked-diffusion student "
                "(mdlm, sft, bd3lm), not objective 'sedd'")
    elif problem == "causal student, other tokenizer":
        from unmask.data import prepare

        (tmp_path / "b.txt").write_text("alpha beta gamma delta\n" * 200)
        other = tmp_path / "bpe"
        prepare([tmp_path / "b.txt"], other, vocab_size=300, val_fraction=0, progress=False)
        student = str(_teacher(other, tmp_path / "other", steps=1, seq_len=16, objective="ar"))
        want = "a causal student needs the teacher's tokenizer"
    elif problem == "other tokenizer":
        from unmask.data import prepare

        (tmp_path / "b.txt").write_text("alpha beta gamma delta\n" * 200)
        other = tmp_path / "bpe"
        prepare([tmp_path / "b.txt"], other, vocab_size=300, val_fraction=0, progress=False)
        student = str(_teacher(other, tmp_path / "other", steps=1, seq_len=16))
        want = "tokenizer"
    else:
        extra = ["--distill-window", "-1"]
        want = "--distill-window must be >= 0"
    args = ["distill", "--teacher", who, "--student", student, "--data", str(corpus),
            "--prompt-length", "8", "--gen-length", "8", "--no-progress", *extra,
            "--out", str(tmp_path / "o")]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert want in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------- one-model hybrids


@pytest.fixture(scope="module")
def text_ar(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(an AR model whose greedy text is the corpus' sentence, its corpus): rows of 8 words of
    one sentence read from a random word on, 300 steps."""
    from unmask.data import prepare

    root = tmp_path_factory.mktemp("text_ar")
    g = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(300):
        r = int(torch.randint(0, len(WORDS), (1,), generator=g))
        lines.append(" ".join((WORDS[r:] + WORDS[:r])[:8]) + ".")
    (root / "a.txt").write_text("\n".join(lines) + "\n")
    corpus = root / "prepared"
    prepare([root / "a.txt"], corpus, tokenizer="byte", val_fraction=0.1, progress=False)
    return _teacher(corpus, root / "ar", objective="ar", steps=300), corpus


def _kept_per_round(model_dir: Path, corpus: Path) -> float:
    """Drafts a hybrid checkpoint keeps per round (greedy, its own decoder, batch 1)."""
    from unmask.api import start
    from unmask.config import SampleConfig
    from unmask.data import TokenDataset

    prompts = TokenDataset(str(corpus), "val").sample(8, 8, torch.Generator().manual_seed(3))
    kept = 0.0
    for row in prompts.tolist():
        config = SampleConfig(gen_length=16, temperature=0.0)
        res = start(load(model_dir), [row], config).run()
        kept += res.accepted / res.row_rounds
    return kept / len(prompts)


def test_causal_student_becomes_a_hybrid_that_drafts_the_teachers_text(text_ar, tmp_path,
                                                                         capsys):
    """`unmask distill --teacher AR --student AR --draft-block 4`: the AR model, trained as a
    one-model hybrid on its own greedy continuations, keeps more of its own drafts per round
    than after one step of the same run, and is sampled by the hybrid decoder."""
    ar_teacher, corpus = text_ar

    def run(out: Path, steps: int) -> Path:
        code = main([
            "distill", "--teacher", str(ar_teacher), "--student", str(ar_teacher), "--data",
            str(corpus), "--out", str(out), "--cache", str(tmp_path / "traj.safetensors"),
            "--trajectories", "48", "--prompt-length", "8", "--gen-length", "16",
            "--traj-batch", "48", "--traj-temperature", "0", "--draft-block", "4",
            "--steps", str(steps), "--batch-size", "16", "--lr", "3e-3", "--warmup", "2",
            "--no-progress",
            "--threads", "1",
        ])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        return out

    once, trained = run(tmp_path / "once", 1), run(tmp_path / "hybrid", 80)
    cfg = load(trained).config
    assert (cfg.objective, cfg.draft_block, cfg.attention) == ("hybrid", 4, "causal")
    saved = json.loads((trained / "train_config.json").read_text())
    assert saved["objective"] == "hybrid" and saved["data"].endswith(".safetensors")
    before, after = _kept_per_round(once, corpus), _kept_per_round(trained, corpus)
    assert after > before + 0.5, (before, after)


def test_hybrid_causal_part_learns_the_teachers_distributions(text_ar, tmp_path, monkeypatch):
    """On trajectory rows the causal part matches the teacher's next-token distributions
    (KL), not only its greedy tokens: against itself the causal loss is 0, and after the same
    run the held-out loss stays nearer the teacher's than with the tokens alone."""
    from unmask.evaluate import evaluate_loss
    from unmask.objectives.hybrid import hybrid

    ar_teacher, corpus = text_ar
    loaded = load(ar_teacher)
    steps = torch.tensor([[-1] * 8 + list(range(16))] * 2)
    x0 = torch.randint(4, loaded.config.vocab_size, (2, 24), generator=torch.Generator())
    opts = ObjectiveOptions(schedule=None, teacher=loaded.model)  # type: ignore[arg-type]
    with torch.no_grad():
        parts = hybrid(loaded.model, replace(loaded.config, draft_block=4), x0,
                       attention_mask=None, generator=torch.Generator(), options=opts,
                       commit_step=steps)  # fmt: skip
    assert abs(float(parts.loss_sum)) < 1e-4 and int(parts.n_tokens) == 2 * 23

    cfg = replace(TRAJ, traj_temperature=0.0, traj_block_length=None, gen_length=16,
                  trajectories=48, traj_batch=48)  # fmt: skip
    traj = refresh_trajectories(str(ar_teacher), str(corpus), tmp_path / "t.safetensors", cfg,
                                student=str(ar_teacher), progress=False)  # fmt: skip

    def held_out(path: Path) -> float:
        return evaluate_loss(load(path).model, TokenDataset(str(corpus), "val"), objective="ar",
                             seq_len=24, max_batches=4).loss  # fmt: skip

    def run(out: str) -> Path:
        c = replace(_distill_cfg(traj, ar_teacher, tmp_path / out), objective="hybrid",
                    draft_block=4, seq_len=24, steps=80, lr=3e-3, warmup=2)  # fmt: skip
        return train(c, progress=False)

    kl = held_out(run("kl"))
    monkeypatch.setattr(train_mod, "_trajectory_teacher", lambda *a, **k: None)
    tokens_only = held_out(run("tokens"))
    assert held_out(ar_teacher) < kl < tokens_only - 0.02, (kl, tokens_only)


@pytest.mark.parametrize("change", ["removed", "retrained"])
def test_trajectory_teacher_gone_or_changed_is_one_line(change, ar_teacher, corpus, tmp_path):
    """A trajectory file whose teacher has been removed, or whose weights changed since (its
    distributions would not be those of the tokens), cannot train a hybrid: one line, no run
    folder left."""
    import shutil

    from unmask.checkpoint import save_checkpoint

    teacher = tmp_path / "teacher"
    shutil.copytree(ar_teacher, teacher)
    cfg = replace(TRAJ, traj_temperature=0.0, traj_block_length=None, trajectories=3)
    traj = refresh_trajectories(str(teacher), str(corpus), tmp_path / "t.safetensors", cfg,
                                student=str(teacher), progress=False)  # fmt: skip
    c = replace(_distill_cfg(traj, ar_teacher, tmp_path / "o"), objective="hybrid",
                draft_block=4, steps=1)  # fmt: skip
    if change == "removed":
        shutil.rmtree(teacher)
        message = "its teacher cannot be loaded"
    else:
        old = load(teacher)
        with torch.no_grad():
            next(old.model.parameters()).add_(0.01)  # trained on: other weights, same path
        shutil.rmtree(teacher)
        save_checkpoint(teacher, model=old.model, tokenizer=old.tokenizer)
        # the flag by its name (--cache is its older spelling, and generate's KV cache)
        message = ("teacher's weights .* changed since the trajectories were made; make them "
                   "again .*another --trajectory-file")
    with pytest.raises(UserError, match=message) as e:
        train(c, progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "o").exists()


def test_hybrid_rows_of_a_trajectory_end_at_the_first_generated_eos(ar_teacher):
    """On trajectory rows the hybrid loss ignores what follows a row's first generated EOS
    (filler); an EOS in the prompt is text; corpus rows (no commit_step) keep every target."""
    from unmask.objectives.hybrid import hybrid

    loaded = load(ar_teacher)
    cfg = replace(loaded.config, draft_block=4)
    eos, V = cfg.eos_id, cfg.vocab_size
    steps = torch.tensor([[-1] * 8 + list(range(16))])  # (1, 24)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(4, V, (1, 24), generator=g)
    x0[0, 3] = eos  # in the prompt: text goes on
    x0[0, 14] = eos  # the teacher stopped here
    opts = ObjectiveOptions(schedule=None, draft_weight=1.0)  # type: ignore[arg-type]

    def loss(x: torch.Tensor, commit_step: torch.Tensor | None) -> torch.Tensor:
        parts = hybrid(loaded.model, cfg, x, attention_mask=None,
                       generator=torch.Generator().manual_seed(1), options=opts,
                       commit_step=commit_step)  # fmt: skip
        return parts.loss_sum / parts.n_tokens

    other = x0.clone()
    other[0, 15:] = (other[0, 15:] + 1) % V  # only after the generated EOS
    with torch.no_grad():
        assert torch.allclose(loss(x0, steps), loss(other, steps), atol=1e-6)
        assert not torch.allclose(loss(x0, None), loss(other, None))
        prompt_changed = x0.clone()
        prompt_changed[0, 5] = (prompt_changed[0, 5] + 1) % V  # after the prompt's EOS
        assert not torch.allclose(loss(x0, steps), loss(prompt_changed, steps))


def test_hybrid_on_trajectories_resume_equals_uninterrupted(ar_teacher, corpus, tmp_path,
                                                             monkeypatch, capsys):
    """`unmask train --objective hybrid --data TRAJECTORIES.safetensors --init AR` (what
    `unmask distill` runs for a causal student), stopped by SIGINT and resumed with `unmask
    distill --resume`, ends with the weights of the uninterrupted run."""
    cfg = replace(TRAJ, traj_temperature=0.0, traj_block_length=None, gen_length=16)
    traj = refresh_trajectories(str(ar_teacher), str(corpus), tmp_path / "t.safetensors", cfg,
                                student=str(ar_teacher), progress=False)  # fmt: skip

    def config(out: str) -> TrainConfig:
        return replace(_distill_cfg(traj, ar_teacher, tmp_path / out), objective="hybrid",
                       draft_block=4, seq_len=24)  # fmt: skip

    full = train(config("full"), progress=False)
    _stopped_at_step_3(config("part"), monkeypatch)
    assert main(["distill", "--resume", "--out", str(tmp_path / "part"), "--no-progress"]) == 0
    assert "resuming at step 3 of 6" in capsys.readouterr().err
    a, b = load(full).model.state_dict(), load(tmp_path / "part").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load(full).config.objective == "hybrid"


def test_trajectory_file_for_a_corpus_objective_is_one_line(cache, tmp_path, capsys):
    """`unmask train --objective ar --data TRAJECTORIES.safetensors`: one line naming the
    objectives that train on trajectory files, exit 2, no run folder."""
    capsys.readouterr()
    args = ["train", "--objective", "ar", "--data", str(cache), "--out", str(tmp_path / "o"),
            "--steps", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "trains objective distill or hybrid, not 'ar'" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


_TRAJ_META = {"format": "unmask-trajectories/1", "settings": "{}"}
_L = torch.zeros(2, 3, dtype=torch.long)


@pytest.mark.parametrize("tensors, meta", [
    ({"tokens": _L, "commit_step": torch.zeros(2, 4, dtype=torch.long),
      "seed": torch.zeros(2, dtype=torch.long)}, _TRAJ_META),
    ({"tokens": _L, "commit_step": _L.clone(), "seed": torch.zeros(2, dtype=torch.long)},
     {**_TRAJ_META, "settings": "{not json"}),
    ({"tokens": _L, "commit_step": _L.clone(), "seed": torch.zeros(2, dtype=torch.long)},
     {"format": "unmask-trajectories/1"}),
    ({"tokens": _L, "commit_step": _L.clone(), "seed": torch.zeros(2, dtype=torch.long)},
     {**_TRAJ_META, "settings": "[]"}),
    ({"tokens": _L.float(), "commit_step": _L.clone(), "seed": torch.zeros(2, dtype=torch.long)},
     _TRAJ_META),
    ({"tokens": torch.zeros(6, dtype=torch.long), "commit_step": torch.zeros(6, dtype=torch.long),
      "seed": torch.zeros(6, dtype=torch.long)}, _TRAJ_META),
    ({"tokens": torch.full((2, 3), -1, dtype=torch.long), "commit_step": _L.clone(),
      "seed": torch.zeros(2, dtype=torch.long)}, _TRAJ_META),
], ids=["shapes", "settings-not-json", "no-settings", "settings-a-list", "float", "1-d",
        "negative-ids"])
def test_a_malformed_trajectory_file_is_one_line(tensors, meta, teacher, corpus, tmp_path,
                                                 capsys):
    """A file that says it is a trajectory file but is not one (shapes that disagree, settings
    that are no JSON object, float tokens) is refused in one line, as `--cache` too (exit 2),
    not with a ValueError, KeyError or TypeError."""
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(UserError, match="not a trajectory file"):
        Trajectories.load(path)
    capsys.readouterr()
    args = ["distill", "--teacher", str(teacher), "--data", str(corpus), "--out",
            str(tmp_path / "o"), "--cache", str(path), "--trajectories", "1", "--traj-batch",
            "1", "--prompt-length", "8", "--gen-length", "8", "--steps", "1", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not a trajectory file" in err and err.count("\n") == 1

def test_trajectories_of_a_bigger_vocabulary_are_one_line(teacher, cache, tmp_path, capsys):
    """`unmask train --objective distill` on a trajectory file whose ids the model lacks (made
    by a teacher of another tokenizer): one line, exit 2, no run folder; not an IndexError
    from the embedding."""
    traj = Trajectories.load(cache)
    tokens = traj.tokens.clone()
    tokens[:, -1] = load(teacher).config.vocab_size + 100
    other = tmp_path / "other.safetensors"
    Trajectories(tokens, traj.commit_step, traj.seed, traj.meta).save(other)
    capsys.readouterr()
    args = ["train", "--objective", "distill", "--init", str(teacher), "--data", str(other),
            "--seq-len", "16", "--steps", "1", "--batch-size", "2", "--out",
            str(tmp_path / "o"), "--no-progress"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "beyond this model's vocab_size" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()

def test_trajectories_of_another_tokenizer_of_the_same_size_are_one_line(
        teacher, cache, tmp_path, capsys):
    """`unmask train --objective distill --init X` where X's tokenizer has as many tokens as
    the teacher's that made the file but other ids (two tokens swapped): one line naming the
    id, exit 2, no run folder; it trained on ids that mean other text without a word."""
    import shutil

    from unmask.checkpoint import checkpoint_dir

    other = tmp_path / "other"
    shutil.copytree(checkpoint_dir(teacher), other)
    spec = json.loads((other / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    (other / "tokenizer.json").write_text(json.dumps(spec))
    assert load(other).tokenizer.vocab_size == load(teacher).tokenizer.vocab_size
    capsys.readouterr()
    args = ["train", "--objective", "distill", "--init", str(other), "--data", str(cache),
            "--seq-len", "16", "--steps", "1", "--batch-size", "2", "--out",
            str(tmp_path / "o"), "--no-progress"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "its tokenizer differs from that of the teacher" in err and err.count("\n") == 1
    assert f"id {min(vocab['a'], vocab['b'])} is" in err
    assert not (tmp_path / "o").exists()
    same = ["train", "--objective", "distill", "--init", str(teacher), "--data", str(cache),
            "--seq-len", "16", "--steps", "1", "--batch-size", "2", "--out",
            str(tmp_path / "p"), "--no-progress", "--save-every", "0"]  # fmt: skip
    assert main(same) == 0  # the teacher's own tokenizer (a copy of it) trains as before


def _swapped_copy(teacher: Path, to: Path) -> Path:
    """A copy of ``teacher``'s checkpoint whose tokenizer swaps 'a' and 'b' (same size)."""
    import shutil

    from unmask.checkpoint import checkpoint_dir

    shutil.copytree(checkpoint_dir(teacher), to)
    spec = json.loads((to / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    (to / "tokenizer.json").write_text(json.dumps(spec))
    return to


def test_a_file_whose_teacher_is_gone_still_checks_the_students_tokenizer(
        teacher, cache, tmp_path, capsys):
    """The file records a stamp of the teacher's tokenizer (hashes of its ids in blocks), so
    `unmask train --objective distill --init X` on a file whose teacher folder is gone still
    refuses an X whose tokenizer gives its ids another meaning: one line, exit 2. Before, the
    check was skipped when the teacher was not there and X trained on ids of other text."""
    from unmask.objectives.distill import TOKENIZER_KEY

    old = Trajectories.load(cache)
    assert old.meta[TOKENIZER_KEY]["size"] == load(teacher).tokenizer.vocab_size
    gone = tmp_path / "gone.safetensors"
    Trajectories(old.tokens, old.commit_step, old.seed,
                 {**old.meta, "teacher": str(tmp_path / "deleted-teacher")}).save(gone)
    other = _swapped_copy(teacher, tmp_path / "other")
    capsys.readouterr()
    base = ["train", "--objective", "distill", "--data", str(gone), "--seq-len", "16",
            "--steps", "1", "--batch-size", "2", "--no-progress", "--save-every", "0"]
    assert main([*base, "--init", str(other), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "its tokenizer differs from that of the teacher of" in err and err.count("\n") == 1
    assert "as the file records it" in err and "deleted-teacher" in err
    assert not (tmp_path / "o").exists()
    assert main([*base, "--init", str(teacher), "--out", str(tmp_path / "p")]) == 0


def test_an_older_file_without_a_tokenizer_stamp_is_reused_and_trains(
        teacher, corpus, cache, tmp_path, capsys):
    """A trajectory file written before the tokenizer stamp: `unmask distill` reuses it (not
    decoded again for the missing key), and training on it with its teacher gone is not
    checked (nothing to compare with) and trains as before."""
    from unmask.objectives.distill import TOKENIZER_KEY

    old = Trajectories.load(cache)
    meta = {k: v for k, v in old.meta.items() if k != TOKENIZER_KEY}
    path = tmp_path / "older.safetensors"
    Trajectories(old.tokens, old.commit_step, old.seed, meta).save(path)
    capsys.readouterr()
    assert refresh_trajectories(str(teacher), str(corpus), path, TRAJ, progress=False) == path
    assert "reusing its 6 trajectories" in capsys.readouterr().err
    assert TOKENIZER_KEY not in Trajectories.load(path).meta  # left as it was
    gone = tmp_path / "gone.safetensors"
    Trajectories(old.tokens, old.commit_step, old.seed,
                 {**meta, "teacher": str(tmp_path / "deleted")}).save(gone)
    other = _swapped_copy(teacher, tmp_path / "other")
    args = ["train", "--objective", "distill", "--data", str(gone), "--seq-len", "16",
            "--steps", "1", "--batch-size", "2", "--no-progress", "--save-every", "0",
            "--init", str(other), "--out", str(tmp_path / "o")]
    assert main(args) == 0


def test_a_tokenizer_stamp_tells_appended_and_fewer_tokens_from_other_ids(teacher, tmp_path):
    """``stamp_difference``: the tokenizer itself, or one with tokens appended, agrees; one
    with two ids swapped differs in the block holding them."""
    from unmask.objectives.distill import stamp_difference, tokenizer_stamp
    from unmask.tokenizer import with_fim_tokens

    tok = load(teacher).tokenizer
    stamp = tokenizer_stamp(tok)
    assert stamp_difference(stamp, tok) is None
    assert stamp_difference(stamp, with_fim_tokens(tok)) is None  # three tokens appended
    longer = tokenizer_stamp(with_fim_tokens(tok))
    assert stamp_difference(longer, tok) is None  # the student lacks the appended ones
    assert stamp_difference({"size": "x"}, tok) is None  # not a stamp: nothing to compare
    assert stamp_difference({**stamp, "blocks": "0123"}, tok) is None  # nor is this
    swapped = load(_swapped_copy(teacher, tmp_path / "other")).tokenizer
    a = min(tok.token_to_id("a"), tok.token_to_id("b"))
    start = a - a % 256
    assert stamp_difference(stamp, swapped) == (start, min(start + 256, tok.vocab_size))


def test_a_trajectory_file_of_other_rows_than_seq_len_says_which(teacher, cache, tmp_path,
                                                                  capsys):
    """`unmask train --objective distill` on a trajectory file without `--seq-len` (default
    128, the rows 16): the refusal says which `--seq-len` to give; it named the field alone
    ("not the run's seq_len 128"), no flag."""
    capsys.readouterr()
    args = ["train", "--objective", "distill", "--init", str(teacher), "--data", str(cache),
            "--steps", "1", "--batch-size", "2", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not the run's seq_len 128; use --seq-len 16\n" in err and err.count("\n") == 1


# ------------------------------------------------------------------------- the study's slice


def test_prepare_slice_keeps_the_first_tokens_and_the_validation_split(corpus, tmp_path):
    """benchmarks/data_constrained.py trains on ``prepare_slice``: the first N train tokens,
    the whole validation split and the same tokenizer, so held-out numbers compare."""
    from unmask.data import TokenDataset, prepare_slice

    info = prepare_slice(corpus, tmp_path / "s", train_tokens=500)
    train_src, val_src = TokenDataset(corpus, "train"), TokenDataset(corpus, "val")
    train_s, val_s = TokenDataset(tmp_path / "s", "train"), TokenDataset(tmp_path / "s", "val")
    assert info.n_tokens == {"train": 500, "val": val_src.n_tokens}
    assert (train_s.read(0, 500) == train_src.read(0, 500)).all()
    assert (val_s.read(0, val_s.n_tokens) == val_src.read(0, val_src.n_tokens)).all()
    assert val_s.n_bytes == val_src.n_bytes
    assert train_s.tokenizer().vocab_size == train_src.vocab_size
    with pytest.raises(UserError, match="train_tokens=0 must be in 1.."):
        prepare_slice(corpus, tmp_path / "t", train_tokens=0)


@pytest.mark.parametrize("rank, says", [("0", True), ("1", False)])
def test_only_rank_0_says_where_a_stopped_distillation_is(teacher, corpus, tmp_path,
                                                          monkeypatch, capsys, rank, says):
    """Under torchrun every process stops (exit 130); the stop line is rank 0's alone, as
    ``unmask train`` says it."""
    import unmask.distill as distill_mod

    def stopped(teacher: object, data: object, out: str, **kw: object) -> Path:
        raise TrainingStopped(signal.SIGINT, 3, Path(out))

    monkeypatch.setattr(distill_mod, "distill", stopped)
    monkeypatch.setenv("RANK", rank)
    assert main(["distill", "--teacher", str(teacher), "--data", str(corpus), "--out",
                 str(tmp_path / "d"), "--no-progress"]) == 130
    assert ("stopped by SIGINT at step 3" in capsys.readouterr().err) == says


# ------------------------------------------------------------------------- audit fixes


def _args(teacher: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["distill", "--teacher", str(teacher), "--data", str(corpus), "--out", str(out),
            "--trajectories", "3", "--prompt-length", "8", "--gen-length", "8",
            "--traj-batch", "3", "--batch-size", "2", "--warmup", "1", "--threads", "1",
            "--no-progress", *extra]  # fmt: skip


def test_a_context_refusal_at_the_default_lengths_names_the_flags(teacher, corpus, tmp_path,
                                                                  capsys):
    """A teacher whose context is shorter than the default prompt + generation (32 + 128): the
    refusal says which flags to lower and to what, though none was typed (it named the
    fields prompt_length and gen_length, no flag)."""
    context = load(teacher).config.max_seq_len
    assert context < 32 + 128
    capsys.readouterr()
    args = ["distill", "--teacher", str(teacher), "--data", str(corpus), "--out",
            str(tmp_path / "o"), "--no-progress"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"exceeds the teacher's max_seq_len={context}; use --gen-length <= {context - 32}" \
        in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("spelling", ["--trajectory-file", "--cache"])
def test_the_trajectory_file_flag_and_its_older_spelling(spelling, teacher, corpus, tmp_path,
                                                        capsys):
    """``--trajectory-file`` names the trajectory file (``--cache``, which means the KV cache
    in ``unmask generate``, stays its alias): a refusal names the flag as typed, and a KV
    cache's name given there is one line pointing at ``--traj-cache`` (it made a trajectory
    file called ``dual``)."""
    out = tmp_path / "s"
    capsys.readouterr()
    assert main(_args(teacher, corpus, out, spelling, str(out), "--steps", "1")) == 2
    err = capsys.readouterr().err
    assert f"{spelling} {out} is the run directory --out {out}" in err
    assert main(_args(teacher, corpus, out, spelling, "dual", "--steps", "1")) == 2
    err = capsys.readouterr().err
    assert f"{spelling} dual: names the trajectory file" in err and "--traj-cache dual" in err
    assert err.count("\n") == 1 and not out.exists() and not Path("dual").exists()
    traj = tmp_path / "t.safetensors"
    assert main(_args(teacher, corpus, out, spelling, str(traj), "--steps", "1")) == 0
    assert Trajectories.load(traj).tokens.shape == (3, 16)


def test_a_run_directory_that_cannot_be_made_is_refused_before_decoding(teacher, corpus,
                                                                       tmp_path, capsys):
    """``--out`` under a file (or in a folder this process may not write): one line before
    the teacher decodes anything; the trajectories were decoded first (into a
    ``--trajectory-file`` elsewhere) and the run failed only when training made its folder."""
    (tmp_path / "file").write_text("x")
    out, traj = tmp_path / "file" / "run", tmp_path / "t.safetensors"
    capsys.readouterr()
    assert main(_args(teacher, corpus, out, "--trajectory-file", str(traj), "--steps", "1")) == 2
    err = capsys.readouterr().err
    assert (f"--out {out}: cannot make the run directory ({tmp_path / 'file'} is not a "
            "folder)") in err and err.count("\n") == 1
    assert not traj.exists()


def test_distill_compile_help_says_what_it_compiles(capsys):
    """``unmask distill --compile`` is training's (the student's step), not the decoder's
    ``generate --compile NAME``: its help says so."""
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "student's training step, as unmask train --compile" in text
    assert "--trajectory-file FILE, --cache FILE" in text


@pytest.mark.parametrize("change", ["other rows", "other length"])
def test_resume_refuses_a_trajectory_file_rewritten_since(change, teacher, corpus, cache,
                                                          tmp_path, monkeypatch, capsys):
    """A run records what its trajectory file held; a resume after the file was rewritten
    (another teacher or seed, another generation length) is one line naming the file and
    what changed, not a silent run on other rows (nor advice about a flag that `unmask
    distill` does not have). A file extended since holds the run's rows first and resumes on
    them (test_distill35_checks.py)."""
    path = tmp_path / "c.safetensors"
    path.write_bytes(cache.read_bytes())
    _stopped_at_step_3(_distill_cfg(path, teacher, tmp_path / "part"), monkeypatch)
    cfg = {"other rows": replace(TRAJ, traj_seed=9),
           "other length": replace(TRAJ, gen_length=16)}[change]
    refresh_trajectories(str(teacher), str(corpus), path, cfg, progress=False)
    capsys.readouterr()
    assert main(["distill", "--resume", "--out", str(tmp_path / "part"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    want = {"other rows": "made with other settings since",
            "other length": "rows of 16 tokens then, 24 now"}[change]
    assert f"{path}: the trajectory file changed since this run started" in err, err
    assert want in err and err.count("\n") == 1 and "seq_len=" not in err


def test_a_corpus_prepared_again_at_the_same_path_is_decoded_again(teacher, tmp_path, capsys):
    """The cache stamps the corpus' files as it stamps the teacher's weights: the same path
    prepared again from other text is not the corpus the trajectories came from."""
    import shutil

    data = word_corpus(tmp_path, WORDS, lines=300, seed=3)
    path = tmp_path / "c.safetensors"
    cfg = replace(TRAJ, trajectories=3)
    old = Trajectories.load(refresh_trajectories(str(teacher), str(data), path, cfg,
                                                 progress=False))
    shutil.rmtree(data)
    assert word_corpus(tmp_path, WORDS, lines=300, seed=4) == data  # unmask prepare --overwrite
    capsys.readouterr()
    new = Trajectories.load(refresh_trajectories(str(teacher), str(data), path, cfg,
                                                 progress=False))
    err = capsys.readouterr().err
    assert "made with other settings (corpus contents); decoding the trajectories again" in err
    assert not torch.equal(new.tokens[:, :8], old.tokens[:, :8])  # the new corpus' prompts


def test_a_reused_cache_says_so(teacher, corpus, cache, tmp_path, capsys):
    path = tmp_path / "c.safetensors"
    path.write_bytes(cache.read_bytes())
    capsys.readouterr()
    refresh_trajectories(str(teacher), str(corpus), path, replace(TRAJ, trajectories=4),
                         progress=False)
    err = capsys.readouterr().err
    assert err == (f"{path}: reusing the first 4 of its 6 trajectories (same teacher, corpus "
                   "and settings; the rows a fresh cache of 4 holds), trained on from "
                   "c.first-4.safetensors\n")
    refresh_trajectories(str(teacher), str(corpus), path, TRAJ, progress=False)
    assert capsys.readouterr().err == (f"{path}: reusing its 6 trajectories (same teacher, "
                                       "corpus and settings)\n")


def test_a_cache_with_more_rows_trains_on_the_first_n_as_a_fresh_run_would(
    teacher, corpus, cache, tmp_path, monkeypatch
):
    """A cache holding more rows than --trajectories was trained on whole (6 rows for 4
    asked); now a run of n trains on its first n rows, the rows a fresh cache of n holds:
    every batch is decoded whole (the 4th row comes from a batch of 3, not of 1) and cut."""
    from unmask.distill import distill as run_distill
    from unmask.distill import first_rows_path

    path = tmp_path / "c.safetensors"
    path.write_bytes(cache.read_bytes())
    four = replace(TRAJ, trajectories=4)
    rows = refresh_trajectories(str(teacher), str(corpus), path, four, progress=False)
    fresh_path = refresh_trajectories(str(teacher), str(corpus), tmp_path / "f.safetensors",
                                      four, progress=False)
    assert rows == first_rows_path(path, 4) and fresh_path == tmp_path / "f.safetensors"
    first, fresh = Trajectories.load(rows), Trajectories.load(fresh_path)
    assert len(first) == len(fresh) == 4 and len(Trajectories.load(path)) == 6
    assert torch.equal(first.tokens, fresh.tokens) and torch.equal(first.seed, fresh.seed)
    assert torch.equal(first.commit_step, fresh.commit_step)
    # the fresh cache of 4 grows to the 6 of the bigger one, row for row
    refresh_trajectories(str(teacher), str(corpus), fresh_path, TRAJ, progress=False)
    assert torch.equal(Trajectories.load(fresh_path).tokens, Trajectories.load(path).tokens)
    seen = {}
    monkeypatch.setattr("unmask.train.train",
                        lambda cfg, progress=True: seen.setdefault("data", cfg.data))
    run_distill(str(teacher), str(corpus), str(tmp_path / "run"), trajectories=four,
                train_config=_distill_cfg(path, teacher, tmp_path / "run"), cache=path,
                progress=False)
    assert seen["data"] == str(first_rows_path(path, 4).resolve())


def test_the_corpus_stamp_reads_contents_not_times(teacher, tmp_path, capsys):
    """The cache stamped the corpus' files by size and modification time: another corpus of
    the same size copied over it with its times (cp -p) was taken for the same one, and a
    touch of the same corpus forced a new decode. Now their contents are hashed (2 ms for
    the demo corpus); a file stamped by times before is still reused while they hold."""
    from unmask.objectives.distill import Trajectories as T

    data = word_corpus(tmp_path, WORDS, lines=300, seed=3)
    path = tmp_path / "c.safetensors"
    cfg = replace(TRAJ, trajectories=3)
    old = T.load(refresh_trajectories(str(teacher), str(data), path, cfg, progress=False))
    shard = data / json.loads((data / "index.json").read_text())["splits"]["train"]["shards"][0]
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touch: same contents
    capsys.readouterr()
    refresh_trajectories(str(teacher), str(data), path, cfg, progress=False)
    assert "reusing its 3 trajectories" in capsys.readouterr().err
    raw = shard.read_bytes()
    k = len(raw) // 4 * 2  # whole uint16 tokens
    shard.write_bytes(raw[k:] + raw[:k])  # same size, other prompts
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # and the same times
    refresh_trajectories(str(teacher), str(data), path, cfg, progress=False)
    assert "other settings (corpus contents)" in capsys.readouterr().err
    new = T.load(path)
    assert not torch.equal(new.tokens[:, :8], old.tokens[:, :8])
    # a file from before: [name, size, mtime_ns] stamps, honoured while they hold
    legacy = {**new.meta, "data_files": [[n, (data / n).stat().st_size,
                                          (data / n).stat().st_mtime_ns]
                                         for n in ("index.json", shard.name)]}
    T(new.tokens, new.commit_step, new.seed, legacy).save(path)
    refresh_trajectories(str(teacher), str(data), path, cfg, progress=False)
    assert "reusing its 3 trajectories" in capsys.readouterr().err


def test_certainty_term_is_averaged_over_the_right_positions(teacher, cache):
    """As dParallel's reference code (czg1225/dParallel, DLMTrainer.compute_loss): mean CE
    over the masked positions + w_H × mean entropy over those the student gets right; the
    logged parts are those two means and the fraction right, and compose to the loss."""
    import torch.nn.functional as F

    loaded = load(teacher)
    traj = Trajectories.load(cache)
    x0, steps = traj.tokens, traj.commit_step
    u = torch.linspace(0.0, 0.9, len(traj))[:, None]
    opts = ObjectiveOptions(schedule=None, distill_entropy_weight=2.0)  # type: ignore[arg-type]
    with torch.no_grad():
        parts = distill(loaded.model, loaded.config, x0, attention_mask=None,
                        generator=torch.Generator(), options=opts, commit_step=steps, u=u)
        masked = trajectory_states(steps, x0.shape[1], torch.Generator(), u)
        xt = torch.where(masked, torch.full_like(x0, loaded.config.mask_id), x0)
        z = loaded.model(xt).float()[masked]
    target = x0[masked]
    right = z.argmax(-1) == target
    assert 0 < int(right.sum()) < len(target)  # some right, some not: the two means differ
    logp = F.log_softmax(z / 0.5, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    ce = F.cross_entropy(z, target)
    want = ce + 2.0 * entropy[right].mean()
    n = parts.n_tokens
    assert torch.allclose(parts.loss_sum / n, want, atol=1e-5)
    got = {k: float(v / n) for k, v in (parts.parts or {}).items()}
    assert got["loss_ce"] == pytest.approx(float(ce), abs=1e-5)
    assert got["loss_certainty"] == pytest.approx(float(entropy[right].mean()), abs=1e-5)
    assert got["frac_correct"] == pytest.approx(float(right.float().mean()), abs=1e-6)


def test_loss_parts_are_logged(teacher, cache, tmp_path):
    run = train(_distill_cfg(cache, teacher, tmp_path / "s", steps=2), progress=False)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "loss" in r][-1]
    assert last["loss"] == pytest.approx(last["loss_ce"] + 2 * last["loss_certainty"], rel=1e-5)
    assert 0 <= last["frac_correct"] <= 1


@pytest.mark.parametrize("problem", ["fp16", "batch split", "short student", "bd3lm drafter"])
def test_bad_training_setups_are_refused_before_decoding(problem, teacher, ar_teacher, corpus,
                                                         tmp_path, monkeypatch, capsys):
    """What training would refuse is refused before the teacher decodes a trajectory: one
    line, exit 2, no trajectory file and no run directory left."""
    import unmask.distill as distill_mod

    def no_decoding(*a: object, **k: object) -> None:
        raise AssertionError("the teacher decoded trajectories")

    monkeypatch.setattr(distill_mod, "make_trajectories", no_decoding)
    out = tmp_path / "o"
    if problem == "fp16":
        args = _args(teacher, corpus, out, "--precision", "fp16", "--device", "cpu")
        want = "precision=fp16 needs a CUDA GPU"
    elif problem == "batch split":
        args = _args(teacher, corpus, out, "--batch-size", "3", "--grad-accum", "2")
        want = "--batch-size=3 is not divisible by processes×--grad-accum=2"
    elif problem == "short student":
        short = tmp_path / "short"
        shutil_copy(Path(teacher) / "checkpoint", short)
        cfg = json.loads((short / "config.json").read_text())
        (short / "config.json").write_text(json.dumps({**cfg, "max_seq_len": 12}))
        args = _args(teacher, corpus, out, "--student", str(short))
        want = f"--student {short}: --prompt-length + --gen-length = 16 exceeds its max_seq_len=12"
    else:
        bd = _teacher(corpus, tmp_path / "bd", objective="bd3lm", block_size=4, steps=1)
        args = _args(ar_teacher, corpus, out, "--student", str(bd), "--distill-window", "4")
        want = "--distill-window drafts with a bidirectional student (mdlm, sft), not a bd3lm one"
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert want in err and err.count("\n") == 1, err
    assert not out.exists() and not default_cache(out).exists()


def shutil_copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)


@pytest.mark.parametrize("where", ["the run directory", "inside the run directory"])
def test_a_cache_in_the_run_directory_is_refused_up_front(where, teacher, corpus, tmp_path,
                                                         capsys):
    out = tmp_path / "s"
    cache = out if where == "the run directory" else out / "checkpoint" / "t.safetensors"
    capsys.readouterr()
    assert main(_args(teacher, corpus, out, "--cache", str(cache), "--steps", "1")) == 2
    err = capsys.readouterr().err
    assert f"--cache {cache} is {where} --out {out}; put the trajectory file elsewhere" in err
    assert err.count("\n") == 1 and not out.exists()


def test_resume_from_another_working_directory(teacher, corpus, tmp_path, monkeypatch, capsys):
    """The run records its trajectory file and teacher as absolute paths: a resume from
    another folder finds them (the default cache is relative when --out is)."""
    (tmp_path / "here").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert main(_args(teacher, corpus, Path("run"), "--steps", "2")) == 0, capsys.readouterr()
    saved = json.loads((tmp_path / "here" / "run" / "train_config.json").read_text())
    assert Path(saved["data"]).is_absolute() and Path(saved["init"]).is_absolute()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    code = main(["distill", "--resume", "--out", str(tmp_path / "here" / "run"), "--steps", "3",
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "resuming at step 2 of 2; --steps 3 given" in capsys.readouterr().err


def test_positions_never_committed_are_masked_in_every_state():
    """EOS fill (commit step G: never committed) is masked in every state; k counts only the
    positions the teacher committed."""
    steps = torch.tensor([[-1, -1, 0, 1, 2, 3, 7, 7, 7]])  # G = 7: three never committed
    g = torch.Generator()
    for u in (0.0, 0.3, 0.6, 0.99):
        masked = trajectory_states(steps, 9, g, u=torch.tensor([[u]]))
        assert masked[0, 6:].all() and not masked[0, :2].any()
    late = trajectory_states(steps, 9, g, u=torch.tensor([[0.99]]))  # k = 3 of 4 committed
    assert late.tolist() == [[False] * 5 + [True] * 4]
    blocks = torch.tensor([[0, 1, 4, 4]])  # bd3lm blocks of 2, the second never decoded
    assert trajectory_states(blocks, 2, g, u=torch.tensor([[0.9, 0.9]])).tolist() == [
        [False, True, True, True]
    ]


def test_help_offers_no_flag_distill_always_refuses(capsys):
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    out = capsys.readouterr().out
    assert "--keep-best" not in out and "--latent-len" not in out and "--steps" in out


def test_a_full_disk_names_the_trajectory_file(teacher, corpus, tmp_path, monkeypatch, capsys):
    import errno

    import unmask.files as files

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "atomic_write_bytes", full)
    out = tmp_path / "o"
    capsys.readouterr()
    assert main(_args(teacher, corpus, out)) == 2
    err = capsys.readouterr().err
    assert err == (f"unmask distill: error: No space left on device: {default_cache(out)}\n")


def test_a_distilled_student_is_not_told_to_distil(teacher, cache, tmp_path, capsys):
    """generate's note for a model that commits about one token a step under a parallel
    policy: a distilled student is told it needs more distillation, not to be distilled."""
    from unmask.commands.generate import _distilled

    run = train(_distill_cfg(cache, teacher, tmp_path / "s", steps=1), progress=False)
    assert _distilled(str(run)) and _distilled(str(run / "checkpoint"))
    assert not _distilled(str(teacher))
    capsys.readouterr()
    args = ["--policy", "threshold", "--threshold", "0.99999", "--gen-length", "8", "--steps",
            "8", "--no-live", "--seed", "0"]
    assert main(["generate", "--model", str(run), "the lord", *args]) == 0
    err = capsys.readouterr().err
    assert "this distilled student is not yet confident" in err and "unmask distill" in err
    assert main(["generate", "--model", str(teacher), "the lord", *args]) == 0
    assert "a model distilled for it (unmask distill)" in capsys.readouterr().err


# ------------------------------------------------------------------------- session 24


def test_waiting_ranks_read_the_trajectory_file_only_when_it_changes(teacher, corpus, cache,
                                                                      tmp_path, monkeypatch):
    """A torchrun rank > 0 polls for rank 0's file; one that is not yet the rows asked for is
    not read again (the whole file, thousands of rows) until rank 0 rewrites it."""
    import unmask.distill as distill_mod

    path = tmp_path / "c.safetensors"
    have = Trajectories.load(cache)
    Trajectories(have.tokens[:3], have.commit_step[:3], have.seed[:3], have.meta).save(path)
    loads: list[Path] = []
    real_load = Trajectories.load

    def counted(p: Path) -> Trajectories:
        loads.append(Path(p))
        return real_load(p)

    polls = [0]

    def sleep(_: float) -> None:  # rank 0 decodes: its whole file lands after 5 polls
        polls[0] += 1
        if polls[0] == 5:
            path.write_bytes(cache.read_bytes())

    monkeypatch.setattr(Trajectories, "load", staticmethod(counted))
    monkeypatch.setattr(distill_mod.time, "sleep", sleep)
    monkeypatch.setenv("RANK", "1")
    got = refresh_trajectories(str(teacher), str(corpus), path, TRAJ, progress=False)
    assert got == path and polls[0] == 5
    assert loads == [path, path]  # the 3-row file once, then the finished one


def test_ctrl_c_while_decoding_keeps_the_rows_and_says_how_to_go_on(teacher, corpus, tmp_path,
                                                                     monkeypatch, capsys):
    """Ctrl-C while the teacher decodes: the finished batches stay in the trajectory file,
    the stop line says so, and running the same command again continues them; --resume on
    the run that never started training says to do that, not only 'nothing to resume'."""
    import unmask.distill as distill_mod

    real = distill_mod.decode_batch
    calls = [0]

    def decode(*a: object, **k: object) -> object:
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(distill_mod, "decode_batch", decode)
    out = tmp_path / "d"
    args = [*_args(teacher, corpus, out), "--trajectories", "6", "--steps", "1"]
    assert main(args) == 130
    err = capsys.readouterr().err
    kept = Trajectories.load(default_cache(out))
    assert len(kept) == 3
    assert f"{default_cache(out)}: 3 of 6 trajectories kept" in err
    assert "run the same command again" in err
    assert main(["distill", "--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "run the same `unmask distill` command" in err
    monkeypatch.setattr(distill_mod, "decode_batch", real)
    assert main(args) == 0
    assert "3 of 6" not in capsys.readouterr().err
    calls[0] = 1  # stopped in the first batch: nothing to continue from
    monkeypatch.setattr(distill_mod, "decode_batch", decode)
    assert main([*_args(teacher, corpus, tmp_path / "e"), "--steps", "1"]) == 130
    err = capsys.readouterr().err
    assert "no batch of trajectories finished; nothing kept" in err and "of 3" not in err
    again = Trajectories.load(default_cache(out))
    assert len(again) == 6 and torch.equal(again.tokens[:3], kept.tokens)


@pytest.mark.parametrize("teacher_kind", ["publisher folder", "native checkpoint"])
def test_a_corpus_of_another_tokenizer_is_refused_before_decoding(teacher_kind, teacher, corpus,
                                                                  tmp_path, monkeypatch, capsys):
    """The corpus' ids must be the teacher's: a publisher's folder (LLaDA) given a byte-level
    corpus was not checked and failed inside the decoder ('prompt id 111 is outside the
    model's vocabulary'); a corpus of a smaller tokenizer would have decoded other text."""
    from test_convert import make_llada

    import unmask.distill as distill_mod
    from unmask.data import prepare

    def no_decoding(*a: object, **k: object) -> None:
        raise AssertionError("the teacher decoded")

    monkeypatch.setattr(distill_mod, "decode_batch", no_decoding)
    if teacher_kind == "publisher folder":
        model, data = tmp_path / "llada", corpus  # the byte corpus: 260 tokens against 44
        make_llada(model)
        want = ("its tokenizer has 260 tokens, the teacher's 44; prepare the corpus with the "
                f"teacher's tokenizer (unmask prepare --tokenizer {model / 'tokenizer.json'})")
    else:  # a word-level corpus for the byte-level teacher: fewer ids, other meanings
        make_llada(tmp_path / "llada")
        (tmp_path / "w.txt").write_text(" ".join(f"w{i % 40}" for i in range(4000)) + "\n")
        data = tmp_path / "wprep"
        prepare([tmp_path / "w.txt"], data, tokenizer=str(tmp_path / "llada" / "tokenizer.json"),
                val_fraction=0, progress=False)
        model = teacher
        want = "its tokenizer differs from the teacher's (id "
    capsys.readouterr()
    out = tmp_path / "o"
    assert main(["distill", "--teacher", str(model), "--data", str(data), "--out", str(out),
                 "--prompt-length", "8", "--gen-length", "8", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert want in err and err.count("\n") == 1, err
    assert not out.exists() and not default_cache(out).exists()
    with pytest.raises(UserError, match="its tokenizer"):  # the library checks it too
        refresh_trajectories(str(model), str(data), tmp_path / "c.safetensors",
                             replace(TRAJ, trajectories=1), progress=False)


@pytest.mark.parametrize(("flags", "want"), [
    (["--traj-temperature", "-1"], "--traj-temperature must be a finite number >= 0, got -1.0"),
    (["--traj-cache", "bogus"], "unknown --traj-cache 'bogus'; choose one of"),
    (["--traj-block-length", "3"], "--gen-length (8) must be a multiple of --traj-block-length "
     "(3); try --traj-block-length 2 or 4"),
])
def test_a_bad_trajectory_option_is_named_by_its_flag(flags, want, teacher, corpus, tmp_path,
                                                      capsys):
    """The sampler's refusals named its own fields (``temperature must be ...``, next to the
    student's --distill-temperature): they name the --traj-* flag the user typed."""
    capsys.readouterr()
    out = tmp_path / "o"
    assert main(_args(teacher, corpus, out, *flags)) == 2
    err = capsys.readouterr().err
    assert want in err and err.count("\n") == 1, err
    assert not out.exists() and not default_cache(out).exists()


def test_an_exported_autoregressive_teacher_is_known_as_one(ar_teacher, corpus, tmp_path,
                                                           capsys):
    """An ar model exported as a transformers folder is still autoregressive: without a
    student it is refused before decoding (it decoded every trajectory, then training said
    'objective distill needs a masked-diffusion teacher'), and as its own --student it
    becomes a one-model hybrid (it was refused as a student that is not masked diffusion)."""
    from unmask.convert.write import export

    folder = export(ar_teacher, tmp_path / "hf", family="transformers")
    capsys.readouterr()
    out = tmp_path / "o"
    assert main(_args(folder, corpus, out)) == 2
    err = capsys.readouterr().err
    assert "an autoregressive teacher teaches a drafter" in err and err.count("\n") == 1
    assert not default_cache(out).exists()
    assert main(_args(folder, corpus, out, "--student", str(folder), "--draft-block", "4",
                      "--steps", "1")) == 0
    assert load(out).config.draft_block == 4


def test_a_run_stopped_while_decoding_and_run_again_equals_an_uninterrupted_one(
        teacher, corpus, tmp_path, monkeypatch, capsys):
    """Ctrl-C in the second batch of trajectories, then the same command again: the file holds
    the rows, and the student the weights, of the same command run without a stop."""
    import unmask.distill as distill_mod

    extra = ["--trajectories", "6", "--steps", "2", "--traj-temperature", "0.8"]
    assert main(_args(teacher, corpus, tmp_path / "full", *extra)) == 0
    real, calls = distill_mod.decode_batch, [0]

    def decode(*a: object, **k: object) -> object:
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(distill_mod, "decode_batch", decode)
    args = _args(teacher, corpus, tmp_path / "part", *extra)
    assert main(args) == 130
    monkeypatch.setattr(distill_mod, "decode_batch", real)
    assert main(args) == 0
    capsys.readouterr()
    a = Trajectories.load(default_cache(tmp_path / "full"))
    b = Trajectories.load(default_cache(tmp_path / "part"))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.commit_step, b.commit_step)
    assert torch.equal(a.seed, b.seed)
    x = load(tmp_path / "full").model.state_dict()
    y = load(tmp_path / "part").model.state_dict()
    assert all(torch.equal(x[k], y[k]) for k in x)
