"""A named ``--trajectory-file`` and its teacher's weights (session 31, review fixes): the
weights are stamped by contents, so a copied or touched teacher reuses the file; a file that
differs in a stamp alone says to remove it (no flag gives a stamp back); torchrun ranks > 0
read only the file's header for the check; the file is written every ``SAVE_EVERY_S``."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from corpus_helpers import word_corpus
from test_distill import TRAJ, WORDS, _args, _teacher

from unmask.checkpoint import checkpoint_dir, load, save_checkpoint
from unmask.cli import main
from unmask.distill import refresh_trajectories
from unmask.errors import UserError
from unmask.objectives.distill import Trajectories


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=300, seed=0)


@pytest.fixture(scope="module")
def teacher(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _teacher(corpus, tmp_path_factory.mktemp("teacher") / "run")


def _touch(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def _weights(teacher: Path) -> Path:
    return checkpoint_dir(teacher) / "model.safetensors"


def test_a_copied_or_touched_teacher_reuses_the_named_file(teacher, corpus, tmp_path, capsys):
    """The teacher's weights were stamped by size and modification time: a teacher copied to
    another machine (no -p) or touched made the named file 'made with other settings
    (teacher's weights)', refused with 'give the settings it was made with', which nothing
    typed could do. Now the weights are stamped by contents."""
    mine = tmp_path / "teacher"
    shutil.copytree(teacher, mine, copy_function=shutil.copy)  # new times, same weights
    traj = tmp_path / "t.safetensors"
    assert main(_args(mine, corpus, tmp_path / "a", "--trajectory-file", str(traj),
                      "--steps", "1")) == 0
    _touch(_weights(mine))
    capsys.readouterr()
    assert main(_args(mine, corpus, tmp_path / "b", "--trajectory-file", str(traj),
                      "--steps", "1")) == 0
    assert "reusing its 3 trajectories" in capsys.readouterr().err
    shutil.rmtree(mine)  # copied again (cp -r) to the same path
    shutil.copytree(teacher, mine, copy_function=shutil.copy)
    assert main(_args(mine, corpus, tmp_path / "c", "--trajectory-file", str(traj),
                      "--steps", "1")) == 0
    assert "reusing its 3 trajectories" in capsys.readouterr().err


def test_a_named_file_of_other_weights_says_to_remove_it(teacher, corpus, tmp_path, capsys):
    """A teacher trained on since (other weights at the same path): the line said 'give the
    settings it was made with', which no flag can; now it says to remove the file (or name
    another) to decode again, and still leaves the file as it was."""
    mine = tmp_path / "teacher"
    shutil.copytree(teacher, mine)
    traj = tmp_path / "t.safetensors"
    assert main(_args(mine, corpus, tmp_path / "a", "--trajectory-file", str(traj),
                      "--steps", "1")) == 0
    before = traj.read_bytes()
    old = load(mine)
    with torch.no_grad():
        next(old.model.parameters()).add_(0.01)
    shutil.rmtree(mine)
    save_checkpoint(mine, model=old.model, tokenizer=old.tokenizer)
    capsys.readouterr()
    assert main(_args(mine, corpus, tmp_path / "b", "--trajectory-file", str(traj),
                      "--steps", "1")) == 2
    err = capsys.readouterr().err
    assert f"--trajectory-file {traj}: made with other settings (teacher's weights); it is " \
        "not decoded over: those files changed since, and no flag gives them back: remove " \
        "it, or pass another --trajectory-file, to decode again" in err, err
    assert "give the settings" not in err and err.count("\n") == 1
    assert traj.read_bytes() == before and not (tmp_path / "b").exists()
    # with a setting that differs too, giving the settings back is still the way
    assert main(_args(mine, corpus, tmp_path / "b", "--trajectory-file", str(traj),
                      "--steps", "1", "--traj-seed", "5")) == 2
    assert "give the settings it was made with" in capsys.readouterr().err


def test_an_older_file_stamped_by_size_and_time(teacher, corpus, tmp_path):
    """A file written before the contents were hashed records [size, mtime_ns]: reused while
    they hold (the weights are not read); after a touch, refused with what changed and to
    remove it, not 'give the settings'."""
    mine = tmp_path / "teacher"
    shutil.copytree(teacher, mine)
    path = tmp_path / "t.safetensors"
    refresh_trajectories(str(mine), str(corpus), path, TRAJ, progress=False)
    have = Trajectories.load(path)
    st = _weights(mine).stat()
    assert have.meta["teacher_weights"][:2] == [st.st_size, st.st_mtime_ns]
    meta = {**have.meta, "teacher_weights": [st.st_size, st.st_mtime_ns]}
    Trajectories(have.tokens, have.commit_step, have.seed, meta).save(path)
    assert refresh_trajectories(str(mine), str(corpus), path, TRAJ, progress=False,
                                replace_other=False) == path
    _touch(_weights(mine))
    with pytest.raises(UserError) as e:
        refresh_trajectories(str(mine), str(corpus), path, TRAJ, progress=False,
                             replace_other=False)
    said = str(e.value)
    assert "(teacher's weights, by size or time (this older file records no hash of them: a " \
        "copy or a touch counts too)); it is not decoded over: those files changed since" \
        in said and "remove it" in said and "give the settings" not in said, said


def test_training_on_a_file_of_a_touched_teacher_is_not_refused(teacher, corpus, tmp_path):
    """An objective that learns the teacher's distributions checks its weights when training
    starts: a touch (same contents) was 'its teacher's weights changed'; other contents
    still are."""
    from unmask.train import _trajectory_teacher

    mine = tmp_path / "teacher"
    shutil.copytree(teacher, mine)
    path = tmp_path / "t.safetensors"
    refresh_trajectories(str(mine), str(corpus), path, replace(TRAJ, trajectories=3),
                         progress=False)
    data = SimpleNamespace(trajectories=Trajectories.load(path), path=path)
    model_cfg = load(mine).config
    _touch(_weights(mine))
    _trajectory_teacher(data, model_cfg, torch.device("cpu"))
    raw = bytearray(_weights(mine).read_bytes())
    raw[-1] ^= 1  # other contents, same size
    _weights(mine).write_bytes(bytes(raw))
    with pytest.raises(UserError, match="teacher's weights .* changed since"):
        _trajectory_teacher(data, model_cfg, torch.device("cpu"))


def test_ranks_after_the_first_read_only_the_header_of_a_named_file(teacher, corpus, tmp_path,
                                                                     monkeypatch):
    """Under torchrun every rank checks a named file's settings; ranks > 0 read it whole
    (every row) for that, then again when it was ready. Now the check reads its header."""
    path = tmp_path / "t.safetensors"
    refresh_trajectories(str(teacher), str(corpus), path, TRAJ, progress=False)
    reads: list[Path] = []
    real = Trajectories.load.__func__

    def counted(cls: type[Trajectories], p: object) -> Trajectories:
        reads.append(Path(str(p)))
        return real(cls, p)

    monkeypatch.setattr(Trajectories, "load", classmethod(counted))
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(UserError, match="made with other settings"):
        refresh_trajectories(str(teacher), str(corpus), path, replace(TRAJ, traj_seed=5),
                             progress=False, replace_other=False)
    assert reads == []
    assert refresh_trajectories(str(teacher), str(corpus), path, TRAJ, progress=False,
                                replace_other=False) == path
    assert reads == [path]  # once, by the wait for rank 0's file


def test_the_trajectory_file_is_written_every_save_every_s(teacher, corpus, tmp_path,
                                                           monkeypatch):
    """Between the first and the last batch the file is written once SAVE_EVERY_S of
    decoding passed, so a process killed outright loses at most that much: with batches of
    6 s (a clock the test moves) and 10 s between writes, batches 1, 3 and 4 are written."""
    import unmask.distill as distill_mod
    from unmask.distill import TrajectoryConfig, make_trajectories

    clock = [0.0]

    def decode(t: object, prompts: torch.Tensor, config: object, vocab: object = None):
        clock[0] += 6.0
        B, P = prompts.shape
        return (torch.cat([prompts, prompts], 1),
                torch.cat([torch.full((B, P), -1), torch.arange(P).repeat(B, 1)], 1))

    writes: list[int] = []
    real_save = Trajectories.save

    def save(self: Trajectories, path: object) -> None:
        writes.append(len(self))
        real_save(self, path)

    monkeypatch.setattr(distill_mod, "decode_batch", decode)
    monkeypatch.setattr(distill_mod, "SAVE_EVERY_S", 10.0)
    monkeypatch.setattr(distill_mod, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(Trajectories, "save", save)
    cfg = TrajectoryConfig(trajectories=8, prompt_length=8, gen_length=8, traj_batch=2,
                           traj_temperature=0)
    make_trajectories(load(teacher), str(corpus), cfg, save_to=tmp_path / "t.safetensors",
                      progress=False)
    assert writes == [2, 6, 8]


def test_another_teachers_stamp_is_not_taken_for_weights_of_the_same_size_and_time(
        teacher, corpus, tmp_path):
    """The file's recorded stamp stood for the weights whenever their size and time matched
    it, whatever teacher had made it: a second teacher (other weights, same size, same
    modification time: touch -r, rsync -t) decoding over the same file recorded the first
    one's hash, so touching it later read as changed weights (decoded again, refused)."""
    from unmask.checkpoint import file_digest

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(teacher, a, copy_function=shutil.copy)
    shutil.copytree(teacher, b, copy_function=shutil.copy)
    wa, wb = _weights(a), _weights(b)
    data = bytearray(wb.read_bytes())
    data[-1] ^= 1  # another weight (the last tensor's last byte), the same size
    wb.write_bytes(bytes(data))
    st = wa.stat()
    os.utime(wb, ns=(st.st_atime_ns, st.st_mtime_ns))
    file = tmp_path / "t.safetensors"
    refresh_trajectories(str(a), str(corpus), file, TRAJ, progress=False)
    refresh_trajectories(str(b), str(corpus), file, TRAJ, progress=False)
    stamp = Trajectories.settings_of(file)["teacher_weights"]
    assert stamp[2] == file_digest(wb) != file_digest(wa)
