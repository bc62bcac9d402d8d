"""The checks that ``unmask generate`` and ``unmask chat`` make before loading a model
(``check_given_options``) judge the flags at the length the run writes: with
``--gen-length`` not given, the checkpoint's recommended one (``sample_defaults`` in its
config.json, as ``api.sample_config`` takes it), not the dataclass's 64."""

from __future__ import annotations

import json
import shutil

import pytest

from unmask.cli import build_parser
from unmask.commands.sample_options import check_given_options
from unmask.errors import UserError
from unmask.files import asset_path


def _checkpoint(tmp_path, **recommended):
    """The demo's config.json with ``recommended`` added to its ``sample_defaults`` (the
    checks read only the config; the weights are an empty file)."""
    out = tmp_path / "ck"
    out.mkdir()
    config = json.loads((asset_path("demo") / "config.json").read_text())
    config["sample_defaults"].update(recommended)
    (out / "config.json").write_text(json.dumps(config))
    shutil.copy(asset_path("demo") / "tokenizer.json", out / "tokenizer.json")
    (out / "model.safetensors").write_bytes(b"")
    return out


def _args(command, *flags):
    extra = ["p"] if command == "generate" else []
    return build_parser([command]).parse_args([command, *flags, *extra])


@pytest.mark.parametrize("command", ["generate", "chat"])
def test_the_recommended_length_is_the_one_judged(tmp_path, command):
    ck = str(_checkpoint(tmp_path, gen_length=32))
    # 32 tokens in blocks of 8: 4 blocks, so 4 steps split over them (64 tokens: 8 blocks)
    check_given_options(_args(command, "--model", ck, "--block-length", "8", "--steps", "4"))
    with pytest.raises(UserError, match=r"4 = gen_length 32 / block_length 8"):
        check_given_options(_args(command, "--model", ck, "--block-length", "8", "--steps", "3"))
    # a length given wins over the recommendation
    with pytest.raises(UserError, match=r"8 = gen_length 64 / block_length 8"):
        check_given_options(_args(command, "--model", ck, "--gen-length", "64",
                                  "--block-length", "8", "--steps", "4"))


def test_without_a_recommended_length_the_default_is_judged(tmp_path):
    ck = str(_checkpoint(tmp_path))
    with pytest.raises(UserError, match=r"8 = gen_length 64 / block_length 8"):
        check_given_options(_args("generate", "--model", ck, "--block-length", "8",
                                  "--steps", "4"))
