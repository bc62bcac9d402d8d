"""Session 39's distillation fixes.

A drafter distilled from an autoregressive teacher (``distill_window``) learns only along
the teacher's text: its states are drawn up to the teacher's first EOS, and the filler the
decoder writes after it ([PAD] while other rows of the batch go on, EOS once the batch
stopped) is neither committed text in a state nor a target. Speculative decoding ends a row
at its EOS and never drafts after it; a file of rows that ended early spent about 43% of
its states past their EOS.

A teacher's refused KV cache is named as the flag that gave it, ``--traj-cache``.

A hybrid continued (``unmask train --init HYBRID``, ``unmask distill --student HYBRID``)
keeps its draft block unless ``--draft-block`` is given.

``unmask distill --out .`` keeps its trajectory file next to the folder, as for any name; a
trajectory file given as ``--data`` is told to be ``--trajectory-file``; the root folder as
``--out`` is one line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from corpus_helpers import word_corpus

from unmask.checkpoint import load
from unmask.cli import main
from unmask.config import TrainConfig, model_preset
from unmask.distill import default_cache
from unmask.errors import UserError
from unmask.model import Transformer
from unmask.objectives.distill import distill, window_states
from unmask.objectives.hybrid import DRAFT_BLOCK
from unmask.objectives.spec import ObjectiveOptions, text_positions
from unmask.train import train
from unmask.train_guards import saved_progress

SPECIAL = dict(mask_id=0, pad_id=1, eos_id=2, bos_id=3)
P, G, WINDOW = 3, 10, 2


def _student() -> Transformer:
    cfg = model_preset("tiny", vocab_size=16, max_seq_len=32, attention="bidirectional",
                       **SPECIAL)  # fmt: skip
    torch.manual_seed(0)
    return Transformer(cfg).double().eval()


def _row(filler: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A prompt of 3, then the teacher's 4 tokens (its EOS the 4th) and 6 of ``filler``, all
    committed left to right (an AR teacher's row in a batch whose other rows went on)."""
    x0 = torch.tensor([[5, 6, 7, 8, 9, 10, 2] + filler])  # (1, P + G)
    steps = torch.tensor([[-1] * P + list(range(G))])
    return x0, steps


def test_states_are_drawn_along_the_text_up_to_its_eos():
    x0, steps = _row([1] * 6)
    text = text_positions(x0, steps, SPECIAL["eos_id"])
    assert text[0].tolist() == [True] * 7 + [False] * 6
    g = torch.Generator()
    for u in (0.0, 0.3, 0.6, 0.99):
        masked, visible = window_states(steps, WINDOW, g, u=torch.tensor([u]), text=text)
        k = int(u * 4)  # of the 4 generated text tokens, the EOS included
        assert masked[0].nonzero().flatten().tolist() == [P + k, P + k + 1], u
        assert visible[0].tolist() == [True] * (P + k + WINDOW) + [False] * (G - k - WINDOW)


def test_the_filler_after_the_teachers_eos_changes_no_loss():
    """The loss of every state is the same whatever the filler after the EOS holds ([PAD], or
    EOS, or anything): it is never in a state's committed text nor a target. Before, a row
    of 4 text tokens in 10 drew 6 of 10 states past its EOS and learned to draft [PAD]."""
    model = _student()
    opts = ObjectiveOptions(schedule=None, distill_window=WINDOW)  # type: ignore[arg-type]
    pad, other = _row([1] * 6), _row([2] * 3 + [11, 12, 13])
    for u in torch.linspace(0, 0.99, 12):

        def loss(row: tuple[torch.Tensor, torch.Tensor], u: torch.Tensor = u) -> float:
            with torch.no_grad():
                parts = distill(model, model.config, row[0], attention_mask=None,
                                generator=torch.Generator(), options=opts, commit_step=row[1],
                                u=u[None])  # fmt: skip
            assert 1 <= int(parts.n_tokens) <= WINDOW
            return float(parts.loss_sum / parts.n_tokens)

        assert loss(pad) == loss(other), float(u)


def test_rows_without_eos_draw_the_states_they_always_did():
    """A row the teacher wrote to its end (no EOS): k ~ U{0..G-1} over all of it, as before."""
    x0 = torch.tensor([[5, 6, 7] + [4 + i for i in range(G)]])
    steps = torch.tensor([[-1] * P + list(range(G))])
    text = text_positions(x0, steps, SPECIAL["eos_id"])
    g = torch.Generator()
    for u in (0.0, 0.5, 0.95):
        with_text = window_states(steps, WINDOW, g, u=torch.tensor([u]), text=text)
        plain = window_states(steps, WINDOW, g, u=torch.tensor([u]))
        assert all(torch.equal(a, b) for a, b in zip(with_text, plain, strict=True))


@pytest.fixture(scope="module")
def ar_teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from test_distill import WORDS, _teacher

    corpus = word_corpus(tmp_path_factory.mktemp("corpus39"), WORDS, lines=300, seed=0)
    return _teacher(corpus, tmp_path_factory.mktemp("ar39") / "run", objective="ar",
                    steps=1), corpus


