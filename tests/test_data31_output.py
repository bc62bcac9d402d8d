"""``prepare -o`` a mount point (an empty disk mounted at ``/mnt/disk``): the dataset is built
beside it and renamed onto it, which the system refuses (EBUSY), so the run failed with
"Device or resource busy" after tokenizing the whole corpus. Refused before any work now."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from unmask import data
from unmask.errors import UserError


def test_a_mount_point_as_the_output_is_refused_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("some text of a corpus\n" * 50)
    disk = tmp_path / "disk"
    disk.mkdir()
    ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == disk or ismount(p))

    def no_pass(*args: object, **kwargs: object) -> None:
        raise AssertionError("tokenized before refusing")

    monkeypatch.setattr(data, "_make_tokenizer", no_pass)
    for out in (disk, tmp_path / "link"):
        if out.name == "link":
            out.symlink_to(disk)  # a link to the disk is the disk
        with pytest.raises(UserError, match=r"disk: a mount point \(a disk of its own\), which "
                           r"the dataset cannot be renamed into; give a folder inside it "
                           r"\(e\.g\. .*disk/data\)$"):
            data.prepare([tmp_path / "a.txt"], out, val_fraction=0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "disk", "link"]
    assert list(disk.iterdir()) == []
