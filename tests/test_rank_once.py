"""Under torchrun every process runs the same command line: a user mistake the CLI itself
finds (an argument, a check of ``unmask train`` / ``unmask distill`` before training starts)
and a signal are said by rank 0 alone, and only rank 0 clears a half-made run folder.

Most of it in-process, with torchrun's environment (``RANK``, ``WORLD_SIZE``) and the wait of
a process other than rank 0 recorded instead of slept; one torchrun run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from unmask import cli, parallel
from unmask.errors import UserError


@pytest.fixture
def waits(monkeypatch):
    """The waits of ``parallel.said_once`` (a process other than rank 0 holding a mistake back
    for rank 0 to say), recorded, not slept."""
    seen: list[float] = []
    monkeypatch.setattr(parallel, "FOLLOWER_ERROR_WAIT", 0.05)
    monkeypatch.setattr(parallel.time, "sleep", seen.append)
    return seen


def as_rank(monkeypatch, rank: int) -> None:
    """A worker of a one-machine torchrun of two."""
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")


@pytest.mark.parametrize("rank", [0, 1])
def test_an_argument_error_is_rank_0s_to_say(rank, monkeypatch, waits, capsys):
    """argparse's refusal and an unknown flag: rank 1 holds its line back (torchrun ends it
    once rank 0 has said it; said after the wait if not), rank 0 says it at once."""
    as_rank(monkeypatch, rank)
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--steps", "0"])
    assert e.value.code == 2
    assert cli.main(["train", "--data", "d", "--out", "o", "--bogus"]) == 2
    assert waits == ([0.05, 0.05] if rank else [])
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("unmask train: error: argument --steps: must be at least 1")
    assert lines[1].startswith("unmask train: error: unrecognized arguments: --bogus")


def test_a_refusal_of_the_command_is_held_back_once(monkeypatch, waits, capsys, tmp_path):
    """A check of ``unmask train`` before training (no dataset) is held back like the
    library's; one that ``train()`` already held back (its ``said_once``) is not waited for
    twice."""
    as_rank(monkeypatch, 1)
    assert cli.main(["train", "--out", "o", "--steps", "2"]) == 2
    assert waits == [0.05]
    assert "no dataset given" in capsys.readouterr().err

    import unmask.train

    def refuse(*args, **kwargs):
        raise UserError("only this process meets it")

    monkeypatch.setattr(unmask.train, "_train_checked", refuse)
    waits.clear()
    data = str(tmp_path)  # there (its contents are train()'s to read)
    assert cli.main(["train", "--data", data, "--out", "o", "--steps", "2"]) == 2
    assert waits == [0.05]  # train()'s wait alone
    assert "only this process meets it" in capsys.readouterr().err


@pytest.mark.parametrize("rank", [0, 1])
def test_a_signal_before_the_run_is_said_by_rank_0(rank, monkeypatch, capsys, tmp_path):
    """torchrun stops the other processes when one ends (rank 0 said why), or each got the
    signal: a process other than rank 0 ends with the signal's status, quietly."""
    import unmask.commands.train as command

    def stopped(args):
        raise cli.Terminated()

    as_rank(monkeypatch, rank)
    monkeypatch.setattr(command, "run", stopped)
    assert cli.main(["train", "--data", str(tmp_path), "--out", "o"]) == cli.EXIT_TERMINATED
    assert capsys.readouterr().err == ("" if rank else "unmask train: terminated\n")


def half_made_run(out: Path) -> None:
    """What a run killed before its first checkpoint leaves: its plan and a staging folder."""
    (out / ".checkpoint.tmp").mkdir(parents=True)
    (out / ".checkpoint.tmp" / "model.safetensors").write_text("x")
    (out / "train_config.json").write_text("{}")


@pytest.mark.parametrize("command", ["train", "distill"])
def test_only_rank_0_clears_a_half_made_run(command, monkeypatch, tmp_path, capsys):
    """Every process cleared it: two deleting the same files, one failing on a file the other
    had deleted (``unmask train: error: No such file or directory``)."""
    out = tmp_path / "run"
    half_made_run(out)
    (tmp_path / "d").mkdir()  # a --data that is there (train()'s to read)
    seen = []

    def fake(*args, **kwargs):  # train()/distill(): rank 0 clears the folder in there
        seen.append(sorted(p.name for p in out.iterdir()))
        return out

    if command == "train":
        import unmask.train

        monkeypatch.setattr(unmask.train, "train", fake)
        argv = ["train", "--data", str(tmp_path / "d"), "--out", str(out)]
    else:
        import unmask.distill

        monkeypatch.setattr(unmask.distill, "distill", fake)
        argv = ["distill", "--teacher", str(tmp_path / "t"), "--data", str(tmp_path / "d"),
                "--out", str(out)]
    as_rank(monkeypatch, 1)
    assert cli.main(argv) == 0
    assert seen == [[".checkpoint.tmp", "train_config.json"]]
    assert capsys.readouterr().err == ""


def test_torchrun_says_an_argument_error_once(tmp_path, free_port):
    """Before: two identical lines, or rank 0's line and rank 1's ``unmask train:
    terminated`` (rank 0 refused ``--steps 0`` while rank 1 was still starting). The
    in-process tests above check each path deterministically; this is the whole."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(free_port), "-m", "unmask.cli", "train", "--out",
         str(tmp_path / "run"), "--data", str(tmp_path), "--steps", "0"],
        timeout=120, env=env, capture_output=True, text=True,
    )  # fmt: skip
    ours = [line for line in done.stderr.splitlines() if line.startswith("unmask train:")]
    assert len(ours) == 1, done.stderr
    assert ours[0].startswith("unmask train: error: argument --steps: must be at least 1")
    assert "exitcode  : 2" in done.stderr  # rank 0's status, the root cause torchrun names


@pytest.mark.parametrize(("env", "why"), [
    ({"RANK": "1", "WORLD_SIZE": "2"}, "another launcher: no torchrun agent would end a wait"),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "TORCHELASTIC_RUN_ID": "x"},
     "the first worker of a second machine: its agent ends the others, not rank 0's exit"),
])  # fmt: skip
def test_no_wait_where_no_one_would_end_it(env, why, monkeypatch, waits, capsys):
    """Only a torchrun worker that is not its machine's first holds its line back: with RANK
    and WORLD_SIZE from another launcher, or on another machine's first worker, it waited
    30 s (34.5 s to a one-line refusal) and was then said anyway."""
    for name in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["train", "--data", "d", "--out", "o", "--bogus"]) == 2
    assert waits == [], why
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(UserError), parallel.said_once(rank=1, world=2):
        raise UserError("said at once")
    assert waits == [], why


def test_the_python_distill_says_a_refusal_once(monkeypatch, waits):
    """``unmask.distill.distill`` called from a script under torchrun: a refusal before
    training (no run directory) was raised by every process at once; rank 1 now holds it
    back for rank 0 to say, as ``unmask.train`` does."""
    from unmask.distill import distill

    as_rank(monkeypatch, 1)
    with pytest.raises(UserError, match="no run directory given"):
        distill("teacher", "data", "")
    assert waits == [0.05]
    as_rank(monkeypatch, 0)
    with pytest.raises(UserError, match="no run directory given"):
        distill("teacher", "data", "")
    assert waits == [0.05]
