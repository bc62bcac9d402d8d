"""``api.sample_config``: a checkpoint's recommended ``confidence`` yields to the user's
``remasking``, as its recommended penalties yield to a decoder that applies none."""

from __future__ import annotations

import json
import shutil

import pytest

from unmask import api
from unmask.errors import UserError
from unmask.files import asset_path


@pytest.fixture(scope="module")
def margin_demo(tmp_path_factory):
    """A copy of the demo checkpoint whose ``sample_defaults`` recommend ``confidence`` margin."""
    folder = tmp_path_factory.mktemp("margin") / "demo"
    shutil.copytree(asset_path("demo"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["sample_defaults"] = {**config.get("sample_defaults", {}), "confidence": "margin"}
    (folder / "config.json").write_text(json.dumps(config))
    return api.load_for_decoding(folder, dtype="fp32")


def test_the_recommended_confidence_yields_to_the_users_remasking(margin_demo):
    """``--remasking random`` on a checkpoint recommending ``confidence`` margin was refused
    as if the user had given both ("give one of the two")."""
    assert api.sample_config(margin_demo, {}).confidence == "margin"
    config = api.sample_config(margin_demo, {"remasking": "random"})
    assert (config.remasking, config.confidence) == ("random", "prob")
    assert api.sample_config(margin_demo, {"remasking": "low_confidence"}).confidence == "margin"
    with pytest.raises(UserError, match="give one of the two"):  # the user's own pair
        api.generate(margin_demo, "a", config={"remasking": "random", "confidence": "margin",
                                               "gen_length": 4})