@pytest.mark.parametrize(("flags", "want"), [
    (["--traj-cache", "dual"], "--traj-cache does not apply to decoder 'ar'"),
    (["--traj-cache", "dual", "--traj-block-length", "4"],
     "--traj-block-length, --traj-cache do not apply to decoder 'ar'"),
])  # fmt: skip
def test_a_teachers_cache_refused_names_traj_cache(ar_teacher, tmp_path, capsys, flags, want):
    """`--traj-cache dual` with an autoregressive teacher: the refusal named `cache` ("cache
    does not apply ...; leave it out"), a flag the user never typed (and `--cache` is the old
    spelling of --trajectory-file)."""
    teacher, corpus = ar_teacher
    capsys.readouterr()
    code = main(["distill", "--teacher", str(teacher), "--student", str(teacher), "--data",
                 str(corpus), "--out", str(tmp_path / "o"), "--draft-block", "2",
                 "--trajectories", "2", "--prompt-length", "4", "--gen-length", "8",
                 "--no-progress", *flags])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and want in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def hybrid2(ar_teacher, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hybrid of the AR teacher with draft blocks of 2 tokens."""
    from test_distill import _teacher

    teacher, corpus = ar_teacher
    return _teacher(corpus, tmp_path_factory.mktemp("hybrid2") / "run", objective="hybrid",
                    init=str(teacher), draft_block=2, steps=1)


def _block(run: Path) -> int:
    return load(run).config.draft_block


def test_a_hybrid_continued_keeps_its_draft_block(ar_teacher, hybrid2, tmp_path):
    """`unmask train --objective hybrid --init HYBRID` without --draft-block continues the
    hybrid's own blocks (it was made 8, the flag's old default, without a word: drafts past
    the 2 it learned, and 8-token blocks to decode); an AR model continued, or a new one,
    gets 8; a block given is the one trained."""
    from test_distill import _teacher

    teacher, corpus = ar_teacher
    assert _block(hybrid2) == 2
    kept = _teacher(corpus, tmp_path / "kept", objective="hybrid", init=str(hybrid2), steps=1)
    assert _block(kept) == 2
    given = _teacher(corpus, tmp_path / "given", objective="hybrid", init=str(hybrid2),
                     draft_block=3, steps=1)  # fmt: skip
    assert _block(given) == 3
    fresh = _teacher(corpus, tmp_path / "fresh", objective="hybrid", init=str(teacher),
                     steps=1)  # fmt: skip
    assert _block(fresh) == DRAFT_BLOCK == 8
    with pytest.raises(UserError, match=r"seq_len=3 must be >= draft_block \+ 2 = 4"):
        _teacher(corpus, tmp_path / "short", objective="hybrid", init=str(hybrid2), seq_len=3,
                 steps=1)  # fmt: skip


@pytest.mark.parametrize("start", ["hybrid2", "teacher"])
def test_a_hybrid_resumed_with_its_own_train_config_keeps_its_draft_block(
        ar_teacher, hybrid2, tmp_path, start):
    """`train(cfg)` then `train(replace(cfg, steps=...), resume=True)` with draft_block left
    unset (None: the --init hybrid's own block, else 8) resumes the run on the block it trains
    (it was refused: "draft_block=None differs from the run's 2", the plan saves the block)."""
    from dataclasses import replace

    from test_distill import _teacher

    teacher, corpus = ar_teacher
    init = str(hybrid2 if start == "hybrid2" else teacher)
    out = tmp_path / "run"
    _teacher(corpus, out, objective="hybrid", init=init, steps=2)
    block = _block(out)
    assert block == (2 if start == "hybrid2" else DRAFT_BLOCK)
    cfg = TrainConfig(data=str(corpus), out=str(out), preset="tiny", seq_len=32, batch_size=8,
                      steps=3, warmup=2, lr=3e-3, eval_every=0, eval_batches=1, save_every=0,
                      log_every=5, seed=1, objective="hybrid", init=init)  # fmt: skip
    assert cfg.draft_block is None
    train(cfg, resume=True, progress=False)
    assert _block(out) == block
    assert saved_progress(out / "checkpoint").step == 3
    with pytest.raises(UserError, match=f"draft_block=3 differs from the run's {block}"):
        train(replace(cfg, steps=4, draft_block=3), resume=True, progress=False)


def test_an_old_plans_unchosen_draft_block_is_read_as_unset(ar_teacher, hybrid2, tmp_path,
                                                            capsys):
    """Every plan written before draft_block became optional holds `"draft_block": 8`, for
    any objective. Of an objective that never read it (an `ar` run's), `--config PLAN
    --objective hybrid --init HYBRID` trains the hybrid's own block (it trained 8); a
    hybrid plan's 8 is the block it trained, kept."""
    import json

    from unmask.train import load_train_config

    teacher, _ = ar_teacher
    old = json.loads((teacher / "train_config.json").read_text())
    assert old["objective"] == "ar"
    plan = tmp_path / "old_ar.json"
    plan.write_text(json.dumps({**old, "draft_block": 8}))
    assert load_train_config(plan).draft_block is None
    plan_h = tmp_path / "old_hybrid.json"
    plan_h.write_text(json.dumps({**old, "objective": "hybrid", "draft_block": 8}))
    assert load_train_config(plan_h).draft_block == 8
    mine = tmp_path / "mine8.json"  # a settings file written by hand names no objective
    mine.write_text(json.dumps({"draft_block": 8, "lr": 1e-3}))
    assert load_train_config(mine).draft_block == 8  # the user's 8, kept
    out = tmp_path / "continued"
    code = main(["train", "--config", str(plan), "--objective", "hybrid", "--init",
                 str(hybrid2), "--out", str(out), "--steps", "1", "--no-progress",
                 "--threads", "1"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert _block(out) == 2


def test_distill_into_a_hybrid_student_keeps_its_draft_block(ar_teacher, hybrid2, tmp_path,
                                                             capsys):
    """`unmask distill --teacher AR --student HYBRID` without --draft-block: the student keeps
    its blocks of 2 (it became 8); a resume keeps them too, and its plan records them."""
    teacher, corpus = ar_teacher
    out = tmp_path / "student"
    code = main(["distill", "--teacher", str(teacher), "--student", str(hybrid2), "--data",
                 str(corpus), "--out", str(out), "--trajectories", "4", "--prompt-length", "4",
                 "--gen-length", "8", "--traj-batch", "4", "--steps", "1", "--batch-size", "2",
                 "--no-progress", "--threads", "1"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert _block(out) == 2
    assert main(["distill", "--resume", "--out", str(out), "--steps", "2", "--no-progress",
                 "--threads", "1"]) == 0  # fmt: skip
    assert _block(out) == 2
    capsys.readouterr()
    assert main(["distill", "--resume", "--out", str(out), "--steps", "3", "--draft-block", "4",
                 "--no-progress"]) == 2  # the plan names the block it trains  # fmt: skip
    assert "--draft-block=4 differs from the run's 2" in capsys.readouterr().err


def test_a_run_directory_named_dot_keeps_its_trajectories_next_to_it(ar_teacher, tmp_path,
                                                                     monkeypatch, capsys):
    """`unmask distill --out .` in an empty folder: the trajectory file goes next to it,
    FOLDER.trajectories.safetensors (a ValueError traceback: '.' has no name to extend)."""
    teacher, corpus = ar_teacher
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(run)
    assert default_cache(".") == default_cache("./") == tmp_path / "run.trajectories.safetensors"
    code = main(["distill", "--teacher", str(teacher), "--student", str(teacher), "--data",
                 str(corpus), "--out", ".", "--draft-block", "2", "--trajectories", "2",
                 "--prompt-length", "4", "--gen-length", "8", "--traj-batch", "2", "--steps",
                 "1", "--batch-size", "2", "--no-progress", "--threads", "1"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "run.trajectories.safetensors").is_file()
    assert (run / "checkpoint").is_dir()


@pytest.mark.parametrize("args", [
    ["--teacher", "T", "--student", "T", "--data", "C", "--draft-block", "2"],
    ["--teacher", "T", "--student", "T", "--data", "C", "--draft-block", "2",
     "--trajectory-file", "F"],
    ["--resume"],
])
def test_the_root_folder_as_the_run_is_one_line(ar_teacher, tmp_path, capsys, args):
    """`unmask distill --out /` (and `--resume --out /`): one line naming --out, exit 2 (a
    ValueError traceback: the root has no name for OUT.trajectories.safetensors)."""
    teacher, corpus = ar_teacher
    names = {"T": str(teacher), "C": str(corpus), "F": str(tmp_path / "t.safetensors")}
    code = main(["distill", *[names.get(a, a) for a in args], "--out", "/", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "--out /: the root folder cannot be a run directory" in err
    with pytest.raises(UserError, match="--out /..: the root folder"):
        default_cache("/..")


def test_a_trajectory_file_given_as_the_corpus_says_where_it_goes(ar_teacher, tmp_path, capsys):
    """`--data TRAJ.safetensors` (as `unmask train --objective distill` takes it): one line
    saying it is a trajectory file and to pass it as --trajectory-file (it said "not a
    prepared dataset; run `unmask prepare` first")."""
    from unmask.objectives.distill import Trajectories

    teacher, _ = ar_teacher
    traj = tmp_path / "t.safetensors"
    rows = torch.zeros(1, 4, dtype=torch.long)
    Trajectories(rows, rows.clone(), torch.zeros(1, dtype=torch.long), {}).save(traj)
    code = main(["distill", "--teacher", str(teacher), "--student", str(teacher), "--data",
                 str(traj), "--out", str(tmp_path / "o"), "--draft-block", "2",
                 "--prompt-length", "4", "--gen-length", "8", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"--data {traj} is a trajectory file" in err
    assert f"--trajectory-file {traj}" in err
