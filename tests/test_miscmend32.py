"""Fixes of session 32's review of the misc range: a task file whose ``task`` comes from the
file it ``include:``s is accepted (it was refused before the run); the reference scorer does
not import ``datasets``; ``model_noise`` falls back on an unreadable ``schedule_eps``;
``corpus_stamp`` hashes no file outside the corpus folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from unmask.errors import UserError


@pytest.fixture
def find_tasks(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    tasks = pytest.importorskip("lm_eval.tasks")
    from unmask.lm_eval import find_tasks

    class NoTasks:  # lm-eval's index of its thousands of tasks takes ~15 s to build
        all_tasks: list[str] = []

        def __init__(self, **kw: object) -> None:
            pass

    monkeypatch.setattr(tasks, "TaskManager", NoTasks)
    return find_tasks


BASE = 'task: my_base\ndataset_path: json\noutput_type: loglikelihood\ndoc_to_text: "{{q}}"\n'


@pytest.mark.parametrize("variant", [
    "include: base.yaml\nnum_fewshot: 5\n",
    "include: [base.yaml]\nnum_fewshot: 5\n",
    "include: sub/../base.yaml\n",
])
def test_a_task_file_that_includes_its_task_is_accepted(
    tmp_path: Path, find_tasks, variant: str  # noqa: ANN001
) -> None:
    """lm-eval reads a task given as a path with ``include:`` resolved: a variant that takes
    ``task:`` from its base builds there, and was refused as "not an lm-eval task file"."""
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "sub").mkdir()
    path = tmp_path / "variant.yaml"
    path.write_text(variant)
    from lm_eval.tasks._index import TaskIndex  # lm-eval itself builds it

    assert TaskIndex.entry_from_path(path).name == "my_base"
    find_tasks([str(path)])  # no UserError


@pytest.mark.parametrize("base,variant,match", [
    ("a: 1\n", "include: base.yaml\n", r"not an lm-eval task file .*fields: a\)"),
    ("- 1\n", "include: base.yaml\n", r"not an lm-eval task file \(Expected YAML dict"),
    (BASE, "include: nothere.yaml\n", r"include .*nothere\.yaml: No such file"),
    ("a: [1\n", "include: base.yaml\n", r"include .*base\.yaml:2: not a valid task file"),
    (BASE, "include: variant.yaml\n", "Include cycle"),
])
def test_a_task_file_whose_includes_give_no_task_is_one_line(
    tmp_path: Path, find_tasks, base: str, variant: str, match: str  # noqa: ANN001
) -> None:
    (tmp_path / "base.yaml").write_text(base)
    path = tmp_path / "variant.yaml"
    path.write_text(variant)
    with pytest.raises(UserError, match=match) as e:
        find_tasks([str(path)])
    assert "\n" not in str(e.value)
