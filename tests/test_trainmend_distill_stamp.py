"""The student's tokenizer against a trajectory file's record of its teacher's
(``tokenizer_stamp``), whatever the teacher's folder holds now: a folder that holds another
model by now neither lets a wrong student train nor refuses the right one, and a file that
names no teacher says so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.corpus_helpers import word_corpus
from tests.test_distill import TRAJ, WORDS, _swapped_copy, _teacher
from unmask.checkpoint import checkpoint_dir, load
from unmask.cli import main
from unmask.distill import refresh_trajectories
from unmask.objectives.distill import TOKENIZER_KEY, Trajectories


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a teacher, its trajectory file)."""
    root = tmp_path_factory.mktemp("stamp")
    (root / "corpus").mkdir()
    corpus = word_corpus(root / "corpus", WORDS, lines=300, seed=0)
    teacher = _teacher(corpus, root / "teacher")
    return teacher, refresh_trajectories(str(teacher), str(corpus), root / "t.safetensors",
                                         TRAJ, progress=False)


def _train(data: Path, init: Path, out: Path) -> list[str]:
    return ["train", "--objective", "distill", "--data", str(data), "--init", str(init),
            "--out", str(out), "--seq-len", "16", "--steps", "1", "--batch-size", "2",
            "--no-progress", "--save-every", "0"]


def test_a_teacher_folder_that_holds_another_model_now_is_not_trusted(
        made: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """The file's teacher folder now holds a model of another tokenizer (same size): the stamp
    decides. Before, the folder did: the student of the folder's new tokenizer trained on ids
    of other text without a word, and the teacher's own tokenizer was refused."""
    teacher, cache = made
    folder = tmp_path / "teacher"
    shutil.copytree(checkpoint_dir(teacher), folder)  # the teacher, where the file says
    right = tmp_path / "right"
    shutil.copytree(folder, right)
    old = Trajectories.load(cache)
    data = tmp_path / "t.safetensors"
    Trajectories(old.tokens, old.commit_step, old.seed,
                 {**old.meta, "teacher": str(folder)}).save(data)
    shutil.rmtree(folder)
    _swapped_copy(teacher, folder)  # ... which holds another model now
    capsys.readouterr()
    assert main(_train(data, folder, tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "its tokenizer differs from that of the teacher of" in err and err.count("\n") == 1
    assert f"as the file records it; {folder} now holds another tokenizer" in err
    assert not (tmp_path / "o").exists()
    assert main(_train(data, right, tmp_path / "p")) == 0  # the right one trains


def test_the_folder_names_the_id_where_it_still_holds_the_teacher(
        made: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    teacher, cache = made
    other = _swapped_copy(teacher, tmp_path / "other")
    vocab = json.loads((other / "tokenizer.json").read_text())["model"]["vocab"]
    capsys.readouterr()
    assert main(_train(cache, other, tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert f"({teacher}): id {min(vocab['a'], vocab['b'])} is" in err


def test_a_file_that_names_no_teacher_says_so(made: tuple[Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]):
    """A file from make_trajectories() alone records no teacher: the refusal said "the teacher
    None is not there"."""
    teacher, cache = made
    old = Trajectories.load(cache)
    assert old.meta[TOKENIZER_KEY]["size"] == load(teacher).tokenizer.vocab_size
    data = tmp_path / "t.safetensors"
    meta = {k: v for k, v in old.meta.items() if k != "teacher"}
    Trajectories(old.tokens, old.commit_step, old.seed, meta).save(data)
    other = _swapped_copy(teacher, tmp_path / "other")
    capsys.readouterr()
    assert main(_train(data, other, tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "(as the file records it; the file names no teacher): ids 0..255" in err
    assert "None" not in err and err.count("\n") == 1
