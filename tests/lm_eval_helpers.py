"""What the lm-eval tests share: a local multiple-choice task's YAML."""

from __future__ import annotations

import os

MC_TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
{extra}metric_list:
  - metric: {metric}
"""


def mc_task(name: str, data: str | os.PathLike[str], *, metric: str = "acc",
            extra: str = "") -> str:
    """The YAML of task ``name``: multiple choice over the JSON lines ``data`` (``question``,
    ``choices``, ``label``), scored by ``metric``; ``extra`` lines go before the metrics."""
    return MC_TASK.format(name=name, data=data, metric=metric, extra=extra)
