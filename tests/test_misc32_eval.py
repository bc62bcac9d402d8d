"""Evaluation fixes of session 32: the reference scorer leaves the process's Hugging Face
offline switches as they were (it left ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` set, so
a later download in the same program failed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from unmask.errors import UserError
from unmask.scoring import ReferenceScorer

pytest.importorskip("transformers")


@pytest.mark.parametrize("before", [None, "0"])
def test_from_pretrained_restores_the_offline_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: str | None
) -> None:
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if before is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, before)
    with pytest.raises(UserError, match="no such folder"):
        ReferenceScorer.from_pretrained(tmp_path / "missing")
    assert os.environ.get("HF_HUB_OFFLINE") == before
    assert os.environ.get("TRANSFORMERS_OFFLINE") == before
