"""``unmask.train_guards``: the saved progress of a resumed run, read with the project's one
JSON reader (``unmask.files.read_json``), its errors one line."""

from __future__ import annotations

import pytest

from unmask.errors import UserError
from unmask.train_guards import saved_progress


def _state(tmp_path, raw: bytes):
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir(exist_ok=True)
    (ckpt / "trainer.json").write_bytes(raw)
    return ckpt


def test_saved_progress_reads_a_trainer_state(tmp_path) -> None:
    ckpt = _state(tmp_path, b'{"step": 7, "train_seconds": 1.5, "skipped_in_a_row": 2,'
                            b' "trajectories": {"rows": 3}}')
    got = saved_progress(ckpt)
    assert (got.step, got.train_seconds, got.skipped, got.trajectories) == (7, 1.5, 2,
                                                                           {"rows": 3})
    older = saved_progress(_state(tmp_path, b'{"step": 3, "trajectories": [1]}'))
    assert (older.step, older.train_seconds, older.skipped, older.trajectories) == (3, 0.0, 0,
                                                                                   None)


@pytest.mark.parametrize(("raw", "says"), [
    (b'{"step": 1,}', r"trainer\.json: not valid JSON \(a comma after the last entry, line 1\)"),
    (b"", r"trainer\.json: not valid JSON \(the file is empty\)"),
    (b'{"step": "\xff"}', r"trainer\.json: not UTF-8 text"),  # was a UnicodeDecodeError
    (b"[1, 2]", r"trainer\.json: expected a JSON object"),
    (b'{"train_seconds": 3}', r"trainer\.json: not a valid trainer state"),
    (b'{"step": "seven"}', r"trainer\.json: not a valid trainer state"),
    (b'{"step": 1e999}', r"trainer\.json: not a valid trainer state"),  # was an OverflowError
])
def test_a_damaged_trainer_state_is_one_line(tmp_path, raw, says) -> None:
    with pytest.raises(UserError, match=says) as e:
        saved_progress(_state(tmp_path, raw))
    assert "\n" not in str(e.value)


def test_a_checkpoint_without_trainer_state_says_so(tmp_path) -> None:
    (tmp_path / "checkpoint").mkdir()
    with pytest.raises(UserError, match=r"no trainer state to resume from"):
        saved_progress(tmp_path / "checkpoint")


def test_the_memory_estimate_builds_no_model(monkeypatch) -> None:
    """It counted parameters on a meta-device copy: two minutes at n_layers=100000 before a
    one-line refusal. The formula gives the same count as the built model."""
    import unmask.model
    from unmask.config import TrainConfig, model_preset
    from unmask.train_guards import estimate_memory

    configs = [model_preset("tiny", vocab_size=260, **kw) for kw in (
        {}, {"tie_embeddings": False}, {"qkv_bias": True}, {"mlp": "gelu"},
        {"time_conditioning": True}, {"qk_norm": True}, {"head_bias": True})]
    counts = [sum(p.numel() for p in unmask.model.meta_model(c).parameters()) for c in configs]

    def no_model(*args, **kwargs):
        raise AssertionError("estimate_memory built a model")

    monkeypatch.setattr(unmask.model, "meta_model", no_model)
    monkeypatch.setattr(unmask.model, "Transformer", no_model)
    for cfg, n in zip(configs, counts, strict=True):
        est = estimate_memory(cfg, TrainConfig(ema=0.0), rows=1, cuda=False)
        assert est.state == 16 * n
    huge = model_preset("tiny", vocab_size=260, n_layers=100_000)
    assert estimate_memory(huge, TrainConfig(), rows=1, cuda=False).state > 20 * 10**9
