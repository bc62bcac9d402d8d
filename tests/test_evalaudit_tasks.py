"""Task runs with a given ``--block-length``: the room decoded is whole blocks of it."""

import json

import pytest
import torch

from unmask.cli import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from unmask.checkpoint import save_checkpoint
    from unmask.config import model_preset
    from unmask.model import Transformer
    from unmask.tokenizer import byte_tokenizer

    root = tmp_path_factory.mktemp("blockrun")
    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = model_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=48)
    save_checkpoint(root, model=Transformer(cfg), tokenizer=tok)
    return root


ITEM = {"task": "countdown3", "prompt": "2,3,4>24:", "answer": "2*3=6,6*4=24",
        "meta": {"numbers": [2, 3, 4], "target": 24}}  # fmt: skip


def test_a_block_length_rounds_the_room_up_to_whole_blocks(tiny_run, tmp_path, capsys):
    """The longest answer takes 14 bytes and its EOS one: 15 tokens, decoded as 5 blocks of
    3 with --block-length 3 and 4 blocks of 4 with --block-length 4 (a one-line refusal
    before, whose hint --gen-length 12 cut the answers); a given --gen-length is kept."""
    (tmp_path / "eval.jsonl").write_text(json.dumps(ITEM) + "\n")
    argv = ["eval", str(tiny_run), "--task-file", str(tmp_path), "--no-score", "--no-plot",
            "--json", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["tasks"]["sampling"]["gen_length"] == 15
    for block, room in ((3, 15), (4, 16), (5, 15), (16, 16)):
        assert main([*argv, "--block-length", str(block)]) == 0
        sampling = json.loads(capsys.readouterr().out)["tasks"]["sampling"]
        assert sampling["gen_length"] == room and sampling["block_length"] == block
    assert main([*argv, "--block-length", "4", "--gen-length", "15"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "multiple of --block-length (4)" in err[0]


def test_wilson_interval_matches_known_values():
    """Published values of the 95% Wilson interval (0/10: 0 to 0.2775; 10/10: 0.7225 to 1)
    and statsmodels' at 86/200 (0.3633 to 0.4993); bad counts are a ValueError."""
    from unmask.tasks.score import wilson_interval

    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(86, 200) == pytest.approx((0.3633, 0.4993), abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(1 - hi) and lo < 0.5 < hi
    for bad in ((1, 0), (-1, 5), (6, 5)):
        with pytest.raises(ValueError, match="a rate needs"):
            wilson_interval(*bad)


def test_solve_rates_come_with_their_interval(tiny_run, tmp_path, capsys):
    """JSON: ``intervals`` per group, around its rate; text: the interval beside the rate."""
    from unmask.tasks import write_task
    from unmask.tasks.score import wilson_interval

    write_task("reversal", tmp_path, n_train=2, n_eval=3, seed=5)
    argv = ["eval", str(tiny_run), "--task-file", str(tmp_path), "--no-score", "--no-plot",
            "--device", "cpu"]  # fmt: skip
    assert main([*argv, "--json"]) == 0
    tasks = json.loads(capsys.readouterr().out)["tasks"]
    assert set(tasks["intervals"]) == set(tasks["by_group"]) == {
        "reversal", "reversal/forward", "reversal/reverse"}
    for group, (solved, total) in tasks["by_group"].items():
        lo, hi = tasks["intervals"][group]
        assert [lo, hi] == pytest.approx(list(wilson_interval(solved, total)))
        assert lo <= solved / total <= hi
    assert main(argv) == 0
    out = capsys.readouterr().out
    solved, total = tasks["by_group"]["reversal"]
    lo, hi = tasks["intervals"]["reversal"]
    assert (f"reversal: {solved}/{total} solved ({solved / total:.1%}; 95% interval "
            f"{lo:.1%} to {hi:.1%})") in out


def test_one_gap_is_one_gap_in_the_report():
    """The infill line said "on 1 gaps"."""
    from unmask.report import RunReport

    infill = {"exact": 1.0, "token_acc": 1.0, "n": 1, "gaps": "g.jsonl", "method": "diffusion",
              "nfe": 3.0, "seconds": 0.01}
    r = RunReport(checkpoint="c", run=None, step=None, objective=None, infill=infill)
    (line,) = [x for x in r.lines() if x.startswith("infill")]
    assert "on 1 gap of g.jsonl (diffusion" in line
    r.infill = {**infill, "n": 2}
    (line,) = [x for x in r.lines() if x.startswith("infill")]
    assert "on 2 gaps of g.jsonl (diffusion" in line
