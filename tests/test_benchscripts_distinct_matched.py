"""``benchmarks/distinct_matched.py``: both checkpoints are found before either decodes, and
--model's texts are cut to --other's words."""

import pytest

from unmask.data import prepare
from unmask.errors import UserError


@pytest.fixture
def data(tmp_path):
    lines = [" ".join(f"w{i}x{j}" for j in range(8)) for i in range(400)]
    (tmp_path / "a.txt").write_text("\n".join(lines) + "\n")
    prepare([tmp_path / "a.txt"], tmp_path / "data", tokenizer="byte", val_fraction=0.2,
            progress=False)  # fmt: skip
    return tmp_path / "data"


def test_a_missing_other_is_refused_before_the_model_decodes(benchmark, monkeypatch, data,
                                                             tmp_path):  # fmt: skip
    """--other was loaded only after --model had decoded every prompt in every setting."""
    dm = benchmark("distinct_matched")
    from unmask import api

    decoded = []
    real_load = api.load_for_decoding

    def load(path, *a, **k):
        if "nonexistent" in str(path):
            raise UserError(f"{path}: no such folder")
        return real_load(path, *a, **k)

    monkeypatch.setattr(api, "load_for_decoding", load)
    monkeypatch.setattr(api, "generate", lambda *a, **k: decoded.append(a) or None)
    with pytest.raises(UserError, match="nonexistent"):
        dm.main(["--other", str(tmp_path / "nonexistent"), "--data", str(data), "--prompts",
                 "2", "--gen-length", "4", "--json", str(tmp_path / "r.json")])  # fmt: skip
    assert decoded == []


def test_rows_cut_the_model_to_the_others_words(benchmark, monkeypatch, data, tmp_path, capsys):
    import json
    from types import SimpleNamespace

    dm = benchmark("distinct_matched")
    from unmask import api

    out = {"model": ["a b a b a b", "c d c d"], "other": ["x y z", "u v"]}
    which = []
    monkeypatch.setattr(api, "load_for_decoding", lambda path, *a, **k: which.append(path) or
                        SimpleNamespace(name="other" if "o" == path else "model"))  # fmt: skip
    monkeypatch.setattr(api, "facts_of", lambda loaded: SimpleNamespace(attention="causal"))
    monkeypatch.setattr(api, "sample_config", lambda loaded, given: given)
    monkeypatch.setattr(api, "generate", lambda loaded, prompts, config: SimpleNamespace(
        texts=out[loaded.name]))  # fmt: skip
    dm.main(["--other", "o", "--data", str(data), "--prompts", "2", "--gen-length", "4",
             "--json", str(tmp_path / "r.json")])  # fmt: skip
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["setting"] for r in rows] == ["default", "greedy"]
    for r in rows:
        assert r["other_words"] == 2.5 and r["model_words"] == 5.0
        assert r["model_dist2_matched"] == 1.0  # "a b a" and "c d": no bigram repeats
        assert r["model_dist2_whole"] == pytest.approx((2 / 5 + 2 / 3) / 2)  # whole texts do
    assert "wrote" in capsys.readouterr().out
