"""``unmask distill --student``: the student's weights are read once (by training), and a
student whose weights cannot be loaded is still refused before the teacher decodes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from corpus_helpers import word_corpus

import unmask.checkpoint as checkpoint
from unmask.cli import main
from unmask.config import TrainConfig
from unmask.distill import default_cache
from unmask.train import train

WORDS = "the lord said unto moses go down and speak to the people".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=300, seed=0)


@pytest.fixture(scope="module")
def teacher(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = TrainConfig(
        data=str(corpus), out=str(tmp_path_factory.mktemp("teacher") / "run"), preset="tiny",
        seq_len=16, batch_size=4, steps=2, warmup=1, eval_every=0, save_every=0, seed=1,
    )  # fmt: skip
    return train(cfg, progress=False)


def _args(teacher: Path, student: Path, corpus: Path, out: Path) -> list[str]:
    return ["distill", "--teacher", str(teacher), "--student", str(student), "--data",
            str(corpus), "--out", str(out), "--trajectories", "2", "--prompt-length", "8",
            "--gen-length", "8", "--traj-batch", "2", "--steps", "1", "--batch-size", "2",
            "--warmup", "0", "--threads", "1", "--no-progress"]  # fmt: skip


def test_the_students_weights_are_read_once(teacher, corpus, tmp_path, monkeypatch, capsys):
    student = Path(shutil.copytree(teacher, tmp_path / "student"))
    reads: list[Path] = []
    real = checkpoint._stream_weights

    def counted(model, path, device, quantize):  # type: ignore[no-untyped-def]
        reads.append(Path(path))
        return real(model, path, device, quantize)

    monkeypatch.setattr(checkpoint, "_stream_weights", counted)
    assert main(_args(teacher, student, corpus, tmp_path / "out")) == 0, capsys.readouterr().err
    of_student = [p for p in reads if student in p.parents]
    assert len(of_student) == 1, reads  # training's init; the check before decoding read none


def test_a_student_whose_weights_cannot_load_is_refused_before_decoding(teacher, corpus,
                                                                       tmp_path, capsys):
    student = Path(shutil.copytree(teacher, tmp_path / "student"))
    weights = student / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # cut short
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(_args(teacher, student, corpus, out)) == 2
    err = capsys.readouterr().err
    assert "model.safetensors" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not default_cache(out).exists() and not out.exists()  # nothing decoded
