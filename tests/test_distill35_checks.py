"""Distillation's checks of its inputs (session 35): a teacher whose checkpoint is there but
cannot be read is said so (it was taken for a teacher gone), a diffusion student of another
tokenizer is refused as a student (not as a drafter), and a count below 1 is named before it
is compared with another option."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from corpus_helpers import word_corpus

from unmask.checkpoint import load
from unmask.cli import main
from unmask.config import TrainConfig
from unmask.errors import UserError
from unmask.objectives.distill import (
    TOKENIZER_KEY,
    Trajectories,
    TrajectoryData,
    check_student_tokenizer,
    tokenizer_stamp,
)
from unmask.train import train

WORDS = "the lord said unto moses go down and speak to the people of israel".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=300, seed=0)


@pytest.fixture(scope="module")
def teacher(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = TrainConfig(
        data=str(corpus), out=str(tmp_path_factory.mktemp("teacher") / "run"), preset="tiny",
        seq_len=32, batch_size=4, steps=1, warmup=0, eval_every=0, save_every=0, seed=1,
    )  # fmt: skip
    return train(cfg, progress=False)


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def _swap_ids(run: Path, a: int = 100, b: int = 101) -> None:
    """The checkpoint's tokenizer with the tokens of ids ``a`` and ``b`` swapped: as many
    tokens, two of them meaning the other."""
    path = run / "checkpoint" / "tokenizer.json"
    tok = json.loads(path.read_text())
    vocab = tok["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    vocab[by_id[a]], vocab[by_id[b]] = b, a
    path.write_text(json.dumps(tok))


def _file(tmp_path: Path, teacher: Path, *, stamped: bool) -> TrajectoryData:
    """A trajectory file of 2 rows of 8 byte ids naming ``teacher``, with the stamp of its
    tokenizer or (a file made before the stamp) without."""
    meta: dict[str, object] = {"teacher": str(teacher.resolve())}
    if stamped:
        meta[TOKENIZER_KEY] = tokenizer_stamp(load(teacher, weights=False).tokenizer)
    steps = torch.tensor([[-1] * 4 + [0, 1, 2, 3]] * 2)
    tokens = torch.full((2, 8), 70, dtype=torch.long)
    path = tmp_path / "t.safetensors"
    Trajectories(tokens, steps, torch.zeros(2, dtype=torch.long), meta).save(path)
    return TrajectoryData(path)


@pytest.mark.parametrize("broken", ["tokenizer.json", "config.json"])
def test_a_stamped_files_teacher_that_cannot_be_read_is_not_called_gone(
    broken, teacher, tmp_path
):
    """The student differs from the file's stamp: the refusal said "the teacher T is not
    there" of a teacher whose config.json or tokenizer.json was broken; it says what is
    wrong with it."""
    t = _copy(teacher, tmp_path / "t")
    data = _file(tmp_path, t, stamped=True)
    student = _copy(teacher, tmp_path / "s")
    _swap_ids(student)
    (t / "checkpoint" / broken).write_text("{broken")
    tok = load(student, weights=False).tokenizer
    with pytest.raises(UserError) as e:
        check_student_tokenizer(data, tok, "--init s")
    msg = str(e.value)
    assert "cannot be read" in msg and broken in msg and "not there" not in msg, msg
    assert "ids 0..255 hold other tokens" in msg and "\n" not in msg


def test_an_unstamped_files_teacher_that_cannot_be_read_is_reported(teacher, tmp_path):
    """A file made before the stamp is checked against its teacher's folder: one there but
    broken was taken for gone and the student trained unchecked; now the line says so."""
    t = _copy(teacher, tmp_path / "t")
    data = _file(tmp_path, t, stamped=False)
    student = _copy(teacher, tmp_path / "s")
    _swap_ids(student)
    tok = load(student, weights=False).tokenizer
    with pytest.raises(UserError, match="id 100 is"):  # readable: the id that differs
        check_student_tokenizer(data, tok, "--init s")
    (t / "checkpoint" / "config.json").write_text("{broken")
    with pytest.raises(UserError) as e:
        check_student_tokenizer(data, tok, "--init s")
    msg = str(e.value)
    assert msg.startswith("--init s: its tokenizer cannot be compared") and "\n" not in msg
    assert "config.json: not valid JSON" in msg and "repair that checkpoint" in msg, msg
    shutil.rmtree(t)  # gone, as before: nothing to compare with, the run trains
    check_student_tokenizer(data, tok, "--init s")


def _distill(teacher: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["distill", "--teacher", str(teacher), "--data", str(corpus), "--prompt-length",
            "8", "--gen-length", "8", "--trajectories", "2", "--traj-batch", "2", "--steps",
            "1", "--no-progress", *extra, "--out", str(out)]  # fmt: skip


def test_a_diffusion_student_of_another_tokenizer_is_refused_as_a_student(
    teacher, corpus, tmp_path, monkeypatch, capsys
):
    """An mdlm teacher's student whose tokenizer swaps two ids: refused before decoding, but
    as "the drafter's tokenizer differs from the model's ... speculative decoding", and only
    after the teacher's weights were read; now before."""
    import unmask.checkpoint

    student = _copy(teacher, tmp_path / "s")
    _swap_ids(student)
    out = tmp_path / "o"
    original = unmask.checkpoint.load

    def load(path: object, *args: object, weights: bool = True, **kw: object) -> object:
        assert not weights, f"{path}: weights read before the student was checked"
        return original(path, *args, weights=weights, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(unmask.checkpoint, "load", load)
    capsys.readouterr()
    assert main(_distill(teacher, corpus, out, "--student", str(student))) == 2
    err = capsys.readouterr().err
    assert f"--student {student}: its tokenizer differs from the teacher's (id 100" in err, err
    assert "drafter" not in err and "speculative" not in err and err.count("\n") == 1
    assert not out.exists() and not Path(f"{out}.trajectories.safetensors").exists()


@pytest.mark.parametrize("flag", ["--gen-length", "--prompt-length", "--trajectories"])
def test_a_negative_count_is_named_before_it_is_compared(flag, teacher, corpus, tmp_path,
                                                         capsys):
    """``--gen-length -3`` was refused as "distill_window=0 exceeds --gen-length=-3", a
    window that is off."""
    out = tmp_path / "o"
    capsys.readouterr()
    assert main([*_distill(teacher, corpus, out), flag, "-3"]) == 2
    err = capsys.readouterr().err
    assert f"{flag}=-3 must be at least 1" in err and "window" not in err, err
    assert err.count("\n") == 1 and not out.exists()


def test_the_trajectory_counts_are_checked_by_the_library_too(teacher, corpus, tmp_path):
    from unmask.distill import DISTILL_DEFAULTS, TrajectoryConfig, distill

    with pytest.raises(UserError, match="gen_length=-1 must be at least 1"):
        distill(str(teacher), str(corpus), str(tmp_path / "o"),
                trajectories=TrajectoryConfig(gen_length=-1),
                train_config=replace(DISTILL_DEFAULTS, distill_window=0))
    assert not (tmp_path / "o").exists()


def _stopped_at_step_3(config: TrainConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``config`` until a SIGINT during step 2 stops it (a resume continues at step 3)."""
    import os
    import signal

    import unmask.train as train_mod
    from unmask.train_guards import TrainingStopped

    orig = train_mod.lr_at

    def lr(step: int, c: TrainConfig) -> float:
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return orig(step, c)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "lr_at", lr)
        with pytest.raises(TrainingStopped):
            train(config, progress=False)


def test_a_run_on_a_shared_file_resumes_after_another_run_extended_it(
    teacher, corpus, tmp_path, monkeypatch, capsys
):
    """Run A trains on a --trajectory-file holding exactly its 4 rows; run B (8 rows, same
    settings) extends that file. A's resume was refused ("4 rows then, 8 now"); its rows are
    still the file's first 4, so it resumes on them and ends as if never stopped. A file
    whose first rows changed is still refused."""
    from unmask.distill import DISTILL_DEFAULTS, TrajectoryConfig, refresh_trajectories

    traj = TrajectoryConfig(trajectories=4, prompt_length=8, gen_length=8, traj_batch=2,
                            traj_temperature=0.8, traj_block_length=4)
    shared = tmp_path / "shared.safetensors"
    refresh_trajectories(str(teacher), str(corpus), shared, traj, progress=False)
    alone = tmp_path / "alone.safetensors"
    shutil.copy(shared, alone)

    def cfg(data: Path, out: str) -> TrainConfig:
        return replace(DISTILL_DEFAULTS, init=str(teacher), data=str(data),
                       out=str(tmp_path / out), seq_len=16, batch_size=4, steps=5, warmup=1,
                       lr=1e-3, save_every=0, log_every=1, seed=2)

    full = train(cfg(alone, "full"), progress=False)
    _stopped_at_step_3(cfg(shared, "part"), monkeypatch)
    refresh_trajectories(str(teacher), str(corpus), shared, replace(traj, trajectories=8),
                         progress=False)
    assert len(Trajectories.load(shared)) == 8
    capsys.readouterr()
    assert main(["distill", "--resume", "--out", str(tmp_path / "part"), "--no-progress"]) == 0
    err = capsys.readouterr().err  # said, as a fresh run says "reusing the first 4"
    assert err.count(f"{shared}: resuming on its first 4 of 8 trajectories (those this run "
                     "started on") == 1, err
    a, b = load(full).model.state_dict(), load(tmp_path / "part").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    _stopped_at_step_3(cfg(alone, "other"), monkeypatch)
    now = Trajectories.load(shared)
    now.tokens[0, -1] = (now.tokens[0, -1] + 1) % 200  # a first row that is not the one
    now.save(alone)
    capsys.readouterr()
    assert main(["distill", "--resume", "--out", str(tmp_path / "other"), "--no-progress"]) == 2
    err = capsys.readouterr().err  # the reason, not the row count (more rows are fine now)
    assert "the trajectory file changed since this run started (its first 4 of 8 rows are " \
           "other rows, with the same settings)" in err, err


@pytest.mark.parametrize("data", ["missing", "text file"])
def test_a_corpus_that_is_not_there_is_refused_before_the_teacher_is_loaded(
    data, teacher, tmp_path, monkeypatch, capsys
):
    """A mistyped --data was reported only after the teacher's weights were read (all of a
    large model's)."""
    import unmask.checkpoint

    def load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the teacher was loaded")

    monkeypatch.setattr(unmask.checkpoint, "load", load)
    path = tmp_path / "nothere"
    if data == "text file":
        path.write_text("the lord\n")
    out = tmp_path / "o"
    capsys.readouterr()
    assert main(_distill(teacher, path, out)) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "run `unmask prepare` first" in err and err.count("\n") == 1
    assert not out.exists()


def test_a_bd3lm_student_whose_blocks_do_not_split_the_rows_is_refused_before_decoding(
    teacher, corpus, tmp_path, capsys
):
    """An mdlm teacher's bd3lm student with prompt + generation = 14 and blocks of 4: the
    teacher decoded every trajectory, then training refused the rows, blaming "the teacher's
    block_size" (the teacher has none)."""
    cfg = TrainConfig(
        data=str(corpus), out=str(tmp_path / "bd"), preset="tiny", seq_len=32, batch_size=4,
        steps=1, warmup=0, eval_every=0, save_every=0, seed=1, objective="bd3lm", block_size=4,
    )  # fmt: skip
    student = train(cfg, progress=False)
    out = tmp_path / "o"
    args = _distill(teacher, corpus, out, "--student", str(student))
    args[args.index("--prompt-length") + 1] = "6"
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--student {student}: --prompt-length + --gen-length = 14 does not split into its " \
           "blocks of 4" in err and err.count("\n") == 1, err
    assert not out.exists() and not Path(f"{out}.trajectories.safetensors").exists()


def test_rows_that_do_not_split_into_blocks_name_the_model_that_learns():
    from unmask.config import ModelConfig
    from unmask.objectives.distill import distill
    from unmask.objectives.spec import ObjectiveOptions
    from unmask.schedules import get_schedule

    config = ModelConfig(objective="bd3lm", attention="block-causal", block_size=4)
    x0 = torch.ones(1, 14, dtype=torch.long)
    steps = torch.tensor([[-1] * 6 + list(range(8))])
    with pytest.raises(UserError, match=r"blocks of 4 \(the block_size of the model that"):
        distill(lambda x, *a: torch.zeros(1, 14, 512), config, x0, attention_mask=None,
                generator=torch.Generator(), commit_step=steps,
                options=ObjectiveOptions(schedule=get_schedule()))


def test_a_reused_or_refused_trajectory_file_reads_no_teacher_weights(
    teacher, corpus, tmp_path, monkeypatch, capsys
):
    """A file with the settings asked for is reused, and a named one made with others is
    refused, from the teacher's config and tokenizer: both loaded all of its weights first."""
    import unmask.checkpoint
    from unmask.distill import TrajectoryConfig, refresh_trajectories

    traj = TrajectoryConfig(trajectories=2, prompt_length=8, gen_length=8, traj_batch=2)
    path = tmp_path / "t.safetensors"
    refresh_trajectories(str(teacher), str(corpus), path, traj, progress=False)
    original = unmask.checkpoint.load

    def load(p: object, *args: object, weights: bool = True, **kw: object) -> object:
        assert not weights, f"{p}: weights read"
        return original(p, *args, weights=weights, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(unmask.checkpoint, "load", load)
    capsys.readouterr()
    assert refresh_trajectories(str(teacher), str(corpus), path, traj, progress=False) == path
    assert "reusing its 2 trajectories" in capsys.readouterr().err
    with pytest.raises(UserError, match="made with other settings .*traj_seed 0 in the file"):
        refresh_trajectories(str(teacher), str(corpus), path, replace(traj, traj_seed=5),
                             progress=False, replace_other=False)


def _touch(path: Path) -> None:
    """``path`` with a later modification time, its contents as they were (a cp, a touch)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


@pytest.mark.parametrize("change", ["teacher touched", "file of an older version"])
def test_a_shared_file_extended_with_its_settings_rewritten_still_resumes(
    change, teacher, corpus, tmp_path, monkeypatch, capsys
):
    """Run B extends run A's shared file and writes its own settings, which a reuse takes
    for the same while they differ byte for byte: the teacher's weights stamp of a teacher
    touched (or copied) since, or the keys a file of an older version lacks. A's resume was
    still refused ("4 rows then, 8 now ... restore that file"), though its 4 rows are the
    file's first; it resumes on them, says so, and ends as an uninterrupted run."""
    from unmask.distill import DISTILL_DEFAULTS, TrajectoryConfig, refresh_trajectories

    t = _copy(teacher, tmp_path / "t")
    traj = TrajectoryConfig(trajectories=4, prompt_length=8, gen_length=8, traj_batch=2)
    shared = tmp_path / "shared.safetensors"
    refresh_trajectories(str(t), str(corpus), shared, traj, progress=False)
    if change == "file of an older version":
        old = Trajectories.load(shared)
        meta = {k: v for k, v in old.meta.items() if k not in (TOKENIZER_KEY, "whole_batches")}
        Trajectories(old.tokens, old.commit_step, old.seed, meta).save(shared)
    alone = tmp_path / "alone.safetensors"
    shutil.copy(shared, alone)
    started = Trajectories.load(shared).meta

    def cfg(data: Path, out: str) -> TrainConfig:
        return replace(DISTILL_DEFAULTS, init=str(t), data=str(data), out=str(tmp_path / out),
                       seq_len=16, batch_size=4, steps=5, warmup=1, lr=1e-3, save_every=0,
                       log_every=1, seed=2)

    full = train(cfg(alone, "full"), progress=False)
    _stopped_at_step_3(cfg(shared, "part"), monkeypatch)
    if change == "teacher touched":
        _touch(t / "checkpoint" / "model.safetensors")
    refresh_trajectories(str(t), str(corpus), shared, replace(traj, trajectories=8),
                         progress=False)
    extended = Trajectories.load(shared)
    assert len(extended) == 8 and extended.meta != started  # B's own settings
    capsys.readouterr()
    assert main(["distill", "--resume", "--out", str(tmp_path / "part"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"{shared}: resuming on its first 4 of 8 trajectories" in err, err
    a, b = load(full).model.state_dict(), load(tmp_path / "part").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_refused_for_other_settings_says_so(teacher, corpus, tmp_path, monkeypatch,
                                                     capsys):
    """The file extended, its first rows the same but made with other sampling (written by
    hand here): refused naming the settings, not "4 rows then, 8 now"."""
    from unmask.distill import DISTILL_DEFAULTS, TrajectoryConfig, refresh_trajectories

    traj = TrajectoryConfig(trajectories=8, prompt_length=8, gen_length=8, traj_batch=2)
    eight = tmp_path / "eight.safetensors"
    refresh_trajectories(str(teacher), str(corpus), eight, traj, progress=False)
    have = Trajectories.load(eight)
    path = tmp_path / "t.safetensors"
    Trajectories(have.tokens[:4], have.commit_step[:4], have.seed[:4], have.meta).save(path)
    _stopped_at_step_3(replace(DISTILL_DEFAULTS, init=str(teacher), data=str(path),
                               out=str(tmp_path / "run"), seq_len=16, batch_size=4, steps=5,
                               warmup=1, save_every=0, seed=2), monkeypatch)
    meta = {**have.meta, "sample": {**have.meta["sample"], "temperature": 0.5}}
    Trajectories(have.tokens, have.commit_step, have.seed, meta).save(path)
    capsys.readouterr()
    assert main(["distill", "--resume", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "changed since this run started (made with other settings since" in err, err
    assert err.count("\n") == 1


def test_a_teacher_without_its_tokenizer_is_gone_if_native_unreadable_if_a_publishers(
    teacher, tmp_path
):
    """As ``teacher_tokenizer``'s docstring now says (it said None for both): a native
    checkpoint without tokenizer.json records no tokenizer, so there is nothing to compare
    with; a publisher's folder without one cannot be loaded at all, and is said so."""
    from unmask.objectives.distill import teacher_tokenizer

    t = _copy(teacher, tmp_path / "t")
    (t / "checkpoint" / "tokenizer.json").unlink()
    assert teacher_tokenizer({"teacher": str(t)}) is None
    pub = tmp_path / "pub"
    pub.mkdir()
    (pub / "config.json").write_text(json.dumps({
        "model_type": "llada", "architectures": ["LLaDAModelLM"], "vocab_size": 300}))
    with pytest.raises(UserError, match="tokenizer.json"):
        teacher_tokenizer({"teacher": str(pub)})


def test_a_students_tokenizer_is_compared_with_the_teachers_once(teacher, tmp_path,
                                                                 monkeypatch):
    """``student_vocab`` compared the two tokenizers id by id, then ``draft_aux`` compared
    them again (``shared_vocabulary``): about 150k ``id_to_token`` calls for a Qwen-size
    tokenizer, twice. Once now, and the shared size is the same."""
    import unmask.tokenizer
    from unmask.distill import student_vocab

    calls = []
    original = unmask.tokenizer.first_difference

    def counted(a: object, b: object) -> int | None:
        calls.append(1)
        return original(a, b)

    monkeypatch.setattr(unmask.tokenizer, "first_difference", counted)
    student = _copy(teacher, tmp_path / "s")
    assert student_vocab(load(teacher, weights=False), str(student)) is None
    assert len(calls) == 1
