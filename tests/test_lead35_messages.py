"""Two refusals that named the wrong thing: a folder given where a JSONL file is read said
"no such file"; a resume that sets an option the run left unset said "the run's None"."""

from __future__ import annotations

import dataclasses

import pytest

from unmask.config import TrainConfig
from unmask.data import read_jsonl
from unmask.errors import UserError
from unmask.train_guards import FIXED_ON_RESUME, resume_plan


def test_a_folder_given_for_a_jsonl_file_is_named_a_folder(tmp_path):
    with pytest.raises(UserError, match=r": a folder, not a JSONL file$"):
        list(read_jsonl(tmp_path))
    with pytest.raises(UserError, match=r": no such file$"):
        list(read_jsonl(tmp_path / "missing.jsonl"))


def test_a_resume_that_sets_an_unset_option_names_its_default():
    assert "chat_template" in FIXED_ON_RESUME
    saved = TrainConfig(objective="sft")
    assert saved.chat_template is None
    with pytest.raises(UserError, match=r"chat_template='default' differs from the run's none "
                                        r"\(its default\)"):
        resume_plan(saved, dataclasses.replace(saved, chat_template="default"))
