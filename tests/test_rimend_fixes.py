"""Session 29 fixes: a task run's given steps on a checkpoint whose blocks start at the first
prompt token checked against every prompt-length group before any decodes (one refusal
naming steps that fit all)."""

from __future__ import annotations

import math

import pytest
import torch
from test_evalmend_fixes import ABSOLUTE, _checkpoint

from unmask.cli import main
from unmask.errors import UserError


def _items():
    from unmask.tasks import Item

    # prompt lengths 12 to 15: one of them ends a block of 4 (8 new tokens span 2 blocks
    # after it), the others end inside one (3 blocks)
    return [Item("reversal", f"{name}'s child is", " Bc", meta={"direction": "forward"})
            for name in ("A", "Ab", "Abc", "Abcd")]


def test_given_steps_are_checked_against_every_block_group_first(tmp_path, monkeypatch):
    """Steps that fit one group's blocks and not another's: each group refused alone,
    naming steps that fit only it ("try 6 or 9", then "try 8 or 10"), and a later group
    after earlier ones had decoded. Now one refusal before any decoding, naming multiples
    of the lcm of the groups' block counts, and those steps run."""
    import unmask.api
    from unmask.api import facts_of
    from unmask.tasks.score import score_items

    loaded = _checkpoint(tmp_path / "c", **ABSOLUTE)
    facts = facts_of(loaded)
    items = _items()
    lengths = [len(loaded.tokenizer.encode(i.prompt)) for i in items]
    tails = {facts.prompt_columns(n, "bd3lm") % 4 for n in lengths}
    counts = sorted({1 + -(-max(8 - (4 - t), 0) // 4) for t in tails})
    assert len(counts) == 2  # the test needs groups of unequal block counts
    fits_one = counts[0] if counts[0] % counts[1] else counts[1]
    decoded = []
    real_start = unmask.api.start
    monkeypatch.setattr(unmask.api, "start", lambda *a, **k: decoded.append(1)
                        or real_start(*a, **k))
    given = {"gen_length": 8, "steps": fits_one, "temperature": 0.0}
    with pytest.raises(UserError) as e:
        score_items(loaded, items, given=given, batch_size=4)
    message = str(e.value)
    assert "\n" not in message and not decoded
    lcm = math.lcm(*counts)
    offered = [int(s) for s in message.rsplit("try ", 1)[1].split(" or ")]
    assert offered and all(s % lcm == 0 for s in offered), message
    done = score_items(loaded, items, given={**given, "steps": offered[0]}, batch_size=4)
    assert done.total == 4


def test_eval_refuses_unfitting_steps_in_one_line(tmp_path, capsys):
    """The command line: exit 2 and one line naming steps that fit every group."""
    import json

    _checkpoint(tmp_path / "c", **ABSOLUTE)
    task = tmp_path / "t.jsonl"
    task.write_text("".join(json.dumps({"task": "reversal", "prompt": i.prompt,
                                        "answer": i.answer, "meta": i.meta}) + "\n"
                            for i in _items()))
    rc = main(["eval", str(tmp_path / "c"), "--task-file", str(task), "--no-score",
               "--device", "cpu", "--gen-length", "8", "--steps", "7", "--temperature", "0"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "--steps (7) must be a multiple" in err, err
    assert err.rstrip().endswith("try 6 or 12"), err  # blocks 2 and 3: multiples of 6


def test_forbid_empty_bans_empty_where_the_model_has_it():
    """One helper keeps [EMPTY] out of free text for the flat loop and each block."""
    from types import SimpleNamespace

    from unmask.canvas import Canvas
    from unmask.sampling.loop import forbid_empty

    canvas = Canvas.from_prompts([[1, 2]], 3, mask_id=0, pad_id=9)
    before = len(canvas.constraints)
    forbid_empty(canvas, lambda x: x)  # a plain callable: nothing to ban
    assert len(canvas.constraints) == before
    forbid_empty(canvas, SimpleNamespace(config=SimpleNamespace(empty_id=5)))
    logits = canvas.constraints[-1](torch.zeros(1, 5, 8))
    assert torch.isinf(logits[..., 5]).all() and not torch.isinf(logits[..., 4]).any()
