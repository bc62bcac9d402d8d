"""``unmask distill --student``: the student's weights are read once (by training), and a
student whose weights cannot be loaded (a native checkpoint or a publisher's folder) or whose
config is of an absurd size is still refused before the teacher decodes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from corpus_helpers import word_corpus
from safetensors.torch import load_file, save_file

import unmask.checkpoint as checkpoint
import unmask.model as model_module
from unmask.cli import main
from unmask.config import TrainConfig
from unmask.convert import export
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


def _cut_short(weights: Path) -> None:
    weights.write_bytes(weights.read_bytes()[:-64])


def _drop_a_tensor(weights: Path) -> None:
    tensors = load_file(weights)
    tensors.pop(sorted(tensors)[-1])
    save_file(tensors, weights, metadata={"format": "pt"})


def _bogus_dtype(weights: Path) -> None:
    config = json.loads((weights.parent / "config.json").read_text())
    (weights.parent / "config.json").write_text(json.dumps({**config, "torch_dtype": "int8"}))


STUDENTS = {  # what is wrong -> (native or a publisher's folder, the edit, a word of the error)
    "native cut short": ("native", _cut_short, "cut short"),
    "native tensor missing": ("native", _drop_a_tensor, "missing tensor"),
    "publisher cut short": ("publisher", _cut_short, "cut short"),
    "publisher tensor missing": ("publisher", _drop_a_tensor, "missing tensor"),
    "publisher no weights": ("publisher", Path.unlink, "no model.safetensors"),
    "publisher torch_dtype": ("publisher", _bogus_dtype, "torch_dtype"),
}


@pytest.mark.parametrize("problem", STUDENTS)
def test_a_student_whose_weights_cannot_load_is_refused_before_decoding(problem, teacher, corpus,
                                                                       tmp_path, capsys):
    layout, edit, word = STUDENTS[problem]
    if layout == "native":
        student = Path(shutil.copytree(teacher / "checkpoint", tmp_path / "student"))
    else:  # an `unmask convert --to transformers` folder: checked as its load checks it
        student = export(teacher, tmp_path / "student", family="transformers")
    edit(student / "model.safetensors")
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(_args(teacher, student, corpus, out)) == 2
    err = capsys.readouterr().err
    assert word in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not default_cache(out).exists() and not out.exists()  # nothing decoded


def test_a_student_of_an_absurd_size_is_refused_in_one_line(teacher, corpus, tmp_path, capsys,
                                                            monkeypatch):
    student = Path(shutil.copytree(teacher / "checkpoint", tmp_path / "student"))
    config = json.loads((student / "config.json").read_text())
    (student / "config.json").write_text(json.dumps({**config, "n_layers": 10**9}))
    real = model_module.meta_model

    def guarded(config, *args, **kwargs):  # type: ignore[no-untyped-def]
        assert config.n_layers < 1000, "built a billion layers on the meta device (minutes)"
        return real(config, *args, **kwargs)

    monkeypatch.setattr(model_module, "meta_model", guarded)
    monkeypatch.delenv("UNMASK_NO_FIT_CHECK", raising=False)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(_args(teacher, student, corpus, out)) == 2
    err = capsys.readouterr().err
    assert "parameters need at least" in err and err.count("\n") == 1, err
    assert not default_cache(out).exists() and not out.exists()
