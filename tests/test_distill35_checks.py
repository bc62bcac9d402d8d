"""Distillation's checks of its inputs (session 35): a teacher whose checkpoint is there but
cannot be read is said so (it was taken for a teacher gone), a diffusion student of another
tokenizer is refused as a student (not as a drafter), and a count below 1 is named before it
is compared with another option."""

from __future__ import annotations

import json
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
    teacher, corpus, tmp_path, capsys
):
    """An mdlm teacher's student whose tokenizer swaps two ids: refused before decoding, but
    as "the drafter's tokenizer differs from the model's ... speculative decoding"."""
    student = _copy(teacher, tmp_path / "s")
    _swap_ids(student)
    out = tmp_path / "o"
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
