"""``benchmarks/distinct_ci.py``: the paired bootstrap of distinct-2 over prompts."""

import json

import pytest

from unmask.errors import UserError


@pytest.fixture
def ci(benchmark):
    return benchmark("distinct_ci")


def test_identical_rows_differ_by_nothing_and_a_loop_loses(tmp_path, ci, capsys):
    varied = [f"w{i} x{i} y{i} z{i} v{i}" for i in range(6)]
    loop = ["a b a b a b"] * 6
    result = {"sections": [
        {"rows": [{"model": "d", "policy": "p", "texts": loop}]},
        {"rows": [{"model": "ar", "policy": "ar", "texts": varied},
                  {"model": "ar2", "policy": "ar", "texts": varied}]},
    ]}  # fmt: skip
    out = ci.bootstrap(varied, varied, resamples=200, seed=0)
    assert out["a - b"] == (0.0, 0.0, 0.0) and out["a"][0] == 1.0
    out = ci.bootstrap(loop, varied, resamples=200, seed=0)
    assert out["a"][0] == pytest.approx(2 / 5) and out["a - b"][2] < 0  # the interval excludes 0
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    assert ci.main([str(path), "--resamples", "50"]) == 0
    text = capsys.readouterr().out
    assert "pooled distinct-2 d / p: 0.067" in text and "0 of 6" in text
    with pytest.raises(UserError, match="different prompt sets"):
        ci.bootstrap(loop, varied[:3], resamples=10, seed=0)


def test_row_b_from_another_run_of_the_same_prompts(tmp_path, ci, capsys):
    varied = [f"w{i} x{i} y{i} z{i} v{i}" for i in range(6)]
    loop = ["a b a b a b"] * 6

    def write(name: str, texts: list[str], prompts: list[str]) -> str:
        path = tmp_path / name
        path.write_text(json.dumps({"meta": {"prompts": prompts}, "sections": [
            {"rows": [{"model": name, "policy": "p", "texts": texts}]}]}))  # fmt: skip
        return str(path)

    a = write("a", loop, ["p"] * 6)
    assert ci.main([a, "--other", write("b", varied, ["p"] * 6), "--resamples", "50"]) == 0
    text = capsys.readouterr().out
    assert "pooled distinct-2 b / p: 1.000" in text and "0 of 6" in text
    with pytest.raises(UserError, match="continue different prompts"):
        ci.main([a, "--other", write("c", varied, ["q"] * 6)])
