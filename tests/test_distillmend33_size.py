"""A native checkpoint whose config.json says ``n_layers`` 1000000000 is one line from
``unmask convert`` (to native or to a publisher's layout), as from ``load``: both built a
billion layers on the meta device first (minutes and gigabytes, still running after 20 s)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import unmask.model as model_module
from unmask.checkpoint import load, shipped_model
from unmask.cli import main
from unmask.errors import UserError


@pytest.fixture
def huge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "huge"
    folder.mkdir()
    demo = shipped_model("demo")
    shutil.copy(demo / "tokenizer.json", folder)
    config = json.loads((demo / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "n_layers": 10**9}))
    (folder / "model.safetensors").write_bytes(b"")  # never read: the config is refused first
    real = model_module.meta_model

    def guarded(config, *args, **kwargs):  # type: ignore[no-untyped-def]
        assert config.n_layers < 1000, "built a billion layers on the meta device (minutes)"
        return real(config, *args, **kwargs)

    monkeypatch.setattr(model_module, "meta_model", guarded)
    monkeypatch.delenv("UNMASK_NO_FIT_CHECK", raising=False)
    return folder


@pytest.mark.parametrize("to", [[], ["--to", "transformers"]])
def test_convert_refuses_an_absurd_config_in_one_line(huge, tmp_path, capsys, to):
    out = tmp_path / "out"
    assert main(["convert", str(huge), str(out), *to]) == 2
    err = capsys.readouterr().err
    assert "parameters need at least" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_load_still_refuses_it(huge):
    with pytest.raises(UserError, match="parameters need at least"):
        load(huge)
