"""Publisher imports (session 32): a SEDD folder's noise becomes the schedule its decoder
steps on; a folder whose config.json names no dtype (SEDD's Hydra config) loads and converts
in the dtype its weights are stored in; a mask token that is also the EOS or pad is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from convert_helpers import load_error
from safetensors.torch import load_file, save_file
from test_dit import make_sedd

import unmask
from unmask.cli import main
from unmask.sampling.sedd import model_noise
from unmask.schedules import GeometricSchedule


def _with_noise(folder: Path, **noise: object) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg["noise"] = {**cfg["noise"], **noise}
    (folder / "config.json").write_text(json.dumps(cfg))


def test_sedd_geometric_noise_is_imported_as_its_schedule(tmp_path: Path) -> None:
    make_sedd(tmp_path / "loglinear")
    assert unmask.load(tmp_path / "loglinear").config.schedule == "linear"
    make_sedd(tmp_path / "geo")
    _with_noise(tmp_path / "geo", type="geometric")  # sigma 1e-4 to 20, as the reference's
    m = unmask.load(tmp_path / "geo")
    assert m.config.schedule == "geometric"
    assert isinstance(model_noise(m.config), GeometricSchedule)


@pytest.mark.parametrize(("noise", "words"), [
    ({"type": "geometric", "sigma_max": 10}, "sigma_max=10"),
    ({"type": "cosine"}, "noise.type='cosine'"),
])
def test_a_sedd_noise_unmask_cannot_step_on_is_one_line(tmp_path: Path, noise: dict,
                                                        words: str) -> None:
    make_sedd(tmp_path / "f")
    _with_noise(tmp_path / "f", **noise)
    msg = load_error(tmp_path / "f")
    assert "config.json" in msg and words in msg and "sedd" in msg


@pytest.mark.parametrize(("noise", "words"), [
    ("geometric", "missing noise.sigma_min and noise.sigma_max"),  # read as log-linear
    ({"type": "geometric"}, "missing noise.sigma_min and noise.sigma_max"),  # said "=None"
    ({"type": "geometric", "sigma_min": 1e-4}, "missing noise.sigma_max"),
    (3, "noise=3"),
])
def test_a_sedd_noise_short_of_its_keys_names_them(tmp_path: Path, noise: object,
                                                   words: str) -> None:
    make_sedd(tmp_path / "f")
    cfg = json.loads((tmp_path / "f" / "config.json").read_text())
    (tmp_path / "f" / "config.json").write_text(json.dumps({**cfg, "noise": noise}))
    msg = load_error(tmp_path / "f")
    assert "config.json" in msg and words in msg and "sedd" in msg


def test_a_sedd_noise_given_as_its_type_alone_is_that_type(tmp_path: Path) -> None:
    make_sedd(tmp_path / "f")
    cfg = json.loads((tmp_path / "f" / "config.json").read_text())
    (tmp_path / "f" / "config.json").write_text(json.dumps({**cfg, "noise": "loglinear"}))
    assert unmask.load(tmp_path / "f").config.schedule == "linear"


def test_a_folder_naming_no_dtype_loads_and_converts_as_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "sedd"
    make_sedd(src)
    path = src / "model.safetensors"
    # bf16 weights beside the saved RoPE buffer in float32 (its name sorts before most)
    tensors = {k: v if k == "rotary_emb.inv_freq" else v.to(torch.bfloat16)
               for k, v in load_file(str(path)).items()}
    assert tensors["rotary_emb.inv_freq"].dtype == torch.float32
    save_file(tensors, str(path))
    assert next(unmask.load(src).model.parameters()).dtype == torch.bfloat16
    assert main(["convert", str(src), str(tmp_path / "native")]) == 0
    capsys.readouterr()
    stored = load_file(str(tmp_path / "native" / "model.safetensors"))
    assert {t.dtype for t in stored.values()} == {torch.bfloat16}
    # a dtype asked for still wins
    assert next(unmask.load(src, dtype="fp32").model.parameters()).dtype == torch.float32


def test_a_mask_token_that_is_also_the_eos_is_one_line(tmp_path: Path) -> None:
    from test_convert import make_llada

    make_llada(tmp_path / "f", n_shards=1)
    cfg_path = tmp_path / "f" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "mask_token_id": cfg["eos_token_id"]}))
    msg = load_error(tmp_path / "f")  # it loaded, and decoded with EOS == [MASK]
    assert msg.startswith(str(cfg_path)) and "also the eos and pad token" in msg
    assert "mask_token_id must name a token of its own" in msg


def test_a_failed_convert_leaves_no_folder_it_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_convert import make_llada

    make_llada(tmp_path / "f", n_shards=1)
    path = tmp_path / "f" / "model.safetensors"
    t = load_file(str(path))
    t[sorted(t)[-1]][0, 0] = float("nan")  # found only as it is written
    save_file(t, str(path))
    assert main(["convert", str(tmp_path / "f"), str(tmp_path / "new" / "deep" / "out")]) == 2
    assert "NaN" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # the folders above the output too
    (tmp_path / "kept").mkdir()  # one that was there stays
    assert main(["convert", str(tmp_path / "f"), str(tmp_path / "kept" / "a" / "out")]) == 2
    assert [p.name for p in tmp_path.joinpath("kept").iterdir()] == []
    through = tmp_path / "x" / ".." / "y" / "out"  # x/ is made on the way to y/, then removed
    assert main(["convert", str(tmp_path / "f"), str(through)]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "kept"]
