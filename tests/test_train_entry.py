"""``unmask.train``, the Python entry of the README: its signature, its help and its argument
errors, as a library user sees them once ``unmask.train`` (the module) has been imported."""

from __future__ import annotations

import inspect
import pydoc

import pytest

import unmask
import unmask.train  # noqa: F401  (the package attribute is now the module, as in any program)
from unmask.errors import UserError


def test_signature_and_help_are_the_functions():
    entry = unmask.train
    assert list(inspect.signature(entry).parameters) == ["config", "resume", "progress",
                                                         "name_setting"]  # fmt: skip
    text = pydoc.render_doc(entry, renderer=pydoc.plaintext)
    head = text[: text.index("DESCRIPTION") + 200]
    assert "unmask.train(config: TrainConfig" in head
    assert "Train a model as ``config`` says and return the run directory." in head


def test_config_of_the_wrong_kind_is_one_line_naming_the_argument():
    with pytest.raises(UserError, match=r"^config must be a TrainConfig or a mapping of its "
                                        r"fields, not int$"):  # fmt: skip
        unmask.train(5)
    with pytest.raises(UserError, match=r"^config: unknown TrainConfig field\(s\): bogus$"):
        unmask.train({"bogus": 1})


def test_a_mapping_is_read_as_train_config_fields(tmp_path):
    """A dict is checked as a TrainConfig is (here: its steps), not an AttributeError."""
    with pytest.raises(UserError, match="steps"):
        unmask.train({"data": str(tmp_path / "d"), "out": str(tmp_path / "r"), "steps": -1})


def test_a_mapping_with_resume_changes_only_the_fields_it_names(tmp_path):
    """``unmask.train({"out": RUN, "steps": 2}, resume=True)`` trains RUN on; the fields it
    does not name are the saved plan's (they were TrainConfig's defaults: data "" and all)."""
    import json

    from unmask.data import prepare

    (tmp_path / "a.txt").write_text("some words of text, and more words of text\n" * 200)
    prepare(tmp_path / "a.txt", tmp_path / "data", tokenizer="byte", val_fraction=0,
            progress=False)  # fmt: skip
    run = tmp_path / "run"
    plan = {"data": str(tmp_path / "data"), "out": str(run), "preset": "tiny", "steps": 1,
            "warmup": 1, "seq_len": 32, "batch_size": 2, "threads": 1, "device": "cpu"}
    unmask.train(plan, progress=False)
    unmask.train({"out": str(run), "steps": 2, "threads": 1, "device": "cpu"}, resume=True,
                 progress=False)  # fmt: skip
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["steps"] == 2 and saved["data"] == plan["data"] and saved["seq_len"] == 32
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").open()
            if '"loss"' in line][-1] == 2  # fmt: skip
