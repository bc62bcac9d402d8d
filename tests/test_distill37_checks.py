"""Distillation's refusals of session 37: both loss weights 0 (a run that learns nothing), a
trajectory file named as a folder (``cache/`` made a file ``cache``), and a trajectory file
there that cannot be read (the refusal named no way on)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from corpus_helpers import word_corpus

from unmask.cli import main
from unmask.config import TrainConfig
from unmask.errors import UserError
from unmask.objectives import objective_spec
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


def _distill(teacher: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["distill", "--teacher", str(teacher), "--data", str(corpus), "--prompt-length",
            "8", "--gen-length", "8", "--trajectories", "2", "--traj-batch", "2", "--steps",
            "1", "--no-progress", *extra, "--out", str(out)]  # fmt: skip


def test_both_loss_weights_0_are_refused_before_decoding(teacher, corpus, tmp_path, capsys):
    """With --distill-ce-weight 0 --distill-entropy-weight 0 the loss is 0 at every step: the
    run decoded, trained and saved a student equal to its teacher, exit 0."""
    out = tmp_path / "o"
    capsys.readouterr()
    code = main(_distill(teacher, corpus, out, "--distill-ce-weight", "0",
                         "--distill-entropy-weight", "0"))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--distill-ce-weight and --distill-entropy-weight are both 0" in err, err
    assert err.count("\n") == 1
    assert not out.exists() and not Path(f"{out}.trajectories.safetensors").exists()


@pytest.mark.parametrize("zero", ["--distill-ce-weight", "--distill-entropy-weight"])
def test_one_weight_0_still_trains(zero, teacher, corpus, tmp_path):
    """Refusing both weights 0 must not refuse one: the run trains its steps on the other
    term alone (the loss logged is that term, weighted)."""
    out = tmp_path / "o"
    assert main(_distill(teacher, corpus, out, zero, "0", "--steps", "2", "--batch-size",
                         "2", "--warmup", "0", "--log-every", "1")) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "step" in r and "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert (out / "checkpoint" / "model.safetensors").is_file()
    for r in steps:
        left = 2.0 * r["loss_certainty"] if zero == "--distill-ce-weight" else r["loss_ce"]
        assert r["loss"] == pytest.approx(left) and r["loss_ce"] > 0, r


def test_each_negative_weight_is_named_alone():
    spec = objective_spec("distill")
    with pytest.raises(UserError, match=r"^distill_entropy_weight must be >= 0, got -1.0$"):
        spec.validate(TrainConfig(objective="distill", distill_entropy_weight=-1.0))


@pytest.mark.parametrize("tail, said", [("/", "a slash"), ("/.", "/."), ("/..", "/..")])
def test_a_trajectory_file_named_as_a_folder_is_refused(tail, said, teacher, corpus, tmp_path,
                                                        monkeypatch, capsys):
    """``--trajectory-file cache/`` or ``cache/.`` (a folder not made yet): a file called
    ``cache`` was written and trained on; ``cache/..`` failed after the first batch was
    decoded ("Device or resource busy" naming a hidden staging file), leaving ``cache/``.
    Refused before the teacher is loaded."""
    import unmask.checkpoint

    def load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the teacher was loaded")

    monkeypatch.setattr(unmask.checkpoint, "load", load)
    out, given = tmp_path / "o", f"{tmp_path / 'cache'}{tail}"
    capsys.readouterr()
    assert main(_distill(teacher, corpus, out, "--trajectory-file", given)) == 2
    err = capsys.readouterr().err
    assert f"{given}: names a folder (it ends in {said}); --trajectory-file names a file" in err
    assert err.count("\n") == 1, err
    assert not (tmp_path / "cache").exists() and not out.exists()


@pytest.mark.parametrize("default", [True, False])
def test_an_unreadable_trajectory_file_says_how_to_go_on(default, teacher, corpus, tmp_path,
                                                         capsys):
    """A file cut short (a copy that did not finish) at the trajectory file's path: refused,
    not decoded over, and the line says how to decode again."""
    out = tmp_path / "o"
    path = Path(f"{out}.trajectories.safetensors") if default else tmp_path / "t.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"tokens\":")
    extra = () if default else ("--trajectory-file", str(path))
    capsys.readouterr()
    assert main(_distill(teacher, corpus, out, *extra)) == 2
    err = capsys.readouterr().err
    assert f"{path}: not a trajectory file" in err, err
    assert err.rstrip().endswith("pass another --trajectory-file, or remove this one if it is "
                                 "a trajectory file cut short, to decode the trajectories "
                                 "again"), err
    assert err.count("\n") == 1 and path.read_bytes().startswith(b"\x10")


def test_a_train_split_shorter_than_a_prompt_is_refused_before_the_teacher_is_loaded(
    teacher, tmp_path, monkeypatch, capsys
):
    """A corpus whose train split holds no prompt of --prompt-length tokens: "the prompt set
    is empty" came only after the teacher's weights were read (minutes for a large one)."""
    import unmask.checkpoint
    from unmask.data import prepare

    (tmp_path / "a.txt").write_text("tiny\n")
    data = tmp_path / "p"
    prepare([tmp_path / "a.txt"], data, tokenizer="byte", val_fraction=0, progress=False)
    original = unmask.checkpoint.load

    def load(path: object, *args: object, weights: bool = True, **kw: object) -> object:
        assert not weights, f"{path}: the teacher's weights were read"
        return original(path, *args, weights=weights, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(unmask.checkpoint, "load", load)
    out = tmp_path / "o"
    capsys.readouterr()
    assert main(_distill(teacher, data, out)) == 2
    err = capsys.readouterr().err
    assert "not one prompt of 8: the prompt set is empty" in err and err.count("\n") == 1, err
    assert not out.exists() and not Path(f"{out}.trajectories.safetensors").exists()


@pytest.mark.parametrize("then, now", [("run", "checkpoint"), ("checkpoint", "run")])
def test_a_teacher_named_by_its_run_or_its_checkpoint_folder_is_one_teacher(
    then, now, teacher, corpus, tmp_path, capsys
):
    """A trajectory file made with ``--teacher RUN`` and a run with ``--teacher
    RUN/checkpoint`` (or the other way): the file was taken for another teacher's, a named
    one refused ("teacher RUN in the file, RUN/checkpoint now"), the default one decoded
    again."""
    path = {"run": teacher, "checkpoint": teacher / "checkpoint"}
    file = tmp_path / "t.safetensors"
    assert main(_distill(path[then], corpus, tmp_path / "a", "--trajectory-file", str(file))) == 0
    made = file.read_bytes()
    capsys.readouterr()
    assert main(_distill(path[now], corpus, tmp_path / "b", "--trajectory-file", str(file))) == 0
    err = capsys.readouterr().err
    assert f"{file}: reusing its 2 trajectories" in err, err
    assert file.read_bytes() == made


@pytest.mark.parametrize("then, now", [("run", "checkpoint"), ("checkpoint", "run")])
def test_a_teacher_retrained_in_place_and_named_the_other_way_is_refused(
    then, now, teacher, corpus, tmp_path, capsys
):
    """The file records the weights' stamp of the teacher named one way; named the other way,
    that stamp is reused while the weights file keeps its size and time. New weights at the
    same path (retrained) must still be seen: the named file is refused, not reused."""
    from safetensors.torch import load_file, save_file

    run = tmp_path / "teacher"
    shutil.copytree(teacher, run)
    path = {"run": run, "checkpoint": run / "checkpoint"}
    file = tmp_path / "t.safetensors"
    assert main(_distill(path[then], corpus, tmp_path / "a", "--trajectory-file", str(file))) == 0
    made = file.read_bytes()
    weights = run / "checkpoint" / "model.safetensors"
    st = weights.stat()
    save_file({k: v + 0.01 for k, v in load_file(weights).items()}, weights)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    capsys.readouterr()
    assert main(_distill(path[now], corpus, tmp_path / "b", "--trajectory-file", str(file))) == 2
    err = capsys.readouterr().err
    assert "teacher's weights" in err and "it is not decoded over" in err, err
    assert err.count("\n") == 1 and file.read_bytes() == made


def test_the_python_api_names_prompt_and_generation_for_the_rows_length(ar_teacher, corpus,
                                                                        tmp_path):
    """``unmask.distill.distill`` said ``seq_len=16 must be >= draft_block + 2``: a value a
    caller cannot give it (it is prompt_length + gen_length); only the CLI rewrote it."""
    from unmask.distill import TrajectoryConfig, distill

    traj = TrajectoryConfig(prompt_length=8, gen_length=8, trajectories=2, traj_batch=2)
    cfg = TrainConfig(objective="distill", steps=1, batch_size=2, draft_block=100)
    with pytest.raises(UserError) as e:
        distill(str(ar_teacher), str(corpus), str(tmp_path / "o"), student=str(ar_teacher),
                trajectories=traj, train_config=cfg, progress=False)
    assert str(e.value).startswith("prompt_length + gen_length = 16 must be >= draft_block + "
                                   "2 = 102"), e.value
    assert "seq_len" not in str(e.value) and not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def ar_teacher(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = TrainConfig(
        data=str(corpus), out=str(tmp_path_factory.mktemp("ar") / "run"), preset="tiny",
        objective="ar", seq_len=32, batch_size=4, steps=1, warmup=0, eval_every=0,
        save_every=0, seed=1,
    )  # fmt: skip
    return train(cfg, progress=False)


def test_a_refusal_of_the_rows_length_names_what_gives_it(ar_teacher, corpus, tmp_path,
                                                           capsys):
    """A one-model hybrid's draft block longer than the rows: "seq_len=16 must be >=
    --draft-block + 2", a setting unmask distill has no flag for (prompt + generation)."""
    out = tmp_path / "o"
    capsys.readouterr()
    assert main(_distill(ar_teacher, corpus, out, "--student", str(ar_teacher),
                         "--draft-block", "100")) == 2
    err = capsys.readouterr().err
    assert "--prompt-length + --gen-length = 16 must be >= --draft-block + 2 = 102" in err, err
    assert "seq_len" not in err and err.count("\n") == 1 and not out.exists()


def test_rows_named_rewrites_the_same_error_and_leaves_paths_alone():
    """``rows_named`` renames ``seq_len=`` on the error itself (a torchrun worker's
    ``held_back`` mark and the traceback kept: no second 30 s hold-back), and never inside a
    path that happens to hold ``seq_len=``."""
    from unmask.distill import rows_named

    err = UserError("seq_len=16 must be >= draft_block + 2 = 102")
    err.held_back = True  # type: ignore[attr-defined]
    with pytest.raises(UserError) as got, rows_named():
        raise err
    assert got.value is err and getattr(got.value, "held_back", False)
    assert str(got.value).startswith("prompt_length + gen_length = 16 must be")
    path = UserError("runs/seq_len=16/o already exists")
    with pytest.raises(UserError) as got, rows_named():
        raise path
    assert str(got.value) == "runs/seq_len=16/o already exists"
