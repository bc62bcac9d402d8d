"""Evaluation fixes of session 32: the reference scorer leaves the process's Hugging Face
offline switches as they were (it left ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` set, so
a later download in the same program failed); a causal model's log-likelihoods are batched
by length, not in request order (a batch was as wide as its longest row); a run trained in
bf16 is evaluated in fp32 on a CPU without fast bf16 (4.6x slower there), with a note."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from unmask.config import model_preset
from unmask.errors import UserError
from unmask.evaluate import ar_loglikelihood
from unmask.model import Transformer
from unmask.scoring import ReferenceScorer


@pytest.mark.parametrize("before", [None, "0"])
def test_from_pretrained_restores_the_offline_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: str | None
) -> None:
    pytest.importorskip("transformers")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if before is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, before)
    with pytest.raises(UserError, match="no such folder"):
        ReferenceScorer.from_pretrained(tmp_path / "missing")
    assert os.environ.get("HF_HUB_OFFLINE") == before
    assert os.environ.get("TRANSFORMERS_OFFLINE") == before


class _Widths(torch.nn.Module):
    """A tiny causal model that records the (B, T) of every batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = Transformer(model_preset("tiny", vocab_size=48, max_seq_len=64,
                                            attention="causal")).eval()
        self.config = self.net.config
        self.shapes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.net(x)


def test_ar_loglikelihoods_are_batched_by_length_and_returned_in_request_order() -> None:
    long, short = [5] * 30, [6]
    requests = [(long, [7, 8]), (short, [9]), (long[:29], [7, 9]), ([], [10]),
                (long[:5], [11, 12]), (short, [])]
    model = _Widths()
    with torch.no_grad():
        got = ar_loglikelihood(model, requests, start_id=2, batch_size=2)
        alone = [ar_loglikelihood(model.net, [r], start_id=2)[0] for r in requests]
    assert [r.logprob for r in got] == pytest.approx([r.logprob for r in alone], abs=1e-5)
    assert [r.is_greedy for r in got] == [r.is_greedy for r in alone]
    # the two long rows share a batch, the short ones the others: 2·31 + 2·6 + 2·1 columns
    assert sorted(model.shapes) == [(2, 1), (2, 6), (2, 31)]


def test_a_bf16_run_is_evaluated_in_fp32_on_a_cpu_without_fast_bf16(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    from unmask import parallel, report

    monkeypatch.setattr(parallel, "cpu_bf16", lambda: "generic")
    assert report._autocast("bf16", "cpu") is None
    assert "measured in fp32" in (report.cpu_bf16_note("bf16", "cpu") or "")
    for precision in ("fp32", "auto", "fp16"):  # nothing of bf16 to leave
        assert report.cpu_bf16_note(precision, "cpu") is None
    monkeypatch.setattr(parallel, "cpu_bf16", lambda: "onednn")
    assert report._autocast("bf16", "cpu") is torch.bfloat16
    assert report.cpu_bf16_note("bf16", "cpu") is None


@pytest.mark.parametrize("text,match", [
    ('{"text": "an item"}\n', "not an lm-eval task file .*fields: text"),
    ("a: [1\n", "not a valid task file"),
    ("- 1\n- 2\n", "not an lm-eval task file .*fields: none"),
])
def test_a_task_file_lm_eval_cannot_build_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, match: str
) -> None:
    """``unmask eval --tasks FILE``: lm-eval raised ``ValueError: Unknown config shape`` (a
    traceback) for a file that is not a task YAML (a JSONL of items, for one), and only at the
    end of the run."""
    tasks = pytest.importorskip("lm_eval.tasks")
    from unmask.lm_eval import find_tasks

    class NoTasks:  # lm-eval's index of its thousands of tasks takes ~15 s to build
        all_tasks: list[str] = []

        def __init__(self, **kw: object) -> None:
            pass

    monkeypatch.setattr(tasks, "TaskManager", NoTasks)

    path = tmp_path / "items.jsonl"
    path.write_text(text)
    with pytest.raises(UserError, match=match):
        find_tasks([str(path)])
