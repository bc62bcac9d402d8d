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
