"""``unmask distill`` and the trajectory file a user names (session 31): a ``--trajectory-file``
made with other settings is refused in one line naming them, never decoded over; the default
file next to the run is still made again."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_helpers import word_corpus
from test_distill import WORDS, _args, _teacher

from unmask.cli import main
from unmask.distill import default_cache
from unmask.objectives.distill import Trajectories


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return word_corpus(tmp_path_factory.mktemp("corpus"), WORDS, lines=300, seed=0)


@pytest.fixture(scope="module")
def teacher(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _teacher(corpus, tmp_path_factory.mktemp("teacher") / "run")


@pytest.mark.parametrize(("flags", "said"), [
    (["--traj-seed", "5"], "--traj-seed 0 in the file, 5 now"),
    (["--gen-length", "4"], "--gen-length 8 in the file, 4 now"),
    (["--prompt-length", "4", "--traj-batch", "1"],
     "--traj-batch 3 in the file, 1 now; --prompt-length 8 in the file, 4 now"),
])  # fmt: skip
def test_a_named_trajectory_file_of_other_settings_is_refused_not_overwritten(
        flags, said, teacher, corpus, tmp_path, capsys):
    """A file the user named (--trajectory-file) made with other settings was decoded over
    with a line on stderr; now the run stops, exit 2, with one line naming each setting that
    differs and both values, and the file and --out are left as they were."""
    traj = tmp_path / "mine.safetensors"
    assert main(_args(teacher, corpus, tmp_path / "a", "--trajectory-file", str(traj),
                      "--steps", "1")) == 0
    before = traj.read_bytes()
    capsys.readouterr()
    out = tmp_path / "b"
    assert main(_args(teacher, corpus, out, "--trajectory-file", str(traj), "--steps", "1",
                      *flags)) == 2
    err = capsys.readouterr().err
    assert f"--trajectory-file {traj}: made with other settings ({said}); it is not decoded " \
        "over" in err and err.count("\n") == 1, err
    assert traj.read_bytes() == before and not out.exists()
    # the same settings: reused as before
    assert main(_args(teacher, corpus, out, "--trajectory-file", str(traj), "--steps", "1")) == 0
    assert "reusing its 3 trajectories" in capsys.readouterr().err


@pytest.mark.parametrize("named", [False, True])
def test_the_default_trajectory_file_is_still_decoded_again(named, teacher, corpus, tmp_path,
                                                            capsys):
    """The file next to the run (OUT.trajectories.safetensors) is the command's own cache:
    made with other settings, it is decoded again, said on stderr, also when it is named
    with --trajectory-file."""
    out = tmp_path / "r"
    assert main(_args(teacher, corpus, tmp_path / "a", "--trajectory-file",
                      str(default_cache(out)), "--steps", "1")) == 0
    old = Trajectories.load(default_cache(out))
    capsys.readouterr()
    named_flags = ["--trajectory-file", str(default_cache(out))] if named else []
    assert main(_args(teacher, corpus, out, *named_flags, "--traj-seed", "5",
                      "--steps", "1")) == 0
    assert "made with other settings (traj_seed 0 in the file, 5 now); decoding the " \
        "trajectories again" in capsys.readouterr().err
    assert Trajectories.load(default_cache(out)).meta["seed"] == 5 != old.meta["seed"]


def test_ctrl_c_before_a_batch_of_new_settings_keeps_nothing(teacher, corpus, tmp_path,
                                                             monkeypatch, capsys):
    """The default file made with other settings is decoded again; Ctrl-C before its first
    batch finished said '3 of 3 trajectories kept; run the same command again to continue
    from them', counting the rows of the other settings, which the next run decodes over."""
    import unmask.distill as distill_mod

    out = tmp_path / "r"
    assert main(_args(teacher, corpus, tmp_path / "a", "--trajectory-file",
                      str(default_cache(out)), "--steps", "1")) == 0

    def stopped(*a: object, **k: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(distill_mod, "decode_batch", stopped)
    capsys.readouterr()
    assert main(_args(teacher, corpus, out, "--traj-seed", "5", "--steps", "1")) == 130
    err = capsys.readouterr().err
    assert "no batch of trajectories finished; nothing kept" in err and "of 3" not in err, err


def test_what_an_older_file_lacks_is_not_named_as_a_difference(teacher, corpus, tmp_path):
    """A file from before a setting was recorded (no whole-batches key, no tokenizer stamp, a
    sampling option it predates) is reused as the same settings; a refusal of it for another
    setting named those too ('whole batches', 'teacher's sampling option ...')."""
    from dataclasses import replace

    from test_distill import TRAJ

    from unmask.distill import refresh_trajectories
    from unmask.errors import UserError

    path = tmp_path / "t.safetensors"
    refresh_trajectories(str(teacher), str(corpus), path, TRAJ, progress=False)
    have = Trajectories.load(path)
    meta = {k: v for k, v in have.meta.items() if k not in ("whole_batches", "tokenizer")}
    meta["sample"] = {k: v for k, v in meta["sample"].items() if k != "guide_scale"}
    Trajectories(have.tokens, have.commit_step, have.seed, meta).save(path)
    with pytest.raises(UserError) as e:
        refresh_trajectories(str(teacher), str(corpus), path, replace(TRAJ, traj_seed=5),
                             progress=False, replace_other=False)
    assert "made with other settings (traj_seed 0 in the file, 5 now); it is not" in str(e.value)


def test_the_trajectory_file_is_written_first_last_and_when_stopped(teacher, corpus, tmp_path,
                                                                    monkeypatch, capsys):
    """The file was rewritten whole after every batch (O(N²) bytes: minutes for thousands of
    batches). Now: after the first batch, then at most every SAVE_EVERY_S, at the end, and
    when the run stops (Ctrl-C), so no finished batch is lost."""
    import torch

    import unmask.distill as distill_mod
    from unmask.checkpoint import load
    from unmask.distill import TrajectoryConfig, make_trajectories

    calls = [0]

    def decode(t: object, prompts: torch.Tensor, config: object, vocab: object = None):
        calls[0] += 1
        if calls[0] == stop_at:
            raise KeyboardInterrupt
        B, P = prompts.shape
        return (torch.cat([prompts, prompts], 1),
                torch.cat([torch.full((B, P), -1), torch.arange(P).repeat(B, 1)], 1))

    writes: list[int] = []
    real_save = Trajectories.save

    def save(self: Trajectories, path: object) -> None:
        writes.append(len(self))
        real_save(self, path)

    monkeypatch.setattr(distill_mod, "decode_batch", decode)
    monkeypatch.setattr(distill_mod, "SAVE_EVERY_S", 1e9, raising=False)
    monkeypatch.setattr(Trajectories, "save", save)
    loaded = load(teacher)
    cfg = TrajectoryConfig(trajectories=8, prompt_length=8, gen_length=8, traj_batch=2,
                           traj_temperature=0)
    path, stop_at = tmp_path / "t.safetensors", 0
    made = make_trajectories(loaded, str(corpus), cfg, save_to=path, progress=False)
    assert writes == [2, 8] and len(Trajectories.load(path)) == len(made) == 8
    writes.clear()
    calls[0], stop_at = 0, 3  # Ctrl-C in the third batch: the second was not written yet
    with pytest.raises(KeyboardInterrupt):
        make_trajectories(loaded, str(corpus), cfg, save_to=tmp_path / "u.safetensors",
                          progress=False)
    assert writes == [2, 4] and len(Trajectories.load(tmp_path / "u.safetensors")) == 4
    assert "4 of 8 trajectories kept" in capsys.readouterr().err
