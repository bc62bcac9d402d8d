"""``unmask eval`` / ``unmask.report``: the held-out bound of a run is the number it logged;
a loss curve that cannot be written is a note, the rest of the report still prints."""

import json

import pytest
from corpus_helpers import word_corpus

from unmask.cli import main
from unmask.config import TrainConfig

WORDS = "the lord said unto moses go down and speak to the people of israel".split()


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """A tiny run trained (and validated) with ``--precision bf16`` on the CPU."""
    from unmask.train import train

    root = tmp_path_factory.mktemp("bf16run")
    data = word_corpus(root, WORDS, 300, 0)
    cfg = TrainConfig(data=str(data), out=str(root / "run"), preset="tiny",
                      seq_len=32, batch_size=4, steps=2, warmup=1, eval_every=2,
                      eval_batches=2, log_every=1, save_every=0, seed=3, precision="bf16")
    train(cfg, progress=False)
    return root / "run"


def _eval(capsys, *argv):
    rc = main(["eval", *map(str, argv), "--no-score", "--device", "cpu"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_heldout_bound_of_a_bf16_run_equals_its_logged_validation(bf16_run, capsys,
                                                                   monkeypatch):
    """Training validates under the autocast of its ``precision``; ``unmask eval`` assumed
    bf16 on a GPU and none on a CPU, so a run trained with ``--precision bf16`` on a CPU (or
    fp32 / fp16 on a GPU) was measured in another precision than it logged: the bound the
    docs call equal to the last ``val_bpb`` differed from it. (On a CPU with fast bf16: on
    one without, it is measured in fp32, ``test_misc32_eval``.)"""
    from unmask import parallel

    monkeypatch.setattr(parallel, "cpu_bf16", lambda: "onednn")
    rc, out, _ = _eval(capsys, bf16_run, "--no-plot", "--json")
    report = json.loads(out)
    assert rc == 0
    assert report["heldout"]["bpb"] == report["training"]["last_val_bpb"]


def test_a_run_folder_the_loss_curve_cannot_be_written_in_is_a_note(bf16_run, capsys,
                                                                      monkeypatch):
    """Evaluating a run one cannot write in (another user's, a read-only mount) failed as a
    whole on the loss curve ("Permission denied"; where ``loss_curve.png`` was a folder, an
    error naming a hidden temp file): the curve is now a note and the numbers print."""
    import unmask.files

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path.parent))

    monkeypatch.setattr(unmask.files, "atomic_write_bytes", refuse)
    rc, out, err = _eval(capsys, bf16_run)
    assert rc == 0, err
    assert "held-out" in out and "bits/byte" in out
    assert (f"loss curve: not drawn, {bf16_run / 'loss_curve.png'} cannot be written "
            "(Permission denied); --plot FILE writes it elsewhere") in out


def test_a_plot_path_that_is_a_folder_is_one_line_naming_it(bf16_run, capsys, tmp_path):
    (tmp_path / "curve.png").mkdir()
    rc, _, err = _eval(capsys, bf16_run, "--plot", tmp_path / "curve.png")
    assert rc == 2
    assert err == (f"unmask eval: error: --plot {tmp_path / 'curve.png'}: the loss curve "
                   "cannot be written there (Is a directory)\n")


def test_a_task_folder_without_eval_jsonl_says_so(bf16_run, capsys, tmp_path):
    """``--task-file DIR`` reads ``DIR/eval.jsonl``; a folder without one was "no such task
    file", naming the folder the user can see is there."""
    rc, _, err = _eval(capsys, bf16_run, "--task-file", tmp_path)
    assert rc == 2
    assert err == (f"unmask eval: error: {tmp_path}: a folder without eval.jsonl (the held-out "
                   "items `python -m unmask.tasks` writes); give the task file itself\n")


def test_a_dataset_without_validation_split_is_named_as_one(bf16_run, capsys, tmp_path):
    """A corpus prepared with ``--val-fraction 0`` has no held-out text: the note said
    "split 'val' has 0 tokens, fewer than seq_len=32", as if the windows were too long."""
    from unmask.data import prepare

    (tmp_path / "a.txt").write_text("the lord said unto moses.\n" * 50)
    prepare([tmp_path / "a.txt"], tmp_path / "noval", tokenizer="byte", val_fraction=0.0,
            progress=False)
    rc, out, _ = _eval(capsys, bf16_run, "--data", tmp_path / "noval", "--no-plot")
    assert rc == 0
    assert (f"held-out bound: not measured, {tmp_path / 'noval'} has no validation split "
            "(prepared with --val-fraction 0)") in out


def test_a_bf16_run_on_a_cpu_without_fast_bf16_is_measured_in_fp32_with_a_note(
        bf16_run, capsys, monkeypatch):
    """bf16 there is a slow generic kernel (4.6x fp32, the demo model): fp32, said in a note,
    and the bound is the logged one to about 1e-3."""
    from unmask import parallel

    monkeypatch.setattr(parallel, "cpu_bf16", lambda: "generic")
    rc, out, _ = _eval(capsys, bf16_run, "--no-plot", "--json")
    got = json.loads(out)
    assert rc == 0
    assert any("measured in fp32, not the run's bf16" in n for n in got["notes"])
    assert got["heldout"]["bpb"] == pytest.approx(got["training"]["last_val_bpb"], abs=1e-2)
