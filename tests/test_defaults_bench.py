"""``benchmarks/defaults.py`` (and precision.py, which reuses it): held-out prompts come from
the prepared dataset's validation split, never from its training split."""

import argparse

from unmask.data import TokenDataset, prepare


def _text(data, split):
    ds = TokenDataset(data, split)
    return ds.tokenizer().decode(ds.read(0, ds.n_tokens).tolist())


def test_prompts_are_validation_text(benchmark, tmp_path):
    defaults = benchmark("defaults")
    lines = [" ".join(f"w{i}x{j}" for j in range(8)) for i in range(2000)]  # every word unique
    (tmp_path / "a.txt").write_text("\n".join(lines) + "\n")
    data = tmp_path / "data"
    prepare([tmp_path / "a.txt"], data, tokenizer="byte", val_fraction=0.1, progress=False)
    train, val = _text(data, "train"), _text(data, "val")
    pairs = defaults.validation(data, 6, 4, 8)
    assert len(pairs) == 6 and len({p for p, _ in pairs}) == 6
    for prompt, truth in pairs:
        assert len(prompt.split()) == 4 and len(truth.split()) == 8
        for word in (prompt + truth).split():
            assert f"{word} " in val or f"{word}\n" in val
            assert word not in train.split()
    args = argparse.Namespace(prompt_source="val", data=str(data), prompt_words=4)
    assert defaults.prompt_pairs(args, 2, 8)[1] == f"val: validation split of {data}"
    args.prompt_source = "corpus-tail"  # the old way, kept to reproduce committed numbers
    pairs, source = defaults.prompt_pairs(args, 2, 8)
    assert source.startswith("corpus-tail") and "training text" in source
    assert pairs[0][0] == "day is with the"  # 2 Peter 3:8, as the committed results
